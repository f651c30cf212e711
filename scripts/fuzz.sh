#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ (each decoder of an oxccl wire message) for a while.
#
#   scripts/fuzz.sh [--seconds 60] [--install] [target...]
#
# Needs a nightly toolchain and cargo-fuzz; --install gets both (rustup, cargo install).
# A crash leaves its input in fuzz/artifacts/<target>/ and fails the script; the corpus
# grows in fuzz/corpus/<target>/ (both ignored by git). Without nightly, the same entry
# points run on generated inputs in the stable test `cargo test --test fuzz_replay`.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=60 install=0 targets=()
while (($#)); do
    case $1 in
        --seconds) seconds=$2; shift 2 ;;
        --install) install=1; shift ;;
        -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
if ((install)); then
    rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
    cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked
fi
if ! cargo +nightly --version >/dev/null 2>&1 || ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: needs a nightly toolchain and cargo-fuzz (run with --install)" >&2
    exit 2
fi
((${#targets[@]})) || mapfile -t targets < <(cargo +nightly fuzz list)
cargo +nightly fuzz build -O "${targets[@]/#/}" >/dev/null 2>&1 || cargo +nightly fuzz build -O
failed=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    log=$(mktemp)
    if cargo +nightly fuzz run -O "$t" "corpus/$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 \
        -timeout=20 >"$log" 2>&1; then
        echo "fuzz.sh: $t: $(grep -E '^Done' "$log" | tail -1), corpus $(ls "corpus/$t" | wc -l) inputs"
    else
        echo "fuzz.sh: $t FAILED:" >&2
        grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" >&2 || tail -20 "$log" >&2
        failed+=("$t")
    fi
    rm -f "$log"
done
if ((${#failed[@]})); then
    echo "fuzz.sh: crashes in ${failed[*]}" >&2
    exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets, ${seconds} s each, no crash"
