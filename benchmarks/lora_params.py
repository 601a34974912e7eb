"""LoRA parameter counts of the paper-scale configs (the table in docs/results.md).

    python -m benchmarks.lora_params

Counts come from each model's architecture instantiated on the meta device; the
single-LLM baseline's rank is chosen so its one adapter matches NeuroMAS-3's three.
"""

from __future__ import annotations

import json
from pathlib import Path

from neuromas_dist.adapters.counting import arch_config, lora_param_count
from neuromas_dist.config import load_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ["neuromas3_qwen3-0.6b_gsm8k", "neuromas7_qwen3-0.6b_gsm8k", "single_qwen3-0.6b_gsm8k",
           "neuromas3_gemma3-1b_gsm8k", "neuromas7_gemma3-1b_gsm8k"]


def count(name: str) -> dict:
    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    arch = arch_config(REPO / cfg.model.arch_config)
    per_node = lora_param_count(arch, cfg.lora.target_modules, cfg.lora.rank)
    nodes = sum(cfg.topology.widths)
    return {"config": name, "model": cfg.model.name_or_path, "nodes": nodes, "rank": cfg.lora.rank,
            "targets": list(cfg.lora.target_modules), "per_node": per_node, "total": per_node * nodes}


def main() -> None:
    rows = [count(name) for name in CONFIGS]
    print(f"{'config':32s} {'nodes':>5s} {'rank':>4s} {'per node':>12s} {'total':>12s}")
    for r in rows:
        print(f"{r['config']:32s} {r['nodes']:5d} {r['rank']:4d} {r['per_node']:12,d} {r['total']:12,d}")
    out = REPO / "benchmarks" / "results" / "lora_params.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
