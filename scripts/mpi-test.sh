#!/usr/bin/env bash
# Jobs launched by MPI: feature `mpi` (rsmpi; `Communicator::from_mpi` gets the unique id
# through MPI_COMM_WORLD) under Open MPI's mpirun, on one host and as two emulated hosts.
# The launcher tests (tests/multiprocess/launchers.rs) also need MPICH's mpiexec.
#
# Usage: scripts/mpi-test.sh [--install-tools]
#   --install-tools  only install what is needed (apt-get: Open MPI, MPICH, libclang for
#                    rsmpi's bindgen), then exit
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo -n "$@"
    else return 1; fi
}

install_tools() {
    local pkgs=()
    # Open MPI first: it stays the default `mpirun`/`mpicc` when MPICH is added.
    command -v mpirun.openmpi >/dev/null || pkgs+=(openmpi-bin libopenmpi-dev)
    [ ${#pkgs[@]} -gt 0 ] && as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
    pkgs=()
    command -v mpiexec.hydra >/dev/null || pkgs+=(mpich)
    ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || pkgs+=(libclang-dev)
    [ ${#pkgs[@]} -eq 0 ] && return 0
    echo "installing ${pkgs[*]} (apt-get)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || true
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
}

if [ "${1:-}" = "--install-tools" ]; then
    install_tools
    exit 0
fi
install_tools

echo "-- clippy with feature mpi"
cargo clippy -p oxccl --features mpi --all-targets --locked -- -D warnings
cargo build -p oxccl --features mpi --example mpi_allreduce --locked --quiet
exe=target/debug/examples/mpi_allreduce
mpirun=(mpirun.openmpi --allow-run-as-root --oversubscribe -x OXCCL_TIMEOUT=60)

echo "-- mpirun -np 4, one host"
out=$("${mpirun[@]}" -np 4 "$exe" 2>&1) || { echo "$out"; exit 1; }
echo "$out"
[ "$(grep -c 'mpi_allreduce OK' <<<"$out")" -eq 4 ] || { echo "not every rank passed"; exit 1; }

echo "-- mpirun -np 4 as two emulated hosts (OXCCL_HOSTNAME by rank parity: shm + tcp)"
# shellcheck disable=SC2016 # expanded by each rank's shell, not here
out=$("${mpirun[@]}" -np 4 sh -c \
    'OXCCL_HOSTNAME=emulated-$((OMPI_COMM_WORLD_RANK % 2)) exec "$0"' "$exe" 2>&1) \
    || { echo "$out"; exit 1; }
echo "$out"
[ "$(grep -c 'mpi_allreduce OK' <<<"$out")" -eq 4 ] || { echo "not every rank passed"; exit 1; }
grep -q 'local rank 1 of 2' <<<"$out" || { echo "two ranks per emulated host expected"; exit 1; }
echo "-- feature mpi: OK"
