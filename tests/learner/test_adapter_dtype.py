"""Under a bf16 base the learner's adapters are bf16 and DeepSpeed steps an fp32 master copy.

PEFT keeps LoRA weights in float32 by default (``autocast_adapter_dtype``), so a plain PEFT
loop casts every LoRA call's input up and its output down. The learner does not: DeepSpeed's
bf16 engine casts every parameter of the module it wraps, LoRA included, to bf16, and its
optimizer keeps the fp32 copy it steps. So there is no ``adapter_dtype`` option to add; this
test keeps the fact the memory model (adapters at ``model.dtype``) and the speed analysis
rest on.
"""

from __future__ import annotations

import dataclasses

import torch
from learner_helpers import small_config

from neuromas_dist.learner.checkpoint import master_weights


def test_bf16_learner_holds_bf16_adapters_and_an_fp32_master_copy(make_rank):
    cfg = small_config()
    rank = make_rank(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, dtype="bfloat16")))
    lora = [p for n, p in rank.module.named_parameters() if "lora_" in n]
    assert lora and {p.dtype for p in lora} == {torch.bfloat16}
    masters = master_weights(rank.optimizer)
    assert masters and {t.dtype for t in masters} == {torch.float32}
    assert sum(t.numel() for t in masters) == sum(p.numel() for p in lora)
