#!/usr/bin/env bash
# Soak: random collectives (kind, datatype, reduction, count, in place, root) on 8 ranks,
# spread over every transport × algorithm forced (and the tuner's choice), each result
# checked against the sequential reference by oxccl-selftest --random.
#
#   scripts/soak.sh [--ops 10000] [--ranks 8] [--max-count 262144] [--seed S] [--bin target/debug]
#
# Prints one line per run and the totals; exits 1 on any wrong element or failed run.
set -euo pipefail
cd "$(dirname "$0")/.."

ops=10000 ranks=8 max_count=262144 seed=1 bin=target/debug
while (($#)); do
    case $1 in
        --ops) ops=$2; shift 2 ;;
        --ranks) ranks=$2; shift 2 ;;
        --max-count) max_count=$2; shift 2 ;;
        --seed) seed=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        *) echo "soak.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
for b in oxccl-run oxccl-selftest; do
    [[ -x $bin/$b ]] || { echo "soak.sh: $bin/$b is missing (cargo build -p oxccl-tools)" >&2; exit 2; }
done
algos=(auto ring tree recursive_doubling halving_doubling bruck binomial linear one_shot ls_one_shot ls_two_shot)
runs=()
for t in shm tcp; do
    for a in "${algos[@]}"; do
        # The load/store algorithms need every rank's memory: shared memory only.
        [[ $t == tcp && $a == ls_* ]] && continue
        runs+=("$t:$a")
    done
done
per=$(((ops + ${#runs[@]} - 1) / ${#runs[@]}))
total_ops=0 total_checks=0 total_wrong=0 failed=0
start=$(date +%s)
echo "soak: $ops random collectives on $ranks ranks over ${#runs[@]} transport/algorithm runs ($per each), counts up to $max_count, seed $seed"
k=0
for run in "${runs[@]}"; do
    t=${run%%:*} a=${run#*:}
    env=(OXCCL_TRANSPORT="$t" OXCCL_TIMEOUT=120)
    [[ $a == auto ]] || env+=(OXCCL_ALGO="$a")
    log=$(mktemp)
    rc=0
    env "${env[@]}" timeout -k 5 900 "$bin/oxccl-run" -n "$ranks" -- "$bin/oxccl-selftest" \
        --random "$per" --seed $((seed * 1000 + k)) --max-count "$max_count" >"$log" 2>&1 || rc=$?
    k=$((k + 1))
    checks=$(sed -n 's/^\[0\] rank 0\/[0-9]*: [0-9]* random ops (seed [0-9]*), \([0-9]*\) checks, \([0-9]*\) wrong.*/\1 \2/p' "$log")
    wrong_all=$(sed -n 's/^\[[0-9]*\] rank [0-9]*\/[0-9]*: .* \([0-9]*\) wrong elements.*/\1/p' "$log" | paste -sd+ | bc)
    if ((rc != 0)) || [[ -z $checks ]]; then
        failed=$((failed + 1))
        echo "  $t $a: FAILED (exit $rc)"
        grep -E "error|MISMATCH" "$log" | head -5 | sed 's/^/    /'
    else
        read -r c _ <<<"$checks"
        total_ops=$((total_ops + per)) total_checks=$((total_checks + c)) total_wrong=$((total_wrong + ${wrong_all:-0}))
        echo "  $t $a: $per ops, $c checks on rank 0, ${wrong_all:-0} wrong elements over all ranks"
    fi
    rm -f "$log"
done
echo "soak: $total_ops ops in $(($(date +%s) - start)) s, $total_checks checks on rank 0, $total_wrong wrong elements, $failed failed runs"
((failed == 0 && total_wrong == 0))
