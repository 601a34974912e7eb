"""Learner-exported adapters served by the real vLLM CPU engine give the learner's logprobs.

The rollout records vLLM's sampling logprobs; the learner recomputes them. In float32
they agree to ~1e-6 (DESIGN.md measured an exact match), so the stated tolerance is
1e-4 per token, far below the ~1e-1 gap of a wrong adapter or the base model.
"""

from __future__ import annotations

import random

import pytest
from learner_helpers import NODES, make_batch, small_config, to_batch, with_logprobs

from neuromas_dist.adapters.peft_io import write_adapter_set
from neuromas_dist.learner.rank import LogprobGapError

pytestmark = pytest.mark.vllm
TOL = 1e-4


def _train(rank, vocab, steps=2):
    for seed in range(steps):
        batch = make_batch(3, 2, vocab=vocab, seed=40 + seed, version=rank.version)
        rank.accumulate(with_logprobs(batch, rank.score(batch)))
        rank.finish_step()


def _sample_rows(llm, dirs, version, vocab, temperature, first_lora_id=1):
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.lora.request import LoRARequest

    rng = random.Random(0)
    prompts, params, loras, meta = [], [], [], []
    for q in range(2):
        for k in range(2):
            for i, node in enumerate(NODES):
                prompts.append(TokensPrompt(prompt_token_ids=[rng.randrange(3, vocab) for _ in range(8)]))
                # no min_tokens/ignore_eos: vLLM's processed logprobs would then exclude EOS
                params.append(SamplingParams(temperature=temperature, max_tokens=10, logprobs=1, seed=len(meta)))
                loras.append(LoRARequest(f"{node}@{first_lora_id}", first_lora_id + i, str(dirs[node])))
                meta.append((q, k, node))
    outs = llm.generate(prompts, params, lora_request=loras, use_tqdm=False)
    template = make_batch(1, 1, nodes=NODES[:1]).to_pylist()[0]
    rows = []
    for (q, k, node), prompt, out in zip(meta, prompts, outs):
        comp = out.outputs[0]
        lps = [step[tok].logprob for tok, step in zip(comp.token_ids, comp.logprobs)]
        rows.append(dict(template, sample_id=f"q{q}#{k}", question_id=f"q{q}", sample_index=k, node=node,
                         layer=int(node[1]), node_index=int(node[3]), prompt_ids=prompt["prompt_token_ids"],
                         response_ids=list(comp.token_ids), logprobs=lps, adapter_version=version,
                         reward=float(k == 0)))
    return to_batch(rows)


def test_vllm_serves_learner_adapters_with_learner_logprobs(make_rank, vocab, tiny_model_dir, tmp_path):
    """Sync (rows of the learner's current version) and async (rows one version behind,
    re-scored under the adapters that sampled them): the true rows agree to TOL; rows from
    a swapped or a zero adapter fail the step, naming the node, in both modes."""
    from vllm import LLM

    from neuromas_dist.rollout.adapters import zero_adapter_set

    cfg = small_config(lr=5e-2, max_logprob_gap=TOL)
    rank = make_rank(cfg)
    _train(rank, vocab)
    dirs = write_adapter_set(tmp_path / "v", rank.export())
    zero_dirs = write_adapter_set(tmp_path / "zero", zero_adapter_set(tiny_model_dir, NODES, cfg.lora))
    llm = LLM(model=str(tiny_model_dir), dtype="float32", enable_lora=True, max_loras=len(NODES),
              max_lora_rank=8, enforce_eager=True, max_model_len=128, logprobs_mode="processed_logprobs",
              enable_chunked_prefill=False, seed=0, disable_log_stats=True)
    try:
        batch = _sample_rows(llm, dirs, rank.version, vocab, cfg.sampling.temperature)
        zero = _sample_rows(llm, zero_dirs, rank.version, vocab, cfg.sampling.temperature, first_lora_id=10)
    finally:
        del llm
    ours = rank.score(batch)
    theirs = batch.column("logprobs").to_pylist()
    gaps = [abs(a - b) for x, y in zip(ours, theirs) for a, b in zip(x, y)]
    # Every sampled token is compared (the tiny model often stops after a few tokens on
    # random prompts, so ask for two per row on average, not a fixed length).
    assert len(gaps) == sum(len(r) for r in theirs) >= 2 * batch.num_rows
    assert max(gaps) < TOL, max(gaps)

    sampled = rank.version
    _fails_naming_nodes(rank, _swapped(batch), "on-policy")
    _fails_naming_nodes(rank, _zero_for_first_layer(batch, zero), "on-policy")
    # the true rows pass the per-node gap check at TOL (the failed steps above applied nothing)
    rank.accumulate(batch)
    metrics = rank.finish_step()
    assert all(metrics[f"node/{n}/logprob_gap"] < TOL for n in NODES)
    assert rank.version == sampled + 1  # every row of `batch` is one version behind now

    # async: the same rows, stale now, are re-scored under the version that sampled them
    _fails_naming_nodes(rank, _swapped(batch), "stale")
    _fails_naming_nodes(rank, _zero_for_first_layer(batch, zero), "stale")
    rank.accumulate(batch)
    metrics = rank.finish_step()
    assert all(metrics[f"node/{n}/stale_token_frac"] == 1.0 for n in NODES)
    assert all(metrics[f"node/{n}/logprob_gap_stale"] < TOL for n in NODES)


def _swapped(batch):
    """Rows sampled with L0N0's and L0N1's adapters swapped (a worker serving the wrong node)."""
    swap = {"L0N0": "L0N1", "L0N1": "L0N0"}
    return to_batch([dict(r, node=swap.get(r["node"], r["node"])) for r in batch.to_pylist()])


def _zero_for_first_layer(batch, zero):
    """The first layer's rows as a worker serving zero adapters (the base model) samples them."""
    return to_batch([z if z["node"] != "L1N0" else r for r, z in zip(batch.to_pylist(), zero.to_pylist())])


def _fails_naming_nodes(rank, rows, kind):
    rank.accumulate(rows)
    with pytest.raises(LogprobGapError, match=f"L0N0.*{kind}.*L0N1") as err:
        rank.finish_step()
    assert "L1N0" not in str(err.value)
