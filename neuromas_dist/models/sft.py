"""Brief supervised warm-up of the tiny model on the prompts graph nodes really see.

RL needs a policy that is right sometimes and wrong often: a random-init model never
earns a reward, a perfect one leaves nothing to learn. A fixed number of AdamW steps
(not a time budget, so a seed always gives the same weights) on role-free node prompts
lands in between. What the examples teach (and what they must not) is
:mod:`neuromas_dist.models.warmup`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from tqdm import tqdm

from neuromas_dist.graph.prompts import apply_chat, encode, render_body
from neuromas_dist.graph.topology import Topology
from neuromas_dist.models import warmup
from neuromas_dist.tasks.base import Example, Task
from neuromas_dist.tasks.synthetic import SYNTHETIC_ANSWER_FORMAT

QA = warmup.QA


@dataclass(frozen=True)
class SFTConfig:
    steps: int = 600
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.0
    warmup_steps: int = 30
    pool_size: int = 16384  # distinct examples rendered once, then sampled per step
    micro_batches: int = 4  # a batch runs as this many length-sorted parts (same gradient, less padding)
    upstream_gold_prob: float = 0.9  # upstream statements are right this often
    topologies: tuple[tuple[int, ...], ...] = ((1,), (2, 1), (4, 2, 1))
    # Share of examples per task kind: the hierarchical task and the single operations it composes.
    task_mix: tuple[tuple[str, float], ...] = (("hier", 0.75), ("op", 0.25))
    # The same instruction the RL sink sees, so warm-up and RL prompts are identical.
    answer_format: str = SYNTHETIC_ANSWER_FORMAT


def build_pool(tokenizer, qas: Mapping[str, Sequence[QA]], cfg: SFTConfig, rng: random.Random
               ) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, target ids) pairs: the warm-up examples of :mod:`warmup`, tokenized once."""
    examples = warmup.sample_examples(qas, cfg.task_mix, cfg.topologies, cfg.pool_size, rng, cfg.upstream_gold_prob,
                                      cfg.answer_format)
    eos = tokenizer.eos_token
    return [(encode(tokenizer, apply_chat(tokenizer, ex.body)), encode(tokenizer, ex.target + eos))
            for ex in examples]


def collate(batch: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded inputs; labels only on target tokens so the prompt is never taught."""
    width = max(len(p) + len(t) for p, t in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (prompt, target) in enumerate(batch):
        seq = prompt + target
        ids[row, : len(seq)] = torch.tensor(seq)
        labels[row, len(prompt) : len(seq)] = torch.tensor(target)
        mask[row, : len(seq)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def train(model, tokenizer, pool, cfg: SFTConfig, seed: int, desc: str = "sft") -> float:
    """Run ``cfg.steps`` AdamW steps on batches sampled from ``pool``; return the last loss."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_scale(s, cfg))
    model.train()
    loss_value = float("nan")
    bar = tqdm(range(cfg.steps), desc=desc, leave=False, mininterval=2.0)
    for _ in bar:
        index = torch.randint(len(pool), (cfg.batch_size,), generator=gen).tolist()
        opt.zero_grad(set_to_none=True)
        loss_value = accumulate_batch(model, [pool[i] for i in index], tokenizer.pad_token_id, cfg.micro_batches)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss_value:.3f}", refresh=False)
    model.eval()
    return loss_value


def accumulate_batch(model, batch: Sequence[tuple[list[int], list[int]]], pad_id: int, parts: int) -> float:
    """Backward of the batch's mean token loss, run as ``parts`` micro-batches of similar
    length: the same gradient as one padded batch (each part's mean is weighted by its
    share of target tokens), with far less padding. Returns the batch's mean loss."""
    ordered = sorted(batch, key=lambda pair: len(pair[0]) + len(pair[1]))
    size = -(-len(ordered) // parts)
    total = sum(len(t) for _, t in ordered)
    loss_sum = 0.0
    for k in range(0, len(ordered), size):
        chunk = ordered[k:k + size]
        share = sum(len(t) for _, t in chunk) / total
        loss = model(**collate(chunk, pad_id)).loss * share
        loss.backward()
        loss_sum += loss.item()
    return loss_sum


def _lr_scale(step: int, cfg: SFTConfig) -> float:
    # Linear warm-up then linear decay to 10%: stable from random init in few steps.
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return max(0.1, 1.0 - 0.9 * frac)


@torch.no_grad()
def greedy_accuracy(model, tokenizer, qas: Sequence[QA], task: Task, answer_format: str,
                    batch_size: int = 100, max_new_tokens: int = 32) -> float:
    """Greedy accuracy of the single-node graph: the prompt every RL run starts from."""
    scores = greedy_scores(model, tokenizer, qas, task, answer_format, batch_size, max_new_tokens)
    return sum(scores) / max(1, len(qas))


def greedy_scores(model, tokenizer, qas: Sequence[QA], task: Task, answer_format: str,
                  batch_size: int = 100, max_new_tokens: int = 32) -> list[float]:
    """Each question's greedy reward under the single-node graph's prompt (transformers'
    generate, left-padded batches)."""
    topology = Topology.build([1])
    out: list[float] = []
    for start in range(0, len(qas), batch_size):
        chunk = qas[start : start + batch_size]
        prompts = [
            apply_chat(tokenizer, render_body(topology, topology.sink, q, {}, answer_format=answer_format).text)
            for q, _ in chunk
        ]
        outputs = _generate(model, tokenizer, prompts, max_new_tokens)
        # Scored by the RL task's own checker, so this number means what eval/accuracy means.
        out += [task.score(o, Example("", q, gold)).reward for o, (q, gold) in zip(outputs, chunk)]
    return out


def _generate(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    rows = [encode(tokenizer, p) for p in prompts]
    width = max(map(len, rows))
    # Left padding so every row's next token sits in the same column.
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                         do_sample=False, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    return tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
