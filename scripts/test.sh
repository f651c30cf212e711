#!/usr/bin/env bash
# The whole test suite, as CI runs it (`.ci/run` calls this script). Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
    echo "cargo not found: install Rust (https://rustup.rs) first" >&2
    exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "== installing cargo-nextest"
    cargo install cargo-nextest --locked
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
# One build per run: incremental state would only cost disk (gigabytes) and time.
export CARGO_INCREMENTAL=0
# Each step's header carries the minutes and seconds since the start (CI's 30-minute budget).
started=$SECONDS
step() { printf '== [%d:%02d] %s\n' $(((SECONDS - started) / 60)) $(((SECONDS - started) % 60)) "$*"; }
# C compiler, valgrind, Open MPI and pip for the C ABI step (apt-get, only what is missing).
bash scripts/c-abi-test.sh --install-tools
# MPICH and libclang for the launcher tests and feature `mpi` (after Open MPI: it stays default).
bash scripts/mpi-test.sh --install-tools

# NVRTC from PyPI (no GPU needed), so the tests compile every CUDA kernel; a missing NVRTC is
# a failure here, not a skip.
nvrtc_lib=$(bash scripts/nvrtc.sh)
export LD_LIBRARY_PATH="$nvrtc_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" OXCCL_REQUIRE_NVRTC=1

step "rustfmt"
cargo fmt --all -- --check
step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet
step "tests (unit, verifier 1..=64 ranks, threads, multi-process over shm and tcp, CUDA"
echo "   kernels through NVRTC)"
cargo nextest run --workspace --locked --no-fail-fast
step "faults: kill -9 trials (8 ranks, shm and tcp), every survivor must name the dead rank"
cargo build --workspace --bins --locked --quiet
bash scripts/faults/kill-trials.sh --trials 10 --seed 7
step "soak (reduced): 2000 random collectives on 8 ranks over every transport x algorithm, checked"
bash scripts/soak.sh --ops 2000 --max-count 65536
step "fuzz targets under libFuzzer (OXCCL_CI_FUZZ=1 only; tests/fuzz_replay.rs ran the same"
echo "   entry points on stable above; scripts/fuzz.sh runs them longer)"
if [ "${OXCCL_CI_FUZZ:-0}" = 1 ]; then
    bash scripts/fuzz.sh --install --seconds 5
else
    echo "   skipped: set OXCCL_CI_FUZZ=1 (builds nightly targets, about 3 minutes more)"
fi
step "multi-node suite (network namespaces: 2 and 4 nodes x 2 ranks, shm + TCP, 1 Gbit/s smoke)"
# Needs root for `ip netns`; fails without it unless OXCCL_SKIP_NETNS=1 (then says it skipped).
# --no-build: the binaries built above for the whole workspace (building one package alone
# would unify features differently and compile oxccl again).
bash scripts/netns/suite.sh --no-build
step "soft-RoCE: oxccl over real InfiniBand verbs in a QEMU guest (transport tests, 2 and 4"
echo "   ranks with ib forced, oxccl-perf); OXCCL_SKIP_SOFTROCE=1 skips it"
if [ "${OXCCL_SKIP_SOFTROCE:-0}" = 1 ]; then
    echo "   skipped: OXCCL_SKIP_SOFTROCE=1"
else
    bash scripts/softroce/suite.sh --no-build
fi
step "doc tests"
cargo test --workspace --doc --locked --quiet
step "oxccl-run -n 4 with the README example, over shm and over tcp"
cargo build --workspace --bins --examples --locked --quiet
for transport in shm tcp; do
    OXCCL_TRANSPORT=$transport target/debug/oxccl-run -n 4 -- target/debug/examples/allreduce
done
step "feature mpi (Communicator::from_mpi under mpirun)"
bash scripts/mpi-test.sh
step "C ABI (our nccl.h and NVIDIA's, valgrind, mpirun)"
bash scripts/c-abi-test.sh
step "all tests passed"
