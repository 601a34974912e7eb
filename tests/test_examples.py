"""The README's "your own model, data, reward and graph" config, trained for two steps on
the real stack: a JSONL data set with its own field names, a reward function named by
config (imported where the rollout scores), a graph with a skip edge."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pinned import check_pinned
from small_run import SMALL_RUN, WARM

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.ray, pytest.mark.vllm]


def test_own_data_reward_and_graph_train_for_two_steps(ray_local, tiny_model_dir, tmp_path, monkeypatch):
    """With the example's reward swapped for one that raises on questions about stamps (a
    planted fault): each step's row in metrics.jsonl counts exactly the samples it scored 0."""
    from neuromas_dist.config import load_config
    from neuromas_dist.driver.run import run_training
    from neuromas_dist.run_dir import run_config

    monkeypatch.chdir(REPO)  # the config's paths are relative to the repository root
    run_dir = tmp_path / "own"
    small = [o for o in SMALL_RUN if not o.startswith(("data.", "sampling.max_new_tokens"))]
    cfg = load_config(REPO / "examples" / "own" / "config.yaml",
                      [*small, WARM, f"logging.run_dir={run_dir}", "trainer.steps=2", "trainer.eval_every=0",
                       "trainer.final_ablation=false", "trainer.eval_samples=0",
                       "data.reward_fn=tests.tasks.reward_plugins:raises_on_stamps"])
    assert run_training(cfg) == 0
    assert run_config(run_dir).topology.edges == ("L0N0->L1N0", "L0N1->L1N0", "L1N0->L2N0", "L0N0->L2N0")
    rows = pq.read_table(run_dir / "trajectories").to_pylist()
    assert {r["node"] for r in rows} == {"L0N0", "L0N1", "L1N0", "L2N0"}
    assert {r["reward"] for r in rows} <= {0.0, 0.5, 1.0}  # close_enough's values
    sink = [r for r in rows if r["node"] == "L2N0"]
    assert sink and all("apples" in r["question"] or "books" in r["question"] or "coins" in r["question"]
                        or "stamps" in r["question"] for r in sink)
    metrics = {m["step"]: m for m in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}
    for step in (1, 2):
        stamps = [r for r in sink if r["step"] == step and "stamps" in r["question"]]
        assert all(r["reward"] == 0.0 for r in stamps)
        assert metrics[step].get("rollout/flag_reward_fn_error", 0) == len(stamps), step
    assert any("stamps" in r["question"] for r in sink), "no question about stamps was drawn: nothing was planted"
    check_pinned("examples_own_run", {f"step{s}:{k}": metrics[s][k] for s in (1, 2) for k in
                                      ("rollout/reward_mean", "rollout/response_tokens", "rollout/flag_reward_fn_error")
                                      if k in metrics[s]}, tiny_model_dir)


@pytest.mark.parametrize("transport,entry,mode", [("inproc", "examples.programs.solver_verifier:solve", "sync"),
                                                  ("http", "examples.programs.solver_verifier_http:solve", "async")])
def test_an_agent_program_trains_for_two_steps(ray_local, tiny_model_dir, tmp_path, monkeypatch, transport, entry,
                                               mode):
    """The solver/verifier program through the whole stack (Ray workers, DeepSpeed learner):
    every call a row, each agent its own adapter, every flag counted in metrics.jsonl; in
    process and synchronous, and over HTTP with the next rollout overlapping the update."""
    from neuromas_dist.config import load_config
    from neuromas_dist.driver.run import run_training

    monkeypatch.chdir(REPO)
    run_dir = tmp_path / transport
    cfg = load_config(REPO / "examples" / "programs" / "solver_verifier.yaml",
                      [*SMALL_RUN, WARM, f"logging.run_dir={run_dir}", "trainer.steps=2", "trainer.eval_every=0",
                       "trainer.eval_samples=0", f"program.transport={transport}", f"program.entry={entry}",
                       f"trainer.final_ablation={transport == 'inproc'}", f"trainer.mode={mode}"])
    assert run_training(cfg) == 0
    if transport == "inproc":
        check_report_and_generate(run_dir, tmp_path)
    rows = pq.read_table(run_dir / "trajectories").to_pylist()
    assert {r["node"] for r in rows} == {"solver", "verifier"}
    assert sorted(p.name for p in (run_dir / "adapters").iterdir() if p.is_dir()) == ["solver", "verifier"]
    samples: dict = {}
    for r in rows:
        samples.setdefault((r["step"], r["sample_id"]), []).append((r["node"], r["call_index"]))
    assert len(samples) == 2 * 4 * 2  # steps x questions x samples, each exactly once
    for calls in samples.values():  # solver, verifier[, solver again]: each agent's calls numbered 0, 1, ...
        assert calls[:2] == [("solver", 0), ("verifier", 0)] and calls[2:] in ([], [("solver", 1)])
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if "rollout/samples" in m]
    assert [m["rollout/samples"] for m in steps] == [8, 8]
    assert all(2.0 <= m["rollout/calls_per_sample"] <= 3.0 for m in steps)
    assert all(m["node/verifier/response_len_mean"] <= 4 for m in steps)  # the agent's own max_new_tokens
    # the learner scores the verifier's rows at its own temperature (0.7): else a gap of ~0.1 nats
    # (async: a step's rows may all be stale, re-scored under the version that sampled them)
    learner = [m for m in metrics if "node/verifier/logprob_gap" in m]
    gaps = [m["node/verifier/logprob_gap"] for m in learner]  # NaN (no on-policy token) is written as null
    gaps = [m.get("node/verifier/logprob_gap_stale") if g is None or math.isnan(g) else g
            for g, m in zip(gaps, learner)]
    assert len(gaps) == 2 and all(g is not None and g < 1e-3 for g in gaps), gaps
    assert not any(k.startswith("rollout/flag_program") and k != "rollout/flag_program_sampling_ignored" and v
                   for m in steps for k, v in m.items())


def check_report_and_generate(run_dir, tmp_path):
    """A program's run as evaluate and generate read it: the report ablates each agent, and
    generate's greedy answers are the final evaluation's."""
    from neuromas_dist import generate

    report = json.loads((run_dir / "eval" / "report.json").read_text())
    assert report["nodes"] == ["solver", "verifier"] and set(report["ablation"]) == {"solver", "verifier"}
    assert report["questions"] == 8
    final = pq.read_table(run_dir / "eval" / "trajectories" / "final_greedy.parquet").to_pylist()
    want = {r["question"]: r["answer_text"] for r in final}
    src = tmp_path / "questions.jsonl"
    src.write_text("".join(json.dumps({"question": q}) + "\n" for q in want))
    out = tmp_path / "answers.jsonl"
    assert generate.main([str(run_dir), "--input", str(src), "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["question"]: r["answer"] for r in rows} == want
    assert all(r["node_solver"] and "node_verifier" in r for r in rows)
    check_served(run_dir, next(iter(want)), want)


def check_served(run_dir, question, want):
    """The program served behind the OpenAI API: the answer is the program's, and
    ``neuromas.calls`` lists every call (the solver, the verifier, the solver again)."""
    from starlette.testclient import TestClient

    from neuromas_dist.serve.graph import ServedGraph
    from neuromas_dist.serve.openai_api import build_app

    with TestClient(build_app(ServedGraph(run_dir), "program")) as client:
        models = client.get("/v1/models").json()["data"][0]
        assert models["agents"] == ["solver", "verifier"]
        body = client.post("/v1/chat/completions", json={"model": "program", "messages": [
            {"role": "user", "content": question}]}).json()
    assert body["choices"][0]["message"]["content"] == want[question]  # greedy: the evaluation's answer
    calls = body["neuromas"]["calls"][0]
    assert [(c["agent"], c["call_index"]) for c in calls][:2] == [("solver", 0), ("verifier", 0)]
    assert body["usage"]["completion_tokens"] == sum(c["completion_tokens"] for c in calls)
