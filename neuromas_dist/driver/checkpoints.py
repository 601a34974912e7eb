"""A run's checkpoints: ``checkpoints/step_N/`` (learner state + data cursor + graph)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, overload

from neuromas_dist.graph.growth import GrowthGate
from neuromas_dist.learner.checkpoint import read_learner_state


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:06d}"


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted((Path(run_dir) / "checkpoints").glob("step_*"))
    return found[-1] if found else None


@overload
def checkpoint_step(ckpt: Path) -> int: ...
@overload
def checkpoint_step(ckpt: None) -> None: ...
def checkpoint_step(ckpt: Path | None) -> int | None:
    return int(ckpt.name.split("_")[-1]) if ckpt is not None else None


def graph_extra(widths: tuple[int, ...], gate: GrowthGate | None, step: int, sampler: dict[str, Any]
                ) -> dict[str, Any]:
    """What a checkpoint holds beside the learner: the step, the data cursor to resume
    from, and the graph (a grown run's widths and gate, as they were)."""
    return {"step": step, "sampler": sampler, "widths": list(widths), "gate": gate.to_dict() if gate else None}


def saved_graph(ckpt: Path) -> tuple[tuple[int, ...], GrowthGate | None, int]:
    """(widths, growth gate, learner version) a checkpoint was saved with; the gate as saved,
    not as configured now."""
    saved = read_learner_state(ckpt)
    extra = saved.get("extra", {})
    gate = GrowthGate.from_dict(extra["gate"]) if extra.get("gate") else None
    return tuple(extra["widths"]), gate, int(saved["version"])


def size_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
