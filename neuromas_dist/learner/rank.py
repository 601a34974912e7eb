"""One learner rank: frozen base + one named LoRA adapter per node, under DeepSpeed.

How a step runs (why it is built this way):

* Rows stream in with :meth:`LearnerRank.accumulate`. Each rank keeps the rows of the
  questions it owns (``crc32(question_id) % world_size``), so a question's samples, and
  therefore every sample's rows, stay on one rank and leave-one-out baselines are local.
* Forward/backward starts on the first micro-batch, long before the last rollout
  arrives. Gradients go into the rank's own fp32 buffers through
  ``torch.autograd.grad``, not into ``.grad``: ranks see different numbers of
  micro-batches of different nodes, and DeepSpeed's gradient reduction (allreduce in
  stage 0, bucketed reduce-scatter hooks in ZeRO-2) needs every rank to run the same
  backward graph the same number of times.
* :meth:`LearnerRank.finish_step` sums the step's statistics over ranks (one small
  all-reduce), fixes the advantages that needed the whole step's rewards, checks the
  logprob gap and finiteness, and then runs ONE ``engine.backward`` of the surrogate
  ``sum_p <p, g_p>`` over all adapters (identical graph on every rank; its gradient is
  exactly g_p) and ONE ``engine.step``: DeepSpeed averages, clips and applies, whatever
  the ZeRO stage. A skipped step never reaches DeepSpeed.
* Advantages that need the whole step (batch-mean baseline; an EMA baseline for a node
  seen for the first time) are linear in the unknown per-node constant c:
  ``sum_r (R_r - b_r - c) g_r = G_known - c * G_one``. Both sums are accumulated while
  streaming and combined once c is known, so streaming never waits for rewards.
"""

from __future__ import annotations

import math
import os
import random
import socket
import time
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from neuromas_dist.adapters.peft_io import AdapterSet, peft_config_dict
from neuromas_dist.learner import algos

# Per-node statistics summed over ranks; their order fixes the all-reduce layout.
NODE_STATS = ("rows", "reward_sum", "adv_known_sum", "tokens", "onpolicy_tokens", "gap_sum", "kl_sum",
              "stale_tokens", "iw_sum", "loss_known", "loss_one", "denom", "input_tokens",
              "stale_checked_tokens", "stale_gap_sum")


class LogprobGapError(RuntimeError):
    """The learner's logprobs of the rollout's sampled tokens disagree with the rollout's."""


@dataclass
class Row:
    node: str
    question_id: str
    sample_index: int
    prompt: list[int]
    response: list[int]
    logprobs: list[float]
    version: int
    reward: float
    adv_known: float = 0.0  # R - b for the part of the baseline known while streaming


def rows_from_batch(batch: Any, rank: int, world_size: int) -> list[Row]:
    """Rows of a trajectory RecordBatch/Table that belong to this rank (whole questions)."""
    cols = {name: batch.column(name).to_pylist() for name in
            ("node", "question_id", "sample_index", "prompt_ids", "response_ids", "logprobs",
             "adapter_version", "reward")}
    out = []
    for i, qid in enumerate(cols["question_id"]):
        if owner_rank(qid, world_size) != rank:
            continue
        out.append(Row(cols["node"][i], qid, cols["sample_index"][i], cols["prompt_ids"][i],
                       cols["response_ids"][i], cols["logprobs"][i], cols["adapter_version"][i],
                       float(cols["reward"][i])))
    return out


def owner_rank(question_id: str, world_size: int) -> int:
    return zlib.crc32(question_id.encode()) % world_size


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


STALE_BUILD_LOCK_S = 900.0


def clear_stale_build_lock(extension: str) -> bool:
    """Remove a torch extension's build lock left by a killed process. DeepSpeed builds its
    CPU shared-memory op on first init_distributed under torch's FileBaton, which has no
    owner: a rank SIGKILLed mid-build leaves the lock, and every later rank (a learner
    rebuilt after a fault included) waits on it for ever. A build takes about a minute
    here; a lock older than STALE_BUILD_LOCK_S is taken as orphaned."""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        lock = Path(_get_build_directory(extension, False)) / "lock"
        if lock.is_file() and time.time() - lock.stat().st_mtime > STALE_BUILD_LOCK_S:
            lock.unlink()
            return True
    except (ImportError, OSError):
        pass
    return False


def resolve_dtype(name: str) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def build_peft_model(model_dir: str, nodes: Sequence[str], cfg: Any, dtype: torch.dtype) -> torch.nn.Module:
    """Base model (frozen) wrapped by PEFT with one adapter per node, all trainable."""
    import peft
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype,
                                                trust_remote_code=cfg.model.trust_remote_code)
    lcfg = cfg.lora
    pc = peft.LoraConfig(r=lcfg.rank, lora_alpha=lcfg.alpha, lora_dropout=lcfg.dropout,
                         target_modules=list(lcfg.target_modules), task_type="CAUSAL_LM")
    model = peft.get_peft_model(base, pc, adapter_name=nodes[0])
    for node in nodes[1:]:
        model.add_adapter(node, pc)
    return model


def node_params(model: torch.nn.Module, nodes: Sequence[str]) -> dict[str, list[torch.nn.Parameter]]:
    """node -> its LoRA parameters (PEFT names them ``...lora_A.<node>.weight``)."""
    out: dict[str, list[torch.nn.Parameter]] = {n: [] for n in nodes}
    for name, p in model.named_parameters():
        for node in nodes:
            if f".lora_A.{node}." in name or f".lora_B.{node}." in name:
                out[node].append(p)
    for node, ps in out.items():
        if not ps:
            raise ValueError(f"node {node}: no LoRA parameters found (check lora.target_modules)")
    return out


def ds_config(cfg: Any, bf16: bool) -> dict[str, Any]:
    lc = cfg.learner
    return {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,  # the step does its own accumulation (see module doc)
        "gradient_clipping": float(lc.grad_clip),
        "zero_optimization": {"stage": int(lc.zero_stage)},
        "bf16": {"enabled": bool(bf16)},
        "zero_allow_untested_optimizer": True,  # torch AdamW: no op compilation on CPU
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


class LearnerRank:
    """One data-parallel rank. Run it as a Ray actor (LearnerGroup) or in-process (world size 1)."""

    def __init__(self, cfg: Any, model_dir: str, nodes: Sequence[str], rank: int = 0, world_size: int = 1,
                 init_adapters: AdapterSet | None = None):
        self.cfg, self.model_dir, self.nodes = cfg, str(model_dir), list(nodes)
        self.rank, self.world_size = rank, world_size
        self._init_adapters = init_adapters
        self.engine = None
        self.version = 0 if init_adapters is None else int(init_adapters.version)
        self.skipped_steps = 0
        self.ema: dict[str, float] = {}
        self.temperature = float(cfg.sampling.temperature)
        self.top_p = float(cfg.sampling.top_p)
        # Adapters of the last few versions (small): stale rows are re-scored under the
        # version that sampled them, so the logprob-gap guard stays armed in async mode.
        self._history: dict[int, list[torch.Tensor]] = {}

    # ------------------------------------------------------------ setup

    def address(self) -> tuple[str, int]:
        """(ip, free port) of this rank's host: rank 0's becomes MASTER_ADDR/PORT."""
        import ray

        ip = ray.util.get_node_ip_address() if ray.is_initialized() else "127.0.0.1"
        return ip, free_port()

    def setup(self, master_addr: str = "127.0.0.1", master_port: int | None = None) -> None:
        """Join the process group, build the PEFT model and wrap it with DeepSpeed."""
        import deepspeed

        gpu = torch.cuda.is_available()
        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port or free_port()),
                          RANK=str(self.rank), WORLD_SIZE=str(self.world_size), LOCAL_RANK="0")
        if not gpu:
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
            clear_stale_build_lock("deepspeed_shm_comm")
        deepspeed.init_distributed(dist_backend="nccl" if gpu else "gloo", verbose=False)
        # Same seed on every rank: every rank starts from identical adapters.
        torch.manual_seed(self.cfg.trainer.seed)
        random.seed(self.cfg.trainer.seed)
        dtype = resolve_dtype(self.cfg.model.dtype)
        model = build_peft_model(self.model_dir, self.nodes, self.cfg, dtype)
        if gpu:
            model = model.to("cuda")
        self.params = node_params(model, self.nodes)
        self._all_params = [p for n in self.nodes for p in self.params[n]]
        for p in self._all_params:
            p.requires_grad_(True)
        if self._init_adapters is not None:
            self._copy_in(self._init_adapters.tensors, model)
        opt = torch.optim.AdamW(self._all_params, lr=self.cfg.learner.lr,
                                weight_decay=self.cfg.learner.weight_decay)
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=opt, model_parameters=self._all_params,
            config=ds_config(self.cfg, dtype == torch.bfloat16))
        self.module = self.engine.module
        self.module.train()
        self.device = next(self.module.parameters()).device
        self._remember_version()
        self._reset_step()

    def _remember_version(self, forget_older: bool = False) -> None:
        """Keep the current adapters under the current version; drop versions no row can
        still carry (older than ``trainer.max_staleness`` behind), or all with ``forget_older``."""
        if forget_older:
            self._history.clear()
        self._history[self.version] = [p.detach().clone() for p in self._all_params]
        oldest = self.version - max(int(self.cfg.trainer.max_staleness), 1)
        for v in [v for v in self._history if v < oldest]:
            del self._history[v]

    # ------------------------------------------------------------ streaming

    def _reset_step(self) -> None:
        self._pending: dict[tuple[str, str], list[Row]] = defaultdict(list)  # loo: (question, node) incomplete
        self._ready: dict[str, list[Row]] = defaultdict(list)
        self._g_known = [torch.zeros_like(p, dtype=torch.float32) for p in self._all_params]
        self._g_one: list[torch.Tensor] | None = None
        self._stats = {n: dict.fromkeys(NODE_STATS, 0.0) for n in self.nodes}
        self._busy_s = 0.0
        self._local_bad = False
        self._stale_checks: dict[str, list[Row]] = defaultdict(list)

    def accumulate(self, batch: Any) -> int:
        """Take one trajectory batch (or ObjectRef resolved by Ray); returns rows kept by this rank."""
        t0 = time.perf_counter()
        rows = rows_from_batch(batch, self.rank, self.world_size)
        unknown = sorted({r.node for r in rows} - set(self.nodes))
        if unknown:
            raise ValueError(f"trajectory rows for nodes {unknown} this learner does not hold ({self.nodes})")
        for row in rows:
            if self.cfg.learner.baseline == "loo":
                self._pending[(row.question_id, row.node)].append(row)
            else:
                self._ready[row.node].append(self._with_streaming_baseline(row))
        self._release_complete_questions()
        self._run_full_micro_batches()
        self._busy_s += time.perf_counter() - t0
        return len(rows)

    def _with_streaming_baseline(self, row: Row) -> Row:
        # ema with state: b known now; batch_mean / first-seen ema: b = c_node, fixed in finish_step
        known_b = self.ema[row.node] if self._uses_ema_state(row.node) else 0.0
        row.adv_known = row.reward - known_b
        return row

    def _uses_ema_state(self, node: str) -> bool:
        return self.cfg.learner.baseline == "ema" and node in self.ema

    def _needs_step_constant(self, node: str) -> bool:
        return self.cfg.learner.baseline != "loo" and not self._uses_ema_state(node)

    def _release_complete_questions(self, force: bool = False) -> None:
        # Keyed by (question, node): a sample's rows may arrive in different batches, and a
        # node's leave-one-out baseline needs that node's rows of all n samples.
        n = self.cfg.sampling.n_samples
        for key in list(self._pending):
            rows = self._pending[key]
            if not force and len({r.sample_index for r in rows}) < n:
                continue
            del self._pending[key]
            rewards = torch.tensor([r.reward for r in rows], dtype=torch.float64)
            adv = algos.advantages(rewards, algos.loo_baseline(rewards))
            for r, a in zip(rows, adv.tolist()):
                r.adv_known = a
            self._ready[key[1]].extend(rows)

    def _run_full_micro_batches(self, force: bool = False) -> None:
        mbs = self.cfg.learner.micro_batch_size
        for node in self.nodes:
            queue = self._ready[node]
            while len(queue) >= mbs or (force and queue):
                chunk, self._ready[node] = queue[:mbs], queue[mbs:]
                queue = self._ready[node]
                self._micro_batch(node, chunk)

    # ------------------------------------------------------------ forward / backward

    def _activate(self, node: str) -> None:
        # PEFT's set_adapter freezes the other adapters; they must stay trainable so the
        # step's single backward reaches all of them and the optimizer keeps owning them.
        self.module.set_adapter(node)
        for p in self._all_params:
            p.requires_grad_(True)

    def _logprobs(self, rows: Sequence[Row]) -> tuple[torch.Tensor, torch.Tensor]:
        """Learner logprobs [B, T] of the rows' response tokens (with graph) and the mask."""
        pad = 0
        seqs = [r.prompt + r.response for r in rows]
        b, length = len(rows), max(len(s) for s in seqs)
        t = max(len(r.response) for r in rows)
        ids = torch.full((b, length), pad, dtype=torch.long)
        attn = torch.zeros((b, length), dtype=torch.long)
        pos = torch.zeros((b, t), dtype=torch.long)  # logit position predicting each response token
        tok = torch.zeros((b, t), dtype=torch.long)
        mask = torch.zeros((b, t), dtype=torch.bool)
        for i, (r, s) in enumerate(zip(rows, seqs)):
            ids[i, :len(s)] = torch.tensor(s)
            attn[i, :len(s)] = 1
            n = len(r.response)
            pos[i, :n] = torch.arange(len(r.prompt) - 1, len(r.prompt) - 1 + n)
            tok[i, :n] = torch.tensor(r.response)
            mask[i, :n] = True
        logits = self.module(input_ids=ids.to(self.device), attention_mask=attn.to(self.device)).logits
        picked = logits.gather(1, pos.to(self.device).unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
        lp = algos.token_logprobs(picked, tok.to(self.device), self.temperature, self.top_p)
        mask = mask.to(self.device)
        # where, not multiply: a padded position's -inf (outside top-p) times 0 would be NaN
        return torch.where(mask, lp, torch.zeros_like(lp)), mask

    def _micro_batch(self, node: str, rows: list[Row]) -> None:
        # An empty response has no token to credit, but its reward is one of the node's
        # outcomes: it counts in batch-mean and EMA baselines as it does in leave-one-out.
        self._count_rewards(node, [r for r in rows if not r.response])
        rows = [r for r in rows if r.response]
        if not rows:
            return
        self._activate(node)
        lp, mask = self._logprobs(rows)
        dev, norm = self.device, self.cfg.learner.loss_norm
        beh = _recorded_logprobs(rows, lp)
        stale = torch.tensor([r.version != self.version for r in rows], device=dev)
        self._pick_stale_checks(node, [r for r in rows if r.version != self.version])
        w = algos.importance_weights(lp, beh, stale, self.cfg.learner.importance_cap) * mask
        coef = algos.token_coefficients(mask, norm)
        adv = torch.tensor([r.adv_known for r in rows], device=dev)
        terms_known = algos.reinforce_terms(lp, adv, w, coef)
        terms_one = algos.reinforce_terms(lp, torch.ones_like(adv), w, coef)
        need_one = self._needs_step_constant(node)
        self._add_grads(node, terms_known, self._g_known, retain=need_one)
        if need_one:
            if self._g_one is None:
                self._g_one = [torch.zeros_like(g) for g in self._g_known]
            self._add_grads(node, terms_one, self._g_one, retain=False)
        self._count(node, rows, lp, beh, mask, stale, w, terms_known, terms_one)

    def _pick_stale_checks(self, node: str, stale_rows: list[Row]) -> None:
        room = self.cfg.learner.stale_check_rows - len(self._stale_checks[node])
        known = [r for r in stale_rows if r.version in self._history]
        self._stale_checks[node].extend(known[:max(room, 0)])

    @torch.no_grad()
    def _score_stale_checks(self) -> None:
        """Re-score the picked stale rows under the adapters of the version that sampled
        them: with those weights swapped in, the gap is as small as an on-policy row's
        unless the rollout served something else (a wrong or zero adapter)."""
        current = [p.detach().clone() for p in self._all_params]
        try:
            for node, rows in self._stale_checks.items():
                for version in sorted({r.version for r in rows}):
                    subset = [r for r in rows if r.version == version and r.response]
                    if not subset:
                        continue
                    for p, old in zip(self._all_params, self._history[version]):
                        p.data.copy_(old)
                    self._activate(node)
                    lp, mask = self._logprobs(subset)
                    gap, _, tokens = algos.logprob_gap(lp, _recorded_logprobs(subset, lp), mask)
                    self._stats[node]["stale_gap_sum"] += gap
                    self._stats[node]["stale_checked_tokens"] += tokens
        finally:
            for p, now in zip(self._all_params, current):
                p.data.copy_(now)

    def _add_grads(self, node: str, loss: torch.Tensor, into: list[torch.Tensor], retain: bool) -> None:
        params = self.params[node]
        grads = torch.autograd.grad(loss, params, retain_graph=retain, allow_unused=True)
        start = self._offset(node)
        for j, g in enumerate(grads):
            if g is None:
                continue
            if not torch.isfinite(g).all():
                self._local_bad = True
            into[start + j].add_(g.float())

    def _offset(self, node: str) -> int:
        return sum(len(self.params[n]) for n in self.nodes[:self.nodes.index(node)])

    def _count_rewards(self, node: str, rows: list[Row]) -> None:
        s = self._stats[node]
        s["rows"] += len(rows)
        s["reward_sum"] += sum(r.reward for r in rows)
        s["adv_known_sum"] += sum(r.adv_known for r in rows)

    def _count(self, node: str, rows: list[Row], lp, beh, mask, stale, w, terms_known, terms_one) -> None:
        s = self._stats[node]
        on_mask = mask & ~stale.unsqueeze(-1)
        gap, kl, on_tokens = algos.logprob_gap(lp, beh, on_mask)
        stale_mask = mask & stale.unsqueeze(-1)
        self._count_rewards(node, rows)
        s["tokens"] += float(mask.sum())
        s["input_tokens"] += sum(len(r.prompt) + len(r.response) for r in rows)
        s["onpolicy_tokens"] += on_tokens
        s["gap_sum"] += gap
        s["kl_sum"] += kl
        s["stale_tokens"] += float(stale_mask.sum())
        s["iw_sum"] += float((w * stale_mask).sum())
        s["loss_known"] += float(terms_known.detach())
        s["loss_one"] += float(terms_one.detach())
        s["denom"] += algos.loss_denominator(mask, self.cfg.learner.loss_norm)

    # ------------------------------------------------------------ the step

    def finish_step(self) -> dict[str, float]:
        """Flush, reduce, check, apply one joint update. Raises LogprobGapError on a large gap."""
        t0 = time.perf_counter()
        try:
            self._release_complete_questions(force=True)
            self._run_full_micro_batches(force=True)
            self._score_stale_checks()
            totals, bad = self._reduce_stats()
            consts = self._step_constants(totals)
            self._check_gap(totals)
            bad = bad or not all(math.isfinite(v) for s in totals.values() for v in s.values())
            bad = bad or not all(math.isfinite(c) for c in consts.values())
            grad_norm = float("nan")
            if bad:
                self.skipped_steps += 1
                if self.rank == 0:
                    print(f"[learner] step {self.version}: non-finite loss or gradient, update skipped "
                          f"({self.skipped_steps} skipped so far)", flush=True)
            else:
                grad_norm = self._apply(totals, consts)
                self._update_baselines(totals)
            self._busy_s += time.perf_counter() - t0
            busy = self._reduce_max(self._busy_s)
            metrics = self._metrics(totals, consts, grad_norm, busy)
            self.version += 1
            self._remember_version()
            return metrics
        finally:
            self._reset_step()

    def _reduce_stats(self) -> tuple[dict[str, dict[str, float]], bool]:
        import torch.distributed as dist

        flat = [self._stats[n][k] for n in self.nodes for k in NODE_STATS] + [float(self._local_bad)]
        buf = torch.tensor(flat, dtype=torch.float64, device=self.device)
        if self.world_size > 1:
            dist.all_reduce(buf)
        vals = buf.tolist()
        k = len(NODE_STATS)
        totals = {n: dict(zip(NODE_STATS, vals[i * k:(i + 1) * k])) for i, n in enumerate(self.nodes)}
        return totals, vals[-1] > 0

    def _reduce_max(self, value: float) -> float:
        import torch.distributed as dist

        buf = torch.tensor([value], dtype=torch.float64, device=self.device)
        if self.world_size > 1:
            dist.all_reduce(buf, op=dist.ReduceOp.MAX)
        return float(buf)

    def _step_constants(self, totals: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
        """c_node: the part of the baseline that needed the whole step (see module doc)."""
        out = {}
        for node, s in totals.items():
            need = self._needs_step_constant(node) and s["rows"] > 0
            out[node] = s["reward_sum"] / s["rows"] if need else 0.0
        return out

    def _check_gap(self, totals: Mapping[str, Mapping[str, float]]) -> None:
        bound = self.cfg.learner.max_logprob_gap
        bad = []
        for node, s in totals.items():
            for kind, gap_sum, tokens in (("on-policy", s["gap_sum"], s["onpolicy_tokens"]),
                                          ("stale, re-scored under their own version", s["stale_gap_sum"],
                                           s["stale_checked_tokens"])):
                gap = gap_sum / tokens if tokens > 0 else 0.0
                if tokens > 0 and math.isfinite(gap) and gap > bound:
                    bad.append(f"{node} (mean |learner - rollout| = {gap:.4f} over {int(tokens)} {kind} tokens)")
        if bad:
            raise LogprobGapError(
                f"logprob gap above learner.max_logprob_gap={bound} at adapter version {self.version} "
                f"for node(s): {'; '.join(bad)}. Rollout and learner disagree: wrong adapter, a silent "
                f"fall-back to the base model, or a temperature/dtype mismatch.")

    def _apply(self, totals, consts) -> float:
        denom = sum(s["denom"] for s in totals.values())
        scale = self.world_size / max(denom, 1.0)  # DeepSpeed averages over ranks; we want the global sum / D
        surrogate = torch.zeros((), device=self.device)
        i = 0
        for node in self.nodes:
            c = consts[node]
            for p in self.params[node]:
                g = self._g_known[i]
                if c and self._g_one is not None:
                    g = g - c * self._g_one[i]
                surrogate = surrogate + (p * (scale * g).to(p.dtype)).sum()
                i += 1
        self.engine.backward(surrogate)
        norm = self._grad_norm_from_grads()
        self.engine.step()
        if norm is None:
            norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def _grad_norm_from_grads(self) -> float | None:
        grads = [p.grad for p in self._all_params if p.grad is not None]
        if not grads:
            return None  # ZeRO moved them into partitions; DeepSpeed reports the norm after step
        return float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads)))

    def _update_baselines(self, totals) -> None:
        if self.cfg.learner.baseline != "ema":
            return
        means = {n: s["reward_sum"] / s["rows"] for n, s in totals.items() if s["rows"] > 0}
        self.ema = algos.ema_update(self.ema, means, self.cfg.learner.ema_decay)

    def _metrics(self, totals, consts, grad_norm: float, busy: float) -> dict[str, float]:
        m: dict[str, float] = {}
        loss_sum = denom = tokens = 0.0
        for node, s in totals.items():
            rows = s["rows"]
            loss_sum += s["loss_known"] - consts[node] * s["loss_one"]
            denom += s["denom"]
            tokens += s["input_tokens"]
            if rows == 0:
                continue
            on = s["onpolicy_tokens"]
            m[f"node/{node}/advantage_mean"] = (s["adv_known_sum"] - consts[node] * rows) / rows
            m[f"node/{node}/reward_mean"] = s["reward_sum"] / rows
            m[f"node/{node}/logprob_gap"] = s["gap_sum"] / on if on else float("nan")
            m[f"node/{node}/kl"] = s["kl_sum"] / on if on else float("nan")
            m[f"node/{node}/stale_token_frac"] = s["stale_tokens"] / max(s["tokens"], 1.0)
            if s["stale_checked_tokens"]:
                m[f"node/{node}/logprob_gap_stale"] = s["stale_gap_sum"] / s["stale_checked_tokens"]
            if s["stale_tokens"]:
                m[f"node/{node}/importance_weight_mean"] = s["iw_sum"] / s["stale_tokens"]
            if self.cfg.learner.baseline == "ema" and node in self.ema:
                m[f"node/{node}/baseline_ema"] = self.ema[node]
        m.update({
            "learner/loss": loss_sum / max(denom, 1.0),
            "learner/grad_norm": grad_norm,
            "learner/tokens": tokens,
            "learner/tokens_per_s": tokens / busy if busy > 0 else 0.0,
            "learner/skipped_steps": float(self.skipped_steps),
            "learner/version": float(self.version + 1),
            "timing_s/learn": busy,
        })
        return m

    # ------------------------------------------------------------ adapters

    def export(self) -> AdapterSet:
        """Every node's LoRA tensors (PEFT keys, CPU) at the current version."""
        import peft

        tensors = {}
        for node in self.nodes:
            state = peft.get_peft_model_state_dict(self.module, adapter_name=node)
            tensors[node] = {k: v.detach().to("cpu").clone() for k, v in state.items()}
        return AdapterSet(self.version, tensors, peft_config_dict(self.cfg.lora, self.model_dir))

    def load_adapters(self, adapters: AdapterSet | Mapping[str, Mapping[str, torch.Tensor]]) -> list[str]:
        """Copy in the given nodes' tensors (growth, resume); other nodes keep theirs. Returns nodes loaded."""
        tensors = adapters.tensors if isinstance(adapters, AdapterSet) else adapters
        self._copy_in(tensors)
        self._remember_version()  # the current version's weights changed
        return sorted(tensors)

    def _copy_in(self, tensors: Mapping[str, Mapping[str, torch.Tensor]],
                 model: torch.nn.Module | None = None) -> None:
        import peft

        model = model if model is not None else self.module
        for node, state in tensors.items():
            if node not in self.nodes:
                raise ValueError(f"adapter for node {node!r}: this learner holds {self.nodes}")
            result = peft.set_peft_model_state_dict(model, dict(state), adapter_name=node)
            missing = [k for k in getattr(result, "unexpected_keys", []) if f".{node}." in k or "lora_" in k]
            if missing:
                raise ValueError(f"node {node}: adapter keys not in the model: {missing[:3]}")
        # ZeRO (and bf16) keep fp32 master copies: refresh them or the next step undoes the load.
        if self.engine is not None and hasattr(self.engine.optimizer, "refresh_fp32_params"):
            self.engine.optimizer.refresh_fp32_params()

    # ------------------------------------------------------------ scoring (checks, benchmarks)

    @torch.no_grad()
    def score(self, batch: Any) -> list[list[float]]:
        """Learner logprobs of every row's response tokens (all rows, ignoring rank ownership)."""
        rows = rows_from_batch(batch, 0, 1)
        out: list[list[float]] = []
        for r in rows:
            if not r.response:
                out.append([])
                continue
            self._activate(r.node)
            lp, _ = self._logprobs([r])
            out.append(lp[0, :len(r.response)].float().cpu().tolist())
        return out

    def set_version(self, version: int) -> None:
        self.version = int(version)
        self._remember_version(forget_older=True)

    def info(self) -> dict[str, Any]:
        return {"rank": self.rank, "world_size": self.world_size, "version": self.version,
                "skipped_steps": self.skipped_steps, "nodes": list(self.nodes)}

    # ------------------------------------------------------------ checkpoint state

    def _torch_optimizer(self) -> torch.optim.Optimizer:
        # ZeRO and bf16 wrap the torch optimizer (over fp32 partitions); its state is what moves.
        inner = getattr(self.optimizer, "optimizer", None)
        return inner if isinstance(inner, torch.optim.Optimizer) else self.optimizer

    def get_state(self) -> dict[str, Any]:
        """This rank's optimizer and RNG state; rank 0 adds adapters and learner scalars."""
        from neuromas_dist.learner.checkpoint import flatten_optimizer

        tensors, meta = flatten_optimizer(self._torch_optimizer().state_dict())
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            tensors["rng.cuda"] = torch.cuda.get_rng_state()
        state = {"tensors": tensors, "meta": {"optimizer": meta, "python_rng": _jsonable_rng(random.getstate())}}
        if self.rank == 0:
            state["adapters"] = self.export()
            state["learner"] = {"version": self.version, "skipped_steps": self.skipped_steps,
                                "ema": dict(self.ema), "nodes": list(self.nodes),
                                "world_size": self.world_size, "zero_stage": self.cfg.learner.zero_stage}
        return state

    def set_state(self, adapters: AdapterSet, learner: Mapping[str, Any], rank_state: Mapping[str, Any]) -> None:
        from neuromas_dist.learner.checkpoint import unflatten_optimizer

        self._copy_in(adapters.tensors)
        tensors, meta = dict(rank_state["tensors"]), rank_state["meta"]
        torch.set_rng_state(tensors.pop("rng.torch"))
        cuda_rng = tensors.pop("rng.cuda", None)
        if cuda_rng is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(cuda_rng)
        random.setstate(_rng_from_json(meta["python_rng"]))
        self._torch_optimizer().load_state_dict(unflatten_optimizer(tensors, meta["optimizer"]))
        self.version = int(learner["version"])
        self.skipped_steps = int(learner["skipped_steps"])
        self.ema = {k: float(v) for k, v in learner["ema"].items()}
        self._remember_version(forget_older=True)
        self._reset_step()


def _recorded_logprobs(rows: Sequence[Row], like: torch.Tensor) -> torch.Tensor:
    """The rollout's logprobs of the rows' tokens, padded to ``like`` ([B, T])."""
    out = torch.zeros_like(like)
    for i, r in enumerate(rows):
        out[i, :len(r.logprobs)] = torch.tensor(r.logprobs, dtype=torch.float32)
    return out


def _jsonable_rng(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _rng_from_json(data: Sequence) -> tuple:
    return (data[0], tuple(data[1]), data[2])
