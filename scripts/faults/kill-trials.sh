#!/usr/bin/env bash
# kill -9 trials: a job of random collectives where one rank kills itself (SIGKILL) at a
# random op; every survivor must fail with an error naming that rank within 5 s of the
# kill, nobody may wait for the deadline, the launcher must exit non-zero, and no shared
# memory segment may be left in /dev/shm.
#
#   scripts/faults/kill-trials.sh [--trials 50] [--ranks 8] [--transports shm,tcp]
#                                 [--seed S] [--bin target/debug] [--limit-ms 5000]
#
# Trial k uses transport k mod len(transports), a victim and kill point drawn from the seed,
# and the default settings (OXCCL_TIMEOUT 300 s: detection, not the deadline, must end it).
# Prints one line per trial and a summary; exits 1 if any trial failed.
set -euo pipefail
cd "$(dirname "$0")/../.."

trials=50 ranks=8 transports=shm,tcp seed=$RANDOM bin=target/debug limit_ms=5000
while (($#)); do
    case $1 in
        --trials) trials=$2; shift 2 ;;
        --ranks) ranks=$2; shift 2 ;;
        --transports) transports=$2; shift 2 ;;
        --seed) seed=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        --limit-ms) limit_ms=$2; shift 2 ;;
        *) echo "kill-trials.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
for b in oxccl-run oxccl-selftest; do
    [[ -x $bin/$b ]] || { echo "kill-trials.sh: $bin/$b is missing (cargo build -p oxccl-tools)" >&2; exit 2; }
done
IFS=, read -r -a tlist <<<"$transports"
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
RANDOM=$seed
failed=0 worst=0
echo "kill-trials: $trials trials, $ranks ranks, transports ${tlist[*]}, seed $seed"
for ((k = 0; k < trials; k++)); do
    transport=${tlist[k % ${#tlist[@]}]}
    victim=$((RANDOM % ranks))
    at=$((RANDOM % 200))
    opseed=$RANDOM
    out=$log/trial$k.log
    before=$(ls /dev/shm | grep -c '^oxccl' || true)
    rc=0
    OXCCL_TRANSPORT=$transport timeout -k 5 120 "$bin/oxccl-run" -n "$ranks" --grace 30 -- \
        "$bin/oxccl-selftest" --random 1000000 --seed "$opseed" --max-count 65536 \
        --kill-rank "$victim" --kill-after "$at" >"$out" 2>&1 || rc=$?
    after=$(ls /dev/shm | grep -c '^oxccl' || true)
    problems=()
    ((rc != 0)) || problems+=("launcher exited 0")
    ((rc != 124)) || problems+=("job timed out (timeout 120 s)")
    kill_ms=$(sed -n "s/^\[$victim\] rank $victim: killing myself.* at unix ms \([0-9]*\)$/\1/p" "$out")
    [[ -n $kill_ms ]] || problems+=("rank $victim never reached op $at")
    slowest=0
    for ((r = 0; r < ranks; r++)); do
        ((r != victim)) || continue
        err=$(grep -m1 "^\[$r\] error:" "$out" || true)
        if [[ -z $err ]]; then
            problems+=("rank $r reported no error")
            continue
        fi
        [[ $err == *"rank $victim died"* ]] || problems+=("rank $r blames someone else: ${err:0:300}")
        [[ $err != *"made no progress"* ]] || problems+=("rank $r waited for the deadline")
        at_ms=$(sed -n "s/^\[$r\] failed at unix ms \([0-9]*\)$/\1/p" "$out" | head -1)
        if [[ -n $kill_ms && -n $at_ms ]]; then
            d=$((at_ms - kill_ms))
            ((d <= slowest)) || slowest=$d
        fi
    done
    ((slowest <= limit_ms)) || problems+=("slowest survivor took $slowest ms")
    ((after <= before)) || problems+=("$((after - before)) segment(s) left in /dev/shm")
    ((slowest <= worst)) || worst=$slowest
    if ((${#problems[@]})); then
        failed=$((failed + 1))
        printf 'trial %2d %s victim %d at op %3d: FAIL (exit %d): %s\n' "$k" "$transport" "$victim" "$at" "$rc" "$(IFS='; '; echo "${problems[*]}")"
        cp "$out" "/tmp/oxccl-kill-trial$k.log" && echo "    log: /tmp/oxccl-kill-trial$k.log"
    else
        printf 'trial %2d %s victim %d at op %3d: ok, exit %d, every survivor named rank %d, slowest after %d ms\n' "$k" "$transport" "$victim" "$at" "$rc" "$victim" "$slowest"
    fi
done
echo "kill-trials: $((trials - failed))/$trials passed; slowest survivor over all trials: $worst ms after the kill"
((failed == 0))
