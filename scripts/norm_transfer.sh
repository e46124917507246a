#!/usr/bin/env bash
# Set up (Debian packages), build and run the norm-transfer study (docs/NORM_TRANSFER.md): an
# (lr, batch) grid at three token budgets and two widths for Scion (constrained and
# unconstrained), AdamW with the 1̄->inf scale and MOGA-row, with the output head's norm traced
# along training; then the analysis (optima, head norms, exponents) and its figures.
#   bash scripts/norm_transfer.sh            quick mode: widths 32/64, D = 2^14..2^16, 1 seed, 720 runs, ~2 min on 2 cores
#   bash scripts/norm_transfer.sh --mode full   widths 32/64, D = 2^15..2^19, 2 seeds, 2,688 runs, ~19 min
# Extra arguments go to the experiment (--widths, --budgets, --batches, --seeds, --rules, --corpus).
# Writes build-demo/norm_transfer/{runs,trace}.csv, summary.md and, with matplotlib, grid.png,
# trace.png and scaling.png.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build-demo -DCMAKE_BUILD_TYPE=Release -DSTEEPEST_BUILD_TESTS=OFF -DSTEEPEST_BUILD_EXAMPLES=ON \
  -DSTEEPEST_EXAMPLES_NATIVE=ON -DSTEEPEST_INSTALL=OFF
cmake --build build-demo -j"$(nproc)" --target norm_transfer
out=build-demo/norm_transfer
mkdir -p "$out"
./build-demo/examples/norm_transfer --out "$out/runs.csv" --trace "$out/trace.csv" "$@"
# The analysis and figures: Debian's Python with numpy (scripts/deps.sh) and matplotlib (installed
# here when missing, as scripts/demo.sh does); a python3 earlier on PATH (e.g. pyenv's) may lack them.
py=/usr/bin/python3
[ -x "$py" ] || py=python3
if ! "$py" -c "import matplotlib" >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y python3-matplotlib >/dev/null || true
fi
"$py" examples/width_transfer/norm_transfer.py "$out/runs.csv" "$out/trace.csv" --out "$out" | sed -n '/Is the head norm/,$p'
echo "analysis: $out/summary.md; figures (with matplotlib): $out/grid.png, $out/trace.png, $out/scaling.png"
