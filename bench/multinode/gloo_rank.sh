#!/usr/bin/env bash
# One rank of bench/peers/gloo_perf.py under scripts/netns/run-job.sh: turns the OXCCL_*
# launch variables run-job.sh sets into torch's (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT:
# rank 0 hosts torch's TCPStore on the port run-job.sh picked for oxccl's root) and points
# gloo at the node's interface (gloo_perf.py's own default is loopback). Arguments go to
# gloo_perf.py; only rank 0 prints the table and writes -J.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
peers="$here/../peers"
: "${OXCCL_RANK:?gloo_rank.sh runs under run-job.sh (OXCCL_RANK unset)}"
: "${OXCCL_WORLD_SIZE:?OXCCL_WORLD_SIZE unset}"
: "${OXCCL_ROOT:?OXCCL_ROOT (host:port) unset}"
export RANK=$OXCCL_RANK WORLD_SIZE=$OXCCL_WORLD_SIZE
export MASTER_ADDR=${OXCCL_ROOT%:*} MASTER_PORT=${OXCCL_ROOT##*:}
export GLOO_SOCKET_IFNAME=${GLOO_SOCKET_IFNAME:-eth0}
exec "$peers/.venv/bin/python" -W ignore "$peers/gloo_perf.py" "$@"
