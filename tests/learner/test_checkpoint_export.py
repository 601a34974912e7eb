"""Resume gives the same next update as not stopping; exported adapters load in PEFT."""

from __future__ import annotations

import json

import pytest
import torch
from learner_helpers import NODES, make_batch, small_config, to_batch, with_logprobs

from neuromas_dist.learner import checkpoint as ckpt


def _step(rank, seed, vocab):
    batch = make_batch(3, 2, vocab=vocab, seed=seed, version=rank.version)
    rank.accumulate(with_logprobs(batch, rank.score(batch)))
    return rank.finish_step()


@pytest.mark.parametrize("dtype,stage", [("float32", 0), ("bfloat16", 2)])
def test_resume_gives_the_same_next_updates(make_rank, vocab, tmp_path, dtype, stage):
    """bfloat16 keeps fp32 master weights in the optimizer, which the bf16 adapters only round:
    the checkpoint must carry them, or the resumed run drops every sub-bf16-step update (it
    did: the steps after such a resume moved weights as far from the uninterrupted run's as
    the steps themselves moved them). Bitwise equal in bf16 (same ops, same order)."""
    import dataclasses

    cfg = small_config(baseline="ema", zero_stage=stage, lr=1e-4)  # ema: the baseline state must survive too
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, dtype=dtype))
    a = make_rank(cfg)
    for seed in (1, 2, 3):
        _step(a, seed, vocab)
    ckpt.save_checkpoint(tmp_path / "ck", [a.get_state()], extra={"cursor": 17})
    saved = a.export()
    # the uninterrupted run
    m_a = [_step(a, seed, vocab) for seed in (4, 5, 6)]
    # a fresh learner resumed from the checkpoint
    b = make_rank(cfg)
    adapters, learner, ranks = ckpt.load_checkpoint(tmp_path / "ck")
    assert learner["extra"] == {"cursor": 17} and learner["version"] == 3 and set(learner["ema"]) == set(NODES)
    b.set_state(adapters, learner, ckpt.rank_state_for(ranks, 0, 1, cfg.learner.zero_stage))
    m_b = [_step(b, seed, vocab) for seed in (4, 5, 6)]
    assert (b.version, b.ema) == (a.version, a.ema)
    assert m_b[-1]["learner/loss"] == pytest.approx(m_a[-1]["learner/loss"], rel=1e-6)
    atol = 0.0 if dtype == "bfloat16" else 1e-7
    moved = 0.0
    for node in NODES:
        for k, v in a.export().tensors[node].items():
            torch.testing.assert_close(b.export().tensors[node][k], v, rtol=0, atol=atol)
            moved = max(moved, float((v.float() - saved.tensors[node][k].float()).abs().max()))
    assert moved > 0, "the steps after the checkpoint changed nothing: the comparison would be vacuous"


def test_checkpoint_files_are_safetensors_and_json(make_rank, tmp_path):
    r = make_rank(small_config())
    path = ckpt.save_checkpoint(tmp_path / "ck", [r.get_state()])
    names = sorted(p.name for p in path.iterdir())
    assert names == ["adapters", "learner_state.json", "rank0.json", "rank0.safetensors"]
    assert sorted(p.name for p in (path / "adapters").iterdir()) == sorted(NODES)
    assert json.loads((path / "learner_state.json").read_text())["nodes"] == list(NODES)


def test_export_loads_in_peft_with_the_same_logprobs(make_rank, vocab, tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from neuromas_dist.adapters.peft_io import write_adapter_set
    from neuromas_dist.learner.algos import token_logprobs

    r = make_rank(small_config(lr=5e-2))
    for seed in (21, 22):
        _step(r, seed, vocab)
    dirs = write_adapter_set(tmp_path / "peft", r.export())
    cfg = json.loads((dirs["L0N1"] / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(tiny_model_dir) and cfg["r"] == 4
    # float32 on the rank's device: the comparison is of adapters, not of devices
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).to(r.device)
    model = PeftModel.from_pretrained(base, str(dirs["L0N1"]), adapter_name="L0N1").eval()
    row = next(x for x in make_batch(1, 1, vocab=vocab, seed=23).to_pylist() if x["node"] == "L0N1")
    ids = torch.tensor([row["prompt_ids"] + row["response_ids"]], device=r.device)
    tokens = torch.tensor([row["response_ids"]], device=r.device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[:, len(row["prompt_ids"]) - 1:-1]
    lp = token_logprobs(logits, tokens)[0].cpu()
    ours = torch.tensor(r.score(to_batch([row]))[0])
    torch.testing.assert_close(lp, ours, rtol=0, atol=1e-5)
    with torch.no_grad(), model.disable_adapter():  # the adapter really changed the model
        base_lp = token_logprobs(model(input_ids=ids).logits[:, len(row["prompt_ids"]) - 1:-1], tokens)[0].cpu()
    assert (base_lp - ours).abs().max() > 1e-3
