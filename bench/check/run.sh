#!/usr/bin/env bash
# The cost of OXCCL_CHECK=1: the same all_reduce sweep with the check off and on, in
# alternating rounds on the same ranks, best of each size; prints a table of the time per op
# and the ratio (on / off).
#
#   bench/check/run.sh [--ranks 4] [--transport auto|shm|tcp] [--rounds 3] [--no-build]
#
# Results (nccl-tests JSON) go to bench/check/out/; the table to bench/check/out/results.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
ranks=4 transport=auto rounds=3 build=1
while (($#)); do
    case $1 in
        --ranks) ranks=$2; shift 2 ;;
        --transport) transport=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
if ((build)); then
    (cd "$repo" && cargo build --release -q -p oxccl-tools --bins)
fi
out=$here/out
rm -rf "$out" && mkdir -p "$out"
for ((k = 1; k <= rounds; k++)); do
    for check in 0 1; do
        OXCCL_CHECK=$check OXCCL_TRANSPORT=$transport "$repo/target/release/oxccl-run" -n "$ranks" -- \
            "$repo/target/release/oxccl-perf" all_reduce -b 8 -e 16M -f 8 -n 200 -w 20 -c 0 \
            -J "$out/check$check.r$k.json" >/dev/null
    done
done
python3 - "$out" "$ranks" "$transport" "$rounds" <<'PY'
import glob, json, os, sys
out, ranks, transport, rounds = sys.argv[1:5]
def best(check):
    b = {}
    for f in glob.glob(os.path.join(out, f"check{check}.r*.json")):
        for row in json.load(open(f)).get("results", []):
            t = row.get("out_of_place", {}).get("time")
            if isinstance(t, (int, float)):
                b[row["size"]] = min(t, b.get(row["size"], float("inf")))
    return b
off, on = best(0), best(1)
lines = [f"# OXCCL_CHECK cost: all_reduce, {ranks} ranks, transport {transport}, best of {rounds} alternating rounds", "",
         "| size | check off (µs) | check on (µs) | on / off | added (µs) |", "|---:|---:|---:|---:|---:|"]
for s in sorted(off):
    if s in on:
        lines.append(f"| {s} B | {off[s]:.1f} | {on[s]:.1f} | {on[s] / off[s]:.2f}× | {on[s] - off[s]:.1f} |")
text = "\n".join(lines) + "\n"
open(os.path.join(out, "results.md"), "w").write(text)
print(text)
PY
