#!/usr/bin/env bash
# The tuner against every forced algorithm on this host: `oxccl-perf tune` for 2, 4 and 8
# ranks over shared memory and over TCP, each writing its tuning file and its report.
#
#   bench/tune/sweep.sh                    # 2 4 8 ranks, shm and tcp, 8 B .. 16 MiB x8
#   bench/tune/sweep.sh -n "4" -t tcp      # one rank count, one transport
#
# Output in bench/tune/out/: <transport><n>.tuning and <transport><n>.md, and all.tuning
# (every file concatenated: what OXCCL_TUNING_FILE can point to on this host).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
ranks="2 4 8" transports="shm tcp" extra=()
while getopts "n:t:" o; do
  case "$o" in
    n) ranks="$OPTARG" ;;
    t) transports="$OPTARG" ;;
    *) echo "usage: $0 [-n 'RANKS...'] [-t 'shm tcp'] [-- oxccl-perf tune flags]" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
extra=("$@")
(cd "$repo" && cargo build --release -q -p oxccl-tools)
bin="$repo/target/release"
out="$here/out"
mkdir -p "$out"
for t in $transports; do
  for n in $ranks; do
    echo "== $t, $n ranks" >&2
    OXCCL_TRANSPORT="$t" "$bin/oxccl-run" -n "$n" -- "$bin/oxccl-perf" tune \
      -b 8 -e 16M -f 8 -o "$out/$t$n.tuning" --report "$out/$t$n.md" "${extra[@]}" >/dev/null
    tail -n 1 "$out/$t$n.md" >&2
  done
done
cat "$out"/*[0-9].tuning > "$out/all.tuning"
