#!/usr/bin/env bash
# The sharded step's measurements and cost model in one command (from the repository root):
#   bash bench/distributed/run.sh            # ~5 minutes on 2 cores
# Builds steepest_dist_bench (Release), runs it under mpirun at 1, 2 and 4 ranks (4 ranks share
# this machine's cores: a check of the bytes and plans, not a scaling point), and regenerates
# docs/distributed/measured.jsonl, docs/distributed/cost_model.md and docs/distributed/scaling.png from that one run.
# STEPS / ROUNDS / D / LAYERS / VOCAB override the bench's defaults.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/deps.sh
build=${BUILD_DIR:-build-dist-bench}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DSTEEPEST_BUILD_BENCH=ON -DSTEEPEST_BUILD_TESTS=OFF \
  -DSTEEPEST_BUILD_EXAMPLES=OFF -DSTEEPEST_WITH_TORCH=OFF -DSTEEPEST_INSTALL=OFF >/dev/null
cmake --build "$build" --target steepest_dist_bench -j"$(nproc)"
machine="{\"kind\":\"machine\",\"cpu\":\"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\",\"cores\":$(nproc --all),\"mpi\":\"$(mpirun --version 2>&1 | head -1)\",\"date\":\"$(date -u +%F)\"}"
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
args=(--steps "${STEPS:-4}" --rounds "${ROUNDS:-5}" --d "${D:-256}" --layers "${LAYERS:-4}" --vocab "${VOCAB:-8192}")
out=docs/dist
mkdir -p "$out"
{
  echo "$machine"
  for np in 1 2 4; do
    mpirun -np "$np" "$build/bench/steepest_dist_bench" "${args[@]}"
  done
} | tee "$out/measured.jsonl"
py=python3
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c "import matplotlib" 2>/dev/null && py=/usr/bin/python3
"$py" bench/distributed/cost_model.py "$out/measured.jsonl" --markdown "$out/cost_model.md" --plot "$out/scaling.png"
