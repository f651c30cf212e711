#!/usr/bin/env bash
# Runs one oxccl job across emulated hosts: brings up a cluster of network namespaces
# (cluster.sh), starts NODES × RANKS_PER_NODE rank processes in them, prefixes each output
# line with "[rank] ", enforces a deadline, and always tears the cluster down.
#
#   run-job.sh --nodes N --ranks-per-node R [--placement contiguous|interleaved]
#              [--rate 1gbit|10gbit|none] [--delay 1ms] [--mtu M] [--timeout S] [--grace S]
#              [--env K=V]... [--cluster ID] [--port P] -- program [args...]
#
# Placement: contiguous puts ranks 0..R-1 on node 0, R..2R-1 on node 1, ...; interleaved puts
# rank r on node r mod N. Every rank gets OXCCL_RANK, OXCCL_WORLD_SIZE, OXCCL_ROOT (node 0's
# address: rank 0 hosts the root rendezvous there), a fresh random OXCCL_SECRET and
# OXCCL_HOSTNAME=node<k>, plus each --env; the rest of the environment is inherited.
# --cluster runs on an existing cluster (its first N nodes) and leaves it up.
#
# Exit status: 0 when every rank exited 0; 1 when a rank failed (each failure is named, with
# its node and status); 124 when the deadline (--timeout, default 300 s) killed the job;
# 2 for a bad command line.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CLUSTER="$HERE/cluster.sh"

die() {
    echo "run-job.sh: error: $*" >&2
    exit 2
}
note() { echo "run-job.sh: $*" >&2; }

nodes="" rpn="" placement=contiguous rate="" delay="" mtu="" timeout=300 grace=10 cluster="" port=""
extra_env=()
while [[ $# -gt 0 ]]; do
    case $1 in
    --nodes | --ranks-per-node | --placement | --rate | --delay | --mtu | --timeout | --grace | --env | --cluster | --port)
        [[ $# -ge 2 ]] || die "$1 needs a value"
        case $1 in
        --nodes) nodes=$2 ;;
        --ranks-per-node) rpn=$2 ;;
        --placement) placement=$2 ;;
        --rate) rate=$2 ;;
        --delay) delay=$2 ;;
        --mtu) mtu=$2 ;;
        --timeout) timeout=$2 ;;
        --grace) grace=$2 ;;
        --env)
            [[ $2 =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env $2: expected NAME=VALUE"
            extra_env+=("$2")
            ;;
        --cluster) cluster=$2 ;;
        --port) port=$2 ;;
        esac
        shift 2
        ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
        exit 2
        ;;
    --)
        shift
        break
        ;;
    *) die "unknown option '$1' (the program comes after --; --help for usage)" ;;
    esac
done
[[ $# -gt 0 ]] || die "no program given: run-job.sh --nodes N --ranks-per-node R -- program [args]"
[[ $nodes =~ ^[0-9]+$ && $nodes -ge 1 ]] || die "--nodes must be a positive integer, got '${nodes}'"
[[ $rpn =~ ^[0-9]+$ && $rpn -ge 1 ]] || die "--ranks-per-node must be a positive integer, got '${rpn}'"
[[ $placement == contiguous || $placement == interleaved ]] ||
    die "--placement must be contiguous or interleaved, got '$placement'"
[[ $timeout =~ ^[0-9]+$ && $timeout -ge 1 ]] || die "--timeout must be a positive number of seconds, got '$timeout'"
[[ $grace =~ ^[0-9]+$ ]] || die "--grace must be a number of seconds, got '$grace'"
[[ -z $port || ($port =~ ^[0-9]+$ && $port -ge 1 && $port -le 65535) ]] || die "--port must be 1..65535, got '$port'"
# The root's port: any works inside the cluster's private namespaces; a random one keeps
# jobs run back to back on one --cluster from meeting a previous job's lingering sockets.
[[ -n $port ]] || port=$((20000 + RANDOM % 10000))
program=$1
if [[ $program == */* ]]; then
    [[ -x $program ]] || die "program '$program' is not an executable file"
else
    command -v "$program" >/dev/null || die "program '$program' is not on PATH"
fi

world=$((nodes * rpn))
secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
[[ ${#secret} -eq 64 ]] || die "could not read 32 random bytes from /dev/urandom"

# Rank processes by rank (pids are their process groups: each rank runs under setsid).
declare -a pids=() node_of=() status=() stopped=()
own_cluster=""

# Sends SIGTERM to every rank still running, SIGKILL 3 s later.
kill_ranks() {
    local r alive i
    for r in "${!pids[@]}"; do
        if [[ -z ${status[r]:-} ]]; then
            stopped[r]=1
            kill -TERM -- "-${pids[r]}" 2>/dev/null || true
        fi
    done
    for ((i = 0; i < 30; i++)); do
        alive=0
        for r in "${!pids[@]}"; do
            if [[ -z ${status[r]:-} ]] && kill -0 "${pids[r]}" 2>/dev/null; then alive=1; fi
        done
        if ((!alive)); then break; fi
        sleep 0.1
    done
    for r in "${!pids[@]}"; do
        if [[ -z ${status[r]:-} ]]; then kill -KILL -- "-${pids[r]}" 2>/dev/null || true; fi
    done
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ ${#pids[@]} -gt 0 ]]; then
        kill_ranks
    fi
    if [[ -n $own_cluster ]]; then
        "$CLUSTER" --name "$own_cluster" down >/dev/null 2>&1 ||
            note "could not remove cluster $own_cluster: run '$CLUSTER cleanup-stale'"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'note "interrupted: stopping the ranks"; exit 130' INT
trap 'note "terminated: stopping the ranks"; exit 143' TERM

if [[ -n $cluster ]]; then
    have=$("$CLUSTER" --name "$cluster" nodes)
    ((have >= nodes)) || die "cluster '$cluster' has $have nodes, the job needs $nodes"
    [[ -z $rate && -z $delay && -z $mtu ]] || die "--rate, --delay and --mtu apply when run-job.sh creates the cluster, not with --cluster"
    name=$cluster
else
    name="j$$"
    own_cluster=$name
    up_args=("$nodes" --owner "$$")
    if [[ -n $rate ]]; then up_args+=(--rate "$rate"); fi
    if [[ -n $delay ]]; then up_args+=(--delay "$delay"); fi
    if [[ -n $mtu ]]; then up_args+=(--mtu "$mtu"); fi
    "$CLUSTER" --name "$name" up "${up_args[@]}" >/dev/null
fi
root_ip=$("$CLUSTER" --name "$name" addr 0)
root="$root_ip:$port"

map=""
for ((r = 0; r < world; r++)); do
    if [[ $placement == contiguous ]]; then
        node_of[r]=$((r / rpn))
    else
        node_of[r]=$((r % nodes))
    fi
    map+=" ${r}@node${node_of[r]}"
done
note "job: $nodes nodes × $rpn ranks ($placement:$map), cluster $name, root $root, deadline ${timeout} s"

for ((r = 0; r < world; r++)); do
    k=${node_of[r]}
    # Each rank's output goes through its own line-buffered prefixer.
    exec {out}> >(exec sed -u "s/^/[$r] /")
    # setsid: the rank gets its own process group, so the deadline can stop what it started
    # too. (In a script without job control setsid execs in place, so $! is the rank.)
    setsid ip netns exec "oxn${name}-$k" env \
        OXCCL_RANK="$r" OXCCL_WORLD_SIZE="$world" OXCCL_ROOT="$root" OXCCL_SECRET="$secret" \
        OXCCL_HOSTNAME="node$k" "${extra_env[@]}" "$@" \
        </dev/null >&"$out" 2>&1 &
    pids[r]=$!
    exec {out}>&-
done

describe() {
    local rc=$1
    if ((rc > 128)); then
        echo "killed by signal $((rc - 128)) ($(kill -l "$((rc - 128))" 2>/dev/null || echo '?'))"
    else
        echo "exit status $rc"
    fi
}
# Milliseconds since the epoch (bash's EPOCHREALTIME, without forking date).
now_ms() {
    local t=${EPOCHREALTIME/[.,]/}
    echo $((t / 1000))
}
deadline=$(($(now_ms) + timeout * 1000))
fail_deadline=""
first_fail=""
timed_out=0
while :; do
    running=0
    for ((r = 0; r < world; r++)); do
        [[ -n ${status[r]:-} ]] && continue
        if kill -0 "${pids[r]}" 2>/dev/null; then
            running=$((running + 1))
            continue
        fi
        rc=0
        wait "${pids[r]}" || rc=$?
        status[r]=$rc
        if ((rc != 0)) && [[ -z $first_fail && -z ${stopped[r]:-} ]]; then
            first_fail=$r
            fail_deadline=$(($(now_ms) + grace * 1000))
            if ((world > 1)); then
                note "rank $r failed ($(describe "$rc")): the others get ${grace} s to finish"
            fi
        fi
    done
    if ((running == 0)); then break; fi
    if (($(now_ms) >= deadline)); then
        timed_out=1
        note "deadline of ${timeout} s reached with $running rank(s) still running: stopping them"
        kill_ranks
    elif [[ -n $fail_deadline ]] && (($(now_ms) >= fail_deadline)); then
        note "stopping the $running rank(s) still running ${grace} s after rank $first_fail failed"
        kill_ranks
    fi
    sleep 0.1
done
# The prefixers end when their rank's output closes; give them a moment to flush.
sleep 0.2

failed=0
for ((r = 0; r < world; r++)); do
    if [[ ${status[r]} -ne 0 ]]; then
        failed=$((failed + 1))
        if [[ -n ${stopped[r]:-} ]]; then
            why="stopped by run-job.sh ($(describe "${status[r]}"))"
        else
            why=$(describe "${status[r]}")
            [[ $r == "$first_fail" ]] && why+=" (the first failure)"
        fi
        note "FAILED: rank $r on node ${node_of[r]} (namespace oxn${name}-${node_of[r]}): $why"
    fi
done
if ((timed_out)); then
    note "job timed out after ${timeout} s"
    exit 124
fi
if ((failed)); then
    note "$failed of $world rank(s) failed"
    exit 1
fi
note "all $world ranks exited 0"
