"""One forward pass of the learner: rows in, the log-probability of every response token
out, each row under its own node's adapter.

Where the memory and time of a small model's pass go, and what this module does about it:

* **Logits** (``learner.logits``). The vocabulary (152k for Qwen3) makes the logits the
  largest tensor of the pass: ``full`` keeps [tokens, vocab] logits for every position and
  autograd keeps three fp32 [response tokens, vocab] tensors more for the log-softmax
  backward. ``response`` applies lm_head to the response positions only. ``chunked`` does
  that in chunks of ``learner.logprob_chunk_tokens`` and forms each chunk's gradient with
  respect to its hidden states right away (``ChunkedLogprobs``): a log-probability depends
  only on its own position's hidden state, so the backward needs just that [tokens, hidden]
  gradient, scaled by the incoming one. No [tokens, vocab] tensor outlives its chunk and
  nothing is recomputed (the trick of Liger's fused linear cross-entropy, in plain torch).
* **Padding** (``learner.padding_free``): see ``packing.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
from dataclasses import dataclass
from typing import Callable, Mapping, NamedTuple, Sequence, cast

import torch
from peft import PeftModel
from transformers import PreTrainedModel

from neuromas_dist.config import Config, agent_sampling
from neuromas_dist.learner import algos, model
from neuromas_dist.learner.packing import build_inputs

LogprobFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def varlen_attention_available() -> bool:
    """Varlen flash attention: transformers' ``flash_attention_2`` on CUDA."""
    return model.on_cuda() and importlib.util.find_spec("flash_attn") is not None


def resolve_packing(setting: str) -> tuple[bool, str | None]:
    """(pack rows, the attention implementation to load the model with; None = default).
    Packed rows under SDPA get a dense block-diagonal mask: exact, but attention then costs
    (sum of lengths)^2 instead of sum(length^2), so ``auto`` packs only with varlen kernels."""
    flash = varlen_attention_available()
    if setting == "off" or (setting == "auto" and not flash):
        return False, None
    return True, "flash_attention_2" if flash else None


@dataclass(frozen=True)
class ForwardSpec:
    packed: bool
    logits: str  # chunked | response | full
    chunk: int
    temperature: float
    top_p: float
    softcap: float | None  # Gemma 2's final_logit_softcapping (applied by transformers after lm_head)
    entropy_grad: bool = False  # the loss holds an entropy term: its gradient is formed too
    entropy: bool = False  # compute the entropy at all (the loss holds it, or learner.log_entropy)

    @staticmethod
    def of(cfg: Config, module: PeftModel, packed: bool) -> "ForwardSpec":
        base = cast(PreTrainedModel, module.get_base_model())  # PEFT types it as a Module
        text = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
        logits = cfg.learner.logits
        if logits == "chunked" and any(p.requires_grad for p in base.get_output_embeddings().parameters()):
            # an adapter on lm_head: its own gradient would be lost by forming only d lp / d hidden
            print("[learner] logits=chunked needs a frozen lm_head (LoRA targets it): using logits=response",
                  flush=True)
            logits = "response"
        s = cfg.sampling
        return ForwardSpec(packed, logits, cfg.learner.logprob_chunk_tokens, s.temperature, s.top_p,
                           getattr(text, "final_logit_softcapping", None), cfg.learner.entropy_coef > 0,
                           cfg.learner.entropy_coef > 0 or cfg.learner.log_entropy)

    def per_node(self, cfg: Config, nodes: Sequence[str]) -> dict[str, "ForwardSpec"]:
        """Each node's spec: its rows are scored under the temperature and top-p it sampled
        with (a program's agent may have its own, ``config.agent_sampling``)."""
        out = {}
        for node in nodes:
            t, p, _, _ = agent_sampling(cfg, node)
            out[node] = dataclasses.replace(self, temperature=t, top_p=p)
        return out


def head_scores(head: torch.nn.Module, spec: ForwardSpec) -> LogprobFn:
    """(hidden [n, H], tokens [n]) -> [n, 2]: log pi(token) and the entropy of pi at that
    position, under the sampling policy. The entropy is a metric (detached) unless the
    loss holds it (``spec.entropy_grad``), and 0 unless asked for (``spec.entropy``): its
    softmax temporaries would raise every pass's peak memory."""
    def fn(hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        logits = head(hidden)
        if spec.softcap:
            logits = torch.tanh(logits / spec.softcap) * spec.softcap
        return scores_of(logits, tokens, spec)
    return fn


def scores_of(logits: torch.Tensor, tokens: torch.Tensor, spec: ForwardSpec) -> torch.Tensor:
    scaled = algos.sampling_logits(logits, tokens, spec.temperature, spec.top_p)
    lp = torch.log_softmax(scaled, dim=-1).gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)
    if not spec.entropy:
        return torch.stack([lp, torch.zeros_like(lp)], dim=-1)
    ent = algos.entropy(scaled if spec.entropy_grad else scaled.detach())
    return torch.stack([lp, ent], dim=-1)


class ChunkedLogprobs(torch.autograd.Function):
    """``fn`` over ``hidden`` in chunks of ``chunk`` rows. The forward keeps each row's
    gradient d out / d hidden ([n, H] per output column, in hidden's dtype) instead of
    anything of size vocab; the backward scales it by the incoming gradient. Exact when
    ``fn`` maps each row on its own (lm_head, then a per-row log-softmax): the gradient of a
    chunk's sum is then each row's own gradient. ``fn`` returns [n] or [n, k]; a column
    without a graph (a detached metric) keeps no gradient."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, tokens: torch.Tensor, fn: LogprobFn, chunk: int) -> torch.Tensor:
        out, grads, ctx.live = [], [], []
        for h, t in zip(hidden.split(chunk), tokens.split(chunk)):
            if not ctx.needs_input_grad[0]:
                out.append(fn(h, t))
                continue
            with torch.enable_grad():
                h = h.detach().requires_grad_(True)
                y = fn(h, t)
                cols = y.unsqueeze(-1) if y.dim() == 1 else y
                # the same columns carry a graph in every chunk (spec.entropy_grad decides)
                ctx.live = [j for j in range(cols.shape[-1]) if cols[:, j].requires_grad]
                grads.append(torch.stack([torch.autograd.grad(cols[:, j].sum(), h, retain_graph=j != ctx.live[-1])[0]
                                          for j in ctx.live], dim=-1))
            out.append(y.detach())
        if grads:
            ctx.save_for_backward(torch.cat(grads))
        return torch.cat(out) if out else hidden.new_zeros(0, dtype=torch.float32)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (grad,) = ctx.saved_tensors  # [n, H, live columns]
        g = (grad_out if grad_out.dim() == 2 else grad_out.unsqueeze(-1))[:, ctx.live]
        return (grad * g.unsqueeze(1).to(grad.dtype)).sum(-1), None, None, None


def gathered(logits: torch.Tensor, x) -> torch.Tensor:
    """[response tokens, vocab] out of every position's logits, with ``gather`` as a
    transformers user writes it (and this learner did): its backward keeps all of
    ``logits``. ``logits=full`` is that reference, for benchmarks and the memory model's
    calibration against the H200."""
    packed = x.attn is None  # one sequence: the response positions in order
    if packed:
        pos = x.at[1].unsqueeze(0)
    else:
        pos = torch.zeros(x.shape, dtype=torch.long, device=logits.device)
        pos[x.row, x.col] = x.at[1]
    picked = logits.gather(1, pos.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
    return picked[0] if packed else picked[x.row, x.col]


class Scored(NamedTuple):
    """A pass's rows scored: [B, T] each, 0 past a row's end."""
    lp: torch.Tensor  # log pi(token), with graph
    mask: torch.Tensor  # response tokens
    entropy: torch.Tensor  # of the sampling distribution; with graph only if spec.entropy_grad


def response_logprobs(module: PeftModel, rows: Sequence, spec: ForwardSpec,
                      device: torch.device, route: bool = True) -> Scored:
    """Learner log-probabilities (fp32) of the rows' response tokens, their mask and the
    entropy at each; the rows come grouped by node, the first node's adapter active.
    ``route=False``: every row through the module as it is (the base model, under PEFT's
    ``disable_adapter``: routing adds LoRA terms PEFT's switch does not see)."""
    x = build_inputs(rows, spec.packed).to(device)
    nodes = [r.node for r in rows]
    routed = (model.rows_to_adapters(module, nodes, x.spans, x.split_dim) if route and len(set(nodes)) > 1
              else contextlib.nullcontext())
    base = cast(PreTrainedModel, module.get_base_model())  # PEFT types it as a Module
    fn = head_scores(base.get_output_embeddings(), spec)
    inputs = dict(input_ids=x.ids, attention_mask=x.attn, position_ids=x.position_ids, use_cache=False)
    with routed:
        if spec.logits == "full":  # softcapping, if any, is applied by the model's own forward
            flat = scores_of(gathered(module(**inputs).logits, x), x.tok, spec)
        else:
            hidden = base.get_decoder()(**inputs).last_hidden_state[x.at]
            flat = (ChunkedLogprobs.apply(hidden, x.tok, fn, spec.chunk) if spec.logits == "chunked"
                    else fn(hidden, x.tok))
    lp, ent = (torch.zeros(x.shape, dtype=flat.dtype, device=device).index_put((x.row, x.col), flat[:, j])
               for j in (0, 1))
    return Scored(lp, x.mask().to(device), ent)


class NodePasses:
    """A rank's passes over its PEFT module: rows under their own nodes' adapters, or under
    the base model, each node's rows with its own sampling transforms (``specs``)."""

    def __init__(self, module: PeftModel, specs: Mapping[str, ForwardSpec],
                 params: Sequence[torch.nn.Parameter], device: torch.device):
        self.module, self.specs, self.params, self.device = module, specs, list(params), device

    def activate(self, node: str) -> None:
        # PEFT's set_adapter (and leaving disable_adapter) freezes the other adapters; they
        # must stay trainable so the step's single backward reaches all of them and the
        # optimizer keeps owning them.
        self.module.set_adapter(node)
        for p in self.params:
            p.requires_grad_(True)

    def logprobs(self, rows: Sequence) -> Scored:
        """Learner logprobs [B, T] of the rows' response tokens (with graph), the mask and
        the entropy; each row under its own node's adapter."""
        self.activate(rows[0].node)
        # a mixed pass's nodes share the run's sampling (config refuses per-node sampling there)
        return response_logprobs(self.module, rows, self.specs[rows[0].node], self.device)

    @torch.no_grad()
    def base_logprobs(self, rows: Sequence) -> torch.Tensor:
        """The rows' logprobs [B, T] under the base model: the same module with every adapter
        off (no second model in memory), the same sampling transforms."""
        with self.module.disable_adapter():
            return response_logprobs(self.module, rows, self.specs[rows[0].node], self.device, route=False).lp
