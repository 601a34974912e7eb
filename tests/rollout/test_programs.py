"""Agent programs on a real engine (the tiny model, one in-process vLLM engine for the module):
every call one row with its call index, reproducible seeds, the NeuroMAS graph written as a
program making the built-in executor's rows, the loopback endpoint making the in-process
client's rows, multi-turn prompts built from the sampled ids, and each bad program ending
only its own sample with its flag."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections import defaultdict

import program_cases
import pytest

from neuromas_dist.config import load_config
from neuromas_dist.graph.topology import Topology
from neuromas_dist.programs.entry import ProgramError, load_program
from neuromas_dist.rollout.calls import EngineCalls, SamplingPolicy
from neuromas_dist.rollout.executor import SampleSpec
from neuromas_dist.rollout.rows import score_sample
from neuromas_dist.tasks import make_synthetic

pytestmark = pytest.mark.vllm

AGENTS = ["solver", "verifier", "coder", "L0N0", "L0N1", "L1N0"]  # programs' agents and the default graph's nodes
CASES = "program_cases:"


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def run(loop, coro, timeout: float = 300):
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)


@pytest.fixture(scope="module")
def worker(loop, tiny_model_dir):
    """One engine serving five agents' adapters (random B: every agent samples differently)."""
    from neuromas_dist.rollout.adapters import random_b_adapter_set, zero_adapter_set
    from neuromas_dist.rollout.worker import RolloutWorker

    cfg = load_config(None, ["program.entry=examples.programs.solver_verifier:solve", f"program.agents={AGENTS}",
                             "model.max_model_len=512", "model.dtype=float32", "sampling.max_new_tokens=12",
                             "rollout.max_num_seqs=64", "program.timeout_s=60"])
    w = RolloutWorker(cfg, model_dir=str(tiny_model_dir))
    run(loop, w.start())
    run(loop, w.load_adapters(random_b_adapter_set(zero_adapter_set(tiny_model_dir, AGENTS, cfg.lora), 1,
                                                   scale=0.3, seed=7)))
    yield w
    run(loop, w.shutdown())


def policy(cfg) -> SamplingPolicy:
    s = cfg.sampling
    return SamplingPolicy(s.temperature, s.top_p, s.max_new_tokens, cfg.trainer.seed)


def run_program(loop, worker, entry: str, examples, *, step: int = 3, samples: int = 2, transport: str = "inproc",
                **program):
    """Each example ``samples`` times through ``entry``: [(result, rows, record)] in spec order."""
    from neuromas_dist.rollout.program.http import LoopbackEndpoint
    from neuromas_dist.rollout.program.runtime import ProgramExecutor

    cfg = dataclasses.replace(worker.cfg, program=dataclasses.replace(worker.cfg.program, entry=entry,
                                                                      transport=transport, **program))
    endpoint = LoopbackEndpoint() if transport == "http" else None
    executor = ProgramExecutor(EngineCalls(worker.engine, worker.tokenizer, cfg.model.max_model_len),
                               load_program(entry, transport), cfg, endpoint)
    return run(loop, _collect(worker, executor, [SampleSpec(step, e, k) for e in examples for k in range(samples)],
                              policy(cfg), endpoint))


async def _collect(worker, executor, specs, pol, endpoint=None):
    try:
        results = [r async for r in executor.stream(specs, worker.adapters.acquire, worker.adapters.release, pol)]
    finally:
        if endpoint is not None:
            await endpoint.close()
    results.sort(key=lambda r: (str(r.spec.example.id), r.spec.sample_index))
    out = []
    for result in results:
        rows, record = await score_sample(worker.task, result, executor.positions, 0)
        out.append((result, rows, record))
    return out


def essence(rows):
    """What must match between two runs of a sample: each call, token for token."""
    return [(r.node, r.call_index, list(r.prompt_ids), list(r.response_ids), r.text, r.finish_reason,
             r.answer_text, r.reward) for r in rows]


def assert_same_rows(a, b):
    """The same calls token for token, and logprobs equal to float noise: vLLM's CPU kernels
    are not batch-invariant, and when a request shares its last decode steps with other
    company (the engine stepping before or after another request arrives) its logprobs move
    by ~1e-6 while every drawn token stays the same."""
    assert [essence(rows) for _, rows, _ in a] == [essence(rows) for _, rows, _ in b]
    for (_, rows_a, _), (_, rows_b, _) in zip(a, b):
        for x, y in zip(rows_a, rows_b):
            assert list(x.logprobs) == pytest.approx(list(y.logprobs), rel=0, abs=1e-5), (x.node, x.call_index)


@pytest.fixture(scope="module")
def questions():
    return make_synthetic("hier", "eval", 8, 0)


def test_every_call_is_one_row_with_its_call_index(loop, worker, questions):
    program_cases.CALLS.clear()
    out = run_program(loop, worker, CASES + "loops", questions, samples=1)
    assert {program_cases.rounds_of(q.question) for q in questions} == {0, 1, 2}, "0, 1 and 4 calls occur"
    for result, rows, record in out:
        question = result.spec.example.question
        assert [r.node for r in rows] == program_cases.CALLS.get(question, [])  # every call, once, in order
        by_agent = defaultdict(list)
        for r in rows:
            by_agent[r.node].append(r.call_index)
            assert len(r.response_ids) == len(r.logprobs) > 0 and r.sample_id == f"{result.spec.example.id}#0"
            assert r.layer == 0 and r.node_index == AGENTS.index(r.node)
            assert question in worker.tokenizer.decode(r.prompt_ids)  # the chat the engine saw, as ids
        assert all(ix == list(range(len(ix))) for ix in by_agent.values())
        for r in (r for r in rows if r.node == "verifier"):
            assert len(r.response_ids) <= 3 and "\n" not in r.text  # max_tokens and stop of that call
        assert record["samples"] == 1 and all(r.reward == record["reward"] for r in rows)
        if not rows:  # no call: no row, but the sample is scored and counted
            assert result.answer == "The answer is 0."


def test_a_rerun_of_a_step_makes_the_same_rows_and_another_step_does_not(loop, worker, questions):
    a = run_program(loop, worker, "examples.programs.solver_verifier:solve", questions[:3], step=5)
    b = run_program(loop, worker, "examples.programs.solver_verifier:solve", questions[:3], step=5)
    c = run_program(loop, worker, "examples.programs.solver_verifier:solve", questions[:3], step=6)
    assert_same_rows(a, b)
    assert [essence(rows) for _, rows, _ in a] != [essence(rows) for _, rows, _ in c]


def test_a_continued_conversation_is_built_from_the_sampled_ids(loop, worker, questions):
    """The solver's second call continues its first: its prompt starts with the first call's
    prompt ids and the response ids as sampled, not a re-rendering of the reply's text."""
    out = run_program(loop, worker, "examples.programs.solver_verifier:solve", questions, step=7)
    continued = 0
    for _result, rows, record in out:
        solver = [r for r in rows if r.node == "solver"]
        if len(solver) == 2:
            first, second = solver
            assert list(second.prompt_ids[:len(first.prompt_ids) + len(first.response_ids)]) == \
                list(first.prompt_ids) + list(first.response_ids)
            continued += 1
        assert "rollout/flag_program_retokenized" not in record
    assert continued > 0, "the verifier never sent the solver back: nothing was checked"


def test_the_neuromas_graph_as_a_program_makes_the_built_in_executors_rows(loop, worker, questions):
    from neuromas_dist.config import Config
    from neuromas_dist.rollout.executor import GraphExecutor
    from neuromas_dist.tasks import synthetic_task

    default = Config()
    graph = GraphExecutor(EngineCalls(worker.engine, worker.tokenizer, worker.cfg.model.max_model_len),
                          Topology.of_config(default.topology.widths),
                          answer_format=synthetic_task("hier").answer_format,
                          upstream_token_budget=default.topology.upstream_token_budget)
    # One step at a time on both sides, so the engine batches the same requests together: on
    # this vLLM CPU build a seeded request's draws were seen to change with its batch's
    # company (both steps' 32 samples at once vs 16 per step: the same prompt ids and first
    # logprobs, another token at the third draw), so "the same rows" needs the same batches.
    specs = [SampleSpec(step, e, k) for step in (1, 2) for e in questions for k in range(2)]
    built_in = [o for step in (1, 2) for o in run(loop, _collect(
        worker, graph, [s for s in specs if s.step == step], policy(worker.cfg)))]
    program = [o for step in (1, 2) for o in run_program(loop, worker, "examples.programs.neuromas:solve", questions,
                                                         step=step)]
    assert sum(len(rows) for _, rows, _ in built_in) == 3 * len(specs)
    assert not any(r.prompt_truncated for _, rows, _ in built_in for r in rows)  # the program cuts nothing either
    assert_same_rows(program, built_in)


def test_a_tool_runs_between_an_agents_calls(loop, worker):
    """examples/programs/coder.py runs the reply against the docstring's examples in the code
    sandbox; the tiny model's reply fails them, so the coder is called again and told why."""
    from neuromas_dist.tasks.base import Example
    from neuromas_dist.tasks.benchmarks.humaneval import QUESTION

    prompt = 'def add(a: int, b: int) -> int:\n    """Sum.\n    >>> add(2, 3)\n    5\n    """\n'
    out = run_program(loop, worker, "examples.programs.coder:solve", [Example("code-0", QUESTION.format(prompt=prompt),
                                                                                "")])
    for result, rows, _ in out:
        assert [(r.node, r.call_index) for r in rows] == [("coder", 0), ("coder", 1)]
        second = worker.tokenizer.decode(rows[1].prompt_ids)
        assert "Running the docstring's examples on it: " in second and "Fix the function." in second
        assert list(rows[1].prompt_ids[:len(rows[0].prompt_ids)]) == list(rows[0].prompt_ids)
        assert result.answer == rows[1].text


@pytest.mark.parametrize("inproc,http", [("examples.programs.solver_verifier:solve",
                                          "examples.programs.solver_verifier_http:solve"),
                                         (CASES + "solver_only", CASES + "sync_over_http")])
def test_the_loopback_endpoint_makes_the_in_process_clients_rows(loop, worker, questions, inproc, http):
    """Unmodified OpenAI code (``openai.AsyncOpenAI``, or the sync client in a thread) over
    HTTP: the same calls, the same rows."""
    a = run_program(loop, worker, inproc, questions[:4], step=9)
    b = run_program(loop, worker, http, questions[:4], step=9, transport="http")
    assert [rec for _, _, rec in b] == [rec for _, _, rec in a]
    assert sum(len(rows) for _, rows, _ in a) >= 8
    assert_same_rows(a, b)


@pytest.mark.parametrize("case,flag,calls,program", [
    ("raises", "error", 1, {}),
    ("returns_a_number", "return", 1, {}),
    ("unknown_agent_caught", "unknown_agent", 0, {}),  # caught by the program: still its fault
    ("endless", "max_calls", 3, {"max_calls": 3}),
    ("sleeps", "timeout", 1, {"timeout_s": 2.0}),
    ("bad_messages", "bad_request", 0, {}),
])
def test_a_bad_program_scores_its_sample_0_with_its_flag(loop, worker, questions, case, flag, calls, program):
    out = run_program(loop, worker, CASES + case, questions[:2], **program)
    for result, rows, record in out:
        assert record[f"rollout/flag_program_{flag}"] == 1 and record["reward"] == 0.0
        assert len(rows) == calls and all(r.reward == 0.0 and r.parsed_answer is None for r in rows)
        assert result.answer == ""
    assert worker.engine.get_num_unfinished_requests() == 0  # a timed-out program's calls were aborted
    good = run_program(loop, worker, CASES + "solver_only", questions[:1], samples=1)
    assert len(good[0][1]) == 1 and not any(k.startswith("rollout/flag_program") for k in good[0][2])


@pytest.mark.parametrize("entry,transport,says", [
    ("no_such_module_x:solve", "inproc", "cannot import no_such_module_x"),
    ("program_cases:missing", "inproc", "has no function 'missing'"),
    ("program_cases:not_a_program", "inproc", "must take (question, client)"),
    ("program_cases:sync_over_http", "inproc", "transport inproc needs `async def"),
])
def test_a_program_that_cannot_run_is_one_line(entry, transport, says):
    with pytest.raises(ProgramError) as err:
        load_program(entry, transport)
    assert says in str(err.value) and f"program.entry={entry}" in str(err.value) and "\n" not in str(err.value)
    assert load_program("program_cases:sync_over_http", "http").is_async is False
