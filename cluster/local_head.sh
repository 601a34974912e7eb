#!/usr/bin/env bash
# A one-machine "cluster" for trying the cluster form: start a Ray head here, submit, stop.
#   cluster/local_head.sh start   # ray start --head (dashboard on 127.0.0.1:8265)
#   RAY_ADDRESS=http://127.0.0.1:8265 cluster/submit.sh trainer.steps=2
#   cluster/local_head.sh stop
set -euo pipefail
case "${1:-}" in
  start) exec ray start --head --num-cpus "${NUM_CPUS:-4}" --dashboard-host 127.0.0.1 --disable-usage-stats ;;
  stop) exec ray stop --force ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
