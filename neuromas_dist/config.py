"""Run configuration: frozen dataclasses, loaded from YAML with dotted command-line overrides.

Every field carries a one-line doc and, where it has one, its range or its choices, so
``python -m neuromas_dist.launch --help`` and the error messages come from one place.
Per-field checks (type, range, choices) run while loading; :meth:`Config.validate` holds
the checks that span several fields. Any problem raises :class:`ConfigError` with one
line naming the key and the value.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Mapping, Sequence

import yaml

from neuromas_dist.graph.topology import Topology, TopologyError

# sections nested in a section
SECTION_NAMES = {"GrowthStage": "trainer.growth[]", "SandboxConfig": "data.sandbox",
                 "AgentSampling": "sampling.per_node[] / program.sampling[]"}


class ConfigError(ValueError):
    """A bad config: the message is one line naming the key and the value."""


def _f(default: Any, doc: str, *, lo: float | None = None, hi: float | None = None,
       choices: Sequence[Any] | None = None) -> Any:
    """A dataclass field with its doc and its allowed range or choices."""
    meta = {"doc": doc, "lo": lo, "hi": hi, "choices": tuple(choices) if choices else None}
    return field(default=default, metadata=meta)


class _Checked:
    """Every field's range and choices are checked when a section is made, so a config
    built in code (``dataclasses.replace``, a notebook) fails as one read from YAML does."""

    if TYPE_CHECKING:  # every subclass is a dataclass
        __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def __post_init__(self) -> None:
        name = type(self).__name__
        section = SECTION_NAMES.get(name, name.removesuffix("Config").lower())
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            for item in value if isinstance(value, (tuple, list)) else (value,):
                if not dataclasses.is_dataclass(item):
                    _check_range(item, f"{section}.{f.name}", f.metadata)


@dataclass(frozen=True)
class ModelConfig(_Checked):
    name_or_path: str = _f("tiny", "'tiny' builds the local tiny Qwen3; else a hub id or a local model dir")
    trust_remote_code: bool = _f(False, "let transformers/vLLM run code shipped with the model")
    dtype: str = _f("auto", "weights dtype; auto = bfloat16 on GPU, float32 on CPU",
                    choices=("auto", "float32", "bfloat16", "float16"))
    max_model_len: int = _f(1024, "context length for rollout and learner", lo=64)
    tiny_seed: int = _f(0, "seed of the locally built tiny model (name_or_path=tiny)", lo=0)
    arch_config: str = _f("", "the model's config.json (architecture only): lets --plan size a hub model without a "
                          "download")


@dataclass(frozen=True)
class TopologyConfig(_Checked):
    widths: tuple[int, ...] = _f((2, 1), "nodes per layer; the last layer must have one node (the sink)", lo=1)
    edges: tuple[str, ...] = _f((), "explicit edges 'L0N0->L1N0' (skips allowed); empty = full between consecutive "
                                "layers")
    upstream_token_budget: int = _f(48, "max tokens of each upstream message shown to a node; longer ones are cut",
                                    lo=1)
    upstream_cut: str = _f("tail", "which part of a long upstream message a node sees: tail (the end, where a reply "
                           "concludes), head (the start) or head_tail (both halves)",
                           choices=("tail", "head", "head_tail"))


@dataclass(frozen=True)
class PromptsConfig(_Checked):
    system: str = _f("", "system message of every node's chat (empty: none); the node prompts stay role-free")
    enable_thinking: bool = _f(False, "chat templates with a thinking mode (Qwen3): let nodes think first")


@dataclass(frozen=True)
class LoraConfig(_Checked):
    rank: int = _f(8, "LoRA rank r of every node adapter", lo=1, hi=512)
    alpha: float = _f(16.0, "LoRA alpha (scale = alpha / rank)", lo=0.0)
    dropout: float = _f(0.0, "LoRA dropout in the learner (0 keeps learner and rollout logprobs equal)", lo=0.0, hi=1.0)
    target_modules: tuple[str, ...] = _f(
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        "module names that get LoRA")


@dataclass(frozen=True)
class AgentSampling(_Checked):
    """One agent's or graph node's sampling, where it differs from ``sampling`` (0 / empty: the run's)."""

    agent: str = _f("", "the agent (a name in program.agents) or graph node (L<layer>N<index>)")
    temperature: float = _f(0.0, "its sampling temperature (0 = sampling.temperature)", lo=0.0)
    top_p: float = _f(0.0, "its nucleus (0 = sampling.top_p)", lo=0.0, hi=1.0)
    max_new_tokens: int = _f(0, "most tokens one of its calls generates (0 = sampling.max_new_tokens)", lo=0)
    stop: tuple[str, ...] = _f((), "strings that end its responses")


@dataclass(frozen=True)
class SamplingConfig(_Checked):
    n_samples: int = _f(8, "samples (graph passes) per question per step", lo=1)
    temperature: float = _f(1.0, "rollout sampling temperature", lo=0.0)
    top_p: float = _f(1.0, "rollout nucleus sampling", lo=0.0, hi=1.0)
    max_new_tokens: int = _f(24, "max tokens each node generates", lo=1)
    per_node: tuple[AgentSampling, ...] = _f((), "a graph node's own sampling (its `agent` a node name); the learner "
                                             "scores its rows under it (a program sets program.sampling instead)")


@dataclass(frozen=True)
class RolloutConfig(_Checked):
    num_workers: int = _f(1, "vLLM rollout worker actors", lo=1)
    max_num_seqs: int = _f(256, "vLLM max concurrent sequences per worker", lo=1)
    max_loras: int = _f(0, "adapters vLLM batches together (LoRA slots); 0 = every node of the largest graph. "
                        "Fewer slots save memory but run the nodes' requests a slot's worth at a time", lo=0)
    kv_cache_gb: float = _f(1.0, "CPU only: KV-cache space per worker in GiB", lo=0.1)
    gpu_memory_utilization: float = _f(0.5, "GPU only: share of GPU memory vLLM may take", lo=0.05, hi=0.95)
    enforce_eager: bool = _f(True, "disable CUDA graphs / compilation (faster start, needed on CPU)")
    batch_samples: int = _f(8, "a worker streams a record batch once this many samples have finished", lo=1)
    batch_seconds: float = _f(0.5, "... or once this many seconds passed since its last batch", lo=0.0)
    keep_warm: bool = _f(False, "keep the workers and their engines when the run ends, for the next run in this "
                         "process whose engines would be built the same way (a table's arms, a sweep)")


@dataclass(frozen=True)
class LearnerConfig(_Checked):
    num_ranks: int = _f(1, "data-parallel learner ranks (one DeepSpeed process group)", lo=1)
    zero_stage: int = _f(0, "DeepSpeed ZeRO stage", choices=(0, 1, 2))
    lr: float = _f(2e-3, "AdamW learning rate of the adapters", lo=0.0)
    weight_decay: float = _f(0.0, "AdamW weight decay", lo=0.0)
    grad_clip: float = _f(1.0, "max global gradient norm (0 = no clipping)", lo=0.0)
    baseline: str = _f("loo", "per-node baseline: ema, batch_mean, or loo (leave-one-out over a question's samples)",
                       choices=("ema", "batch_mean", "loo"))
    ema_decay: float = _f(0.9, "decay of the ema baseline", lo=0.0, hi=1.0)
    loss_norm: str = _f("token", "normalise the loss per token, per sequence, or by a constant (Dr.GRPO: rows x "
                        "the node's max_new_tokens, whatever the lengths)", choices=("token", "sequence", "constant"))
    objective: str = _f("reinforce", "reinforce: the paper's joint REINFORCE (one update per step); ppo_clip: the "
                        "ratio to the step's starting policy clipped at 1-clip_low / 1+clip_high, learner.epochs x "
                        "learner.mini_batches updates per step", choices=("reinforce", "ppo_clip"))
    clip_low: float = _f(0.2, "ppo_clip: lower clip range (the ratio is kept >= 1 - clip_low)", lo=0.0, hi=1.0)
    clip_high: float = _f(0.2, "ppo_clip: upper clip range (<= 1 + clip_high; DAPO's clip-higher sets it above "
                          "clip_low)", lo=0.0)
    epochs: int = _f(1, "ppo_clip: passes over a step's rows", lo=1)
    mini_batches: int = _f(1, "ppo_clip: optimiser steps per pass, each on its share of every rank's questions", lo=1)
    advantage_norm: str = _f("none", "none, or std: divide a sample's advantage by the std of its question's sample "
                             "rewards, per node (GRPO; needs baseline=loo)", choices=("none", "std"))
    kl_coef: float = _f(0.0, "weight of the KL to the base model (the node's adapter disabled) in the loss", lo=0.0)
    kl_estimator: str = _f("k3", "per-token KL estimator: k1 (log ratio), k2 (half its square) or k3 (low variance)",
                           choices=("k1", "k2", "k3"))
    entropy_coef: float = _f(0.0, "weight of the entropy bonus (the loss subtracts it)", lo=0.0)
    log_entropy: bool = _f(False, "log each node's entropy when the loss does not hold it; it costs [tokens, vocab] "
                           "temporaries in every pass, so it is off unless asked")
    rollout_correction: str = _f("none", "correct the rollout/learner mismatch on every row: tis_token, tis_seq "
                                 "(truncate the ratio at correction_cap), mis_token, mis_seq (drop ratios outside "
                                 "[1/cap, cap]), icepop (drop tokens outside [icepop_low, icepop_high])",
                                 choices=("none", "tis_token", "tis_seq", "mis_token", "mis_seq", "icepop"))
    correction_cap: float = _f(2.0, "the bound C of tis and mis", lo=1.0)
    icepop_low: float = _f(0.5, "icepop: tokens whose ratio is below this are dropped", lo=0.0, hi=1.0)
    icepop_high: float = _f(2.0, "icepop: tokens whose ratio is above this are dropped", lo=1.0)
    importance_cap: float = _f(2.0, "truncate importance weights of stale samples at this value (0 = off)", lo=0.0)
    max_logprob_gap: float = _f(0.1, "fail the step when a node's mean |learner - rollout| logprob gap exceeds this",
                                lo=0.0)
    micro_batch_size: int = _f(32, "most rows per forward/backward pass", lo=1)
    max_tokens_per_micro_batch: int = _f(16384, "token budget of a pass (prompt + response tokens, padding counted "
                                         "when rows are padded); ready rows go longest first, so similar lengths "
                                         "travel together, and a row over the budget runs alone; 0 = rows only", lo=0)
    padding_free: str = _f("auto", "pack a pass's rows into one sequence (position ids restart per row, attention "
                           "never crosses rows): on, off, or auto (on where varlen flash attention is installed: "
                           "CUDA and flash-attn; elsewhere packing pays O(tokens^2) attention)",
                           choices=("auto", "on", "off"))
    logits: str = _f("chunked", "chunked: lm_head on response positions only, the vocabulary log-softmax in chunks "
                     "with each chunk's gradient formed at once (no [tokens, vocab] tensor kept); response: lm_head on "
                     "response positions, plain autograd; full: logits at every position (the transformers default)",
                     choices=("chunked", "response", "full"))
    logprob_chunk_tokens: int = _f(1024, "logits=chunked: response tokens per vocabulary chunk", lo=1)
    micro_batches: str = _f("per_node", "per_node: a pass holds one node's rows under its adapter; mixed: a pass takes "
                            "rows of any nodes, each through its own node's adapter", choices=("per_node", "mixed"))
    stale_check_rows: int = _f(8, "stale rows per node and step re-scored under the adapter version that sampled them, "
                               "so the logprob-gap check also guards async mode (0 = off)", lo=0)


@dataclass(frozen=True)
class GrowthStage(_Checked):
    at_step: int = _f(1, "the step at which the topology becomes `widths`", lo=1)
    widths: tuple[int, ...] = _f((2, 1), "nodes per layer from that step on", lo=1)


@dataclass(frozen=True)
class TrainerConfig(_Checked):
    steps: int = _f(30, "training steps", lo=0)
    questions_per_step: int = _f(16, "questions per step (each sampled n_samples times)", lo=1)
    mode: str = _f("sync", "sync: on-policy; async: next rollout overlaps the learner step", choices=("sync", "async"))
    max_staleness: int = _f(1, "async: max adapter versions a sample may lag the learner", lo=0)
    eval_every: int = _f(15, "greedy held-out evaluation every this many steps (0 = only before and after)", lo=0)
    eval_samples: int = _f(1, "held-out evaluation before and after training also samples each question this many "
                              "times at the training temperature (eval/sampled_accuracy); 0 = greedy only", lo=0)
    checkpoint_every: int = _f(10, "checkpoint every this many steps (0 = only at the end)", lo=0)
    seed: int = _f(0, "seed of question sampling, rollout sampling and learner", lo=0)
    grow_from: str = _f("", "run dir of a trained smaller topology whose adapters start this run")
    growth: tuple[GrowthStage, ...] = _f((), "schedule of topology growth within this run")
    growth_mode: str = _f("gated", "gated: the grown graph starts as the small one (new nodes withheld, fading in); "
                                   "carry: new nodes' base-model text reaches trained readers at once",
                          choices=("gated", "carry"))
    growth_fade_steps: int = _f(5, "gated: steps over which the share of samples running the grown graph rises "
                                   "0 -> 1", lo=0)
    final_ablation: bool = _f(True, "the final report also evaluates the graph with each node's adapter zeroed")


@dataclass(frozen=True)
class SandboxConfig(_Checked):
    require: str = _f("process", "weakest isolation a code check may run under, else the run refuses to start: "
                      "process (tests in a judge process, the code in another under limits) or full (also a private "
                      "filesystem, PID namespace and no network)", choices=("process", "full"))
    timeout_s: float = _f(5.0, "wall clock of one check (its CPU time: this + 1 s)", lo=0.1)
    memory_mb: int = _f(512, "address space of the checked code's process", lo=64)
    file_mb: int = _f(16, "the checked code's private /tmp and largest file", lo=1)


@dataclass(frozen=True)
class DataConfig(_Checked):
    task: str = _f("synthetic/hier", "synthetic/arith, synthetic/hier, synthetic/op, file (local JSONL/Parquet), hf "
                   "(datasets by name), or a paper benchmark: arc_challenge, bbh_navigate, mmlu, humaneval",
                   choices=("synthetic/arith", "synthetic/hier", "synthetic/op", "file", "hf",
                            "arc_challenge", "bbh_navigate", "mmlu", "humaneval"))
    subject: str = _f("", "task=mmlu: the subject (its config), e.g. abstract_algebra, college_physics")
    local_dir: str = _f("", "benchmark tasks: read <split>.jsonl files of the data set's own schema from this "
                        "directory instead of the hub (same loader)")
    train_path: str = _f("", "task=file: training examples (.jsonl or .parquet)")
    eval_path: str = _f("", "task=file: held-out examples (.jsonl or .parquet)")
    hf_name: str = _f("", "task=hf: dataset name, e.g. openai/gsm8k (benchmarks: empty = their own)")
    hf_config: str = _f("", "task=hf: dataset config, e.g. main (benchmarks: empty = their own)")
    hf_train_split: str = _f("", "training split, datasets' syntax (test[:50%]); empty = the task's own (hf: train)")
    hf_eval_split: str = _f("", "held-out split; empty = the task's own (hf: test); never one that trains")
    question_field: str = _f("question", "field holding the question text")
    prompt_template: str = _f("", "file/hf: the question built from the row's fields, e.g. '{question}\\n{choices}' "
                              "(a list field renders as lettered lines); empty = question_field as is")
    reward_fn: str = _f("", "package.module:function(question, sink_text, gold) -> float replacing the task's reward; "
                        "an exception or a non-finite value scores 0, is counted and warned about once")
    answer_field: str = _f("answer", "field holding the gold answer")
    answer_type: str = _f("number", "file/hf: how answers are extracted and compared (benchmarks set their own)",
                          choices=("number", "boxed", "choice", "yesno", "code"))
    n_train: int = _f(4000, "synthetic: training questions; file/hf: cap (0 = all)", lo=0)
    n_eval: int = _f(500, "synthetic: distinct held-out questions (at most the split holds); file/hf: cap (0 = all)",
                     lo=0)
    seed: int = _f(0, "seed of the synthetic generators", lo=0)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig, metadata={"doc": "code tasks: how replies are run"})


@dataclass(frozen=True)
class ProgramConfig(_Checked):
    entry: str = _f("", "package.module:function, an agent program `async def solve(question, client) -> str` "
                    "(transport http: `solve(question, base_url)`, sync allowed); empty = the NeuroMAS graph of "
                    "`topology`")
    agents: tuple[str, ...] = _f((), "the program's agents, each trained as its own LoRA adapter; `model=` of a call "
                                 "names one")
    sampling: tuple[AgentSampling, ...] = _f((), "per-agent sampling overrides")
    transport: str = _f("inproc", "inproc: solve gets an OpenAI-style client; http: an OpenAI-compatible base URL on "
                        "127.0.0.1 inside the rollout worker", choices=("inproc", "http"))
    max_calls: int = _f(8, "most agent calls one run of the program may make (more: the sample scores 0)", lo=1)
    timeout_s: float = _f(120.0, "a run of the program still going after this many seconds scores 0", lo=0.1)


@dataclass(frozen=True)
class ResourcesConfig(_Checked):
    ray_address: str = _f("", "Ray cluster to join; empty = RAY_ADDRESS if set, else an embedded local Ray")
    rollout_gpus: float = _f(0.0, "GPUs per rollout worker", lo=0.0)
    rollout_cpus: float = _f(1.0, "CPUs per rollout worker", lo=0.0)
    learner_gpus: float = _f(0.0, "GPUs per learner rank", lo=0.0)
    learner_cpus: float = _f(1.0, "CPUs per learner rank", lo=0.0)
    colocate: bool = _f(False, "rollout workers and learner share GPUs (one-GPU boxes)")
    placement_strategy: str = _f("PACK", "Ray placement group strategy", choices=("PACK", "SPREAD", "STRICT_PACK"))
    gpu_memory_gb: float = _f(80.0, "memory of one GPU of the cluster, in GiB: what --plan checks each actor against",
                              lo=1.0)
    rollout_node_resource: str = _f("", "custom Ray resource offered only by the nodes meant for rollout workers "
                                    "(e.g. rollout_node, from `ray start --resources`); empty = any node")
    learner_node_resource: str = _f("", "custom Ray resource offered only by the nodes meant for learner ranks "
                                    "(e.g. learner_node); empty = any node")


@dataclass(frozen=True)
class FaultsConfig(_Checked):
    max_worker_restarts: int = _f(3, "rollout worker restarts (deaths and hangs, all workers) before the run stops "
                                     "with a checkpoint", lo=0)
    rollout_deadline_s: float = _f(600.0, "a worker's share of one step must finish within this many seconds, else "
                                   "it is declared hung, killed and restarted (0 = no deadline)", lo=0.0)
    restart_timeout_s: float = _f(300.0, "how long a restarted worker may take to come back with its engine and "
                                         "adapters", lo=1.0)
    max_learner_restarts: int = _f(2, "learner group rebuilds from the last checkpoint (a rank died) before the run "
                                      "stops", lo=0)


@dataclass(frozen=True)
class LoggingConfig(_Checked):
    run_dir: str = _f("", "run directory; empty = runs/<timestamp>")
    tensorboard: bool = _f(True, "write TensorBoard events")
    save_trajectories: bool = _f(True, "write every step's trajectories as Parquet")
    plots: bool = _f(True, "write PNG plots of reward and accuracy at the end")
    progress: bool = _f(True, "show a progress bar")
    wandb_project: str = _f("", "log every step's metrics to this Weights & Biases project (empty = off)")
    wandb_mode: str = _f("online", "W&B mode: online, or offline (run files under RUN_DIR/wandb, for wandb sync)",
                         choices=("online", "offline"))
    mlflow_tracking_uri: str = _f("", "log every step's metrics to MLflow at this URI (a server, or file:///path "
                                  "for a local store; empty = off)")
    mlflow_experiment: str = _f("neuromas", "MLflow experiment name")
    run_name: str = _f("", "the trackers' run name (empty = the run directory's name)")
    tags: tuple[str, ...] = _f((), "the trackers' run tags")


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"doc": "base model"})
    topology: TopologyConfig = field(default_factory=TopologyConfig, metadata={"doc": "agent graph"})
    program: ProgramConfig = field(default_factory=ProgramConfig,
                                   metadata={"doc": "agent program (instead of the graph)"})
    lora: LoraConfig = field(default_factory=LoraConfig, metadata={"doc": "per-node adapters"})
    sampling: SamplingConfig = field(default_factory=SamplingConfig, metadata={"doc": "rollout sampling"})
    rollout: RolloutConfig = field(default_factory=RolloutConfig, metadata={"doc": "vLLM workers"})
    learner: LearnerConfig = field(default_factory=LearnerConfig, metadata={"doc": "DeepSpeed learner"})
    trainer: TrainerConfig = field(default_factory=TrainerConfig, metadata={"doc": "training loop"})
    data: DataConfig = field(default_factory=DataConfig, metadata={"doc": "task and data"})
    prompts: PromptsConfig = field(default_factory=PromptsConfig, metadata={"doc": "chat settings of node prompts"})
    resources: ResourcesConfig = field(default_factory=ResourcesConfig, metadata={"doc": "Ray placement"})
    faults: FaultsConfig = field(default_factory=FaultsConfig, metadata={"doc": "restarts and deadlines"})
    logging: LoggingConfig = field(default_factory=LoggingConfig, metadata={"doc": "outputs"})

    def validate(self) -> "Config":
        """Cross-field checks; returns self so calls chain. Raises ConfigError."""
        for check in _CROSS_CHECKS:
            check(self)
        return self

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)


def agent_sampling(cfg: Config, agent: str) -> tuple[float, float, int, tuple[str, ...]]:
    """(temperature, top_p, max_new_tokens, stop) ``agent`` samples with in training: the
    run's ``sampling`` under the agent's ``program.sampling`` entry. The rollout samples and
    the learner scores with the same values."""
    s = cfg.sampling
    out: tuple[float, float, int, tuple[str, ...]] = (s.temperature, s.top_p, s.max_new_tokens, ())
    for a in (*s.per_node, *cfg.program.sampling):
        if a.agent == agent:
            out = (a.temperature or s.temperature, a.top_p or s.top_p, a.max_new_tokens or s.max_new_tokens, a.stop)
    return out


def resolve_dtype(name: str, gpu: bool) -> str:
    """``model.dtype`` as rollout, learner and plan all read it: ``auto`` is bfloat16 on a
    GPU and float32 on a CPU (vLLM's CPU backend and the gloo learner run fp32)."""
    return ("bfloat16" if gpu else "float32") if name == "auto" else name


# ---------------------------------------------------------------- cross-field checks

def _check_topology(cfg: Config) -> None:
    def build(widths: Sequence[int], edges: Sequence[str], key: str) -> Topology:
        try:
            return Topology.of_config(widths, edges)
        except TopologyError as exc:
            raise ConfigError(f"{key}: {exc}") from None

    build(cfg.topology.widths, cfg.topology.edges, "topology")
    for i, stage in enumerate(cfg.trainer.growth):
        build(stage.widths, (), f"trainer.growth[{i}].widths={list(stage.widths)}")


def _check_growth(cfg: Config) -> None:
    steps = [s.at_step for s in cfg.trainer.growth]
    if steps != sorted(set(steps)):
        raise ConfigError(f"trainer.growth: at_step values must strictly increase, got {steps}")
    if steps and steps[-1] >= max(cfg.trainer.steps, 1):
        raise ConfigError(f"trainer.growth[-1].at_step={steps[-1]} must be below trainer.steps={cfg.trainer.steps}")
    if cfg.trainer.growth and cfg.topology.edges:
        raise ConfigError("trainer.growth needs full connectivity: topology.edges must be empty")
    t = cfg.trainer
    if t.growth_mode != "gated" or t.growth_fade_steps == 0 or not (t.growth or t.grow_from):
        return  # no growth gate (growth.growth_gate builds none either)
    # the last small-graph step of each growth: 0 for grow_from, at_step - 1 within the run
    late = [s for s in ([0] if t.grow_from else []) + [s - 1 for s in steps] if s + t.growth_fade_steps > t.steps]
    if late:
        raise ConfigError(f"trainer.growth_fade_steps={t.growth_fade_steps}: the fade after step {late[0]} ends "
                          f"after trainer.steps={t.steps}, so the final evaluation would run a partly gated graph")


def _check_objective(cfg: Config) -> None:
    lc = cfg.learner
    if lc.objective != "ppo_clip" and (lc.epochs > 1 or lc.mini_batches > 1):
        raise ConfigError(f"learner.epochs={lc.epochs} and learner.mini_batches={lc.mini_batches} need "
                          f"learner.objective=ppo_clip: reinforce has no ratio to hold later updates near the rollout")
    if lc.advantage_norm == "std" and lc.baseline != "loo":
        # the question's std only scales an advantage taken against the question's own samples:
        # against a step-wide baseline a group without spread would get (R - b) / eps
        raise ConfigError(f"learner.advantage_norm=std needs learner.baseline=loo (the question's own samples, as "
                          f"GRPO), got learner.baseline={lc.baseline}")


def _check_sampling(cfg: Config) -> None:
    per_node = cfg.sampling.per_node
    if per_node and cfg.program.entry:
        raise ConfigError("sampling.per_node is for the graph's nodes: a program sets each agent's in program.sampling")
    for i, a in enumerate(per_node):
        if not re.fullmatch(r"L\d+N\d+", a.agent):
            raise ConfigError(f"sampling.per_node[{i}].agent={a.agent!r}: not a graph node name (L<layer>N<index>)")
    if cfg.learner.micro_batches == "mixed" and any(a.temperature or a.top_p for a in per_node):
        raise ConfigError("sampling.per_node sets a node's temperature or top_p: the learner scores each node's rows "
                          "under its own, which needs learner.micro_batches=per_node")
    if cfg.learner.baseline == "loo" and cfg.sampling.n_samples < 2:
        raise ConfigError(f"learner.baseline=loo needs sampling.n_samples >= 2, got {cfg.sampling.n_samples}")
    if cfg.trainer.mode == "async" and cfg.trainer.max_staleness < 1:
        raise ConfigError("trainer.mode=async needs trainer.max_staleness >= 1, got 0")


def _check_paths(cfg: Config) -> None:
    if cfg.data.task == "file":
        for key in ("train_path", "eval_path"):
            value = getattr(cfg.data, key)
            if not value:
                raise ConfigError(f"data.{key} is required when data.task=file")
            if not Path(value).is_file():
                raise ConfigError(f"data.{key}={value}: file not found")
    if cfg.data.task == "hf" and not cfg.data.hf_name:
        raise ConfigError("data.hf_name is required when data.task=hf")
    name = cfg.model.name_or_path
    if name.startswith((".", "/", "~")):
        _check_model_dir(Path(name).expanduser(), f"model.name_or_path={name}")
    if cfg.trainer.grow_from and not Path(cfg.trainer.grow_from).is_dir():
        raise ConfigError(f"trainer.grow_from={cfg.trainer.grow_from}: run directory not found")


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def _check_model_dir(path: Path, key: str) -> None:
    """A local model must be whole here, not deep inside a Ray actor's stack trace."""
    if not path.is_dir():
        raise ConfigError(f"{key}: directory not found")
    if not (path / "config.json").is_file():
        raise ConfigError(f"{key}: no config.json in the directory (not a transformers model)")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise ConfigError(f"{key}: no tokenizer in the directory (none of {', '.join(TOKENIZER_FILES)}); "
                          f"save one next to the weights with tokenizer.save_pretrained")


def _check_resources(cfg: Config) -> None:
    r = cfg.resources
    if r.colocate and (r.rollout_gpus + r.learner_gpus > 1.0 + 1e-9):
        raise ConfigError(
            f"resources.colocate=true shares one GPU: rollout_gpus + learner_gpus must be <= 1, "
            f"got {r.rollout_gpus} + {r.learner_gpus}")
    if r.colocate and cfg.rollout.num_workers > cfg.learner.num_ranks:
        raise ConfigError(f"resources.colocate=true puts rollout worker i beside learner rank i: "
                          f"rollout.num_workers={cfg.rollout.num_workers} must be <= "
                          f"learner.num_ranks={cfg.learner.num_ranks}")
    if r.colocate and r.rollout_node_resource != r.learner_node_resource:
        raise ConfigError("resources.colocate=true shares one bundle: rollout_node_resource and learner_node_resource "
                          "must be equal")
    if r.colocate and cfg.rollout.keep_warm:
        raise ConfigError("rollout.keep_warm=true cannot go with resources.colocate=true: a colocated worker lives in "
                          "its learner rank's bundle, which ends with the run")
    if (r.rollout_gpus > 0) != (r.learner_gpus > 0):
        raise ConfigError("resources: rollout_gpus and learner_gpus must both be 0 (CPU) or both > 0 (GPU)")


def _check_program(cfg: Config) -> None:
    p = cfg.program
    if not p.entry:
        if p.agents or p.sampling:
            raise ConfigError("program.agents and program.sampling need program.entry (the graph's nodes are its "
                              "agents)")
        return
    if ":" not in p.entry:
        raise ConfigError(f"program.entry={p.entry}: expected package.module:function")
    if not p.agents:
        raise ConfigError(f"program.entry={p.entry}: program.agents must name at least one agent")
    for name in p.agents:
        if not _AGENT_RE.fullmatch(name):
            raise ConfigError(f"program.agents: {name!r} is not a valid agent name (letters, digits, _ and -, "
                              f"at most 64, starting with a letter); it names the agent's adapter directory")
    if len(set(p.agents)) != len(p.agents):
        raise ConfigError(f"program.agents: {list(p.agents)} names an agent twice")
    for i, s in enumerate(p.sampling):
        if s.agent not in p.agents:
            raise ConfigError(f"program.sampling[{i}].agent={s.agent!r}: not in program.agents {list(p.agents)}")
    if cfg.learner.micro_batches == "mixed" and any(s.temperature or s.top_p for s in p.sampling):
        raise ConfigError("program.sampling sets an agent's temperature or top_p: the learner scores each agent's "
                          "rows under its own, which needs learner.micro_batches=per_node")
    if cfg.trainer.growth or cfg.trainer.grow_from:
        raise ConfigError("trainer.growth and trainer.grow_from grow a graph's layers; a program has none "
                          "(unset them, or unset program.entry)")


_AGENT_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")


_CROSS_CHECKS = (_check_program, _check_topology, _check_growth, _check_objective, _check_sampling, _check_paths,
                 _check_resources)


# ---------------------------------------------------------------- loading

def load_config(path: str | os.PathLike | None = None, overrides: Iterable[str] = ()) -> Config:
    """YAML file (optional) + dotted overrides ``a.b=value`` -> validated Config."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_yaml(Path(path))
    for item in overrides:
        _apply_override(raw, item)
    return _build(Config, raw, "").validate()


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file, over the ``base:`` it names (a path relative to this file): its
    sections merge key by key into the base's, a list or value replaces the base's."""
    data = _read_yaml_file(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: base must be the path of another config file, got {base!r}")
    parent = (path.parent / base).resolve()
    chain = (*seen, path.resolve())
    if parent in chain:
        raise ConfigError(f"{path}: base {base} makes a cycle: {' -> '.join(p.name for p in (*chain, parent))}")
    return _merged(_read_yaml(parent, chain), data)


def _merged(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), dict) else value
    return out


def _read_yaml_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    return data


def _field_type(parts: Sequence[str]) -> Any:
    """The declared type of the dotted key ``parts`` (None when it names no field)."""
    cls: Any = Config
    for part in parts:
        if not dataclasses.is_dataclass(cls):
            return None
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            return None
        cls = typing.get_type_hints(cls)[part]
    return cls


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r}: expected key.path=value")
    try:
        # a text field takes the text as typed: "{question}\n{choices}" is a template, not a YAML mapping
        value = text if _field_type(key.split(".")) is str or not text else yaml.safe_load(text)
    except yaml.YAMLError:
        value = text  # an unparsable literal is taken as the string the user typed
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def _build(cls: type, raw: Any, prefix: str) -> Any:
    """Mapping -> dataclass ``cls``, checking keys, types and ranges on the way."""
    where = prefix.rstrip(".") or "config"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key '{prefix}{unknown[0]}' (known in {where}: {', '.join(fields)})")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _coerce(hints[name], raw[name], f"{prefix}{name}", fields[name].metadata)
              for name in raw}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str, meta: Mapping[str, Any]) -> Any:
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".")
    origin = typing.get_origin(tp)
    if origin is tuple:
        item_tp = typing.get_args(tp)[0]
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(_coerce(item_tp, v, f"{key}[{i}]", meta) for i, v in enumerate(value))
    return _check_range(_scalar(tp, value, key), key, meta)


def _scalar(tp: type, value: Any, key: str) -> Any:
    if tp is float and isinstance(value, str):
        # YAML 1.1 reads 1e-5 and 1.0e9 (no dot, no signed exponent) as strings
        try:
            value = float(value)
        except ValueError:
            pass
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
    }[tp](value)
    if not ok:
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
    return tp(value)


def _check_range(value: Any, key: str, meta: Mapping[str, Any]) -> Any:
    choices, lo, hi = meta.get("choices"), meta.get("lo"), meta.get("hi")
    if choices and value not in choices:
        raise ConfigError(f"{key}={value!r}: must be one of {', '.join(map(str, choices))}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if lo is not None and value < lo:
            raise ConfigError(f"{key}={value}: must be >= {lo}")
        if hi is not None and value > hi:
            raise ConfigError(f"{key}={value}: must be <= {hi}")
    return value


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [_to_plain(v) for v in obj]
    return obj


def dump_yaml(cfg: Config) -> str:
    """The resolved config as YAML; loading it back gives an equal Config."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def describe(cls: type = Config, prefix: str = "") -> list[str]:
    """One line per field: dotted key, default, allowed values, doc (for --help)."""
    lines: list[str] = []
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            lines.append(f"[{prefix}{f.name}]  {f.metadata.get('doc', '')}")
            lines.extend(describe(tp, f"{prefix}{f.name}."))
            continue
        meta = f.metadata
        allowed = f" {{{'|'.join(map(str, meta['choices']))}}}" if meta.get("choices") else ""
        default = _to_plain(f.default) if f.default is not dataclasses.MISSING else None
        lines.append(f"  {prefix}{f.name}={default!r}{allowed}  {meta.get('doc', '')}")
    return lines


__all__ = [
    "Config", "ConfigError", "DataConfig", "FaultsConfig", "GrowthStage", "LearnerConfig", "LoggingConfig",
    "LoraConfig", "ModelConfig", "ResourcesConfig", "RolloutConfig", "SamplingConfig", "SandboxConfig",
    "TopologyConfig", "TrainerConfig", "describe", "dump_yaml", "load_config",
]
