"""`make bench`: every benchmark in turn, each writing its JSON (and PNG) under
benchmarks/results/. Run on an otherwise idle machine: they report ratios of
runs taken side by side, but two benchmarks at once would share the cores."""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = ("benchmarks.lora_params", "benchmarks.rollout_throughput", "benchmarks.program_overhead",
              "benchmarks.learner_throughput", "benchmarks.balance", "benchmarks.chaos")


def main() -> int:
    for module in BENCHMARKS:
        print(f"== {module}", flush=True)
        code = subprocess.call([sys.executable, "-m", module])
        if code:
            print(f"{module} failed with exit code {code}", file=sys.stderr)
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
