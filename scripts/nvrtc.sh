#!/usr/bin/env bash
# Prints the directory holding libnvrtc.so.12 from PyPI's nvidia-cuda-nvrtc-cu12 wheel,
# installing the wheel first when it is missing (about 60 MB; no GPU or CUDA toolkit needed).
# The tests compile every CUDA kernel with it: see transports/src/cuda/tests.rs.
set -euo pipefail
find_lib() {
    python3 - <<'PY'
import importlib.util, os, sys
spec = importlib.util.find_spec("nvidia.cuda_nvrtc")
if spec is None:
    sys.exit(1)
for d in spec.submodule_search_locations:
    lib = os.path.join(d, "lib")
    if os.path.exists(os.path.join(lib, "libnvrtc.so.12")):
        print(lib)
        sys.exit(0)
sys.exit(1)
PY
}
if ! find_lib 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check "nvidia-cuda-nvrtc-cu12>=12.4,<13" >&2
    find_lib
fi
