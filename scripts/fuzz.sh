#!/usr/bin/env bash
# Builds the state-loader fuzzer with clang + libFuzzer (Debian: clang, libclang-rt-dev), writes
# its seed corpus of real state files and fuzzes for FUZZ_SECONDS (default 60). A crash or an
# invariant violation (tests/fuzz/fuzz_state_load.cpp) fails the script and leaves the input
# in the build folder (crash-*).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build-fuzz}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_COMPILER=clang++ -DSTEEPEST_BUILD_FUZZ=ON \
  -DSTEEPEST_BUILD_TESTS=OFF -DSTEEPEST_BUILD_EXAMPLES=OFF -DSTEEPEST_INSTALL=OFF -DSTEEPEST_ENABLE_OPENMP=OFF
cmake --build "$build" -j"$(nproc)" --target fuzz_state_load fuzz_seeds
mkdir -p "$build/fuzz-corpus"
"$build/tests/fuzz/fuzz_seeds" "$build/fuzz-corpus"
cd "$build"
./tests/fuzz/fuzz_state_load -max_total_time="${FUZZ_SECONDS:-60}" -max_len=16384 -print_final_stats=1 fuzz-corpus
