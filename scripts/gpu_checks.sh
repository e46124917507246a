#!/usr/bin/env bash
# Every GPU check of the CUDA backend in one command, for a machine with a CUDA device:
#   1. build the CUDA tests, example and benchmark (Release, sm_90 unless CUDA_ARCH says otherwise)
#   2. steepest_cuda_tests        the policies' kernels and every optimizer (named, routed, the
#                                 custom chain) on device memory against the same calls on the
#                                 host, and GPU <-> CPU state resumes
#   3. compute-sanitizer          memcheck, racecheck and initcheck over the tests
#   3b. steepest_nccl_tests       the sharded optimizer on device memory over NCCL, one rank,
#                                 against the single-process device step (when NCCL is found)
#   4. cuda_quickstart, cuda_custom_optimizer   the README example and examples/custom_optimizer's
#                                 chain on the device
#   5. steepest_cuda_bench        GB/s vs a device-to-device copy, Newton-Schulz vs a GEMM,
#                                 GPT-2-small AdamW and Muon steps
#   6. bench/cuda/torch_peer.py   the PyTorch peer on the same shapes, when torch is installed
#   7. the libtorch adapter on CUDA tensors, built against this machine's torch (when it has CUDA):
#      steepest_torch_cuda_tests  the CUDA adapter against the CPU adapter and the library's own
#                                 step, a CUDA -> CPU -> CUDA checkpoint, side streams, refusals
#      libtorch_gpt               the GPT example, AdamW / MOGA-row / Muon + AdamW on the GPU
#   8. the Python package on CUDA tensors (when torch has CUDA, and the build tools are in
#      .gpu-deps/wheels: `bash scripts/gpu_python_wheels.sh` here first, as the GPU machine has
#      no PyPI): pip install . with nvcc, then python/tests/test_cuda.py and test_torch.py
# Writes each output to ${OUT:-gpu-results}/ and prints a summary. Needs cmake, a C++ compiler,
# Eigen (scripts/deps.sh installs it) and nvcc.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-results}
mkdir -p "$out"
nvcc_bin=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
sanitizer=$(command -v compute-sanitizer || echo "$(dirname "$nvcc_bin")/compute-sanitizer")
status=0
step() {  # step NAME COMMAND...: runs it, keeps its output, records pass/fail
  local name=$1
  shift
  echo "== $name"
  if "$@" >"$out/$name.txt" 2>&1; then echo "   ok"; else echo "   FAILED (rc $?): see $out/$name.txt"; status=1; fi
  tail -n 40 "$out/$name.txt"
}
step build bash -c "cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DSTEEPEST_ENABLE_CUDA=ON \
  -DCMAKE_CUDA_COMPILER=$nvcc_bin -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCH:-90} -DSTEEPEST_BUILD_TESTS=ON \
  -DSTEEPEST_BUILD_EXAMPLES=ON -DSTEEPEST_INSTALL=OFF && \
  cmake --build build-gpu -j\$(nproc) --target steepest_cuda_tests steepest_cuda_bench cuda_quickstart cuda_custom_optimizer"
step tests ./build-gpu/steepest_cuda_tests
for tool in memcheck racecheck initcheck; do
  step "sanitizer-$tool" "$sanitizer" --tool "$tool" --error-exitcode 1 ./build-gpu/steepest_cuda_tests
done
if grep -q "steepest_nccl_tests" build-gpu/Makefile 2>/dev/null; then
  step nccl_build cmake --build build-gpu -j"$(nproc)" --target steepest_nccl_tests
  step nccl_tests ./build-gpu/steepest_nccl_tests
  step nccl_sanitizer "$sanitizer" --tool memcheck --error-exitcode 1 ./build-gpu/steepest_nccl_tests
fi
step quickstart ./build-gpu/cuda_quickstart
step custom_optimizer ./build-gpu/cuda_custom_optimizer
step bench ./build-gpu/steepest_cuda_bench
if python3 -c "import torch; assert torch.cuda.is_available()" >/dev/null 2>&1; then
  step torch_peer python3 bench/cuda/torch_peer.py
  torch_prefix=$(python3 -c "import torch; print(torch.utils.cmake_prefix_path)")
  step torch_build bash -c "cmake -S . -B build-gpu -DCMAKE_PREFIX_PATH=$torch_prefix -DSTEEPEST_WITH_TORCH=ON && \
    cmake --build build-gpu -j\$(nproc) --target steepest_torch_cuda_tests libtorch_gpt"
  step torch_cuda_tests ./build-gpu/steepest_torch_cuda_tests
  step torch_cuda_sanitizer "$sanitizer" --tool memcheck --error-exitcode 1 ./build-gpu/steepest_torch_cuda_tests
  step libtorch_gpt ./build-gpu/libtorch_gpt --steps 300 --device cuda
  if [ -d .gpu-deps/wheels ]; then
    step python_build python3 -m pip install --no-build-isolation --no-index --find-links .gpu-deps/wheels \
      "-Ccmake.define.CMAKE_CUDA_ARCHITECTURES=${CUDA_ARCH:-90}" nanobind scikit-build-core pytest .
    step python_cuda_tests python3 -m pytest -v -rs python/tests/test_cuda.py python/tests/test_torch.py
  else
    echo "== python_cuda_tests: skipped (no .gpu-deps/wheels: run scripts/gpu_python_wheels.sh before the device run)"
  fi
else
  echo "== torch_peer, torch_cuda_tests, libtorch_gpt: skipped (no PyTorch with CUDA here)"
fi
exit $status
