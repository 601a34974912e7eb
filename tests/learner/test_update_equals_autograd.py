"""The gradient the learner hands DeepSpeed equals plain autograd of `algos.reinforce_loss`.

The reference is built here without the learner's code: transformers + PEFT with the same
adapters, each row scored alone under its node's adapter, the baselines computed from the
whole step's rewards with `algos`, and one `reinforce_loss` over every row of every node.
The learner streams the same rows in several batches, accumulates through its surrogate
(``G_known - c * G_one``, scaled by ``world_size / D``) and calls ``engine.backward``;
what lands in ``p.grad`` when ``engine.step`` runs (after DeepSpeed's all-reduce) is
compared per LoRA tensor, for every baseline and loss norm, with micro-batches of one node
or of mixed nodes, under every forward option (padded or packed rows, a token budget,
chunked, response-only or full logits), at world size 1 and 2; and on ragged rows (very
different lengths, a row over the token budget, empty responses) under top-p sampling.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter, defaultdict

import pytest
import torch

from learner_helpers import (NODES, captured_step, make_batch, program_batch, small_config, to_batch, with_column,
                             with_logprobs)
from neuromas_dist.config import agent_sampling
from neuromas_dist.learner import algos

BASELINES = ("loo", "batch_mean", "ema")
NORMS = ("token", "sequence")
MODES = ("per_node", "mixed")  # learner.micro_batches
CASES = [(b, n) for b in BASELINES for n in NORMS]
# learner options on top of the defaults (padded on the CPU, chunked logits, 3 rows a pass);
# a budget of 12 tokens: rows are 4-15 tokens, so passes are cut by tokens and some rows run alone
OPTIONS = {"default": {}, "packed": dict(padding_free="on"), "response_logits": dict(logits="response"),
           "full_logits": dict(logits="full"),
           "token_budget": dict(padding_free="on", micro_batch_size=32, max_tokens_per_micro_batch=12,
                                logprob_chunk_tokens=2)}
# Relative to the gradient's norm. float32 sums taken in another order measured up to 2.9e-5 on
# an AVX-512 machine of this kind (ragged rows under top-p, packed passes; 1e-5 held on the
# machine that wrote these tests); a real fault (a wrong adapter, baseline or token) is far
# above, and a planted 0.1% error is caught (test_the_comparison_catches_a_planted_error).
RTOL = 1e-4


def case_config(baseline: str, norm: str, world_size: int = 1, mode: str = "per_node", **options):
    # 3 rows per pass: streamed batches end mid-question and mixed passes straddle nodes
    learner = {"micro_batch_size": 3, **options}
    return small_config(baseline=baseline, loss_norm=norm, num_ranks=world_size, micro_batches=mode, **learner)


def step_batches(vocab: int, seed: int):
    """Two steps of rows: in the second an EMA baseline has a state (in the first every
    node is seen for the first time, and its baseline waits for the step's mean)."""
    return make_batch(4, 2, vocab=vocab, seed=seed), make_batch(5, 2, vocab=vocab, seed=seed + 1)


# ----------------------------------------------------------------- the learner's side

def on_policy(rank, batch):
    """Rows as the current adapters sampled them: version and logprobs the learner's own."""
    batch = with_column(batch, "adapter_version", [rank.version] * batch.num_rows)
    return with_logprobs(batch, rank.score(batch))


# ----------------------------------------------------------------- the reference

def reference_model(model_dir: str, cfg, adapters, device: torch.device | str = "cpu"):
    """float32 on ``device``, the device of the rank it checks (float32 on CUDA is exact to
    ~1e-6; a reference on another device would measure the devices, not the learner)."""
    import peft
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device)
    lc = cfg.lora
    pc = peft.LoraConfig(r=lc.rank, lora_alpha=lc.alpha, lora_dropout=0.0, target_modules=list(lc.target_modules))
    model = peft.get_peft_model(base, pc, adapter_name=NODES[0])
    for node in NODES[1:]:
        model.add_adapter(node, pc)
    for node in NODES:
        peft.set_peft_model_state_dict(model, adapters.tensors[node], adapter_name=node)
    return model


def reference_baselines(rows: list[dict], baseline: str, ema: dict[str, float]) -> list[float]:
    """b per row from the whole step's rewards, straight from the definitions: per node, over
    the samples that called it (a sample with several calls of a node is one sample)."""
    samples: dict[str, dict[tuple[str, int], float]] = defaultdict(dict)  # node -> (question, k) -> reward
    for r in rows:
        samples[r["node"]][(r["question_id"], r["sample_index"])] = r["reward"]
    if baseline == "loo":
        out = []
        for r in rows:
            others = [v for (q, k), v in samples[r["node"]].items() if q == r["question_id"] and k != r["sample_index"]]
            out.append(sum(others) / len(others) if others else r["reward"])
        return out
    means = {n: sum(s.values()) / len(s) for n, s in samples.items()}
    if baseline == "ema":
        means = {n: ema.get(n, means[n]) for n in NODES}  # a node seen first starts at its step mean
    return [means[r["node"]] for r in rows]


def reference_grads(model, batch, cfg, ema: dict[str, float]) -> dict[str, torch.Tensor]:
    rows = batch.to_pylist()
    base = reference_baselines(rows, cfg.learner.baseline, ema)
    params = {n: p for n, p in model.named_parameters() if "lora_" in n}
    dev = next(model.parameters()).device
    lps = []
    for r in rows:
        if not r["response_ids"]:
            lps.append(torch.zeros(0, device=dev))
            continue
        model.set_adapter(r["node"])
        for p in params.values():
            p.requires_grad_(True)
        ids = torch.tensor([r["prompt_ids"] + r["response_ids"]], device=dev)
        p0, t = len(r["prompt_ids"]), len(r["response_ids"])
        logits = model(input_ids=ids).logits[0, p0 - 1:p0 - 1 + t]
        temperature, top_p, _, _ = agent_sampling(cfg, r["node"])  # the run's, or the agent's own
        lps.append(algos.token_logprobs(logits, torch.tensor(r["response_ids"], device=dev), temperature, top_p))
    width = max(len(lp) for lp in lps)
    lp = torch.stack([torch.cat([x, torch.zeros(width - len(x), device=dev)]) for x in lps])
    mask = torch.tensor([[j < len(x) for j in range(width)] for x in lps], device=dev)
    adv = torch.tensor([r["reward"] - b for r, b in zip(rows, base)], device=dev)
    loss = algos.reinforce_loss(lp, adv, mask, cfg.learner.loss_norm)
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {n: (g if g is not None else torch.zeros_like(p)) for (n, p), g in zip(params.items(), grads)}


def assert_same_grads(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert set(got) == set(want)
    for name in want:
        scale = want[name].norm().item()
        err = (got[name].cpu() - want[name].cpu()).norm().item()
        assert err <= RTOL * max(scale, 1e-8), f"{name}: |got - want| = {err:.3g} vs |want| = {scale:.3g}"
    # every node was trained: the comparison is not vacuous
    assert all(any(want[n].abs().sum() > 0 for n in want if f".{node}." in n) for node in NODES)


def test_the_comparison_catches_a_planted_error():
    """The tolerance above is not vacuous: a 0.1% error in one node's gradient fails, float32
    noise of the observed size passes."""
    gen = torch.Generator().manual_seed(0)
    want = {f"x.lora_A.{node}.weight": torch.randn(8, 16, generator=gen) for node in NODES}
    name = next(iter(want))
    assert_same_grads({n: t + 1e-6 * t.norm() * torch.randn(t.shape, generator=gen) / t.numel() ** 0.5
                       for n, t in want.items()}, want)
    with pytest.raises(AssertionError, match=name.replace(".", r"\.")):
        assert_same_grads({**want, name: want[name] * 1.001}, want)


# ----------------------------------------------------------------- world size 1

def run_steps(rank, batches) -> list[dict]:
    """Every step on ``rank``: per step what DeepSpeed received, and the adapters and EMA
    state the step started from (what the reference needs)."""
    out = []
    for batch in batches:
        before = {"adapters": rank.export(), "ema": dict(rank.ema)}
        out.append({"grads": captured_step(rank, on_policy(rank, batch)), **before})
    return out


def check_steps(steps: list[dict], model_dir: str, cfg, batches, device: torch.device | str = "cpu") -> None:
    for got, batch in zip(steps, batches, strict=True):
        model = reference_model(model_dir, cfg, got["adapters"], device)
        assert_same_grads(got["grads"], reference_grads(model, batch, cfg, got["ema"]))


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("baseline,norm", CASES)
def test_learner_gradient_equals_autograd_at_world_size_1(make_rank, tiny_model_dir, vocab, baseline, norm, mode,
                                                          option, monkeypatch):
    from neuromas_dist.learner import model

    routed = []
    route = model.rows_to_adapters
    monkeypatch.setattr(model, "rows_to_adapters",
                        lambda m, names, *a: routed.append(len(set(names))) or route(m, names, *a))
    cfg = case_config(baseline, norm, mode=mode, **OPTIONS[option])
    rank = make_rank(cfg)
    batches = step_batches(vocab, seed=11)
    check_steps(run_steps(rank, batches), str(tiny_model_dir), cfg, batches, rank.device)
    # mixed passes really held several nodes' rows; per-node passes never did
    assert (max(routed, default=1) > 1) == (mode == "mixed")


@pytest.mark.parametrize("mode", [*MODES, "per_node+agent_sampling"])
@pytest.mark.parametrize("baseline,norm", [("loo", "token"), ("batch_mean", "sequence"), ("ema", "token")])
def test_agents_called_0_1_or_several_times_per_sample_equal_autograd(make_rank, tiny_model_dir, vocab, baseline,
                                                                      norm, mode):
    """An agent program's rows: every call is a row, a sample's advantage is shared by all its
    calls of a node, and the baselines count samples, not calls. With per-agent sampling, each
    agent's rows are scored under its own temperature and top-p."""
    import dataclasses

    from neuromas_dist.config import AgentSampling, ProgramConfig

    cfg = case_config(baseline, norm, mode=mode.split("+")[0])
    if "agent_sampling" in mode:
        cfg = dataclasses.replace(cfg, program=ProgramConfig(
            entry="examples.programs.solver_verifier:solve", agents=NODES,
            sampling=(AgentSampling("L0N1", temperature=0.7), AgentSampling("L1N0", top_p=0.9)))).validate()
    rank = make_rank(cfg)
    batches = [program_batch(4, 3, seed=21, vocab=vocab), program_batch(3, 3, seed=22, vocab=vocab)]
    calls = Counter((r["sample_id"], r["node"]) for r in batches[0].to_pylist())
    assert set(calls.values()) == {1, 2, 3}  # a node called once, twice and three times in a sample
    called = {sid: {n for (s, n) in calls if s == sid} for sid, _ in calls}
    assert any(len(nodes) < len(NODES) for nodes in called.values())  # and not at all in another
    check_steps(run_steps(rank, batches), str(tiny_model_dir), cfg, batches, rank.device)


def ragged(batch, vocab: int):
    """``batch`` with rows of very different lengths: every 4th row's prompt 40 tokens
    longer (over a 24-token budget: it runs alone), every 5th row's response empty."""
    rows = batch.to_pylist()
    for i, r in enumerate(rows):
        if i % 4 == 1:
            r["prompt_ids"] = r["prompt_ids"] + [(7 * j) % (vocab - 3) + 3 for j in range(40)]
        if i % 5 == 2:
            r["response_ids"], r["logprobs"] = [], []
    return to_batch(rows)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("packed", ["on", "off"])
def test_ragged_rows_under_top_p_equal_autograd(make_rank, tiny_model_dir, vocab, mode, packed):
    import dataclasses

    cfg = case_config("loo", "token", mode=mode, padding_free=packed, micro_batch_size=32,
                      max_tokens_per_micro_batch=24, logprob_chunk_tokens=5)
    cfg = dataclasses.replace(cfg, sampling=dataclasses.replace(cfg.sampling, temperature=0.8, top_p=0.9))
    rank = make_rank(cfg)
    batches = [ragged(b, vocab) for b in step_batches(vocab, seed=5)]
    check_steps(run_steps(rank, batches), str(tiny_model_dir), cfg, batches, rank.device)


# ----------------------------------------------------------------- world size 2

def world_size_2_config(i: int, baseline: str, norm: str, world_size: int = 2):
    """Case i at world size 2: each mode on three cases, the options in turn."""
    option = list(OPTIONS.values())[i % len(OPTIONS)]
    return case_config(baseline, norm, world_size=world_size, mode=MODES[i % 2], **option)


def _rank_process(rank_id: int, port: int, model_dir: str, vocab: int, out: str) -> None:
    """One of two DeepSpeed ranks (gloo, on the CPU on any machine: one GPU cannot hold two
    NCCL ranks) running every case; saves what it captured to ``out``."""
    import os

    os.environ["DS_ACCELERATOR"] = "cpu"
    from neuromas_dist.learner.rank import LearnerRank

    results = {}
    for i, (baseline, norm) in enumerate(CASES):
        cfg = world_size_2_config(i, baseline, norm)
        rank = LearnerRank(cfg, model_dir, NODES, rank=rank_id, world_size=2)
        rank.setup(master_port=port)
        results[(baseline, norm)] = run_steps(rank, step_batches(vocab, seed=11))
    torch.save(results, out)


def test_learner_gradient_equals_autograd_at_world_size_2(tiny_model_dir, vocab, tmp_path):
    """Two processes, one DeepSpeed rank each, every case in a row; each rank holds only
    the questions it owns, and after the all-reduce both hold the whole step's gradient."""
    from neuromas_dist.learner.model import free_port
    from neuromas_dist.trajectories.shards import owner_rank

    assert {owner_rank(f"q{q}", 2) for q in range(5)} == {0, 1}  # both ranks own questions
    ctx = multiprocessing.get_context("spawn")
    port = free_port()
    files = [tmp_path / f"rank{i}.pt" for i in (0, 1)]
    procs = [ctx.Process(target=_rank_process, args=(i, port, str(tiny_model_dir), vocab, str(files[i])))
             for i in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=540)
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    results = [torch.load(f, weights_only=False) for f in files]
    batches = step_batches(vocab, seed=11)
    for i, (baseline, norm) in enumerate(CASES):
        cfg = world_size_2_config(i, baseline, norm, world_size=1)
        check_steps(results[0][(baseline, norm)], str(tiny_model_dir), cfg, batches)
        check_steps(results[1][(baseline, norm)], str(tiny_model_dir), cfg, batches)
