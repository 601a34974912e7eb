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

import dataclasses
import multiprocessing
import statistics
from collections import Counter, defaultdict

import pytest
import torch
from learner_helpers import (
    NODES,
    captured_updates,
    make_batch,
    program_batch,
    small_config,
    to_batch,
    with_column,
    with_logprobs,
)

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


# log(pi_rollout / pi_learner) per token, in turn: ratios 0.41, 2.46, 0.90, 4.48, 0.74, on both
# sides of every bound tested (1/2, 2, 2.5), none near one (row products included)
SHIFTS = (0.9, -0.9, 0.1, -1.5, 0.3)


def off_policy(rank, batch):
    """Rows of the current version whose recorded logprobs are the learner's shifted by
    SHIFTS: another engine's numbers, for the rollout corrections to act on."""
    batch = with_column(batch, "adapter_version", [rank.version] * batch.num_rows)
    lps = rank.score(batch)
    return with_logprobs(batch, [[v + SHIFTS[(i + j) % len(SHIFTS)] for j, v in enumerate(lp)]
                                 for i, lp in enumerate(lps)])


def moved_adapters(rank, seed: int = 0):
    """Random non-zero adapters for every node: the base model and the policy differ from
    the start, so the KL terms' gradients (zero at pi = pi_base for k2, k3) are not."""
    gen = torch.Generator().manual_seed(seed)
    cur = rank.export()
    tensors = {n: {k: 0.05 * torch.randn(v.shape, generator=gen).to(v.dtype) for k, v in t.items()}
               for n, t in cur.tensors.items()}
    rank.load_adapters(tensors)


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


def std_scales(rows: list[dict], eps: float = 1e-6) -> list[float]:
    """GRPO's 1 / (std + eps) per row: the unbiased std of the rewards of its question's
    samples that called its node (1 for a lone sample)."""
    groups: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for r in rows:
        groups[(r["node"], r["question_id"])][r["sample_index"]] = r["reward"]
    sd = {k: statistics.stdev(v.values()) if len(v) > 1 else None for k, v in groups.items()}
    return [1.0 if sd[(r["node"], r["question_id"])] is None else 1.0 / (sd[(r["node"], r["question_id"])] + eps)
            for r in rows]


def reference_advantages(rows: list[dict], cfg, ema: dict[str, float]) -> torch.Tensor:
    lc = cfg.learner
    base = reference_baselines(rows, lc.baseline, ema)
    scale = std_scales(rows) if lc.advantage_norm == "std" else [1.0] * len(rows)
    return torch.tensor([(r["reward"] - b) * s for r, b, s in zip(rows, base, scale)], dtype=torch.float64).float()


def scored_rows(model, rows: list[dict], cfg, base: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(log pi, entropy of pi) of each row's response tokens, with graph, each row alone under
    its node's adapter (every adapter off with ``base``)."""
    import contextlib

    params = [p for n, p in model.named_parameters() if "lora_" in n]
    dev = next(model.parameters()).device
    out = []
    for r in rows:
        if not r["response_ids"]:
            out.append((torch.zeros(0, device=dev), torch.zeros(0, device=dev)))
            continue
        model.set_adapter(r["node"])
        for p in params:
            p.requires_grad_(True)
        ids = torch.tensor([r["prompt_ids"] + r["response_ids"]], device=dev)
        p0, t = len(r["prompt_ids"]), len(r["response_ids"])
        with model.disable_adapter() if base else contextlib.nullcontext():
            logits = model(input_ids=ids).logits[0, p0 - 1:p0 - 1 + t]
        temperature, top_p, _, _ = agent_sampling(cfg, r["node"])  # the run's, or the agent's own
        tok = torch.tensor(r["response_ids"], device=dev)
        scaled = algos.sampling_logits(logits, tok, temperature, top_p)
        out.append((torch.log_softmax(scaled, -1).gather(-1, tok[:, None])[:, 0],
                    torch.distributions.Categorical(logits=scaled).entropy()))
    return out


def pad(values: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of different lengths as [B, T] and the mask."""
    width = max(len(v) for v in values)
    dev = values[0].device
    out = torch.stack([torch.cat([v.float(), torch.zeros(width - len(v), device=dev)]) for v in values])
    return out, torch.tensor([[j < len(v) for j in range(width)] for v in values], device=dev)


def reference_weights(log_ratio: torch.Tensor, mask: torch.Tensor, lc) -> torch.Tensor:
    """The rollout correction, written out (every row here is on the current version)."""
    kind, cap = lc.rollout_correction, lc.correction_cap
    if kind == "none":
        return mask.float()
    lr = log_ratio * mask
    r = torch.exp(lr.sum(-1, keepdim=True).expand_as(lr) if kind.endswith("_seq") else lr)
    if kind.startswith("tis"):
        w = torch.minimum(r, torch.full_like(r, cap))
    else:
        lo, hi = (lc.icepop_low, lc.icepop_high) if kind == "icepop" else (1.0 / cap, cap)
        w = torch.where((r >= lo) & (r <= hi), r, torch.zeros_like(r))
    return w * mask


def budgets(rows: list[dict], cfg) -> list[int]:
    """Each row's node's generation budget (max_new_tokens, its own under sampling.per_node)."""
    return [agent_sampling(cfg, r["node"])[2] for r in rows]


def written_out_loss(lp, old, adv, w, mask, ent, ref, lc, budget: list[int]) -> torch.Tensor:
    """The learner's loss over these rows, straight from its definition (algos' docstring)."""
    m = mask.float()
    c = m / m.sum(-1, keepdim=True).clamp(min=1.0) if lc.loss_norm == "sequence" else m
    has = m.sum(-1) > 0
    constant = float(sum(b for b, h in zip(budget, has.tolist()) if h))
    denom = {"token": float(m.sum()), "sequence": float(has.sum()), "constant": constant}[lc.loss_norm]
    a = adv[:, None]
    if lc.objective == "ppo_clip":
        rho = torch.exp(lp - old)
        surrogate = torch.minimum(rho * a, torch.clamp(rho, 1 - lc.clip_low, 1 + lc.clip_high) * a)
    else:
        surrogate = a * lp
    loss = -c * w * surrogate
    if lc.kl_coef:
        d = lp - ref
        kl = {"k1": d, "k2": d * d / 2, "k3": torch.exp(-d) - 1 + d}[lc.kl_estimator]
        loss = loss + lc.kl_coef * c * kl
    if lc.entropy_coef:
        loss = loss - lc.entropy_coef * c * ent
    return (loss * m).sum() / max(denom, 1.0)


def grads_of(model, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    params = {n: p for n, p in model.named_parameters() if "lora_" in n}
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {n: (g if g is not None else torch.zeros_like(p)) for (n, p), g in zip(params.items(), grads)}


def reference_grads(model, batch, cfg, ema: dict[str, float]) -> dict[str, torch.Tensor]:
    """reinforce: one update over every row of every node."""
    rows, lc = batch.to_pylist(), cfg.learner
    # the base model's pass first: PEFT's disable_adapter leaves the adapters without grad
    ref = pad([x[0].detach() for x in scored_rows(model, rows, cfg, base=True)])[0] if lc.kl_coef else None
    scored = scored_rows(model, rows, cfg)
    lp, mask = pad([x[0] for x in scored])
    ent, _ = pad([x[1] for x in scored])
    beh, _ = pad([torch.tensor(r["logprobs"], device=lp.device) for r in rows])
    w = reference_weights(lp.detach() - beh, mask, lc)
    loss = written_out_loss(lp, None, reference_advantages(rows, cfg, ema).to(lp.device), w, mask, ent, ref, lc,
                            budgets(rows, cfg))
    return grads_of(model, loss)


def mini_batch_questions(questions: set[str], seed: int, count: int, index: int, world_size: int) -> set[str]:
    """Each rank deals its own questions round-robin after a shuffle seeded alike."""
    import random

    from neuromas_dist.trajectories.shards import owner_rank

    out: set[str] = set()
    for rank in range(world_size):
        own = sorted(q for q in questions if owner_rank(q, world_size) == rank)
        random.Random(seed).shuffle(own)
        out |= set(own[index::count])
    return out


def check_ppo_step(got: dict, model_dir: str, cfg, batch, device: torch.device | str = "cpu",
                   world_size: int = 1) -> None:
    """ppo_clip: the ratio to the step's starting policy; update u (epoch u // mini_batches)
    over the questions each rank's seeded shuffle deals it, under the adapters it ran with."""
    rows, lc = [r for r in batch.to_pylist()], cfg.learner
    start = reference_model(model_dir, cfg, got["adapters"], device)
    adv = reference_advantages(rows, cfg, got["ema"]).to(device)
    old = [x[0].detach() for x in scored_rows(start, rows, cfg)]
    ref = [x[0].detach() for x in scored_rows(start, rows, cfg, base=True)]
    beh = [torch.tensor(r["logprobs"], device=device) for r in rows]
    assert len(got["updates"]) == lc.epochs * lc.mini_batches
    for u, update in enumerate(got["updates"]):
        epoch, index = divmod(u, lc.mini_batches)
        mine = mini_batch_questions({r["question_id"] for r in rows}, got["version"] * 1_000_003 + epoch,
                                    lc.mini_batches, index, world_size)
        sel = [i for i, r in enumerate(rows) if r["question_id"] in mine and r["response_ids"]]
        model = reference_model(model_dir, cfg, update["adapters"], device)
        scored = scored_rows(model, [rows[i] for i in sel], cfg)
        lp, mask = pad([x[0] for x in scored])
        ent, _ = pad([x[1] for x in scored])
        old_s, ref_s, beh_s = (pad([v[i] for i in sel])[0] for v in (old, ref, beh))
        w = reference_weights(old_s - beh_s, mask, lc)
        loss = written_out_loss(lp, old_s, adv[sel], w, mask, ent, ref_s, lc, budgets([rows[i] for i in sel], cfg))
        # a later epoch's tight clip may stop a node's every token in a small mini-batch (a rank's
        # one question at world size 2); the first epoch's ratio is 1, so there every node moves
        assert_same_grads(update["grads"], grads_of(model, loss), every_node=epoch == 0)


def assert_same_grads(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], every_node: bool = True) -> None:
    assert set(got) == set(want)
    for name in want:
        scale = want[name].norm().item()
        err = (got[name].cpu() - want[name].cpu()).norm().item()
        assert err <= RTOL * max(scale, 1e-8), f"{name}: |got - want| = {err:.3g} vs |want| = {scale:.3g}"
    # every node was trained: the comparison is not vacuous
    assert not every_node or all(any(want[n].abs().sum() > 0 for n in want if f".{node}." in n) for node in NODES)


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

def run_steps(rank, batches, prepare=None) -> list[dict]:
    """Every step on ``rank``: per step the batch as sent (``prepare``: on-policy by default),
    what DeepSpeed received at each optimizer step, the step's metrics, and the adapters,
    version and EMA state the step started from (what the reference needs)."""
    out = []
    for batch in batches:
        before = {"adapters": rank.export(), "ema": dict(rank.ema), "version": rank.version}
        sent = (prepare or on_policy)(rank, batch)
        updates, metrics = captured_updates(rank, sent)
        out.append({"grads": updates[-1]["grads"], "updates": updates, "metrics": metrics, "batch": sent, **before})
    return out


def check_steps(steps: list[dict], model_dir: str, cfg, device: torch.device | str = "cpu",
                world_size: int = 1) -> None:
    for got in steps:
        if cfg.learner.objective == "ppo_clip":
            check_ppo_step(got, model_dir, cfg, got["batch"], device, world_size)
            continue
        assert len(got["updates"]) == 1
        model = reference_model(model_dir, cfg, got["adapters"], device)
        assert_same_grads(got["grads"], reference_grads(model, got["batch"], cfg, got["ema"]))


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
    check_steps(run_steps(rank, batches), str(tiny_model_dir), cfg, rank.device)
    # mixed passes really held several nodes' rows; per-node passes never did
    assert (max(routed, default=1) > 1) == (mode == "mixed")


@pytest.mark.parametrize("mode", [*MODES, "per_node+agent_sampling"])
@pytest.mark.parametrize("baseline,norm", [("loo", "token"), ("batch_mean", "sequence"), ("ema", "token")])
def test_agents_called_0_1_or_several_times_per_sample_equal_autograd(make_rank, tiny_model_dir, vocab, baseline,
                                                                      norm, mode):
    """An agent program's rows: every call is a row, a sample's advantage is shared by all its
    calls of a node, and the baselines count samples, not calls. With per-agent sampling, each
    agent's rows are scored under its own temperature and top-p."""

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
    check_steps(run_steps(rank, batches), str(tiny_model_dir), cfg, rank.device)


def test_graph_nodes_with_their_own_sampling_equal_autograd(make_rank, tiny_model_dir, vocab):
    """sampling.per_node: each node's rows scored under its own temperature and top-p, and
    Dr.GRPO's constant normaliser counting each node's own budget."""
    import dataclasses

    from neuromas_dist.config import AgentSampling

    cfg = case_config("batch_mean", "constant")
    per_node = (AgentSampling("L0N1", temperature=0.7, max_new_tokens=40), AgentSampling("L1N0", top_p=0.9))
    cfg = dataclasses.replace(cfg, sampling=dataclasses.replace(cfg.sampling, per_node=per_node)).validate()
    rank = make_rank(cfg)
    assert {n: (s.temperature, s.top_p) for n, s in rank.node_specs.items()} == {
        "L0N0": (1.0, 1.0), "L0N1": (0.7, 1.0), "L1N0": (1.0, 0.9)}
    check_steps(run_steps(rank, step_batches(vocab, seed=3)), str(tiny_model_dir), cfg, rank.device)


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

    cfg = case_config("loo", "token", mode=mode, padding_free=packed, micro_batch_size=32,
                      max_tokens_per_micro_batch=24, logprob_chunk_tokens=5)
    cfg = dataclasses.replace(cfg, sampling=dataclasses.replace(cfg.sampling, temperature=0.8, top_p=0.9))
    rank = make_rank(cfg)
    batches = [ragged(b, vocab) for b in step_batches(vocab, seed=5)]
    check_steps(run_steps(rank, batches), str(tiny_model_dir), cfg, rank.device)


# name -> (baseline, norm, learner.micro_batches, learner options, the rows' logprobs, adapters
# moved off zero first). Every objective, advantage norm, loss norm, KL estimator and
# correction at least once, per-node and mixed passes, padded and packed.
CORRECTIONS = ("tis_token", "tis_seq", "mis_token", "mis_seq", "icepop")
OBJECTIVES = {
    "std_loo": ("loo", "token", "per_node", dict(advantage_norm="std"), on_policy, False),
    "std_mixed_packed": ("loo", "sequence", "mixed", dict(advantage_norm="std", padding_free="on"), on_policy, False),
    "constant_norm": ("ema", "constant", "per_node", {}, on_policy, False),
    "kl_k1": ("loo", "token", "per_node", dict(kl_coef=0.5, kl_estimator="k1", log_entropy=True), on_policy, True),
    "kl_k2_entropy_mixed_packed": ("batch_mean", "token", "mixed", dict(kl_coef=2.0, kl_estimator="k2",
                                   entropy_coef=0.05, padding_free="on"), on_policy, True),
    "kl_k3_token_budget": ("loo", "sequence", "per_node", dict(kl_coef=2.0, kl_estimator="k3",
                           **OPTIONS["token_budget"]), on_policy, True),
    # mis_seq at C = 2 drops every row of some node (products of SHIFTS' ratios): C = 4 keeps some
    **{c: ("loo", "token", "per_node", dict(rollout_correction=c, correction_cap=4.0 if c == "mis_seq" else 2.0),
           off_policy, False) for c in CORRECTIONS},
    # a clip this tight binds in the second epoch: the clipped branch is exercised
    "ppo_clip": ("batch_mean", "token", "per_node", dict(objective="ppo_clip", epochs=2, mini_batches=2,
                 clip_low=0.002, clip_high=0.003), on_policy, True),
    "ppo_clip_std_kl_entropy_tis_mixed_packed": ("loo", "sequence", "mixed", dict(
        objective="ppo_clip", epochs=2, advantage_norm="std", kl_coef=1.0, entropy_coef=0.05,
        rollout_correction="tis_token",
        padding_free="on", clip_low=0.002, clip_high=0.002), off_policy, True),
}


def objective_run(make, name: str, vocab: int):
    """(config, device, steps) of case ``name`` on a rank from ``make(cfg)``."""
    baseline, norm, mode, options, prepare, moved = OBJECTIVES[name]
    cfg = case_config(baseline, norm, mode=mode, **options)
    rank = make(cfg)
    if moved:
        moved_adapters(rank)
    return cfg, rank.device, run_steps(rank, step_batches(vocab, seed=11), prepare)


def assert_exercised(cfg, steps: list[dict]) -> None:
    """The case is not vacuous: what it sets acted on some tokens, as the metrics show."""
    lc, seen = cfg.learner, defaultdict(float)
    for step in steps:
        for k, v in step["metrics"].items():
            seen[k.rsplit("/", 1)[-1]] = max(seen[k.rsplit("/", 1)[-1]], abs(v))  # k1's KL may be < 0
    assert seen["ratio_max"] > 0 and (seen["entropy_exact"] > 0) == bool(lc.entropy_coef or lc.log_entropy)
    if lc.rollout_correction != "none":
        assert 0 < seen["corrected_token_frac"] < 1
    if lc.kl_coef:
        assert seen["kl_base"] > 0
    if lc.objective == "ppo_clip":
        assert 0 < seen["clip_frac"] < 1


@pytest.mark.parametrize("name", OBJECTIVES)
def test_objectives_equal_autograd_at_world_size_1(make_rank, tiny_model_dir, vocab, name):
    cfg, device, steps = objective_run(make_rank, name, vocab)
    check_steps(steps, str(tiny_model_dir), cfg, device)
    assert_exercised(cfg, steps)


# ----------------------------------------------------------------- world size 2

# ppo_clip's updates (a rank may hold no question of a mini-batch and joins with zero) and a
# sequence-level correction across ranks
WORLD_SIZE_2_OBJECTIVES = ("ppo_clip_std_kl_entropy_tis_mixed_packed", "ppo_clip", "mis_seq")


def world_size_2_config(i: int, baseline: str, norm: str, world_size: int = 2):
    """Case i at world size 2: each mode on three cases, the options in turn."""
    option = list(OPTIONS.values())[i % len(OPTIONS)]
    return case_config(baseline, norm, world_size=world_size, mode=MODES[i % 2], **option)


def _rank_process(rank_id: int, port: int, model_dir: str, vocab: int, out: str) -> None:
    """One of two DeepSpeed ranks (gloo, on the CPU on any machine: one GPU cannot hold two
    NCCL ranks) running every case; saves what it captured to ``out``."""
    import os

    os.environ["DS_ACCELERATOR"] = "cpu"
    # One thread per rank, as torchrun and Ray (num_cpus=1) give a rank: two ranks with a
    # thread per core each, spinning in DeepSpeed's shared-memory all-reduce, took 92-157 s
    # on a 2-core VM against 36 s so.
    torch.set_num_threads(1)
    from neuromas_dist.learner.rank import LearnerRank

    results = {}
    for i, (baseline, norm) in enumerate(CASES):
        cfg = world_size_2_config(i, baseline, norm)
        rank = LearnerRank(cfg, model_dir, NODES, rank=rank_id, world_size=2)
        rank.setup(master_port=port)
        results[(baseline, norm)] = run_steps(rank, step_batches(vocab, seed=11))
    for name in WORLD_SIZE_2_OBJECTIVES:
        results[name] = objective_run(lambda cfg: _joined(cfg, model_dir, rank_id, port), name, vocab)[2]
    torch.save(results, out)


def _joined(cfg, model_dir: str, rank_id: int, port: int):
    from neuromas_dist.learner.rank import LearnerRank

    rank = LearnerRank(dataclasses.replace(cfg, learner=dataclasses.replace(cfg.learner, num_ranks=2)), model_dir,
                       NODES, rank=rank_id, world_size=2)
    rank.setup(master_port=port)
    return rank


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
    for i, (baseline, norm) in enumerate(CASES):
        cfg = world_size_2_config(i, baseline, norm, world_size=1)
        check_steps(results[0][(baseline, norm)], str(tiny_model_dir), cfg)
        check_steps(results[1][(baseline, norm)], str(tiny_model_dir), cfg)
    for name in WORLD_SIZE_2_OBJECTIVES:
        baseline, norm, mode, options, _, _ = OBJECTIVES[name]
        cfg = case_config(baseline, norm, mode=mode, **options)
        for got in results:
            check_steps(got[name], str(tiny_model_dir), cfg, world_size=2)
            assert_exercised(cfg, got[name])
