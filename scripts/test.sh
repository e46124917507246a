#!/usr/bin/env bash
# Set up (Debian packages), build and run the whole test suite.
# Extra CMake arguments are passed through, e.g. scripts/test.sh -DCMAKE_CXX_STANDARD=20
# BUILD_DIR (default build) picks the build folder.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
build=${BUILD_DIR:-build}
# The CUDA backend's tests are built when nvcc is installed (they skip without a GPU);
# STEEPEST_CUDA=0 turns that off.
cuda=()
nvcc_bin=$(command -v nvcc || true)
[ -z "$nvcc_bin" ] && [ -x /usr/local/cuda/bin/nvcc ] && nvcc_bin=/usr/local/cuda/bin/nvcc
if [ -n "$nvcc_bin" ] && [ "${STEEPEST_CUDA:-1}" != 0 ]; then
  cuda=(-DSTEEPEST_ENABLE_CUDA=ON "-DCMAKE_CUDA_COMPILER=$nvcc_bin")
fi
# The checkpoint cross-check (tests/python/check_checkpoint.py) reads and writes files with PyPI's
# safetensors: a venv in the build folder over Debian's Python (its numpy through
# --system-site-packages), made once. Without PyPI the test reports skipped, except in CI
# (CI=true), where that is an error.
py="$PWD/$build/pyenv/bin/python"
if ! { [ -x "$py" ] && "$py" -c "import safetensors, numpy" 2>/dev/null; }; then
  base_python=/usr/bin/python3
  [ -x "$base_python" ] || base_python=python3
  mkdir -p "$build"
  rm -rf "$build/pyenv"
  "$base_python" -m venv --system-site-packages "$build/pyenv" && "$build/pyenv/bin/pip" install --quiet safetensors numpy || true
  if ! "$py" -c "import safetensors, numpy" 2>/dev/null; then
    [ "${CI:-}" = true ] && { echo "cannot set up Python with safetensors and numpy (PyPI)" >&2; exit 1; }
    echo "warning: no safetensors/numpy for Python: the checkpoint cross-check will be skipped" >&2
  fi
fi
# The Python package (pip install .: its extension built by scikit-build-core with nanobind, both
# from PyPI) and pytest, in the same venv, for the python_package test. STEEPEST_PYTHON_PACKAGE=0
# leaves them out; without PyPI the test is not registered, except in CI, where that is an error.
package=OFF
peer=()
if [ "${STEEPEST_PYTHON_PACKAGE:-1}" != 0 ] && [ -x "$py" ]; then
  if "$build/pyenv/bin/pip" install --quiet pytest . ; then
    package=ON
  else
    [ "${CI:-}" = true ] && { echo "cannot build the Python package (pip install .)" >&2; exit 1; }
    echo "warning: the Python package did not build: its tests will not run" >&2
  fi
  # The peers the package and the library are checked against: PyPI's torch (torch.optim.AdamW
  # and Muon, the torch.compile test; ~50 s and 5 GB once) and the original Muon (muon-optimizer,
  # pure Python, --no-deps). Test-time only: nothing of the library links or imports them.
  if ! "$py" -c "import torch" 2>/dev/null; then
    "$build/pyenv/bin/pip" install --quiet torch && "$build/pyenv/bin/pip" install --quiet --no-deps muon-optimizer || true
  fi
  if "$py" -c "import torch" 2>/dev/null; then
    peer=("-DSTEEPEST_TORCH_PEER_PYTHON=$py")
  else
    [ "${CI:-}" = true ] && { echo "cannot install torch from PyPI into $build/pyenv" >&2; exit 1; }
    echo "warning: no torch for Python: the package's torch tests and the convention tests will be skipped" >&2
  fi
fi
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DSTEEPEST_BUILD_TESTS=ON -DSTEEPEST_WERROR=ON "-DSTEEPEST_PYTHON=$py" \
  "-DSTEEPEST_PYTHON_PACKAGE_TESTS=$package" "${peer[@]}" "${cuda[@]}" "$@"
cmake --build "$build" -j"$(nproc)"
ctest --test-dir "$build" --output-on-failure -j"$(nproc)"
