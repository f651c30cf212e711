#!/usr/bin/env bash
# The soft-RoCE suite: oxccl over real InfiniBand verbs (rdma_rxe) inside QEMU guests.
#
# Usage: scripts/softroce/suite.sh [--two-guests] [--no-build] [--perf-only]
#   (default)     one guest: the verbs transport tests (`--ignored ib::`), then
#                 oxccl-selftest with OXCCL_TRANSPORT=ib on 2 and 4 ranks (every collective
#                 and send/recv, small and medium counts, checked against a reference), then
#                 oxccl-perf all_reduce over ib on 2 ranks (a table: absolute numbers under
#                 emulation mean nothing; --perf-only adds tcp for comparison)
#   --two-guests  two guests joined by a virtual wire, two ranks each, OXCCL_TRANSPORT=auto
#                 (shared memory inside a guest, verbs between them), then one rank each
#                 with ib forced, both with oxccl-selftest and oxccl-perf
#   --no-build    use the binaries already in target/debug
#   --perf-only   one guest, only the oxccl-perf table (for README numbers)
# Exit status 0 only when every step inside the guest(s) passed. CI runs the default.
set -euo pipefail
cd "$(dirname "$0")/../.."

mode=one build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --two-guests) mode=two; shift ;;
        --perf-only) mode=perf; shift ;;
        --no-build) build=0; shift ;;
        *) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
    esac
done

if ((build)); then
    cargo build --locked --quiet -p oxccl-tools --bins
    cargo test --locked --quiet -p oxccl-transports --no-run
fi
# The transports' unit-test binary: the newest one cargo built.
tests_bin=$(ls -t target/debug/deps/oxccl_transports-* 2>/dev/null | grep -v '\.d$' | head -n 1)
[ -x "$tests_bin" ] || { echo "suite.sh: no oxccl-transports test binary (run without --no-build)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/oxccl-rxe-suite.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin" "$work/extra"
# Stripped copies: the initramfs is unpacked by an emulated CPU, every MiB costs boot time.
for b in oxccl-run oxccl-selftest oxccl-perf; do
    strip -o "$work/bin/$b" "target/debug/$b"
done
strip -o "$work/bin/oxccl-transports-tests" "$tests_bin"
bins="$work/bin/oxccl-run $work/bin/oxccl-selftest $work/bin/oxccl-perf $work/bin/oxccl-transports-tests"

# Common to every guest script: a step runner that records failures.
cat > "$work/extra/lib.sh" <<'EOF'
failed=""
step() {
    name=$1; shift
    echo "=== step: $name"
    start=$(cut -d' ' -f1 /proc/uptime)
    if "$@"; then rc=0; else rc=$?; fi
    end=$(cut -d' ' -f1 /proc/uptime)
    echo "=== step: $name: rc=$rc ($(awk "BEGIN{printf \"%.1f\", $end-$start}") s)"
    [ "$rc" = 0 ] || failed="$failed [$name]"
}
finish() {
    if [ -n "$failed" ]; then echo "=== FAILED:$failed"; exit 1; fi
    echo "=== all steps passed"
}
export OXCCL_TIMEOUT=120 OXCCL_DEBUG=WARN
# Medium counts stay small: emulated verbs move a few MB/s.
SELFTEST="oxccl-selftest --counts 0,1,7,1031,65537 --dtypes float,bfloat16,int8,int64"
SELFTEST4="oxccl-selftest --counts 0,1,7,1031,65537 --dtypes float,int8"
PERF="oxccl-perf all_reduce -b 8 -e 1M -f 8 -c 1 -w 2 -n 5"
EOF

case $mode in
one | perf)
    cat > "$work/extra/run" <<'EOF'
#!/bin/sh
. /extra/lib.sh
if [ "${PERF_ONLY:-0}" = 0 ]; then
    step "verbs transport tests" oxccl-transports-tests --ignored --test-threads 1 ib::
    step "selftest, 2 ranks, ib" env OXCCL_TRANSPORT=ib OXCCL_DEBUG=INFO OXCCL_DEBUG_SUBSYS=INIT \
        oxccl-run -n 2 -- $SELFTEST
    # Fewer types on 4 ranks: the emulated CPU makes this the suite's longest step.
    step "selftest, 4 ranks, ib, 2 queue pairs per connection" env OXCCL_TRANSPORT=ib \
        OXCCL_IB_QPS_PER_CONNECTION=2 oxccl-run -n 4 -- $SELFTEST4
    step "auto on one host picks shared memory" env OXCCL_DEBUG=INFO OXCCL_DEBUG_SUBSYS=INIT \
        oxccl-run -n 2 -- oxccl-selftest --counts 7 --dtypes float
fi
step "oxccl-perf all_reduce, 2 ranks, ib" env OXCCL_TRANSPORT=ib oxccl-run -n 2 -- $PERF
if [ "${PERF_ONLY:-0}" = 1 ]; then
    step "oxccl-perf all_reduce, 2 ranks, tcp (same guest, for comparison)" \
        env OXCCL_TRANSPORT=tcp oxccl-run -n 2 -- $PERF
fi
# The verbs baseline of this guest: an 8-byte RC ping-pong between two processes.
pingpong() {
    ibv_rc_pingpong -d rxe0 -g 1 -s 8 -n 200 -p 18515 >/tmp/pp-server.log 2>&1 &
    sleep 1
    ibv_rc_pingpong -d rxe0 -g 1 -s 8 -n 200 -p 18515 "$NODE_IP"; rc=$?
    wait
    return $rc
}
step "reference: ibv_rc_pingpong, 8 bytes" pingpong
finish
EOF
    [ "$mode" = perf ] && sed -i '2a export PERF_ONLY=1' "$work/extra/run"
    chmod +x "$work/extra/run"
    scripts/softroce/guest.sh --bins "$bins" --dir "$work/extra" --timeout 600
    ;;
two)
    cat > "$work/extra/run" <<'EOF'
#!/bin/sh
# NODE 0 hosts ranks 0-1 (and the rendezvous), NODE 1 ranks 2-3.
. /extra/lib.sh
export OXCCL_SECRET=5f0e1b8c3d2a4f605f0e1b8c3d2a4f605f0e1b8c3d2a4f605f0e1b8c3d2a4f60
ranks() {  # ranks N PER_NODE PORT VARS... -- command
    n=$1 per=$2 port=$3; shift 3
    pids=""
    i=0
    while [ $i -lt $per ]; do
        r=$((NODE * per + i))
        env OXCCL_RANK=$r OXCCL_WORLD_SIZE=$n OXCCL_ROOT=10.0.3.1:$port "$@" &
        pids="$pids $!"
        i=$((i + 1))
    done
    rc=0
    for p in $pids; do wait $p || rc=1; done
    return $rc
}
step "selftest, 2 guests x 2 ranks, auto (shm inside, ib between)" \
    ranks 4 2 29500 OXCCL_DEBUG=INFO OXCCL_DEBUG_SUBSYS=INIT $SELFTEST
step "selftest, 2 guests x 1 rank, ib" ranks 2 1 29501 OXCCL_TRANSPORT=ib $SELFTEST
step "oxccl-perf all_reduce, 2 guests x 1 rank, ib" ranks 2 1 29502 OXCCL_TRANSPORT=ib $PERF
step "oxccl-perf all_reduce, 2 guests x 1 rank, tcp" ranks 2 1 29503 OXCCL_TRANSPORT=tcp $PERF
# The verbs baseline of this wire: an 8-byte RC ping-pong between the guests.
pingpong() {
    if [ "$NODE" = 0 ]; then
        ibv_rc_pingpong -d rxe0 -g 1 -s 8 -n 50 -p 18515
    else
        sleep 2; ibv_rc_pingpong -d rxe0 -g 1 -s 8 -n 50 -p 18515 "$PEER_IP"
    fi
}
step "reference: ibv_rc_pingpong across the wire, 8 bytes" pingpong
finish
EOF
    chmod +x "$work/extra/run"
    SMP=${SMP:-2} scripts/softroce/two-guests.sh --bins "$bins" --dir "$work/extra" --timeout 600
    ;;
esac
