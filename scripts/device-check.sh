#!/usr/bin/env bash
# The GPU check, in two halves: prepare here (no GPU needed), run on the lent GPU machine
# (nothing is fetched there; it runs what `--prepare` built).
#
#   bash scripts/device-check.sh --prepare   # here: builds target/device/ (binaries + PTX)
#   bash scripts/device-check.sh             # there, with target/device carried over
#
# What it checks on the GPU today: every CUDA kernel (datatype x reduction, divide) against
# the CPU reductions, and the kernels' bandwidth next to cuMemcpyDtoD (oxccl-kernels); and
# that libnccl.so.2 refuses a device buffer with a clear error (tests/c/device_buffer_refused.c).
# Still to come with issue 11: device buffers in the collectives (oxccl-perf on 1, 2 and 4
# ranks sharing the GPU) and PyTorch's torch.distributed on oxccl's libnccl.so.2.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/device
arch=${OXCCL_DEVICE_ARCH:-sm_90}   # H100 and H200

if [ "${1:-}" = --prepare ]; then
    cargo build --release --locked --quiet -p oxccl-tools --bin oxccl-kernels
    cargo build --release --locked --quiet -p oxccl-nccl
    rm -rf "$out"; mkdir -p "$out/bin" "$out/lib" "$out/kernel-cache"
    strip -o "$out/bin/oxccl-kernels" target/release/oxccl-kernels
    strip -o "$out/lib/libnccl.so.2" target/release/libnccl.so
    ln -s libnccl.so.2 "$out/lib/libnccl.so"
    cc -std=c11 -O1 -Wall -Wextra -Werror -Ibindings/c/include tests/c/device_buffer_refused.c \
        -o "$out/bin/device_buffer_refused" -L"$out/lib" -lnccl -ldl
    # The PTX for the GPU's architecture, compiled here with NVRTC from PyPI: the GPU
    # machine then needs only its driver.
    nvrtc_lib=$(bash scripts/nvrtc.sh)
    LD_LIBRARY_PATH="$nvrtc_lib" "$out/bin/oxccl-kernels" --precompile "$arch" --cache "$out/kernel-cache"
    du -sh "$out"
    echo "prepared: run 'bash scripts/device-check.sh' on the GPU machine with carry [\"$out\"]"
    exit 0
fi

[ -x "$out/bin/oxccl-kernels" ] || { echo "device-check: run with --prepare first (here)" >&2; exit 2; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
echo "== kernels: correctness against the CPU, bandwidth next to cuMemcpyDtoD"
timeout 300 "$out/bin/oxccl-kernels" --cache "$out/kernel-cache" --bytes 256M --iters 20
echo "== libnccl.so.2 refuses a device buffer with a clear error"
LD_LIBRARY_PATH="$out/lib" timeout 60 "$out/bin/device_buffer_refused"
echo "== device check passed"
