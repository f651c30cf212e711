#!/usr/bin/env bash
# oxccl vs Open MPI vs torch.distributed (gloo) on this host, then one comparison table.
#
#   bench/peers/run.sh                        # 4 ranks, 16 B .. 64 MiB x4, all six collectives
#   bench/peers/run.sh -n 2 -e 1M all_reduce  # fewer ranks, smaller sizes, one collective
#
# Installs what is missing (Debian's Open MPI, a venv with PyPI's torch, oxccl's release build),
# runs every library on the same sizes and rank count, each writing nccl-tests-style JSON into
# bench/peers/out/, then prints compare.py's markdown table (also saved as out/compare.md).
# See README.md in this folder for the method and for what the torch install does.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="$here/out"
build="$here/build"
venv="$here/.venv"

nranks=4 minb=16 maxb=64M factor=4 iters=20 warmup=1
skip_oxccl=0 skip_mpi=0 skip_gloo=0
all_colls=(all_reduce all_gather reduce_scatter broadcast reduce alltoall)
# PyPI's torch release this was tested with; TORCH_SPEC=torch takes the newest.
TORCH_SPEC="${TORCH_SPEC:-torch==2.15.0}"
# TORCH_FULL=1: plain `pip install torch` with its ~2.7 GB of NVIDIA wheels instead of the
# stand-in CUDA libraries (see README.md).
TORCH_FULL="${TORCH_FULL:-0}"

usage() {
  cat <<EOF
usage: $0 [-n NRANKS] [-b MINBYTES] [-e MAXBYTES] [-f FACTOR] [-i ITERS] [-w WARMUP]
          [--no-oxccl] [--no-mpi] [--no-gloo] [COLLECTIVE...]
defaults: -n $nranks -b $minb -e $maxb -f $factor -i $iters -w $warmup, collectives: ${all_colls[*]}
EOF
}

colls=()
while [ $# -gt 0 ]; do
  case "$1" in
    -n) nranks="$2"; shift 2 ;;
    -b) minb="$2"; shift 2 ;;
    -e) maxb="$2"; shift 2 ;;
    -f) factor="$2"; shift 2 ;;
    -i) iters="$2"; shift 2 ;;
    -w) warmup="$2"; shift 2 ;;
    --no-oxccl) skip_oxccl=1; shift ;;
    --no-mpi) skip_mpi=1; shift ;;
    --no-gloo) skip_gloo=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) usage >&2; exit 2 ;;
    *) colls+=("$1"); shift ;;
  esac
done
[ ${#colls[@]} -eq 0 ] && colls=("${all_colls[@]}")
for c in "${colls[@]}"; do
  case " ${all_colls[*]} " in *" $c "*) ;; *) echo "unknown collective: $c" >&2; usage >&2; exit 2 ;; esac
done

log() { printf '\n== %s\n' "$*" >&2; }
start=$SECONDS
failures=()

# ---------------------------------------------------------------- install what is missing
sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
apt_missing=()
[ $skip_mpi -eq 0 ] && { command -v mpicc >/dev/null && command -v mpirun >/dev/null || apt_missing+=(openmpi-bin libopenmpi-dev); }
[ $skip_gloo -eq 0 ] && [ "$TORCH_FULL" != 1 ] && { command -v readelf >/dev/null || apt_missing+=(binutils); }
[ $skip_gloo -eq 0 ] && [ "$TORCH_FULL" != 1 ] && { command -v cc >/dev/null || apt_missing+=(gcc); }
[ $skip_gloo -eq 0 ] && { python3 -c 'import venv, ensurepip' 2>/dev/null || apt_missing+=(python3-venv); }
if [ ${#apt_missing[@]} -gt 0 ]; then
  log "apt-get install ${apt_missing[*]}"
  sudo_ apt-get update -qq && sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_missing[@]}" >/dev/null \
    || { echo "apt-get install failed" >&2; exit 1; }
fi

mkdir -p "$out" "$build"

if [ $skip_mpi -eq 0 ] && { [ ! -x "$build/mpi_perf" ] || [ "$here/mpi_perf.c" -nt "$build/mpi_perf" ]; }; then
  log "mpicc mpi_perf.c"
  mpicc -O2 -Wall -o "$build/mpi_perf" "$here/mpi_perf.c" || { echo "mpicc failed" >&2; exit 1; }
fi

if [ $skip_gloo -eq 0 ] && ! "$venv/bin/python" -W ignore -c 'import torch.distributed as d; assert d.is_gloo_available()' 2>/dev/null; then
  log "venv with PyPI torch ($TORCH_SPEC) in $venv"
  python3 -m venv "$venv" || exit 1
  if [ "$TORCH_FULL" = 1 ]; then
    "$venv/bin/pip" install -q "$TORCH_SPEC" || exit 1
  else
    # torch's wheel alone (0.54 GB), the one pure-Python module `import torch` needs, and
    # stand-ins for the CUDA libraries its shared objects link against (torch_cuda_stubs.py).
    "$venv/bin/pip" install -q --no-deps "$TORCH_SPEC" typing_extensions || exit 1
    site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    "$venv/bin/python" "$here/torch_cuda_stubs.py" "$site" || exit 1
  fi
  "$venv/bin/python" -W ignore -c 'import torch, torch.distributed as d; print("torch", torch.__version__, "gloo:", d.is_gloo_available(), "cuda:", torch.cuda.is_available())' \
    || { echo "torch does not import; gloo is skipped" >&2; skip_gloo=1; }
fi

oxrun="$repo/target/release/oxccl-run" oxperf="$repo/target/release/oxccl-perf"
if [ $skip_oxccl -eq 0 ]; then
  log "cargo build --release -p oxccl-tools"
  if ! (cd "$repo" && cargo build --release -q -p oxccl-tools --bins); then
    echo "cargo build failed; using the binaries already in target/release, if any" >&2
  fi
  if [ ! -x "$oxperf" ] || [ ! -x "$oxrun" ]; then
    echo "NOTICE: $oxperf is not built (no oxccl-perf binary in oxccl-tools yet): oxccl is skipped" >&2
    skip_oxccl=1
  fi
fi

# ---------------------------------------------------------------- run
mpirun_flags=(--oversubscribe -np "$nranks")
[ "$(id -u)" -eq 0 ] && mpirun_flags=(--allow-run-as-root "${mpirun_flags[@]}")
sweep=(-b "$minb" -e "$maxb" -f "$factor" -n "$iters" -w "$warmup" -c 1)
files=()
for c in "${colls[@]}"; do
  rm -f "$out/oxccl_$c.json" "$out/mpi_$c.json" "$out/gloo_$c.json"
  if [ $skip_oxccl -eq 0 ]; then
    log "oxccl $c, $nranks ranks"
    "$oxrun" -n "$nranks" -- "$oxperf" "$c" "${sweep[@]}" -J "$out/oxccl_$c.json" || failures+=("oxccl $c")
  fi
  if [ $skip_mpi -eq 0 ]; then
    log "Open MPI $c, $nranks ranks"
    mpirun "${mpirun_flags[@]}" "$build/mpi_perf" "$c" "${sweep[@]}" -J "$out/mpi_$c.json" || failures+=("mpi $c")
  fi
  if [ $skip_gloo -eq 0 ]; then
    log "torch gloo $c, $nranks ranks"
    "$venv/bin/python" "$here/gloo_perf.py" "$c" -np "$nranks" "${sweep[@]}" -J "$out/gloo_$c.json" || failures+=("gloo $c")
  fi
  for f in "$out/oxccl_$c.json" "$out/mpi_$c.json" "$out/gloo_$c.json"; do [ -f "$f" ] && files+=("$f"); done
done

log "comparison ($nranks ranks, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%M:%SZ), $((SECONDS - start)) s)"
if [ ${#files[@]} -gt 0 ]; then
  python3 "$here/compare.py" "${files[@]}" | tee "$out/compare.md"
else
  echo "no results" >&2
fi
if [ ${#failures[@]} -gt 0 ]; then
  echo "FAILED runs: ${failures[*]}" >&2
  exit 1
fi
