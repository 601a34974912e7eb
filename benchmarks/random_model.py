"""Model directories of any architecture with random weights, loadable by transformers,
PEFT, the learner and vLLM, with nothing downloaded (benchmarks.gpu_check, learner_memory).

The tokenizer is the tiny model's (its BPE, chat template and special tokens, so prompts
encode as they do in every test) widened with filler tokens to the architecture's
vocabulary, so vLLM can detokenize any id a random model samples.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch


def random_model_dir(path: Path, arch_json: Path, dtype: torch.dtype = torch.bfloat16) -> Path:
    """``path`` holding ``arch_json``'s architecture with random weights (built on the GPU
    when there is one: seconds, not minutes), ``arch.json`` (for ``model.arch_config``) and
    the widened tokenizer."""
    from transformers import AutoModelForCausalLM

    from neuromas_dist.adapters.counting import arch_config

    conf = arch_config(arch_json)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(conf, dtype=dtype)
    model.save_pretrained(path)
    del model
    (Path(path) / "arch.json").write_text(Path(arch_json).read_text())
    widen_tokenizer(Path(path), conf.get_text_config().vocab_size)
    return Path(path)


def widen_tokenizer(path: Path, vocab_size: int) -> None:
    """The tiny tokenizer with filler tokens ``<|fill_N|>`` up to ``vocab_size`` entries."""
    from neuromas_dist.models.tiny import ensure_tiny_model

    tiny = ensure_tiny_model()
    for name in ("tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if (tiny / name).exists():
            shutil.copy(tiny / name, path / name)
    spec = json.loads((tiny / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    taken = set(vocab.values()) | {t["id"] for t in spec["added_tokens"]}
    vocab.update({f"<|fill_{i}|>": i for i in range(vocab_size) if i not in taken})
    (path / "tokenizer.json").write_text(json.dumps(spec))
