#!/usr/bin/env bash
# mpirun's remote-shell agent for the namespace cluster (--mca plm_rsh_agent this-script).
# Open MPI calls it as `agent [options] HOST COMMAND...`, as it would call ssh; this runs
# COMMAND in HOST's network namespace instead (`ip netns exec`). HOST is looked up in
# $OXCCL_MN_HOSTS, a space-separated list of ADDRESS=NAMESPACE set by run.sh; mpirun passes
# its own environment to the agent, and through it to the remote orted.
set -euo pipefail
while [[ $# -gt 0 && $1 == -* ]]; do shift; done # ssh-style options (e.g. -x): not needed
[[ $# -ge 2 ]] || { echo "rsh_netns.sh: expected HOST COMMAND..., got: $*" >&2; exit 2; }
host=$1
shift
ns=""
for pair in ${OXCCL_MN_HOSTS:-}; do
    if [[ ${pair%%=*} == "$host" ]]; then ns=${pair#*=}; fi
done
[[ -n $ns ]] || { echo "rsh_netns.sh: host '$host' is not in OXCCL_MN_HOSTS ('${OXCCL_MN_HOSTS:-}')" >&2; exit 2; }
# ssh hands the remote shell one command line: do the same.
exec ip netns exec "$ns" /bin/sh -c "$*"
