#!/usr/bin/env bash
# Set up (Debian packages), build and run the main demo: the width-transfer experiment in its
# quick mode (4 widths, 64 to 512, every optimizer over a learning-rate grid; about 6-7 minutes
# on 2 cores). Writes build-demo/width_transfer_quick.csv, prints the summary table, and draws
# build-demo/transfer.png and head_norm.png with Debian's python3-matplotlib.
# Extra arguments go to the experiment, e.g. scripts/demo.sh --mode full, or --corpus FILE.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build-demo -DCMAKE_BUILD_TYPE=Release -DSTEEPEST_BUILD_TESTS=OFF -DSTEEPEST_BUILD_EXAMPLES=ON \
  -DSTEEPEST_EXAMPLES_NATIVE=ON -DSTEEPEST_INSTALL=OFF
cmake --build build-demo -j"$(nproc)" --target width_transfer
./build-demo/examples/width_transfer --mode quick --out build-demo/width_transfer_quick.csv "$@"
# The figures: Debian's matplotlib (installed here with the other packages when missing), run by
# Debian's Python (a python3 earlier on PATH, e.g. pyenv's, may lack it).
py=/usr/bin/python3
[ -x "$py" ] || py=python3
if ! "$py" -c "import matplotlib" >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y python3-matplotlib >/dev/null || true
fi
if "$py" -c "import matplotlib" >/dev/null 2>&1; then
  "$py" examples/width_transfer/plot.py build-demo/width_transfer_quick.csv --out build-demo >/dev/null
  echo "figures: build-demo/transfer.png, build-demo/head_norm.png"
else
  echo "(no matplotlib: apt-get install python3-matplotlib, then: python3 examples/width_transfer/plot.py build-demo/width_transfer_quick.csv --out build-demo)"
fi
