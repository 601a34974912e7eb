"""`python -m benchmarks.chaos`: a run that loses processes and nothing else.

Two launches of the same config (the embedded default, ``trainer.steps=20``), one after
the other: undisturbed, then with faults injected from outside as real signals to the
launcher's own processes, each landing mid-step at a seeded random step:

* three rollout-worker deaths: SIGKILL of the worker's actor process, SIGKILL of its vLLM
  EngineCore process, and SIGKILL of the actor again;
* one learner death: SIGKILL of the learner rank's process.

It then reads the chaos run back and reports, as JSON in ``benchmarks/results/chaos.json``:
the trajectory rows against steps x questions x samples x nodes (must be equal, each
(step, sample, node) once), the steps lost (logged steps missing or twice: must be 0), the
restarts the run counted, and the wall-time overhead against the undisturbed run.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from neuromas_dist.testing.faults import audit, descendants, kill_tree, launch, steps_logged

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "benchmarks" / "results" / "chaos.json"
FAULTS = (("worker actor", "RolloutWorker"), ("worker engine", "VLLM::EngineCore"),
          ("worker actor", "RolloutWorker"), ("learner rank", "LearnerRank"))


# ----------------------------------------------------------------- the benchmark

def overrides(steps: int) -> list[str]:
    # The default config; no intermediate evaluation or final ablation (they cost the same
    # in both runs and would only dilute the overhead); a checkpoint every 5 steps.
    return [f"trainer.steps={steps}", "trainer.eval_every=0", "trainer.final_ablation=false",
            "trainer.checkpoint_every=5", "logging.progress=false", "logging.plots=false"]


def plan(steps: int, seed: int) -> list[tuple[int, str, str]]:
    """(step, what, process title) of each fault; distinct steps, none in the first two."""
    at = sorted(random.Random(seed).sample(range(3, steps), len(FAULTS)))
    order = list(FAULTS)
    random.Random(seed + 1).shuffle(order)
    return [(s, what, title) for s, (what, title) in zip(at, order)]


def run(run_dir: Path, args: list[str], faults: list[tuple[int, str, str]], seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    t0 = time.perf_counter()
    proc = launch("--run-dir", str(run_dir), *args, cwd=REPO, log=run_dir.with_suffix(".log"))
    injected = []
    try:
        for step, what, title in faults:
            while step - 1 not in steps_logged(run_dir):  # step-1 is done: step is under way
                if proc.poll() is not None:
                    raise SystemExit(f"{run_dir}: the run exited with {proc.returncode} before step {step}")
                time.sleep(0.2)
            time.sleep(rng.uniform(0.5, 3.0))
            victims = descendants(proc, title)
            if not victims:
                raise SystemExit(f"{run_dir}: no {title} process to kill at step {step}")
            victims[0].kill()
            injected.append({"step": step, "what": what, "signal": "SIGKILL", "pid": victims[0].pid})
            print(f"[chaos] step {step}: SIGKILL {what} (pid {victims[0].pid})", flush=True)
        code = proc.wait(timeout=3600)
    finally:
        if proc.poll() is None:
            kill_tree(proc)
    return {"exit_code": code, "wall_s": time.perf_counter() - t0, "injected": injected}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", default="runs/chaos", help="where the two run directories go")
    ap.add_argument("--out", default=str(RESULT))
    args = ap.parse_args(argv)
    root = Path(args.runs)
    root.mkdir(parents=True, exist_ok=True)
    faults = plan(args.steps, args.seed)
    result: dict[str, Any] = {"command": " ".join(["python -m benchmarks.chaos", *(argv or sys.argv[1:])]),
                              "overrides": overrides(args.steps), "plan": faults}
    for name, injected in (("undisturbed", []), ("chaos", faults)):
        run_dir = root / name
        if run_dir.exists():
            shutil.rmtree(run_dir)
        print(f"[chaos] {name} run -> {run_dir}", flush=True)
        result[name] = {**run(run_dir, overrides(args.steps), injected, args.seed), **audit(run_dir)}
    c, u = result["chaos"], result["undisturbed"]
    result["overhead"] = c["wall_s"] / u["wall_s"]
    result["ok"] = (c["exit_code"] == 0 and c["rows"] == c["rows_expected"] and c["rows_duplicated"] == 0
                    and c["steps_lost"] == 0)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"[chaos] rows {c['rows']}/{c['rows_expected']} (duplicated {c['rows_duplicated']}), steps lost "
          f"{c['steps_lost']}, worker restarts {c['worker_restarts']}, learner restarts {c['learner_restarts']}, "
          f"wall {c['wall_s']:.0f} s vs {u['wall_s']:.0f} s undisturbed ({result['overhead']:.2f}x) -> {args.out}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
