#!/bin/bash
# benchmarks.gpu_check on the lent H200 (no network, no vLLM/Ray/DeepSpeed there):
# wheels from .whl, a Ray import stub (.whl/stub), the clean HEAD export (.whl/src), the
# tiny model (.whl/cache). Part A = tests,learner; part B = options with what time is left.
S=$SECONDS
W=$(cd "$(dirname "$0")" && pwd)
cd "$W/src" || exit 1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$W"/*.whl || exit 1
export PYTHONPATH=/tmp/site:$W/stub:$W/src DS_ACCELERATOR=cuda NEUROMAS_CACHE=$W/cache PYTHONUNBUFFERED=1 \
       TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
{
  echo "commit $(cat COMMIT)"; date -u; uname -a; nproc; free -g | head -2
  nvidia-smi
  python3 - <<'EOF'
import importlib, sys
print(sys.version)
for m in ("torch", "transformers", "peft", "deepspeed", "pydantic", "pydantic_core", "tokenizers", "huggingface_hub",
          "accelerate", "safetensors", "regex", "typing_extensions", "pyarrow", "numpy", "pytest", "xdist",
          "pytest_timeout", "ray"):
    try:
        mod = importlib.import_module(m)
        print(m, getattr(mod, "__version__", "?"), getattr(mod, "__file__", "?"))
    except Exception as exc:  # noqa: BLE001
        print(m, "IMPORT FAILED", type(exc).__name__, exc)
import torch
print("cuda", torch.version.cuda, torch.cuda.is_available(), torch.cuda.get_device_name(0))
from deepspeed.accelerator import get_accelerator
print("deepspeed accelerator", get_accelerator().device_name())
EOF
} > "$OUT/env.txt" 2>&1
grep -E "IMPORT FAILED|^cuda|accelerator" "$OUT/env.txt"
echo "setup done at $((SECONDS - S)) s"
mkdir -p "$OUT/a" "$OUT/b"
set -o pipefail
# tests in 8 xdist workers (~160 tiny-model tests), a per-test limit against a hung process group
PYTEST_ADDOPTS="-n 8 --timeout 100 --timeout-method thread --junitxml $OUT/junit.xml" \
  timeout -k 10 400 python3 -m benchmarks.gpu_check --parts tests,learner --tests-timeout 150 \
  --learner-timeout 130 --out-dir "$OUT/a" 2>&1 | tee "$OUT/a.log"
echo "part A rc $? at $((SECONDS - S)) s"
E=$((SECONDS - S)); O=$((570 - E - 65)); [ $O -gt 300 ] && O=300
if [ $O -ge 290 ]; then ST=3; elif [ $O -ge 230 ]; then ST=2; elif [ $O -ge 170 ]; then ST=1; else ST=0; fi
if [ $ST -gt 0 ]; then
  timeout -k 10 $((O + 60)) python3 -m benchmarks.gpu_check --parts options --options-timeout $O \
    --shape 8,384,384,8,8,$ST --out-dir "$OUT/b" 2>&1 | tee "$OUT/b.log"
  echo "part B rc $? at $((SECONDS - S)) s (options-timeout $O, steps $ST)"
else
  echo "part B skipped: $O s left for options"
fi
