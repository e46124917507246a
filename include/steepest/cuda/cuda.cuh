// steepest/cuda/cuda.cuh -- umbrella header of the CUDA backend (compile with nvcc).
//
//   #include <steepest/steepest.hpp>
//   #include <steepest/cuda/cuda.cuh>
//
// Policies called with cuda::DeviceMatrix views run on the GPU (pass a cuda::Context as the
// workspace); cuda::AdamW / Lion / SignDescent / MogaRow / MogaCol / Muon / Scion step device
// tensors. exact_polar.cuh (cuSOLVER, for tests and references) is not included here: it needs
// -lcusolver.
#pragma once

#include "device.hpp"
#include "gemm.cuh"
#include "reduce.cuh"
#include "norms.cuh"
#include "newton_schulz.cuh"
#include "optimizers.cuh"
