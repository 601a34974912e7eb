"""Batch summaries: the sums a worker sends instead of rows add up to the step's metrics."""

from __future__ import annotations

import math

import pytest

from neuromas_dist.trajectories.schema import TRAJECTORY_SCHEMA, concat, make_row, to_record_batch
from neuromas_dist.trajectories.shards import split_by_owner
from neuromas_dist.trajectories.summary import StepTally, summarize

HIER = "Let x = (4 + 8) mod 10 and y = (3 * 3) mod 10. What is (x + y) mod 10?"


def _row(sample: str, node: str, reward: float, n_tokens: int, parsed, cut=False, version=3, text=""):
    qid, k = sample.split("#")
    return make_row(node, qid, int(k), step=1, prompt_ids=[1, 2], response_ids=[5] * n_tokens,
                    logprobs=[-0.5] * n_tokens, finish_reason="length" if cut else "stop", adapter_version=version,
                    answer_text="x", parsed_answer=parsed, reward=reward, latency_s=0.1, text=text, question=HIER,
                    gold_answer="1")


ROWS = [_row("q1#0", "L0N0", 1.0, 4, "1", text="x = (4 + 8) mod 10 = 2."), _row("q1#0", "L1N0", 1.0, 6, "1"),
        _row("q2#0", "L0N0", 0.0, 2, None, cut=True, version=2, text="x = (4 + 8) mod 10 = 3."),
        _row("q2#0", "L1N0", 0.0, 8, None, text="The answer is 1.")]


TRAJECTORY_EMPTY = TRAJECTORY_SCHEMA.empty_table()


def _metrics(*batches):
    tally = StepTally()
    for b in batches:
        tally.add(summarize(b))
    return tally.metrics()


def test_step_metrics_by_hand():
    m = _metrics(to_record_batch(ROWS))
    assert m["rollout/samples"] == 2
    assert m["rollout/reward_mean"] == 0.5
    assert m["rollout/unparsable_frac"] == 0.5
    assert m["rollout/response_tokens"] == 20
    assert m["rollout/cut_frac"] == 0.25 and m["rollout/calls_per_sample"] == 2.0
    assert m["rollout/adapter_version_min"] == 2
    assert m["node/L0N0/response_len_mean"] == 3.0 and m["node/L1N0/response_len_mean"] == 7.0
    assert m["node/L0N0/entropy"] == 0.5
    assert m["node/L0N0/carries_x"] == 0.5 and m["node/L0N0/carries_y"] == 0.0  # 2 is right, 3 is not
    assert m["node/L1N0/carries_answer"] == 0.5 and m["node/L0N0/carries_answer"] == 0.0
    assert not any(isinstance(v, float) and math.isnan(v) for v in m.values())


def test_summaries_of_pieces_add_up_to_the_whole_step():
    whole = _metrics(to_record_batch(ROWS))
    # a sample never spans batches: split between the two samples
    assert _metrics(to_record_batch(ROWS[:2]), to_record_batch(ROWS[2:])) == pytest.approx(whole, nan_ok=True)
    assert _metrics() == {"rollout/samples": 0}


def test_summary_names_samples_and_pieces():
    batch = to_record_batch([_row(f"q{k}#{s}", n, 1.0, 2, "1") for k in range(6) for s in range(2)
                             for n in ("L0N0", "L1N0")])
    pieces = split_by_owner(batch, 3)
    s = summarize(batch, pieces)
    assert s.sample_ids == tuple(f"q{k}#{i}" for k in range(6) for i in range(2))
    assert s.piece_rows == tuple(p.num_rows for p in pieces) and sum(s.piece_rows) == 24
    assert summarize(concat(pieces[:1])).sample_ids == tuple(dict.fromkeys(pieces[0].column("sample_id").to_pylist()))


def test_a_code_tasks_verdicts_are_step_metrics_counted_once_per_sample():
    """The sink's parsed answer of a code task is the sandbox's verdict; its shares reach
    metrics.jsonl (no parsable code counts as unparsable, not as a verdict)."""
    verdicts = ["passed", "failed", "timeout", "passed", None]
    rows = [_row(f"q{i}#0", node, float(v == "passed"), 2, v)
            for i, v in enumerate(verdicts) for node in ("L0N0", "L1N0")]
    tally = StepTally()
    for piece in (rows[:4], rows[4:]):
        tally.add(summarize(to_record_batch(piece), answer_type="code"))
    m = tally.metrics()
    shares = (m["rollout/code_passed_frac"], m["rollout/code_failed_frac"], m["rollout/code_timeout_frac"])
    assert shares == (0.4, 0.2, 0.2)
    assert m["rollout/unparsable_frac"] == 0.2 and "rollout/code_crashed_frac" not in m
    assert not any(k.startswith("rollout/code_") for k in _metrics(to_record_batch(ROWS)))  # other tasks: none


def test_every_flag_a_sample_raised_is_a_count_in_the_steps_metrics():
    """Flags travel in each sample's record, not in rows: a program's sample that made no call
    (no row) still counts, and a flag is summed over the step's batches."""
    from neuromas_dist.trajectories.summary import sample_record

    first = summarize(to_record_batch(ROWS[:2]), samples={
        "q1#0": sample_record(1.0, "1", {"rollout/flag_cut": 1, "rollout/flag_reward_fn_error": 0})})
    no_rows = summarize(TRAJECTORY_EMPTY, samples={
        "q3#0": sample_record(0.0, None, {"rollout/flag_program_error": 1, "rollout/flag_unparsable": 1}),
        "q3#1": sample_record(1.0, "8")})
    assert first.sample_ids == ("q1#0",) and no_rows.sample_ids == ("q3#0", "q3#1")
    tally = StepTally()
    tally.add(first)
    tally.add(no_rows)
    m = tally.metrics()
    assert m["rollout/samples"] == 3 and m["rollout/reward_mean"] == pytest.approx(2 / 3)
    assert m["rollout/flag_cut"] == 1 and m["rollout/flag_program_error"] == 1 and m["rollout/flag_unparsable"] == 1
    assert "rollout/flag_reward_fn_error" not in m  # a zero is not a count
    assert m["rollout/calls_per_sample"] == pytest.approx(2 / 3)  # 2 rows over 3 samples
