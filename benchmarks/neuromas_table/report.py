"""The table as markdown: one line per row, then the paired comparisons."""

from __future__ import annotations

from typing import Any, Mapping


def _ci(e: Mapping[str, float], signed: bool = False) -> str:
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(e['mean'])} [{f.format(e['ci_lo'])}, {f.format(e['ci_hi'])}]"


def render_markdown(result: Mapping[str, Any]) -> str:
    spec, rows = result["spec"], result["rows"]
    seeds = ", ".join(map(str, spec["seeds"]))
    lines = [
        "# NeuroMAS comparisons", "",
        f"`{result['command']}` on {result['machine']}. C = {spec['small_steps']} steps (NeuroMAS-3, single LLM), "
        f"D = {spec['large_steps']} steps (NeuroMAS-7 scratch; each grown arm after growth). Seeds {seeds}; "
        f"{result['questions']} held-out questions. Accuracy: mean over seeds and questions, 95% bootstrap "
        "interval resampling seeds and questions; per seed in the last column. Training and evaluation took "
        f"{result['run_wall_s_total'] / 60:.0f} min in all ({len(result['run_wall_s'])} runs, one after another).", "",
        "| row | LLM calls / q | trained LoRA params | steps | accuracy | per seed |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows.values():
        steps = f"{r['small_steps']} + {r['steps'] - r['small_steps']}" if r["small_steps"] else str(r["steps"])
        per_seed = " / ".join(f"{p['mean']:.3f}" for p in r["per_seed"])
        lines.append(f"| {r['label']} | {r['llm_calls_per_question']:g} | {r['lora_params']:,} | {steps} | "
                     f"{_ci(r['accuracy'])} | {per_seed} |")
    lines += ["", "## Paired differences (same questions, same seeds)", "",
              "| a - b | difference [95% CI] | tests |", "|---|---|---|"]
    for c in result["comparisons"]:
        pair = f"{rows[c['a']]['label']} - {rows[c['b']]['label']}"
        lines.append(f"| {pair} | {_ci(c['diff'], signed=True)} | {c['tests']} |")
    return "\n".join(lines) + "\n"
