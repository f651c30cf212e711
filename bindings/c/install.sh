#!/usr/bin/env bash
# Builds oxccl's NCCL ABI (release) and installs it like an NCCL package:
#   PREFIX/lib/libnccl.so.2            the library (soname libnccl.so.2)
#   PREFIX/lib/libnccl.so              -> libnccl.so.2 (for -lnccl)
#   PREFIX/lib/liboxccl.so             -> libnccl.so.2
#   PREFIX/include/nccl.h
#   PREFIX/lib/pkgconfig/nccl.pc
# Usage: bindings/c/install.sh [PREFIX]   (default: <repo>/target/nccl)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
prefix="${1:-$repo/target/nccl}"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"

cargo build --release -p oxccl-nccl --manifest-path "$repo/Cargo.toml"

version="$(sed -n 's/^#define NCCL_MAJOR \([0-9]*\)$/\1/p' "$here/include/nccl.h")"
version="$version.$(sed -n 's/^#define NCCL_MINOR \([0-9]*\)$/\1/p' "$here/include/nccl.h")"
version="$version.$(sed -n 's/^#define NCCL_PATCH \([0-9]*\)$/\1/p' "$here/include/nccl.h")"

mkdir -p "$prefix/lib/pkgconfig" "$prefix/include"
install -m 0755 "$target_dir/release/libnccl.so" "$prefix/lib/libnccl.so.2"
ln -sf libnccl.so.2 "$prefix/lib/libnccl.so"
ln -sf libnccl.so.2 "$prefix/lib/liboxccl.so"
install -m 0644 "$here/include/nccl.h" "$prefix/include/nccl.h"
cat > "$prefix/lib/pkgconfig/nccl.pc" <<PC
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: nccl
Description: oxccl's NCCL-compatible collective communication library (host memory)
Version: $version
Libs: -L\${libdir} -lnccl
Cflags: -I\${includedir}
PC
echo "installed oxccl's libnccl.so.2 (NCCL $version ABI) in $prefix"
