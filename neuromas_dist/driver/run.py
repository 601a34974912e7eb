"""``run_training``: the run directory and the training loop, from step 0 to how a run stops.

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

import signal
import sys
import time
from pathlib import Path
from typing import Any

from ray.exceptions import RayActorError, RayTaskError
from tqdm import tqdm

from neuromas_dist.analysis.run_eval import describe, run_shape
from neuromas_dist.config import Config, dump_yaml
from neuromas_dist.driver.checkpoints import checkpoint_step, latest_checkpoint
from neuromas_dist.driver.cluster import init_ray
from neuromas_dist.driver.growth import check_grow_from, scheduled_widths
from neuromas_dist.driver.metrics import MetricsLogger
from neuromas_dist.driver.plots import plot_run
from neuromas_dist.driver.rollouts import WorkersExhausted, short_error
from neuromas_dist.driver.summary import (
    done_line,
    eval_line,
    eval_summary,
    fault_summary,
    gain_summary,
    write_summary,
)
from neuromas_dist.driver.trackers import TrackerError
from neuromas_dist.driver.trackers import from_config as tracker_list
from neuromas_dist.driver.trainer import LearnerLost, StepOutcome, Trainer
from neuromas_dist.programs.entry import ProgramError, load_program
from neuromas_dist.rollout.adapters import IncompatibleAdapters
from neuromas_dist.rollout.worker import resolve_model_dir
from neuromas_dist.run_dir import read_metrics
from neuromas_dist.tasks.data import DataError, TaskData, load_task_data
from neuromas_dist.tasks.sandbox import IsolationError

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
    """Train ``cfg`` to its last step (or resume its run directory); returns the exit code."""
    run_dir = prepare_run_dir(cfg, resume)
    ckpt = latest_checkpoint(run_dir) if resume else None
    if resume and ckpt is None:
        say(f"--resume {run_dir}: no checkpoint there yet; starting from step 0")
    data = _task_data(cfg)
    if data is None or not _program_loads(cfg):
        return 2
    isolation = data.task.check_environment()  # probed once per process: _task_data asked already
    if isolation is not None:
        write_summary(run_dir, {"code_checks": isolation.record()})
    model_dir = resolve_model_dir(cfg)  # the tiny model is built here on a machine's first run
    if cfg.trainer.grow_from and ckpt is None and not _grow_from_fits(cfg, model_dir):
        return 2
    say(f"run dir {run_dir} | model {model_dir} | {describe(run_shape(cfg, cfg.topology.widths))} | "
        f"{len(data.train)} train / {len(data.eval)} eval questions | {init_ray(cfg)['ray']}")
    # --resume with no checkpoint starts over: step -1 forgets every row and output of the attempt
    after = -1 if resume and ckpt is None else checkpoint_step(ckpt)
    try:
        trackers = tracker_list(cfg, run_dir)
    except TrackerError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    log = MetricsLogger(run_dir, cfg.logging.tensorboard, resume_step=after, trackers=trackers)
    trainer = Trainer(cfg, run_dir, model_dir, data, say)
    if after == -1:
        trainer.forget_after(-1)
    stop = StopFlag()
    try:
        return TrainingLoop(cfg, trainer, log, stop).run(ckpt)
    finally:
        stop.restore()
        log.close(trackers=True)
        trainer.shutdown()


def _task_data(cfg: Config) -> TaskData | None:
    """The task's data; None (after one line on stderr) when it cannot train."""
    try:
        data = load_task_data(cfg.data)
    except DataError as exc:
        print(f"data error: {exc}", file=sys.stderr)
        return None
    if len(data.train) < cfg.trainer.questions_per_step:
        print(f"data error: trainer.questions_per_step={cfg.trainer.questions_per_step} but the training split has "
              f"{len(data.train)} questions: a step would hold a question twice", file=sys.stderr)
        return None
    try:  # a code task: can this machine isolate its checks as data.sandbox.require asks?
        isolation = data.task.check_environment()
    except IsolationError as exc:
        print(f"sandbox error: {exc}", file=sys.stderr)
        return None
    if isolation is not None:
        say(isolation.describe())
    return data


def _program_loads(cfg: Config) -> bool:
    """Does ``program.entry`` import and take (question, client)? (One line if not.) Every
    rollout worker loads it again; this answers before Ray starts."""
    if not cfg.program.entry:
        return True
    try:
        program = load_program(cfg.program.entry, cfg.program.transport)
    except ProgramError as exc:
        print(f"program error: {exc}", file=sys.stderr)
        return False
    say(f"program {program.entry} ({cfg.program.transport}) with agents {', '.join(cfg.program.agents)}")
    return True


def _grow_from_fits(cfg: Config, model_dir: str) -> bool:
    """Do ``trainer.grow_from``'s adapters fit this model and LoRA config? (One line if not.)"""
    try:
        check_grow_from(cfg, model_dir)
    except (IncompatibleAdapters, FileNotFoundError) as exc:
        print(f"growth error: {exc}", file=sys.stderr)
        return False
    return True


class TrainingLoop:
    """The run from step 0 to its last: each step grows the graph if due, trains, evaluates
    if due, is logged, then checkpointed if due. A lost learner rank sends it back to the last
    checkpoint; lost workers past their budget, or Ctrl-C, end it with a checkpoint of the last
    logged step when the learner holds nothing newer."""

    def __init__(self, cfg: Config, trainer: Trainer, log: MetricsLogger, stop: StopFlag):
        self.cfg, self.trainer, self.log, self.stop = cfg, trainer, log, stop

    def run(self, ckpt: Path | None) -> int:
        trainer = self.trainer
        try:
            self._setup(ckpt)
            self._steps()
            if self.stop.requested:
                path = trainer.checkpoint()
                say(f"stopped at step {trainer.step}; checkpoint {path}; continue with --resume {trainer.run_dir}")
                return EXIT_INTERRUPTED
            self._finish()
        except (RayActorError, RayTaskError, WorkersExhausted, LearnerLost) as exc:
            return self._failed(exc)
        except KeyboardInterrupt:
            say(f"aborted at step {trainer.step}; resume from the last checkpoint with --resume {trainer.run_dir}")
            return EXIT_INTERRUPTED
        return 0

    def _setup(self, ckpt: Path | None) -> None:
        trainer, t = self.trainer, self.cfg.trainer
        if ckpt is not None:
            trainer.progress.logged = checkpoint_step(ckpt)  # before resume(): a failure inside it must not checkpoint
            trainer.resume(ckpt)
            say(f"resumed from {ckpt} at step {trainer.step}")
            return
        init = trainer.grow_from_run(Path(t.grow_from)) if t.grow_from else None
        trainer.start(init)
        grown = {}
        if init is not None:
            trainer.save_adapters("adapters_start")  # what the grown graph really started from
            grown = {"grown_from": t.grow_from, "growth_mode": t.growth_mode,
                     "growth_gate": trainer.gate.to_dict() if trainer.gate else None}
        before = trainer.evaluate()
        self.log.log(0, before)
        write_summary(trainer.run_dir, {**eval_summary(before, "before"), **grown})
        if t.checkpoint_every:
            trainer.checkpoint()  # a learner rank lost before the first periodic checkpoint replays from here
        say(f"step 0: held-out {eval_line(before)}")

    def _steps(self) -> None:
        t, trainer = self.cfg.trainer, self.trainer
        bar = tqdm(total=t.steps, initial=trainer.step, disable=not self.cfg.logging.progress, unit="step",
                   dynamic_ncols=True, file=sys.stdout)
        while trainer.step < t.steps and not self.stop.requested:
            try:
                row = self._step()
            except LearnerLost as exc:
                self._recover(exc)
                bar.reset(total=t.steps)
                bar.update(trainer.step)
                continue
            bar.update(1)
            bar.set_postfix(reward=f"{row.get('rollout/reward_mean', float('nan')):.3f}",
                            acc=f"{row['eval/accuracy']:.3f}" if "eval/accuracy" in row else "-")
        bar.close()

    def _step(self) -> dict[str, Any]:
        """One step; returns its logged row. The row is logged before the checkpoint, so a
        checkpoint never stands for an unlogged step."""
        t, trainer = self.cfg.trainer, self.trainer
        widths = scheduled_widths(self.cfg, trainer.step + 1)
        if widths is not None and widths != trainer.widths:
            trainer.grow(widths)
        outcome: StepOutcome = trainer.train_step()
        row = dict(outcome.metrics)
        if outcome.failure is None and (outcome.step == t.steps or (t.eval_every and outcome.step % t.eval_every == 0)):
            row.update(trainer.evaluate())  # the last step always evaluates: the "after" number
        self.log.log(outcome.step, row)
        trainer.progress.logged = outcome.step
        if outcome.failure is not None:
            raise outcome.failure  # _failed checkpoints this logged step
        if t.checkpoint_every and outcome.step % t.checkpoint_every == 0:
            trainer.checkpoint()
        return row

    def _recover(self, exc: LearnerLost) -> None:
        budget = self.cfg.faults.max_learner_restarts
        if self.trainer.learner_restarts >= budget:
            raise LearnerLost(f"{exc} (faults.max_learner_restarts={budget} used up)") from exc
        ckpt = self.trainer.recover_learner(str(exc))
        self.log.rewind(self.trainer.step)
        self.trainer.progress.logged = self.trainer.step
        say(f"{exc}; learner rebuilt from {ckpt} ({self.trainer.learner_restarts}/{budget}); "
            f"replaying from step {self.trainer.step + 1}")

    def _finish(self) -> None:
        trainer = self.trainer
        evals = [r for r in read_metrics(self.log.path) if "eval/accuracy" in r]
        final = evals[-1] if evals and evals[-1]["step"] == trainer.step else trainer.evaluate()
        path = trainer.checkpoint()
        adapters = trainer.save_adapters()
        report = trainer.report()
        summary = write_summary(trainer.run_dir, {
            **eval_summary(final, "after"), **gain_summary(report), "eval_questions": final["eval/questions"],
            "steps": trainer.step, "topology": list(trainer.widths), "checkpoint": str(path),
            "adapters": {k: str(v) for k, v in adapters.items()},
            **fault_summary({"worker_restarts": trainer.pool.restarts if trainer.pool else 0,
                             "learner_restarts": trainer.learner_restarts}, trainer.checkpoint_costs),
        })
        if self.cfg.logging.plots:
            plot_run(trainer.run_dir)
        say(done_line(trainer.step, final, summary, trainer.run_dir))

    def _failed(self, exc: Exception) -> int:
        """An actor died: checkpoint what the learner still holds, one line, exit 1."""
        trainer = self.trainer
        cause = short_error(exc, limit=300)
        where = "no checkpoint (the learner is gone too); the last periodic one stands"
        if why_not := trainer.progress.why_no_checkpoint():
            where = f"no checkpoint ({why_not}); the last periodic one stands"
        else:
            try:
                where = f"checkpoint {trainer.checkpoint()}"
            except Exception:  # noqa: BLE001 - the learner may be what died
                pass
        say(f"failed at step {trainer.step + 1}: {cause}; {where}; continue with --resume {trainer.run_dir}")
        return EXIT_FAILED
