#!/usr/bin/env bash
# Set up (Debian packages), build and run the whole test suite.
# Extra CMake arguments are passed through, e.g. scripts/test.sh -DCMAKE_CXX_STANDARD=20
# BUILD_DIR (default build) picks the build folder.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
build=${BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DSTEEPEST_BUILD_TESTS=ON -DSTEEPEST_WERROR=ON "$@"
cmake --build "$build" -j"$(nproc)"
ctest --test-dir "$build" --output-on-failure -j"$(nproc)"
