"""Metrics sink: slash-named scalars to metrics.jsonl, TensorBoard and the configured
trackers (``trackers.py``: W&B, MLflow), one row per step."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence, TextIO

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

from neuromas_dist.run_dir import read_metrics


class MetricsLogger:
    """Append-only JSONL (``{"step": k, "name/with/slashes": value, ...}``) plus TensorBoard.

    On resume the file is cut back to the checkpointed step first, so a step logged after
    the last checkpoint (and redone after resume) never appears twice.
    """

    def __init__(self, run_dir: Path, tensorboard: bool, resume_step: int | None = None,
                 trackers: Sequence[Any] = ()):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.trackers = list(trackers)
        self._tb_dir = Path(run_dir) / "tensorboard" if tensorboard else None
        self._file: TextIO  # opened by _open
        self._tb: SummaryWriter | None = None
        self._open(resume_step)

    def _open(self, after: int | None) -> None:
        if after is not None:
            truncate_after(self.path, after)
        self._file = self.path.open("a")
        if self._tb_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides events of the steps that will be logged again
            self._tb = SummaryWriter(log_dir=str(self._tb_dir), purge_step=None if after is None else after + 1)

    def rewind(self, step: int) -> None:
        """Forget rows after ``step``: the run went back to that step's checkpoint."""
        self.close()
        self._open(step)

    def log(self, step: int, metrics: Mapping[str, Any]) -> dict[str, Any]:
        row = {"step": step, **{k: _plain(v) for k, v in sorted(metrics.items())}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)
        for tracker in self.trackers:
            tracker.log(step, row)
        return row

    def close(self, trackers: bool = False) -> None:
        """Close the files (a rewind reopens them); with ``trackers``, end the tracker runs too."""
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if trackers:
            for tracker in self.trackers:
                tracker.close()


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; None is visible in pandas as missing, not as a number
    return value


def truncate_after(path: Path, step: int) -> None:
    """Keep only rows with ``step <= step`` (rows logged after the last checkpoint)."""
    rows = [r for r in read_metrics(path) if r["step"] <= step]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
