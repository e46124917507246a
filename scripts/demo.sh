#!/usr/bin/env bash
# Set up (Debian packages), build and run the main demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build-demo -DCMAKE_BUILD_TYPE=Release -DSTEEPEST_BUILD_TESTS=OFF -DSTEEPEST_BUILD_EXAMPLES=ON
cmake --build build-demo -j"$(nproc)" --target quickstart
./build-demo/examples/quickstart
