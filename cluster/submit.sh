#!/usr/bin/env bash
# Submit a training run to a Ray cluster.
#   RAY_ADDRESS=http://HEAD:8265 cluster/submit.sh --config configs/neuromas3_qwen3-0.6b_gsm8k.yaml trainer.steps=200
# MODULE picks another entry point with the same arguments, e.g. the comparisons table:
#   MODULE=benchmarks.neuromas_table cluster/submit.sh --config configs/neuromas3_qwen3-0.6b_gsm8k.yaml \
#       --runs /shared/neuromas_table --out /shared/neuromas_table
# The job's driver joins the cluster (ray job submit sets RAY_ADDRESS for it); rollout
# workers and learner ranks are placed by a placement group sized from resources.*.
set -euo pipefail
cd "$(dirname "$0")/.."
# A token-authenticated head (Ray's default once a token exists) answers 401 unless the
# client sends the token: send it whenever one is available here.
if [[ -z "${RAY_AUTH_MODE:-}" && ( -n "${RAY_AUTH_TOKEN:-}" || -f "$HOME/.ray/auth_token" ) ]]; then
  export RAY_AUTH_MODE=token
fi
exec ray job submit --working-dir . \
  --runtime-env-json '{"excludes": [".venv", ".cache", "runs", ".git"]}' \
  -- python -m "${MODULE:-neuromas_dist.launch}" "$@"
