#!/usr/bin/env bash
# C ABI tests of libnccl.so (crate oxccl-nccl, bindings/c), run by scripts/test.sh.
#
#  1. builds the library and lays out libnccl.so.2 + libnccl.so in a temp dir;
#  2. symbol check: every NCCL function, as ncclX and pncclX, is exported, and
#     the SONAME is libnccl.so.2;
#  3. compiles tests/c/abi_*.c against our bindings/c/include/nccl.h (C11,
#     -Wall -Wextra -Werror, -lnccl) and runs each with 2 and 4 processes
#     (tests/c/runner.c), each with 4 ranks over TCP (NCCL_SHM_DISABLE=1),
#     each under valgrind (2 ranks), and tests/c/abi_mpi.c under
#     mpirun -n 4;
#  4. conformance: compiles the same programs against NVIDIA's nccl.h (from the
#     nvidia-nccl-cu13 wheel, with the CUDA headers from the nvidia-cuda-*
#     wheels; no GPU or CUDA library involved) and runs them against our
#     library. Skipped, with a notice, when the wheels cannot be downloaded.
#
# Usage: scripts/c-abi-test.sh [--install-tools]
#   --install-tools  only install what the tests need (apt-get; valgrind, Open
#                    MPI, a C compiler, pip) and exit.
# Environment: OXCCL_NVIDIA_HEADERS_CACHE (where the extracted NVIDIA headers
# are kept; default ~/.cache/oxccl/nvidia-headers), OXCCL_C_ABI_KEEP=1 keeps
# the temp dir. Output: one line per check; a failing check prints its log.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# Pinned NVIDIA wheels (headers only are used). The CUDA 13 packages are
# published without the -cu13 suffix (the suffixed names are empty stubs).
NVIDIA_WHEELS=(nvidia-nccl-cu13==2.32.3 nvidia-cuda-runtime==13.5.37
               nvidia-cuda-crt==13.5.37 nvidia-cuda-cccl==13.3.5.0.6)

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo -n "$@"
    else return 1; fi
}

apt_install() { # quietly, non-interactively; returns non-zero when impossible
    command -v apt-get >/dev/null || return 1
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || true
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1
}

install_tools() {
    local pkgs=()
    command -v cc >/dev/null || pkgs+=(gcc libc6-dev)
    command -v nm >/dev/null && command -v readelf >/dev/null || pkgs+=(binutils)
    command -v valgrind >/dev/null || pkgs+=(valgrind)
    command -v mpicc >/dev/null && command -v mpirun >/dev/null || pkgs+=(openmpi-bin libopenmpi-dev)
    command -v python3 >/dev/null || pkgs+=(python3)
    python3 -m pip --version >/dev/null 2>&1 || pkgs+=(python3-pip)
    [ ${#pkgs[@]} -eq 0 ] && return 0
    echo "installing ${pkgs[*]} (apt-get)"
    apt_install "${pkgs[@]}" || echo "could not install ${pkgs[*]}; the checks needing them are skipped"
}

if [ "${1:-}" = "--install-tools" ]; then
    install_tools
    exit 0
fi
install_tools
command -v cc >/dev/null || { echo "FAIL: no C compiler (cc)"; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/oxccl-c-abi.XXXXXX")
if [ "${OXCCL_C_ABI_KEEP:-0}" = 1 ]; then echo "keeping $WORK"; else trap 'rm -rf "$WORK"' EXIT; fi
FAILED=0
fail() { echo "FAIL  $*"; FAILED=1; }

# ---- 1. the library -------------------------------------------------------
t0=$(date +%s)
cargo build -p oxccl-nccl --locked --quiet
echo "ok    cargo build -p oxccl-nccl ($(($(date +%s) - t0)) s)"
LIB_SRC=${CARGO_TARGET_DIR:-$ROOT/target}/debug/libnccl.so
mkdir -p "$WORK/lib"
cp "$LIB_SRC" "$WORK/lib/libnccl.so.2"
ln -s libnccl.so.2 "$WORK/lib/libnccl.so"
export LD_LIBRARY_PATH="$WORK/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# ---- 2. symbols and soname ------------------------------------------------
FUNCS="GetVersion GetUniqueId CommInitRank CommInitRankConfig CommInitAll CommFinalize
CommDestroy CommAbort CommGetAsyncError GetErrorString GetLastError CommCount CommCuDevice
CommUserRank CommSplit AllReduce Broadcast Bcast Reduce AllGather ReduceScatter AlltoAll
Gather Scatter Send Recv GroupStart GroupEnd GroupSimulateEnd RedOpCreatePreMulSum
RedOpDestroy MemAlloc MemFree CommRegister CommDeregister
CommInitRankScalable CommShrink CommWindowRegister CommWindowDeregister DevCommCreate
DevCommDestroy"
nm -D --defined-only "$WORK/lib/libnccl.so.2" | awk '$2 ~ /^[TW]$/ {print $3}' | sort -u >"$WORK/symbols"
missing=""
for f in $FUNCS; do
    for name in "nccl$f" "pnccl$f"; do
        grep -qx "$name" "$WORK/symbols" || missing+=" $name"
    done
done
soname=$(readelf -d "$WORK/lib/libnccl.so.2" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
nfuncs=$(wc -w <<<"$FUNCS")
if [ -n "$missing" ]; then fail "symbols: not exported:$missing"
elif [ "$soname" != libnccl.so.2 ]; then fail "symbols: SONAME is '$soname', expected libnccl.so.2"
else echo "ok    symbols: $nfuncs functions as ncclX and pncclX, SONAME libnccl.so.2"; fi

# ---- 3. test programs -----------------------------------------------------
PROGRAMS="abi_collectives abi_group_p2p abi_lifecycle abi_errors"
CFLAGS=(-std=c11 -O1 -g -Wall -Wextra -Werror -pthread)
cc "${CFLAGS[@]}" tests/c/runner.c -o "$WORK/runner"

# compile MODE INCLUDE_FLAGS...: builds $WORK/MODE/<program> for every program.
compile() {
    local mode=$1 p
    shift
    mkdir -p "$WORK/$mode"
    for p in $PROGRAMS; do
        if ! cc "${CFLAGS[@]}" "$@" "tests/c/$p.c" -o "$WORK/$mode/$p" \
                -L"$WORK/lib" -lnccl -lm >"$WORK/$mode/$p.cc.log" 2>&1; then
            fail "$p: does not compile against $mode nccl.h"
            head -n 30 "$WORK/$mode/$p.cc.log"
            continue
        fi
        local needed
        needed=$(readelf -d "$WORK/$mode/$p" | sed -n 's/.*(NEEDED).*\[\(libnccl[^]]*\)\].*/\1/p')
        [ "$needed" = libnccl.so.2 ] || fail "$p: links '$needed' instead of libnccl.so.2"
    done
}

# run LABEL LOG_NAME TIMEOUT COMMAND...: one line of output; the log on failure.
run() {
    local label=$1 log="$WORK/$2.log" limit=$3 t0 rc=0
    shift 3
    t0=$(date +%s.%N)
    timeout -k 5 "$limit" "$@" >"$log" 2>&1 || rc=$?
    local secs
    secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
    if [ $rc -eq 0 ]; then
        printf 'ok    %-58s %6s s\n' "$label" "$secs"
    else
        [ $rc -eq 124 ] && label+=" (timed out after $limit s)"
        fail "$label (exit $rc, ${secs} s); log:"
        tail -n 25 "$log" | sed 's/^/      /'
    fi
}

# run_programs MODE RANKS...: every program of MODE with each rank count.
run_programs() {
    local mode=$1 p n
    shift
    for p in $PROGRAMS; do
        [ -x "$WORK/$mode/$p" ] || continue
        for n in "$@"; do
            run "$p, $mode nccl.h, $n ranks" "$mode-$p-$n" 240 \
                "$WORK/runner" -n "$n" -t 220 -- "$WORK/$mode/$p"
        done
    done
}

compile ours -Ibindings/c/include
run_programs ours 2 4

# The GPU test program (run by scripts/device-check.sh on a GPU): it must keep compiling, and
# without a CUDA driver it must say so and fail, not crash.
if ! cc "${CFLAGS[@]}" -D_DEFAULT_SOURCE -Ibindings/c/include tests/c/device_buffers.c \
        -o "$WORK/device_buffers" -L"$WORK/lib" -lnccl -ldl >"$WORK/device_buffers.cc.log" 2>&1; then
    fail "device_buffers: does not compile"
    head -n 30 "$WORK/device_buffers.cc.log"
elif [ ! -e /dev/nvidiactl ]; then
    rc=0
    LD_LIBRARY_PATH="$WORK/lib" timeout 60 "$WORK/device_buffers" 2 16 >"$WORK/device_buffers.log" 2>&1 || rc=$?
    if [ $rc = 1 ] && grep -q "no CUDA driver" "$WORK/device_buffers.log"; then
        echo "ok    device_buffers: compiles; without a GPU it says 'no CUDA driver'"
    else
        fail "device_buffers without a GPU: exit $rc"
        cat "$WORK/device_buffers.log"
    fi
fi

# Over TCP instead of shared memory (the NCCL_SHM_DISABLE mapping).
for p in $PROGRAMS; do
    [ -x "$WORK/ours/$p" ] || continue
    NCCL_SHM_DISABLE=1 run "$p, ours nccl.h, 4 ranks, NCCL_SHM_DISABLE=1" "tcp-$p" 240 \
        "$WORK/runner" -n 4 -t 220 -- "$WORK/ours/$p"
done

if command -v valgrind >/dev/null; then
    for p in $PROGRAMS; do
        [ -x "$WORK/ours/$p" ] || continue
        # Valgrind slows start-up a lot: give the id exchange more time; skip
        # abi_collectives' multi-MiB messages (OXCCL_TEST_QUICK).
        OXCCL_TEST_QUICK=1 OXCCL_TEST_ID_TIMEOUT=200 run "$p under valgrind, 2 ranks" "valgrind-$p" 280 \
            "$WORK/runner" -n 2 -t 260 -- valgrind -q \
            --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
            --show-leak-kinds=definite --suppressions=tests/c/valgrind.supp "$WORK/ours/$p"
    done
else
    echo "SKIPPED: valgrind (not installed and not installable)"
fi

if command -v mpicc >/dev/null && command -v mpirun >/dev/null; then
    if mpicc "${CFLAGS[@]}" -Ibindings/c/include tests/c/abi_mpi.c -o "$WORK/abi_mpi" \
            -L"$WORK/lib" -lnccl -lm >"$WORK/mpicc.log" 2>&1; then
        MPI_ARGS=(-n 4 --oversubscribe -x LD_LIBRARY_PATH)
        [ "$(id -u)" = 0 ] && MPI_ARGS+=(--allow-run-as-root)
        run "abi_mpi, mpirun -n 4" mpi 180 mpirun "${MPI_ARGS[@]}" "$WORK/abi_mpi"
    else
        fail "abi_mpi: does not compile with mpicc"
        head -n 30 "$WORK/mpicc.log"
    fi
else
    echo "SKIPPED: MPI test (mpicc/mpirun not installed and not installable)"
fi

# ---- 4. NVIDIA's nccl.h ---------------------------------------------------
# fetch_nvidia_headers: fills $CACHE/<key>/{nccl,cuda} from the pinned wheels,
# or prints why it cannot and returns 1.
CACHE=${OXCCL_NVIDIA_HEADERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/oxccl/nvidia-headers}
KEY=$(printf '%s\n' "${NVIDIA_WHEELS[@]}" | cksum | cut -d' ' -f1)
NV="$CACHE/$KEY"
fetch_nvidia_headers() {
    [ -f "$NV/done" ] && return 0
    python3 -m pip --version >/dev/null 2>&1 || { echo "pip is not available"; return 1; }
    local dl="$WORK/wheels"
    mkdir -p "$dl"
    if ! timeout 300 python3 -m pip download --quiet --no-deps --only-binary=:all: --retries 1 --timeout 30 \
            --dest "$dl" "${NVIDIA_WHEELS[@]}" >"$WORK/pip.log" 2>&1; then
        echo "pip download failed: $(grep -v '^\s*$' "$WORK/pip.log" | tail -n 1)"
        return 1
    fi
    rm -rf "$NV.tmp"
    mkdir -p "$NV.tmp"
    # Wheels are zip files: keep only their include/ trees.
    python3 - "$dl" "$NV.tmp" <<'EOF' || { echo "cannot unpack the wheels"; return 1; }
import pathlib, sys, zipfile
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for whl in sorted(src.glob("*.whl")):
    with zipfile.ZipFile(whl) as z:
        for name in z.namelist():
            parts = name.split("/")
            if "include" not in parts[:-1] or name.endswith("/"):
                continue
            sub = "nccl" if parts[1] == "nccl" else "cuda"
            rel = parts[parts.index("include") + 1:]
            out = dst.joinpath(sub, *rel)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(z.read(name))
EOF
    rm -rf "$dl"
    [ -f "$NV.tmp/nccl/nccl.h" ] && [ -f "$NV.tmp/cuda/cuda_runtime.h" ] ||
        { echo "the wheels hold no nccl.h / cuda_runtime.h"; return 1; }
    touch "$NV.tmp/done"
    rm -rf "$NV"
    mv "$NV.tmp" "$NV"
}

if reason=$(fetch_nvidia_headers); then
    version=$(sed -n 's/^#define NCCL_VERSION_CODE //p' "$NV/nccl/nccl.h")
    echo "      NVIDIA nccl.h version code $version"
    compile nvidia -DOXCCL_TEST_NVIDIA_HEADER -I"$NV/nccl" -I"$NV/cuda"
    run_programs nvidia 2 4
else
    echo "SKIPPED: NVIDIA header conformance ($reason)"
fi

if [ $FAILED -ne 0 ]; then
    echo "C ABI tests FAILED"
    exit 1
fi
echo "C ABI tests passed"
