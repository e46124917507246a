// steepest/cuda/cuda.cuh -- umbrella header of the CUDA backend (compile with nvcc).
//
//   #include <steepest/steepest.hpp>
//   #include <steepest/cuda/cuda.cuh>
//
// Policies called with cuda::DeviceMatrix views run on the GPU (pass a cuda::Context as the
// workspace); the library's optimizers (named, routed or a user's chain) step a
// ParamSet<float, cuda::Device> through the same calls as on the CPU (executor.cuh). exact_polar.cuh (cuSOLVER, for tests and references) is not included here: it needs
// -lcusolver.
#pragma once

#include "device.hpp"
#include "gemm.cuh"
#include "reduce.cuh"
#include "norms.cuh"
#include "newton_schulz.cuh"
#include "geometry.cuh"
#include "rules.cuh"
#include "space.cuh"
#include "executor.cuh"
