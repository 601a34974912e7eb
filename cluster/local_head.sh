#!/usr/bin/env bash
# A one-machine "cluster" for trying the cluster form: start a Ray head here, submit, stop.
#   cluster/local_head.sh start   # ray start --head (dashboard on 127.0.0.1:8265); extra args go to ray start
#   RAY_ADDRESS=http://127.0.0.1:8265 cluster/submit.sh trainer.steps=2
#   cluster/local_head.sh stop
# Token authentication: Ray 2.60 turns it on when ~/.ray/auth_token exists (any earlier
# ray.init() writes one), and then every client must send the token. Turning it on
# explicitly makes the head and this project's clients agree on a fresh machine too.
set -euo pipefail
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
case "${1:-}" in
  start) shift; exec ray start --head --num-cpus "${NUM_CPUS:-4}" --dashboard-host 127.0.0.1 --disable-usage-stats "$@" ;;
  stop) exec ray stop --force ;;
  *) echo "usage: $0 start [ray start args]|stop" >&2; exit 2 ;;
esac
