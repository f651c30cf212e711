#!/usr/bin/env bash
# The GPU check, in two halves: prepare here (no GPU needed), run on the lent GPU machine
# (nothing is fetched there; it runs what `--prepare` built, and the machine's own PyTorch).
#
#   bash scripts/device-check.sh --prepare   # here: builds target/device/ (binaries + PTX)
#   bash scripts/device-check.sh             # there, with target/device carried over
#
# What it checks on the GPU, in this order (stops at the first failure):
#   1. every CUDA kernel (datatype x reduction, divide) against the CPU reductions, and the
#      kernels' bandwidth next to cuMemcpyDtoD (oxccl-kernels);
#   2. libnccl.so.2 on device buffers, 1, 2 and 4 ranks sharing the GPU, stream-ordered and
#      non-blocking (tests/c/device_buffers.c); the Rust API on cudarc buffers, same ranks
#      (examples/gpu_collectives.rs under oxccl-run); then both with OXCCL_CUDA_IPC=1, the
#      Rust API also with ranks as threads of one process (peer path on pool memory);
#   3. PyTorch as a client: torch.distributed (backend nccl) with oxccl's libnccl.so.2
#      preloaded, 2 ranks on the GPU, every collective checked (tests/python/torch_on_oxccl.py);
#   4. oxccl-perf --gpu all_reduce on 1, 2 and 4 ranks sharing the GPU (checked, staged), and
#      through PyTorch on 2 ranks, staged and with OXCCL_CUDA_IPC=1 (through peers' GPU
#      memory: its 256 MiB line is the issue's busbw >= 50% of the copy bandwidth goal).
# Everything it prints goes to $OUT/device-check.log too when $OUT is set.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/device
arch=${OXCCL_DEVICE_ARCH:-sm_90}   # H100 and H200

if [ "${1:-}" = --prepare ]; then
    cargo build --release --locked --quiet -p oxccl-tools --bin oxccl-kernels
    cargo build --release --locked --quiet -p oxccl-nccl
    cargo build --release --locked --quiet -p oxccl-tools --bin oxccl-run --bin oxccl-perf
    cargo build --release --locked --quiet --example gpu_collectives
    rm -rf "$out"; mkdir -p "$out/bin" "$out/lib" "$out/kernel-cache"
    strip -o "$out/bin/oxccl-kernels" target/release/oxccl-kernels
    strip -o "$out/bin/oxccl-run" target/release/oxccl-run
    strip -o "$out/bin/oxccl-perf" target/release/oxccl-perf
    strip -o "$out/bin/gpu_collectives" target/release/examples/gpu_collectives
    strip -o "$out/lib/libnccl.so.2" target/release/libnccl.so
    ln -s libnccl.so.2 "$out/lib/libnccl.so"
    cc -std=c11 -O1 -Wall -Wextra -Werror -D_DEFAULT_SOURCE -Ibindings/c/include \
        tests/c/device_buffers.c -o "$out/bin/device_buffers" -L"$out/lib" -lnccl -ldl
    # The PTX for the GPU's architecture, compiled here with NVRTC from PyPI: the GPU
    # machine then needs only its driver.
    nvrtc_lib=$(bash scripts/nvrtc.sh)
    LD_LIBRARY_PATH="$nvrtc_lib" "$out/bin/oxccl-kernels" --precompile "$arch" --cache "$out/kernel-cache"
    du -sh "$out"
    echo "prepared: run 'bash scripts/device-check.sh' on the GPU machine with carry [\"$out\"]"
    exit 0
fi

[ -x "$out/bin/oxccl-kernels" ] || { echo "device-check: run with --prepare first (here)" >&2; exit 2; }
if [ -n "${OUT:-}" ]; then exec > >(tee "$OUT/device-check.log") 2>&1; fi
export OXCCL_CACHE_DIR=$PWD/$out/kernel-cache OXCCL_TIMEOUT=120 PYTHONUNBUFFERED=1
lib=$PWD/$out/lib/libnccl.so.2
step() { echo; echo "== $1"; shift; start=$SECONDS; "$@"; echo "-- $((SECONDS - start)) s"; }
date -u +"%Y-%m-%d %H:%M UTC"
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_mode --format=csv,noheader || true

step "1. kernels: correctness against the CPU, bandwidth next to cuMemcpyDtoD" \
    timeout 240 "$out/bin/oxccl-kernels" --cache "$out/kernel-cache" --bytes 256M --iters 20
for n in 1 2 4; do
    step "2. libnccl.so.2 on device buffers, $n rank(s) on the GPU" \
        env LD_LIBRARY_PATH="$out/lib" timeout 120 "$out/bin/device_buffers" "$n"
    step "2. Rust API (oxccl::cuda::StreamCommunicator) on cudarc buffers, $n rank(s)" \
        timeout 120 "$out/bin/oxccl-run" -n "$n" -- "$out/bin/gpu_collectives"
done
step "3. PyTorch imports with oxccl's libnccl.so.2 preloaded (every NCCL symbol it binds)" \
    env LD_PRELOAD="$lib" timeout 120 python3 -c 'import torch; print("torch", torch.__version__)'
step "3. PyTorch torch.distributed (nccl backend) on oxccl's libnccl.so.2, 2 ranks" \
    timeout 240 python3 tests/python/torch_on_oxccl.py "$lib" 2
step "3. the same with OXCCL_CUDA_IPC=1" \
    env OXCCL_CUDA_IPC=1 timeout 240 python3 tests/python/torch_on_oxccl.py "$lib" 2
for n in 2 4; do
    # cudarc's pool memory cannot be exported to other processes: these ranks take the host
    # path alike (the example prints how many collectives went which way).
    step "2. Rust API with OXCCL_CUDA_IPC=1, $n processes (pool memory: host path)" \
        env OXCCL_CUDA_IPC=1 timeout 120 "$out/bin/oxccl-run" -n "$n" -- "$out/bin/gpu_collectives"
    step "2. Rust API with OXCCL_CUDA_IPC=1, $n ranks as threads of one process (peer path)" \
        env OXCCL_CUDA_IPC=1 timeout 120 "$out/bin/gpu_collectives" --threads "$n"
    # cuMemAlloc memory: every collective but all-to-all and send/recv through peers' GPU
    # memory; OXCCL_DEBUG=INFO logs each rank's count of jobs by path at ncclCommDestroy.
    step "2. libnccl.so.2 with OXCCL_CUDA_IPC=1, $n ranks (peer path)" \
        env OXCCL_CUDA_IPC=1 OXCCL_DEBUG=INFO LD_LIBRARY_PATH="$out/lib" timeout 120 \
        "$out/bin/device_buffers" "$n"
done
for n in 1 2 4; do
    step "4. oxccl-perf --gpu 0 all_reduce, $n rank(s) on the GPU (staged through the host)" \
        timeout 180 "$out/bin/oxccl-run" -n "$n" -- "$out/bin/oxccl-perf" all_reduce --gpu 0 \
        -b 1M -e 64M -f 4 -w 2 -n 5 -c 1
done
# cudarc allocates from the device's memory pool, which CUDA IPC cannot share: this run
# checks that every rank then takes the host path alike (the peer path's numbers come from
# PyTorch below, whose allocator uses cudaMalloc).
step "4. oxccl-perf --gpu 0 all_reduce, 2 ranks, OXCCL_CUDA_IPC=1 (cudarc pool memory: host path)" \
    env OXCCL_CUDA_IPC=1 timeout 180 "$out/bin/oxccl-run" -n 2 -- "$out/bin/oxccl-perf" \
    all_reduce --gpu 0 -b 1M -e 64M -f 4 -w 2 -n 5 -c 1
step "4. all_reduce through PyTorch on oxccl, 2 ranks (staged)" \
    timeout 180 python3 bench/device_perf.py "$lib" 2 --min 1M --max 64M
step "4. the same with OXCCL_CUDA_IPC=1 (peer memory; the 256 MiB busbw is the issue's goal)" \
    env OXCCL_CUDA_IPC=1 timeout 180 python3 bench/device_perf.py "$lib" 2 --min 1M --max 256M
step "4. the same, 4 ranks" \
    env OXCCL_CUDA_IPC=1 timeout 180 python3 bench/device_perf.py "$lib" 4 --min 1M --max 256M
echo
echo "== device check passed"
