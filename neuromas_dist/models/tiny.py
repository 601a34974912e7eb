"""The tiny local Qwen3 used by the embedded default run and by every test.

No model can be downloaded here, so the project builds its own: a 2-layer Qwen3 with
a locally trained BPE tokenizer, warmed up by a short supervised run on the synthetic
tasks so RL starts with a reward that is neither zero nor saturated. The build is
deterministic for a seed and cached under a directory named from a hash of the
recipe; several processes (pytest workers, Ray actors) may ask for it at once and
only one builds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import pathlib
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, TypedDict

import torch

from neuromas_dist.graph import prompts
from neuromas_dist.graph.topology import Topology
from neuromas_dist.models import probes, sft, warmup
from neuromas_dist.models.tokenizer import IM_END, PAD_TOKEN, train_tokenizer
from neuromas_dist.tasks.synthetic import answer_sentence, make_synthetic, synthetic_corpus, synthetic_task

if TYPE_CHECKING:  # transformers is imported where a model is built: a driver only looks the build up
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

# Bump when the build changes in a way the recipe dict below does not capture.
RECIPE_VERSION = 1
TASK_KINDS = ("arith", "hier", "op")
VOCAB_SIZE = 768
TRAIN_QUESTIONS = 4000  # per task kind
EVAL_QUESTIONS = 200  # per task kind
BUILD_THREADS = 2


class ModelShape(TypedDict):
    """Qwen3Config's keyword arguments that shape the tiny model."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int
    tie_word_embeddings: bool
    rms_norm_eps: float


# head_dim 64: vLLM's CPU attention rejects smaller heads (16 fails, 64 works).
MODEL_SHAPE = ModelShape(
    hidden_size=128,
    intermediate_size=384,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    head_dim=64,
    max_position_embeddings=1024,
    tie_word_embeddings=True,
    rms_norm_eps=1e-6,
)
DEFAULT_SFT = sft.SFTConfig()


def model_config(tokenizer) -> Qwen3Config:
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD_TOKEN),
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        bos_token_id=None,
        dtype="float32",
        **MODEL_SHAPE,
    )


def recipe(sft_cfg: sft.SFTConfig = DEFAULT_SFT) -> dict:
    """Everything that decides the built weights except the seed, as JSON-ready data.

    Prompt templates and sample task questions are included so that a wording change
    in either (which the model was trained on) gives a new cache directory.
    """
    samples = {kind: [tuple(e) for e in make_synthetic(kind, "train", 3, 0)] for kind in TASK_KINDS}
    return {
        "version": RECIPE_VERSION,
        "model": MODEL_SHAPE,
        "vocab_size": VOCAB_SIZE,
        "sft": dataclasses.asdict(sft_cfg),
        "train_questions": TRAIN_QUESTIONS,
        "eval_questions": EVAL_QUESTIONS,
        "templates": list(prompts.TEMPLATES),
        "task_samples": samples,
    }


def recipe_hash(sft_cfg: sft.SFTConfig = DEFAULT_SFT) -> str:
    blob = json.dumps(recipe(sft_cfg), sort_keys=True, default=list).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def default_cache_root() -> pathlib.Path:
    root = os.environ.get("NEUROMAS_CACHE")
    return pathlib.Path(root) if root else pathlib.Path.home() / ".cache" / "neuromas_dist"


def build_tiny_model(out_dir: str | os.PathLike, seed: int = 0, *, sft_steps: int | None = None,
                     sft_cfg: sft.SFTConfig | None = None, eval_questions: int = EVAL_QUESTIONS) -> dict:
    """Build tokenizer, model and SFT warm-up into ``out_dir``; return the build info.

    ``sft_steps`` overrides the step count (tests use a handful). The budget is in
    steps, not seconds, so the same seed always gives the same weights.
    """
    cfg = sft_cfg or DEFAULT_SFT
    if sft_steps is not None:
        cfg = dataclasses.replace(cfg, steps=sft_steps, warmup_steps=min(cfg.warmup_steps, sft_steps))
    out = pathlib.Path(out_dir)
    start = time.perf_counter()
    with _torch_threads(BUILD_THREADS):
        tokenizer, train_qas, eval_sets = _phase_tokenizer(cfg, seed, eval_questions)
        model = _phase_init(tokenizer, seed)
        _log(f"sft: {cfg.steps} steps of batch {cfg.batch_size}")
        pool = sft.build_pool(tokenizer, train_qas, cfg, random.Random(seed + 1))
        sft_start = time.perf_counter()
        last_loss = sft.train(model, tokenizer, pool, cfg, seed + 2)
        sft_seconds = time.perf_counter() - sft_start
        accuracy = {kind: sft.greedy_accuracy(model, tokenizer, qas, synthetic_task(kind), cfg.answer_format)
                    for kind, qas in eval_sets.items()}
        _log("eval greedy accuracy (1-node graph): " + ", ".join(f"{k} {v:.1%}" for k, v in accuracy.items()))
        skills = probes.skill_probes(model, tokenizer, eval_sets["hier"], cfg.answer_format)
        _log("hier skills (greedy): " + ", ".join(f"{k} {v:.1%}" for k, v in skills.items()))
    info = {
        "seed": seed,
        "recipe_hash": recipe_hash(cfg),
        "answer_format": cfg.answer_format,
        "sft_steps": cfg.steps,
        "sft_batch_size": cfg.batch_size,
        "sft_seconds": round(sft_seconds, 1),
        "sft_final_loss": round(last_loss, 4),
        "eval_questions": eval_questions,
        "eval_accuracy": {k: round(v, 4) for k, v in accuracy.items()},
        "hier_skills": {k: round(v, 4) for k, v in skills.items()},
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        # What decides the float results besides the seed (see PINNED_ENV).
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl_cbwr": os.environ.get("MKL_CBWR", ""),
        "torch_threads": BUILD_THREADS,
        "torch_version": torch.__version__,
    }
    _save(model, tokenizer, out, info, start)
    return info


def _phase_tokenizer(cfg: sft.SFTConfig, seed: int, eval_questions: int):
    _log("tokenizer: training BPE on task text and node prompt templates")
    train_qas: dict[str, list[sft.QA]] = {}
    eval_sets: dict[str, list[sft.QA]] = {}
    corpus: list[str] = []
    for kind in TASK_KINDS:
        train_qas[kind] = [(e.question, e.answer) for e in make_synthetic(kind, "train", TRAIN_QUESTIONS, seed)]
        eval_sets[kind] = [(e.question, e.answer) for e in make_synthetic(kind, "eval", eval_questions, seed)]
        corpus += synthetic_corpus(kind, TRAIN_QUESTIONS, seed)
    corpus += _prompt_corpus([qa for kind in TASK_KINDS for qa in train_qas[kind][::50]], cfg)
    return train_tokenizer(corpus, VOCAB_SIZE), train_qas, eval_sets


def _prompt_corpus(qas: Sequence[sft.QA], cfg: sft.SFTConfig) -> list[str]:
    """Rendered node bodies (no tokenizer needed) so template words become single tokens."""
    rng = random.Random(0)
    # The chat template's role lines too, so "assistant\n" is one token, not nine.
    texts = [answer_sentence(str(d)) for d in range(10)] + ["user\n", "assistant\n"]
    for widths in cfg.topologies + ((3, 1), (2, 2, 1)):
        topology = Topology.build(widths)
        for qa in qas:
            texts += [warmup.make_example(topology, node, qa, rng, 0.5, cfg.answer_format).body
                      for node in topology.names]
    return texts


def _phase_init(tokenizer, seed: int) -> Qwen3ForCausalLM:
    from transformers import Qwen3ForCausalLM

    _log("model: random-init Qwen3 " + ", ".join(f"{k}={v}" for k, v in MODEL_SHAPE.items()))
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(model_config(tokenizer)).float()
    model.generation_config = _generation_config(tokenizer)
    return model


def _generation_config(tokenizer) -> GenerationConfig:
    from transformers import GenerationConfig

    # vLLM reads eos from here: generation must stop at the end of the assistant turn.
    return GenerationConfig(
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD_TOKEN),
    )


def _save(model, tokenizer, out: pathlib.Path, info: dict, start: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    info["build_seconds"] = round(time.perf_counter() - start, 1)
    # Written last: a directory with build_info.json is a finished build.
    (out / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
    _log(f"saved to {out} in {info['build_seconds']} s")


def ensure_tiny_model(cache_dir: str | os.PathLike | None = None, seed: int = 0) -> pathlib.Path:
    """Path of the cached tiny model for ``seed``, building it first if needed.

    Safe under concurrency: an exclusive file lock lets one process build while the
    others wait, and the build lands by an atomic rename, so a reader never sees a
    half-written directory.
    """
    root = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_root()
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"tiny-qwen3-{recipe_hash()}-seed{seed}"
    if (final / "build_info.json").exists():
        return final
    with open(root / f".{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / "build_info.json").exists():  # another process built it while we waited
            return final
        _log(f"building tiny model into {final}")
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
        try:
            build_pinned(tmp, seed)
            if final.exists():  # a broken leftover (no build_info.json): replace it
                shutil.rmtree(final)
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


# MKL's GEMM and ATen's vector kernels pick a SIMD code path by CPU (AVX-512 on one
# machine, AVX2 on the next), and different paths add in different orders; over a few
# hundred SFT steps those last-bit differences grow into a different model. So the build
# runs in a child process with the code paths and thread counts pinned (env vars that
# must be set before torch loads). AVX2 is the widest path every x86-64 machine of this
# kind has; other architectures build unpinned.
PINNED_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "OMP_NUM_THREADS": str(BUILD_THREADS),
    "MKL_NUM_THREADS": str(BUILD_THREADS),
}


def build_pinned(out_dir: str | os.PathLike, seed: int = 0, sft_steps: int | None = None,
                 eval_questions: int = EVAL_QUESTIONS) -> dict:
    """:func:`build_tiny_model` in a child process with :data:`PINNED_ENV` (x86-64)."""
    env = {**os.environ, **(PINNED_ENV if platform.machine() in ("x86_64", "AMD64") else {})}
    args = [str(out_dir), str(seed), "" if sft_steps is None else str(sft_steps), str(eval_questions)]
    subprocess.run([sys.executable, "-m", "neuromas_dist.models.tiny", *args], env=env, check=True)
    return json.loads((pathlib.Path(out_dir) / "build_info.json").read_text())


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _log(message: str) -> None:
    print(f"[tiny-model] {message}", flush=True)


if __name__ == "__main__":  # the child process of build_pinned
    out, seed_arg, steps_arg, eval_arg = sys.argv[1:5]
    build_tiny_model(out, int(seed_arg), sft_steps=int(steps_arg) if steps_arg else None, eval_questions=int(eval_arg))
