#!/usr/bin/env bash
# The issue's multi-node performance figures, on emulated hosts (network namespaces), in one run.
#
#   sudo bench/multinode/run.sh [--rate 1gbit] [--parts 1,2,3] [--no-build] [--no-mpi] [--no-gloo]
#                               [--lat-iters N] [--bw-iters N] [--slow-iters N] [--repeat N]
#
#   1. TCP between hosts, 2 nodes × 1 rank, unshaped veth links: all_reduce busbw at 8 B and
#      1, 4, 16, 64 MiB for oxccl, torch gloo and Open MPI (tcp BTL), and the plain-TCP
#      ceiling (one Python socket stream, 2 GiB; and one each way at the same time).
#   2. 2 nodes × 2 ranks with --rate links: all_reduce 64 MiB, OXCCL_ALGO=ring, =hier and the
#      tuner's default.
#   3. 2 nodes × 2 ranks, contiguous vs interleaved placement, --rate links and unshaped:
#      all_reduce 64 MiB, the tuner's default.
#
# Results (nccl-tests JSON per run, logs, status.tsv) go to bench/multinode/out/; report.py
# turns them into out/results.md (printed at the end), and bench/peers/compare.py's full
# table of part 1 into out/tcp_compare.md. A run that fails is recorded and the rest goes on;
# the exit status is then 1. The clusters are removed on any exit (trap). See README.md.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
peers="$repo/bench/peers"
netns="$repo/scripts/netns"
out="$here/out"

rate=1gbit parts=1,2,3 build=1 use_mpi=1 use_gloo=1
lat_iters=1000 bw_iters=20 slow_iters=5 repeat=2

usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; }
while [[ $# -gt 0 ]]; do
    case $1 in
    --rate | --parts | --lat-iters | --bw-iters | --slow-iters | --repeat)
        [[ $# -ge 2 ]] || { echo "run.sh: $1 needs a value" >&2; exit 2; }
        case $1 in
        --rate) rate=$2 ;;
        --parts) parts=$2 ;;
        --lat-iters) lat_iters=$2 ;;
        --bw-iters) bw_iters=$2 ;;
        --slow-iters) slow_iters=$2 ;;
        --repeat) repeat=$2 ;;
        esac
        shift 2
        ;;
    --no-build) build=0; shift ;;
    --no-mpi) use_mpi=0; shift ;;
    --no-gloo) use_gloo=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "run.sh: unknown argument '$1'" >&2; usage; exit 2 ;;
    esac
done
for v in "$lat_iters" "$bw_iters" "$slow_iters" "$repeat"; do
    [[ $v =~ ^[0-9]+$ && $v -ge 1 ]] || { echo "run.sh: iteration counts must be positive integers, got '$v'" >&2; exit 2; }
done
[[ $parts =~ ^[123](,[123])*$ ]] || { echo "run.sh: --parts takes a list of 1, 2, 3 (e.g. 1,3), got '$parts'" >&2; exit 2; }
[[ $rate =~ ^[0-9]+(kbit|mbit|gbit)$ ]] || { echo "run.sh: --rate takes a tc rate such as 1gbit or 500mbit, got '$rate'" >&2; exit 2; }
part() { [[ ,$parts, == *,$1,* ]]; }
[[ $(id -u) -eq 0 ]] || { echo "run.sh: network namespaces need root (CAP_NET_ADMIN, CAP_SYS_ADMIN): run it with sudo" >&2; exit 1; }

log() { printf '\n== %s\n' "$*" >&2; }
start=$SECONDS

# ------------------------------------------------------------------ clusters and teardown
clusters=()
receiver="" child=""
cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    if [[ -n $receiver ]]; then kill "$receiver" 2>/dev/null || true; fi
    # The run in progress: run-job.sh stops its ranks on SIGTERM (within ~3 s), timeout passes
    # it on to mpirun; whatever is left inside a namespace goes with `cluster.sh down`.
    if [[ -n $child ]] && kill -TERM "$child" 2>/dev/null; then
        for ((i = 0; i < 100; i++)); do
            kill -0 "$child" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$child" 2>/dev/null || true
    fi
    for c in "${clusters[@]}"; do
        "$netns/cluster.sh" --name "$c" down >/dev/null 2>&1 ||
            echo "run.sh: could not remove cluster $c: run '$netns/cluster.sh cleanup-stale'" >&2
    done
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "run.sh: interrupted" >&2; exit 130' INT
trap 'echo "run.sh: terminated" >&2; exit 143' TERM

# cluster_up NAME [--rate R]: a 2-node cluster owned by this script (cleanup-stale knows us).
cluster_up() {
    local name=$1
    shift
    clusters+=("$name")
    "$netns/cluster.sh" --name "$name" up 2 --owner $$ "$@" >/dev/null
}

# ------------------------------------------------------------------ binaries
perf="$repo/target/release/oxccl-perf"
if ((build)); then
    log "cargo build --release -p oxccl-tools"
    (cd "$repo" && cargo build --release -q -p oxccl-tools --bins) ||
        echo "run.sh: cargo build failed; using the binaries already in target/release, if any" >&2
fi
[[ -x $perf ]] || { echo "run.sh: $perf is missing: build it with 'cargo build --release -p oxccl-tools'" >&2; exit 1; }
mpi_perf="$peers/build/mpi_perf"
if ((use_mpi)) && part 1; then
    if ! command -v mpirun >/dev/null || ! command -v mpicc >/dev/null; then
        echo "run.sh: Open MPI is not installed (bench/peers/run.sh installs it): Open MPI is skipped" >&2
        use_mpi=0
    elif [[ ! -x $mpi_perf || $peers/mpi_perf.c -nt $mpi_perf ]]; then
        mkdir -p "$peers/build"
        mpicc -O2 -Wall -o "$mpi_perf" "$peers/mpi_perf.c" || { echo "run.sh: mpicc failed: Open MPI is skipped" >&2; use_mpi=0; }
    fi
fi
if ((use_gloo)) && part 1 && ! "$peers/.venv/bin/python" -W ignore -c 'import torch.distributed as d; assert d.is_gloo_available()' 2>/dev/null; then
    echo "run.sh: no torch with gloo in bench/peers/.venv (bench/peers/run.sh installs it): gloo is skipped" >&2
    use_gloo=0
fi

# ------------------------------------------------------------------ bookkeeping
rm -rf "$out"
mkdir -p "$out/logs" "$out/tcp" "$out/hier" "$out/place"
status="$out/status.tsv"
printf 'run\trc\tlog\n' >"$status"
failures=()
# record RUN RC: one line of status.tsv (report.py shows a failed run's error from its log).
record() {
    printf '%s\t%s\t%s\n' "$1" "$2" "logs/$1.log" >>"$status"
    if [[ $2 -ne 0 ]]; then failures+=("$1 (exit $2)"); fi
}
# run_logged RUN cmd...: runs cmd, its output both on the terminal and in logs/RUN.log. It
# runs in the background and is waited for, so that a SIGTERM to this script reaches the trap
# at once (bash runs traps only between foreground commands) and the trap can stop it.
run_logged() {
    local name=$1 rc=0
    shift
    log "$name"
    "$@" > >(tee "$out/logs/$name.log") 2>&1 &
    child=$!
    wait "$child" || rc=$?
    child=""
    sleep 0.1 # tee's last lines
    record "$name" "$rc"
    return 0
}
# job CLUSTER RANKS_PER_NODE PLACEMENT [--env K=V]... -- program args: run-job.sh on CLUSTER.
# (exec: run in the background by run_logged, the job's pid is run-job.sh's own, which stops
# its ranks on SIGTERM.)
job() {
    local c=$1 rpn=$2 placement=$3
    shift 3
    exec "$netns/run-job.sh" --cluster "$c" --nodes 2 --ranks-per-node "$rpn" --placement "$placement" \
        --timeout 240 --grace 5 "$@"
}

# Machine and settings, for the report: a loaded machine shows in every number.
{
    echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cores=$(nproc)"
    echo "kernel=$(uname -r)"
    echo "load_start=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "rate=$rate"
    echo "lat_iters=$lat_iters"
    echo "bw_iters=$bw_iters"
    echo "slow_iters=$slow_iters"
    echo "repeat=$repeat"
    echo "commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$repo" diff --quiet HEAD 2>/dev/null || echo '+changes')"
} >"$out/meta.txt"

# nccl-tests flags of the two sweeps of part 1, and of the single 64 MiB size of parts 2 and 3.
lat=(all_reduce -b 8 -e 8 -n "$lat_iters" -w 20 -c 1)
bw=(all_reduce -b 1M -e 64M -f 4 -n "$bw_iters" -w 1 -c 1)
big=(all_reduce -b 64M -e 64M -n "$slow_iters" -w 1 -c 1)

# ------------------------------------------------------------------ the clusters
# u: 2 nodes, unshaped links (parts 1 and 3); g: 2 nodes at --rate (parts 2 and 3).
u="mb$$u" g="mb$$g"
if part 1 || part 3; then
    log "cluster $u: 2 nodes, unshaped links"
    cluster_up "$u" || { echo "run.sh: cannot bring up cluster $u" >&2; exit 1; }
    a0=$("$netns/cluster.sh" --name "$u" addr 0)
    a1=$("$netns/cluster.sh" --name "$u" addr 1)
fi
if part 2 || part 3; then
    log "cluster $g: 2 nodes, links at $rate"
    cluster_up "$g" --rate "$rate" || { echo "run.sh: cannot bring up cluster $g" >&2; exit 1; }
fi

if ((use_mpi)) && part 1; then
    # mpirun runs on node 0; it starts the orted of node 1 through rsh_netns.sh, which runs
    # it in that node's namespace. Both ranks talk over eth0 with the tcp BTL only.
    # The emulated nodes share this machine's cores, which Open MPI cannot see (one slot
    # per node): its ranks would busy-poll against each other and every message would wait
    # for a scheduler tick (~4 ms per 8 B all-reduce here). mpi_yield_when_idle 1 is what
    # Open MPI sets itself when it knows a node is oversubscribed; the busy-polling
    # latency is measured too (mpi_lat_spin) and shown under the table.
    printf '%s slots=1\n%s slots=1\n' "$a0" "$a1" >"$out/tcp/hostfile"
    # shellcheck disable=SC2054 # the commas are Open MPI's list syntax (btl tcp,self)
    mpirun_args=(--allow-run-as-root -np 2 --hostfile "$out/tcp/hostfile" --map-by node
        --mca plm_rsh_agent "$here/rsh_netns.sh"
        --mca btl tcp,self --mca btl_tcp_if_include eth0 --mca oob_tcp_if_include eth0)
fi
mpi() {
    OXCCL_MN_HOSTS="$a0=oxn$u-0 $a1=oxn$u-1" exec timeout -k 5 240 \
        ip netns exec "oxn$u-0" mpirun "${mpirun_args[@]}" "$@"
}

# Each round runs every measurement once; round k > 1 writes NAME.rK.json and report.py keeps
# the best result of each size over the rounds (rounds alternate the libraries and settings,
# so a burst of load elsewhere on the machine does not hit one of them only).
# ------------------------------------------------------------------ 1: TCP between hosts
round_tcp() {
    local x=$1
    # The plain-TCP ceiling: one stream node 0 -> node 1.
    local port=$((30000 + RANDOM % 10000))
    ip netns exec "oxn$u-1" python3 "$here/tcp_ceiling.py" recv "$port" --timeout 60 &
    receiver=$!
    run_logged "tcp_ceiling$x" ip netns exec "oxn$u-0" python3 "$here/tcp_ceiling.py" send "$a1" "$port" \
        --bytes 2G -J "$out/tcp/ceiling$x.json"
    wait "$receiver" 2>/dev/null || true
    receiver=""
    # Both directions at once, as a 2-rank all-reduce moves its data: node 1 -> node 0 in the
    # background while node 0 -> node 1 is measured the same way.
    local back=$((port + 1)) rx0 rx1 tx1
    ip netns exec "oxn$u-1" python3 "$here/tcp_ceiling.py" recv "$port" --timeout 60 &
    rx1=$!
    ip netns exec "oxn$u-0" python3 "$here/tcp_ceiling.py" recv "$back" --timeout 60 &
    rx0=$!
    ip netns exec "oxn$u-1" python3 "$here/tcp_ceiling.py" send "$a0" "$back" \
        --bytes 2G -J "$out/tcp/ceiling2_ba$x.json" >/dev/null 2>&1 &
    tx1=$!
    run_logged "tcp_ceiling2$x" ip netns exec "oxn$u-0" python3 "$here/tcp_ceiling.py" send "$a1" "$port" \
        --bytes 2G -J "$out/tcp/ceiling2_ab$x.json"
    wait "$tx1" "$rx0" "$rx1" 2>/dev/null || true

    # oxccl: one rank per node, so the default transport is TCP.
    run_logged "oxccl_lat$x" job "$u" 1 contiguous -- "$perf" "${lat[@]}" -J "$out/tcp/oxccl_lat$x.json"
    run_logged "oxccl_bw$x" job "$u" 1 contiguous -- "$perf" "${bw[@]}" -J "$out/tcp/oxccl_bw$x.json"
    if ((use_gloo)); then
        run_logged "gloo_lat$x" job "$u" 1 contiguous -- "$here/gloo_rank.sh" "${lat[@]}" -J "$out/tcp/gloo_lat$x.json"
        run_logged "gloo_bw$x" job "$u" 1 contiguous -- "$here/gloo_rank.sh" "${bw[@]}" -J "$out/tcp/gloo_bw$x.json"
    fi
    if ((use_mpi)); then
        run_logged "mpi_lat$x" mpi --mca mpi_yield_when_idle 1 "$mpi_perf" "${lat[@]}" -J "$out/tcp/mpi_lat$x.json"
        run_logged "mpi_bw$x" mpi --mca mpi_yield_when_idle 1 "$mpi_perf" "${bw[@]}" -J "$out/tcp/mpi_bw$x.json"
        run_logged "mpi_lat_spin$x" mpi --mca mpi_yield_when_idle 0 "$mpi_perf" "${lat[@]}" -J "$out/tcp/mpi_lat_spin$x.json"
    fi
}

# ------------------------------------------------------------------ 2: flat ring vs hierarchical
round_hier() {
    local x=$1
    run_logged "hier_ring$x" job "$g" 2 contiguous --env OXCCL_ALGO=ring -- "$perf" "${big[@]}" -J "$out/hier/ring$x.json"
    run_logged "hier_hier$x" job "$g" 2 contiguous --env OXCCL_ALGO=hier -- "$perf" "${big[@]}" -J "$out/hier/hier$x.json"
    run_logged "hier_default$x" job "$g" 2 contiguous -- "$perf" "${big[@]}" -J "$out/hier/default$x.json"
}

# ------------------------------------------------------------------ 3: placement
round_place() {
    local x=$1 p
    for p in contiguous interleaved; do
        run_logged "place_${rate}_$p$x" job "$g" 2 "$p" -- "$perf" "${big[@]}" -J "$out/place/${rate}_$p$x.json"
    done
    for p in contiguous interleaved; do
        run_logged "place_unlimited_$p$x" job "$u" 2 "$p" -- "$perf" all_reduce -b 64M -e 64M -n "$bw_iters" -w 1 -c 1 \
            -J "$out/place/unlimited_$p$x.json"
    done
}

for ((k = 1; k <= repeat; k++)); do
    x=""
    if ((k > 1)); then x=".r$k"; fi
    if ((repeat > 1)); then log "round $k of $repeat"; fi
    if part 1; then round_tcp "$x"; fi
    if part 2; then round_hier "$x"; fi
    if part 3; then round_place "$x"; fi
done

# ------------------------------------------------------------------ the tables
echo "load_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/meta.txt"
echo "seconds=$((SECONDS - start))" >>"$out/meta.txt"
log "results ($((SECONDS - start)) s)"
python3 "$here/report.py" "$out" --compare "$peers/compare.py" | tee "$out/results.md"
if [[ ${#failures[@]} -gt 0 ]]; then
    echo "run.sh: FAILED runs: ${failures[*]} (logs in $out/logs/)" >&2
    exit 1
fi
