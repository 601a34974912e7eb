"""``run_training``: the run directory, the step schedule, and how a run stops.

Run directory::

    config.yaml            resolved config (``--resume`` reads it back)
    metrics.jsonl          one row per step, slash-named metrics
    tensorboard/           the same scalars as TensorBoard events
    trajectories/          step_000001_r0.parquet ... (the trajectory Arrow schema; one file per learner rank)
    checkpoints/step_N/    learner state + data cursor + topology
    adapters/<node>/       final adapters, PEFT layout (PeftModel / vllm serve --lora-modules)
    adapters_start/<node>/ a grown run's adapters at step 0, as the learner held them
    plots/*.png            reward and accuracy over steps, per-node panels
    summary.json           held-out accuracy before and after, timings
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from neuromas_dist.config import Config, dump_yaml
from neuromas_dist.driver.metrics import MetricsLogger, read_metrics
from neuromas_dist.driver.trackers import TrackerError, from_config as tracker_list

EXIT_INTERRUPTED = 130
EXIT_FAILED = 1


def say(msg: str) -> None:
    print(f"[neuromas] {msg}", flush=True)


def prepare_run_dir(cfg: Config, resume: bool) -> Path:
    run_dir = Path(cfg.logging.run_dir or time.strftime("runs/%Y%m%d-%H%M%S"))
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        (run_dir / "config.yaml").write_text(dump_yaml(cfg))
    return run_dir


class StopFlag:
    """First Ctrl-C asks the loop to stop after the current step and checkpoint;
    a second one interrupts at once (the last periodic checkpoint stands)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        say("Ctrl-C: stopping after this step with a checkpoint (Ctrl-C again to abort now)")

    def restore(self) -> None:
        signal.signal(signal.SIGINT, self._previous)


def run_training(cfg: Config, resume: bool = False) -> int:
    from neuromas_dist.driver.cluster import init_ray
    from neuromas_dist.driver.trainer import Trainer, latest_checkpoint
    from neuromas_dist.rollout.worker import resolve_model_dir
    from neuromas_dist.tasks.data import DataError, load_task_data

    run_dir = prepare_run_dir(cfg, resume)
    ckpt = latest_checkpoint(run_dir) if resume else None
    if resume and ckpt is None:
        say(f"--resume {run_dir}: no checkpoint there yet; starting from step 0")
    try:
        data = load_task_data(cfg.data)
    except DataError as exc:
        print(f"data error: {exc}", file=sys.stderr)
        return 2
    if len(data.train) < cfg.trainer.questions_per_step:
        print(f"data error: trainer.questions_per_step={cfg.trainer.questions_per_step} but the training split has "
              f"{len(data.train)} questions: a step would hold a question twice", file=sys.stderr)
        return 2
    model_dir = resolve_model_dir(cfg)
    if cfg.trainer.grow_from and ckpt is None:
        from neuromas_dist.driver.trainer import check_grow_from
        from neuromas_dist.rollout.adapters import IncompatibleAdapters

        try:
            check_grow_from(cfg, model_dir)
        except (IncompatibleAdapters, FileNotFoundError) as exc:
            print(f"growth error: {exc}", file=sys.stderr)
            return 2
    say(f"run dir {run_dir} | model {model_dir} | topology {list(cfg.topology.widths)} | "
        f"{len(data.train)} train / {len(data.eval)} eval questions | {init_ray(cfg)['ray']}")
    # --resume with no checkpoint starts over: step -1 forgets every row and output of the attempt
    after = -1 if resume and ckpt is None else _ckpt_step(ckpt)
    try:
        trackers = tracker_list(cfg, run_dir)
    except TrackerError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    log = MetricsLogger(run_dir, cfg.logging.tensorboard, resume_step=after, trackers=trackers)
    trainer = Trainer(cfg, run_dir, model_dir, data, log, say)
    if after == -1:
        trainer.forget_after(-1)
    stop = StopFlag()
    try:
        return _train(cfg, trainer, ckpt, stop)
    finally:
        stop.restore()
        log.close(trackers=True)
        trainer.shutdown()


def _ckpt_step(ckpt: Path | None) -> int | None:
    return int(ckpt.name.split("_")[-1]) if ckpt is not None else None


def _train(cfg: Config, trainer: Any, ckpt: Path | None, stop: StopFlag) -> int:
    from ray.exceptions import RayActorError, RayTaskError

    from neuromas_dist.driver.rollouts import WorkersExhausted
    from neuromas_dist.driver.trainer import LearnerLost

    try:
        _setup(cfg, trainer, ckpt)
        _loop(cfg, trainer, stop)
        if stop.requested:
            path = trainer.checkpoint()
            say(f"stopped at step {trainer.step}; checkpoint {path}; continue with --resume {trainer.run_dir}")
            return EXIT_INTERRUPTED
        _finish(cfg, trainer)
    except (RayActorError, RayTaskError, WorkersExhausted, LearnerLost) as exc:
        return _failed(trainer, exc)
    except KeyboardInterrupt:
        say(f"aborted at step {trainer.step}; resume from the last checkpoint with --resume {trainer.run_dir}")
        return EXIT_INTERRUPTED
    return 0


def _setup(cfg: Config, trainer: Any, ckpt: Path | None) -> None:
    if ckpt is not None:
        trainer.resume(ckpt)
        say(f"resumed from {ckpt} at step {trainer.step}")
        return
    init = trainer.grow_from_run(Path(cfg.trainer.grow_from)) if cfg.trainer.grow_from else None
    trainer.start(init)
    grown = {}
    if init is not None:
        trainer.save_adapters("adapters_start")  # what the grown graph really started from
        grown = {"grown_from": cfg.trainer.grow_from, "growth_mode": cfg.trainer.growth_mode,
                 "growth_gate": trainer.gate.to_dict() if trainer.gate else None}
    before = trainer.evaluate()
    trainer.log.log(0, before)
    _write_summary(trainer, {**_eval_summary(before, "before"), **grown})
    if cfg.trainer.checkpoint_every:
        trainer.checkpoint()  # a learner rank lost before the first periodic checkpoint replays from here
    say(f"step 0: held-out {_eval_line(before)}")


def _loop(cfg: Config, trainer: Any, stop: StopFlag) -> None:
    from tqdm import tqdm

    from neuromas_dist.driver.trainer import LearnerLost

    t = cfg.trainer
    growth = {g.at_step: g.widths for g in t.growth}
    bar = tqdm(total=t.steps, initial=trainer.step, disable=not cfg.logging.progress, unit="step",
               dynamic_ncols=True, file=sys.stdout)
    while trainer.step < t.steps and not stop.requested:
        try:
            row = _step(cfg, trainer, growth)
        except LearnerLost as exc:
            if trainer.learner_restarts >= cfg.faults.max_learner_restarts:
                raise LearnerLost(f"{exc} (faults.max_learner_restarts={cfg.faults.max_learner_restarts} used up)") from exc
            ckpt = trainer.recover_learner(str(exc))
            trainer.log.rewind(trainer.step)
            say(f"{exc}; learner rebuilt from {ckpt} ({trainer.learner_restarts}/{cfg.faults.max_learner_restarts}); "
                f"replaying from step {trainer.step + 1}")
            bar.reset(total=t.steps)
            bar.update(trainer.step)
            continue
        bar.update(1)
        bar.set_postfix(reward=f"{row.get('rollout/reward_mean', float('nan')):.3f}",
                        acc=f"{row['eval/accuracy']:.3f}" if "eval/accuracy" in row else "-")
    bar.close()


def _step(cfg: Config, trainer: Any, growth: dict[int, Any]) -> dict[str, Any]:
    """One step: grow if due, train, evaluate if due, log, checkpoint if due. The row is
    logged before the checkpoint, so a checkpoint never stands for an unlogged step."""
    t = cfg.trainer
    target = max((s for s in growth if s <= trainer.step + 1), default=None)
    if target is not None and tuple(growth[target]) != trainer.widths:
        trainer.grow(tuple(growth[target]))
    row = trainer.train_step()
    if trainer.deferred_failure is None and (trainer.step == t.steps or (t.eval_every and trainer.step % t.eval_every == 0)):
        row.update(trainer.evaluate())  # the last step always evaluates: the "after" number
    trainer.log.log(trainer.step, row)
    trainer.unlogged_update = False
    if trainer.deferred_failure is not None:
        raise trainer.deferred_failure  # _failed checkpoints this logged step
    if t.checkpoint_every and trainer.step % t.checkpoint_every == 0:
        trainer.checkpoint()
    return row


def _finish(cfg: Config, trainer: Any) -> None:
    from neuromas_dist.driver.plots import plot_run

    evals = [r for r in read_metrics(trainer.log.path) if "eval/accuracy" in r]
    final = evals[-1] if evals and evals[-1]["step"] == trainer.step else trainer.evaluate()
    path = trainer.checkpoint()
    adapters = trainer.save_adapters()
    report = trainer.report()
    summary = _write_summary(trainer, {
        **_eval_summary(final, "after"), **_gain_summary(report), "eval_questions": final["eval/questions"],
        "steps": trainer.step, "topology": list(trainer.widths), "checkpoint": str(path),
        "adapters": {k: str(v) for k, v in adapters.items()}, **_fault_summary(trainer),
    })
    if cfg.logging.plots:
        plot_run(trainer.run_dir)
    gain = summary.get("eval_accuracy_gain")
    say(f"done after {trainer.step} steps: held-out {_eval_line(final)} "
        f"(before: accuracy {summary.get('eval_accuracy_before', float('nan')):.3f}"
        + (f"; gain {gain:+.3f}, 95% CI [{summary['eval_accuracy_gain_ci'][0]:+.3f}, "
           f"{summary['eval_accuracy_gain_ci'][1]:+.3f}]" if gain is not None else "")
        + f"); report {trainer.run_dir / 'eval' / 'report.md'}")


def _fault_summary(trainer: Any) -> dict[str, Any]:
    """Restarts over the run, and what a checkpoint costs (the final one included)."""
    costs = trainer.checkpoint_costs
    return {"worker_restarts": trainer.pool.restarts, "learner_restarts": trainer.learner_restarts,
            "checkpoints": len(costs),
            "checkpoint_seconds_mean": sum(c["seconds"] for c in costs) / len(costs) if costs else None,
            "checkpoint_bytes": costs[-1]["bytes"] if costs else None}


def _gain_summary(report: dict[str, Any]) -> dict[str, Any]:
    """Paired before/after gain of greedy accuracy with its 95% interval, when known."""
    gain = report.get("gain", {}).get("greedy")
    if gain is None:
        return {}
    return {"eval_accuracy_gain": gain["mean"], "eval_accuracy_gain_ci": [gain["ci_lo"], gain["ci_hi"]],
            "eval_accuracy_ci_after": [report["accuracy"]["greedy"]["ci_lo"], report["accuracy"]["greedy"]["ci_hi"]],
            "eval_accuracy_ci_before": [report["before"]["greedy"]["ci_lo"], report["before"]["greedy"]["ci_hi"]]}


def _eval_summary(metrics: dict[str, Any], when: str) -> dict[str, float]:
    out = {f"eval_accuracy_{when}": metrics["eval/accuracy"]}
    if "eval/sampled_accuracy" in metrics:
        out[f"eval_sampled_accuracy_{when}"] = metrics["eval/sampled_accuracy"]
    return out


def _eval_line(metrics: dict[str, Any]) -> str:
    line = f"accuracy {metrics['eval/accuracy']:.3f} (greedy)"
    if "eval/sampled_accuracy" in metrics:
        line += f", {metrics['eval/sampled_accuracy']:.3f} (sampled)"
    return line + f" on {metrics['eval/questions']} questions"


def _write_summary(trainer: Any, update: dict[str, Any]) -> dict[str, Any]:
    path = trainer.run_dir / "summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else {}
    summary.update(update)
    path.write_text(json.dumps(summary, indent=2))
    return summary


def _failed(trainer: Any, exc: Exception) -> int:
    """An actor died: checkpoint what the learner still holds, one line, exit 1."""
    # A RayTaskError's own text is the remote traceback; its .cause is the exception raised.
    root = getattr(exc, "cause", None) or exc
    text = str(root).strip()
    cause = f"{type(root).__name__}: {text.splitlines()[-1][:300] if text else ''}"
    where = "no checkpoint (the learner is gone too); the last periodic one stands"
    if trainer.unlogged_update:
        # The learner already applied a step whose row was never logged: a checkpoint now
        # would stand for a step the run has no record of. Resume redoes it instead.
        where = f"no checkpoint (step {trainer.step}'s update is not logged); the last periodic one stands"
    else:
        try:
            where = f"checkpoint {trainer.checkpoint()}"
        except Exception:  # noqa: BLE001 - the learner may be what died
            pass
    say(f"failed at step {trainer.step + 1}: {cause}; {where}; "
        f"continue with --resume {trainer.run_dir}")
    return EXIT_FAILED
