#!/usr/bin/env bash
# What a user's file pays to compile: CPU seconds (user + system) and peak memory of g++ -O2 on
# small programs that include the library (bench/compile_cost/): the umbrella header alone,
# MOGA-row and Muon stepping a 4-layer model, and the libtorch adapter beside the same program
# with torch's own SGD (when libtorch is there).
# A benchmark, not a test: prints a table, checks nothing. Compiles one program at a time.
#   bash scripts/compile_cost.sh [CXX]      (CXX: g++ by default)
set -euo pipefail
cd "$(dirname "$0")/.."
cxx="${1:-g++}"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
flags=(-std=c++17 -O2 -I include -isystem /usr/include/eigen3)
torch_flags=()
if [ -d /usr/include/torch/csrc/api/include ]; then
  torch_flags=(-isystem /usr/include/torch/csrc/api/include -D_GLIBCXX_USE_CXX11_ABI=1)
fi
echo "compiler: $("$cxx" --version | head -1); CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -1)"
printf '%-10s %10s %12s\n' program "CPU s" "peak MB"
for p in umbrella moga_row muon torch_alone libtorch; do
  extra=()
  if [ "$p" = libtorch ] || [ "$p" = torch_alone ]; then
    [ ${#torch_flags[@]} -gt 0 ] || { printf '%-10s %10s\n' "$p" "skipped (no libtorch headers)"; continue; }
    extra=("${torch_flags[@]}")
  fi
  /usr/bin/time -f "%U %S %M" -o "$out/t" "$cxx" "${flags[@]}" "${extra[@]}" -c "bench/compile_cost/$p.cpp" -o "$out/$p.o"
  awk -v p="$p" '{ printf "%-10s %10.1f %12.0f\n", p, $1 + $2, $3 / 1024 }' "$out/t"
done
