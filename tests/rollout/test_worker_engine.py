"""The real path: a RolloutWorker Ray actor running vLLM's CPU engine on the tiny model.

All tests share the session actor from conftest.py (one engine start)."""

from __future__ import annotations

from collections import defaultdict

import pytest
import ray
import torch

from neuromas_dist.adapters.peft_io import write_peft_dir
from neuromas_dist.graph.prompts import render_node_prompt
from neuromas_dist.graph.topology import Topology
from neuromas_dist.rollout.adapters import random_b_adapter_set
from neuromas_dist.trajectories.schema import check_batch, concat
from neuromas_dist.trajectories.shards import owner_rank

SEVEN = (2, 2, 2, 1)  # the session worker is sized for this graph (conftest.py)
THREE = (2, 1)


def _load(actor, adapters):
    return ray.get(actor.load_adapters.remote(adapters))


def _use(actor, widths, adapters, version):
    ray.get(actor.set_topology.remote(widths))
    _load(actor, adapters._replace(version=version))


def _stream(gen, shards=1):
    """A worker's rollout stream (per batch: one piece per learner rank, then the batch's
    summary) -> its batches, each piece checked against the contract and its rank, each
    summary against its pieces."""
    items = [ray.get(ref) for ref in gen]
    batches = []
    for i in range(0, len(items), shards + 1):
        *pieces, summary = items[i:i + shards + 1]
        for rank, piece in enumerate(pieces):
            check_batch(piece)
            assert {owner_rank(q, shards) for q in piece.column("question_id").to_pylist()} <= {rank}
        batch = concat(pieces)
        assert sorted(summary.sample_ids) == sorted(set(batch.column("sample_id").to_pylist()))
        assert summary.piece_rows == tuple(p.num_rows for p in pieces)
        batches.append(batch)
    return batches


def _rollout(actor, step, examples, n=None, shards=1):
    batches = _stream(actor.rollout.options(num_returns="streaming").remote(step, examples, n, shards=shards), shards)
    return batches, [row for b in batches for row in b.to_pylist()]


def test_a_rollout_is_split_for_the_learner_ranks(rollout_actor, base_adapters, next_version, examples):
    """With 3 learner ranks each batch comes as 3 pieces, each holding only its rank's
    questions (checked in _stream), and together every row once."""
    _use(rollout_actor, THREE, base_adapters, next_version())
    batches, rows = _rollout(rollout_actor, 6, examples[:6], 2, shards=3)
    assert sorted((r["sample_id"], r["node"]) for r in rows) == \
        sorted((f"{ex.id}#{k}", n) for ex in examples[:6] for k in range(2) for n in ("L0N0", "L0N1", "L1N0"))
    assert len({owner_rank(r["question_id"], 3) for r in rows}) >= 2


def _by_sample(rows):
    out = defaultdict(dict)
    for row in rows:
        out[row["sample_id"]][row["node"]] = row
    return out


@pytest.mark.parametrize("widths", [THREE, SEVEN], ids=["3-node", "7-node"])
def test_graph_end_to_end(rollout_actor, base_adapters, next_version, examples, task, rollout_cfg,
                          tiny_model_dir, widths):
    version = next_version()
    _use(rollout_actor, widths, base_adapters, version)
    batches, rows = _rollout(rollout_actor, 4, examples)
    topo = Topology.build(widths)
    n = rollout_cfg.sampling.n_samples
    assert len(batches) >= 2, "a worker streams several batches, not one blob"
    samples = _by_sample(rows)
    assert len(samples) == len(examples) * n and len(rows) == len(samples) * len(topo)
    gold = {ex.id: ex for ex in examples}
    for calls in samples.values():
        assert set(calls) == set(topo.names)
        sink = calls[topo.sink]
        score = task.score(sink["answer_text"], gold[sink["question_id"]])
        assert {r["reward"] for r in calls.values()} == {score.reward}
        assert {r["parsed_answer"] for r in calls.values()} == {score.parsed}
        assert {r["adapter_version"] for r in calls.values()} == {version}
        assert {r["step"] for r in calls.values()} == {4}
        for row in calls.values():
            assert len(row["response_ids"]) == len(row["logprobs"]) > 0
            assert all(lp <= 1e-6 for lp in row["logprobs"])
            assert row["response_truncated"] == (row["finish_reason"] == "length")


def test_each_prompt_holds_exactly_its_upstream_outputs(rollout_actor, base_adapters, next_version, examples,
                                                        rollout_cfg, tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    _use(rollout_actor, SEVEN, base_adapters, next_version())
    _, rows = _rollout(rollout_actor, 5, examples[:3], 1)
    topo = Topology.build(SEVEN)
    question = {ex.id: ex.question for ex in examples}
    for calls in _by_sample(rows).values():
        for node in topo.nodes:
            row = calls[node.name]
            upstream = {src: tok.decode(calls[src]["response_ids"], skip_special_tokens=True) for src in node.inputs}
            want = render_node_prompt(topo, node.name, question[row["question_id"]], upstream, tok,
                                      answer_format=_answer_format(),
                                      upstream_token_budget=rollout_cfg.topology.upstream_token_budget)
            assert row["prompt_ids"] == want.token_ids, node.name
            assert row["prompt_truncated"] == (want.truncated_messages > 0)


def _answer_format():
    from neuromas_dist.tasks import synthetic_task

    return synthetic_task("arith").answer_format


def _reference_logprobs(model_dir, tmp_path, adapters, node, row, temperature):
    """transformers (+ PEFT when adapters is given) float32: log_softmax(logits / T) of the sampled tokens."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapters is not None:
        path = write_peft_dir(tmp_path / f"{node}_v{adapters.version}", adapters.tensors[node], adapters.peft_config)
        model = PeftModel.from_pretrained(model, str(path))
    prompt, response = row["prompt_ids"], row["response_ids"]
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1].float() / temperature
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(response)[:, None])[:, 0]


def test_hot_swap_logprobs_follow_the_new_adapters(rollout_actor, base_adapters, next_version, examples,
                                                   rollout_cfg, tiny_model_dir, tmp_path):
    _use(rollout_actor, THREE, base_adapters, next_version())
    _, old_rows = _rollout(rollout_actor, 6, examples[:2], 1)
    new = random_b_adapter_set(base_adapters, next_version(), scale=0.3, seed=7)
    loaded = _load(rollout_actor, new)
    assert loaded["rollout/live_adapter_versions"] == 1 and loaded["rollout/adapter_version"] == new.version
    _, new_rows = _rollout(rollout_actor, 6, examples[:2], 1)
    assert {r["adapter_version"] for r in new_rows} == {new.version}
    assert {r["adapter_version"] for r in old_rows} == {new.version - 1}
    temperature = rollout_cfg.sampling.temperature
    for node in ("L0N1", "L1N0"):
        row = next(r for r in new_rows if r["node"] == node)
        got = torch.tensor(row["logprobs"])
        ref_new = _reference_logprobs(tiny_model_dir, tmp_path, new, node, row, temperature)
        ref_old = _reference_logprobs(tiny_model_dir, tmp_path, None, node, row, temperature)
        assert (got - ref_new).abs().max() < 1e-3, "rollout logprobs must be those of the new adapter"
        assert (got - ref_old).abs().mean() > 1e-2, "the new adapter must change the policy"
        old = next(r for r in old_rows if r["node"] == node)
        ref_base = _reference_logprobs(tiny_model_dir, tmp_path, None, node, old, temperature)
        assert (torch.tensor(old["logprobs"]) - ref_base).abs().max() < 1e-3, "B = 0 adapters are the base model"


def test_swap_during_a_rollout_never_mixes_versions(rollout_actor, base_adapters, next_version, examples):
    """A new version lands while a rollout runs (some of its samples have pinned an older
    one): they finish on the version they pinned, a rollout started after the swap samples
    the new one, and the older ones' LoRA ids are dropped once drained."""

    import time

    old = next_version()
    _use(rollout_actor, SEVEN, base_adapters, old)
    gen = rollout_actor.rollout.options(num_returns="streaming").remote(7, examples, 4)
    deadline = time.monotonic() + 60
    while True:  # swap until a swap lands while samples are under way (they pin an older version)
        new = random_b_adapter_set(base_adapters, next_version(), scale=0.3, seed=3)
        if _load(rollout_actor, new)["rollout/pinned_samples"] > 0:
            break
        assert time.monotonic() < deadline
        time.sleep(0.02)
    after = [r for b in _stream(rollout_actor.rollout.options(num_returns="streaming").remote(8, examples[:2], 2))
             for r in b.to_pylist()]
    rows = [r for b in _stream(gen) for r in b.to_pylist()]
    for calls in _by_sample(rows).values():
        assert len({r["adapter_version"] for r in calls.values()}) == 1
    assert {r["adapter_version"] for r in after} == {new.version}
    # Samples under way at the swap finish on the older version they pinned (ones started after it may take `new`).
    assert min(r["adapter_version"] for r in rows) < new.version
    # Drained: a further load leaves one live version only if `old`'s LoRA ids were dropped.
    loaded = _load(rollout_actor, random_b_adapter_set(base_adapters, next_version(), scale=0.3, seed=4))
    assert loaded["rollout/live_adapter_versions"] == 1, "the old version's LoRA ids are dropped once drained"


def test_same_step_and_version_reproduce_the_same_tokens(rollout_actor, base_adapters, next_version, examples):
    _use(rollout_actor, THREE, random_b_adapter_set(base_adapters, 0, seed=5), next_version())
    _, a = _rollout(rollout_actor, 9, examples[:3])
    _, b = _rollout(rollout_actor, 9, examples[:3])
    key = lambda r: (r["sample_id"], r["node"])  # noqa: E731
    assert [r["response_ids"] for r in sorted(a, key=key)] == [r["response_ids"] for r in sorted(b, key=key)]
    _, c = _rollout(rollout_actor, 10, examples[:3])
    assert [r["response_ids"] for r in sorted(a, key=key)] != [r["response_ids"] for r in sorted(c, key=key)]


def test_greedy_evaluation_scores_the_sink(rollout_actor, base_adapters, next_version, examples, task):
    _use(rollout_actor, THREE, base_adapters, next_version())
    result = ray.get(rollout_actor.evaluate.remote(examples))
    sink = [r for r in result["greedy"].to_pylist() if r["node"] == "L1N0"]
    gold = {ex.id: ex for ex in examples}
    assert sorted(r["question_id"] for r in sink) == sorted(ex.id for ex in examples) and result["sampled"] is None
    assert [r["reward"] for r in sink] == [task.score(r["answer_text"], gold[r["question_id"]]).reward for r in sink]


def test_sampled_evaluation_draws_alike_every_time(rollout_actor, base_adapters, next_version, examples):
    """Sampled held-out passes use fixed seeds: two evaluations with the same adapters (at
    different steps) write the same tokens, so a before/after difference is the adapters' doing."""
    _use(rollout_actor, THREE, base_adapters, next_version())
    first = ray.get(rollout_actor.evaluate.remote(examples, 3, 2))["sampled"]
    second = ray.get(rollout_actor.evaluate.remote(examples, 7, 2))["sampled"]
    assert first.num_rows == 2 * len(examples) * 3
    key = lambda r: (r["sample_id"], r["node"])  # noqa: E731
    assert ([r["response_ids"] for r in sorted(first.to_pylist(), key=key)]
            == [r["response_ids"] for r in sorted(second.to_pylist(), key=key)])


def test_an_ablated_pass_runs_the_node_as_the_base_model_and_leaves_the_adapters(rollout_actor, base_adapters,
                                                                                 next_version, examples):
    """``evaluate(ablate=node)``: that node writes what the base model writes (B = 0 adapters),
    a node that does not read it writes what it writes in the full graph, and a pass after the
    ablation is the full graph's again, token for token (the workers' adapters never changed)."""
    def by_key(result):
        return {(r["question_id"], r["node"]): (r["response_ids"], r["logprobs"]) for r in result["greedy"].to_pylist()}

    _use(rollout_actor, THREE, base_adapters, next_version())
    base = by_key(ray.get(rollout_actor.evaluate.remote(examples)))
    _load(rollout_actor, random_b_adapter_set(base_adapters, next_version(), scale=0.3, seed=7))
    full = by_key(ray.get(rollout_actor.evaluate.remote(examples)))
    ablated = by_key(ray.get(rollout_actor.evaluate.remote(examples, -1, 0, "L0N0")))
    after = by_key(ray.get(rollout_actor.evaluate.remote(examples)))
    assert after == full
    for key, (ids, logprobs) in ablated.items():
        if key[1] == "L0N0":
            assert ids == base[key][0] and logprobs == pytest.approx(base[key][1], abs=1e-5), key
        if key[1] == "L0N1":
            assert ids == full[key][0] and logprobs == pytest.approx(full[key][1], abs=1e-5), key
    assert any(full[k][0] != base[k][0] for k in full if k[1] == "L0N0"), "the random adapter must move L0N0"
    with pytest.raises(ray.exceptions.RayTaskError, match="cannot ablate L9N9"):
        ray.get(rollout_actor.evaluate.remote(examples, -1, 0, "L9N9"))
