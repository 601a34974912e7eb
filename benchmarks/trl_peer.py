"""TRL's ``GRPOTrainer`` on our toy: the same tiny model, data, prompt, reward, LoRA and
batch, for ``python -m benchmarks.objectives --peer trl`` (``pip install -e .[bench]``).

What is the same: the locally built tiny Qwen3 (float32, CPU); the single-node graph's
prompt (``models.sft.greedy_scores`` renders it, as the rollout does for ``topology.widths=[1]``);
the task's own reward on the reply; one LoRA of the config's rank, alpha and target modules;
``questions_per_step`` questions x ``n_samples`` completions per optimiser step at the
config's temperature, top-p and token cap; the learning rate, constant; gradient clipping;
the 500 held-out questions scored greedily.

What differs, by construction of each: TRL's baseline is the group mean *including* the
sample itself, divided by the group's std (``scale_rewards="group"``), where our
``advantage_norm=std`` arm uses the leave-one-out mean (the same direction, n/(n-1) larger)
and our default does not divide; TRL's default loss normalisation (``loss_type``, reported)
differs from our token mean; TRL generates with transformers' ``generate`` in the training
process and evaluates the same way, where we generate with vLLM in a Ray actor and evaluate
through the graph's held-out pass (both greedy, float32). ``beta=0`` and one iteration: no
KL, no clipping, as in TRL's defaults.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from neuromas_dist.config import Config
from neuromas_dist.models.sft import greedy_scores
from neuromas_dist.rollout.worker import resolve_model_dir
from neuromas_dist.tasks import load_task_data


def run(cfg: Config, out_dir: Path, seed: int = 0) -> dict:
    """Train with TRL for ``cfg.trainer.steps`` steps; held-out greedy scores before and after."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from neuromas_dist.graph.prompts import apply_chat, render_body
    from neuromas_dist.graph.topology import Topology

    torch.manual_seed(seed)
    model_dir = resolve_model_dir(cfg)
    data = load_task_data(cfg.data)
    tok = AutoTokenizer.from_pretrained(model_dir)
    fmt, s, t = data.task.answer_format, cfg.sampling, cfg.trainer
    single = Topology.build([1])
    train = data.train[:t.steps * t.questions_per_step]
    dataset = Dataset.from_list([{"prompt": apply_chat(tok, render_body(single, single.sink, e.question, {},
                                                                        answer_format=fmt).text), "index": i}
                                 for i, e in enumerate(train)])

    def reward(prompts, completions, index, **_):
        return [data.task.score(c, train[i]).reward for c, i in zip(completions, index)]

    held_out = [(e.question, e.answer) for e in data.eval]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    before = greedy_scores(model, tok, held_out, data.task, fmt, max_new_tokens=s.max_new_tokens)
    lc = cfg.lora
    args = GRPOConfig(
        output_dir=str(out_dir), per_device_train_batch_size=t.questions_per_step * s.n_samples,
        num_generations=s.n_samples, max_completion_length=s.max_new_tokens, temperature=s.temperature,
        top_p=s.top_p, learning_rate=cfg.learner.lr, lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=cfg.learner.weight_decay, max_grad_norm=cfg.learner.grad_clip, max_steps=t.steps,
        beta=0.0, num_iterations=1, logging_steps=1, report_to=[], save_strategy="no", seed=seed, bf16=False,
        use_cpu=True, dataloader_num_workers=0, gradient_checkpointing=False)  # we do not recompute either
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=dataset, processing_class=tok,
                          peft_config=LoraConfig(r=lc.rank, lora_alpha=lc.alpha, lora_dropout=0.0,
                                                 target_modules=list(lc.target_modules)))
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    logs = [h for h in trainer.state.log_history if "completions/mean_length" in h]
    tokens = sum(h["completions/mean_length"] for h in logs) * t.questions_per_step * s.n_samples
    trainer.model.eval()
    after = greedy_scores(trainer.model, tok, held_out, data.task, fmt, max_new_tokens=s.max_new_tokens)
    return {"before": np.asarray(before), "after": np.asarray(after), "wall_s": wall, "steps": len(logs),
            "generated_tokens": tokens, "loss_type": args.loss_type, "scale_rewards": str(args.scale_rewards),
            "train_reward": [round(h.get("reward", float("nan")), 4) for h in logs]}
