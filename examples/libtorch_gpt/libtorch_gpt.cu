// libtorch_gpt on CUDA: the same program as libtorch_gpt.cpp, compiled by nvcc against a CUDA
// build of torch so its optimizers step CUDA tensors (steepest::libtorch::CudaOptimizer).
#define STEEPEST_GPT_CUDA 1
#include "libtorch_gpt.cpp"
