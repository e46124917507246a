// The README's CUDA example, runnable: norm policies on device matrices, then the same
// optimizers as on the CPU stepping device memory (AdamW, then Muon + AdamW), on a user stream.
// Prints what it did; exits 77 (skipped) when no CUDA device is visible.
#include <steepest/steepest.hpp>
#include <steepest/cuda/cuda.cuh>

#include <cmath>
#include <cstdio>
#include <vector>

namespace st = steepest;
namespace sc = steepest::cuda;

static float* device_copy(const std::vector<float>& h) {
  float* d = nullptr;
  sc::check(cudaMalloc(&d, h.size() * sizeof(float)), "cudaMalloc");
  sc::check(cudaMemcpy(d, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy");
  return d;
}

static std::vector<float> host_copy(const float* d, std::size_t n) {
  std::vector<float> h(n);
  sc::check(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy");
  return h;
}

int main() {
  if (sc::device_count() == 0) {
    std::printf("cuda_quickstart: no CUDA device visible -- skipped\n");
    return 77;
  }
  const st::Index m = 256, n = 512;
  std::vector<float> hg(std::size_t(m * n)), hw(std::size_t(m * n), 0.01f);
  for (std::size_t i = 0; i < hg.size(); ++i) hg[i] = std::sin(0.37f * float(i)) + 0.1f * float(i % 7);
  float *d_g = device_copy(hg), *d_dir = device_copy(hg), *d_w = device_copy(hw);

  cudaStream_t stream;
  sc::check(cudaStreamCreate(&stream), "cudaStreamCreate");
  sc::Context ctx(stream);  // the stream, cuBLAS(Lt) handles bound to it, scratch; TF32 products by default

  // Steepest directions of a device gradient: row normalization (mean-normalized 2->inf), then
  // the spectral polar factor by Newton-Schulz on cuBLAS.
  st::MeanNormalized<st::RowNormalize>::dualize(sc::view(d_g, m, n), sc::view(d_dir, m, n), ctx);
  std::vector<float> dir = host_copy(d_dir, hg.size());
  double row0 = 0;
  for (st::Index j = 0; j < n; ++j) row0 += double(dir[std::size_t(j)]) * dir[std::size_t(j)];
  std::printf("mean row-normalized direction: ||row 0||_2 = %.6f (the policy's scale is %.6f)\n", std::sqrt(row0),
              st::MeanNormalized<st::RowNormalize>::scale(m, n));
  st::Spectral::dualize(sc::view(d_g, m, n), sc::view(d_dir, m, n), ctx);

  // The optimizers of the CPU, on device memory: the parameter set says where its memory is.
  std::vector<float> hb(n, 0.0f);
  float *d_b = device_copy(hb), *d_gb = device_copy(std::vector<float>(std::size_t(n), 1.0f));
  st::ParamSet<float, sc::Device> params(sc::Device{&ctx});
  params.add("w", st::Role::Hidden, d_w, m, n);
  params.add_vector("b", d_b, n);
  st::Gradients<float, sc::Device> grads;
  grads.add(d_g, m, n);
  grads.add_vector(d_gb, n);

  st::Hyper hp;
  hp.lr = 3e-4;
  auto opt = st::adamw(hp);          // one pass over (g, m, v, w), many layers per launch
  auto state = opt.init(params);     // state buffers in device memory
  for (int t = 0; t < 3; ++t) opt.step(params, grads, state);
  std::printf("AdamW: %lld steps taken on the device\n", state.step);
  const std::vector<float> b = host_copy(d_b, std::size_t(n));
  std::printf("AdamW: bias entry after 3 steps of a constant gradient 1: %.6f (expected -3 lr = %.6f)\n", b[0],
              -3 * hp.lr);

  // Muon on the hidden matrix (batched Newton-Schulz on cuBLAS), AdamW on the bias.
  st::Hyper mh;
  mh.lr = 0.02, mh.beta1 = 0.95;
  auto muon = st::muon(mh, hp);
  auto ms = muon.init(params);
  muon.step(params, grads, ms);
  st::save(muon, ms, "cuda_quickstart.safetensors");  // the same file format as on the CPU
  sc::check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  std::printf("Muon + AdamW: %lld step taken; state saved to cuda_quickstart.safetensors\n", ms.step);
  std::remove("cuda_quickstart.safetensors");

  cudaFree(d_g), cudaFree(d_dir), cudaFree(d_w), cudaFree(d_b), cudaFree(d_gb);
  cudaStreamDestroy(stream);
  return 0;
}
