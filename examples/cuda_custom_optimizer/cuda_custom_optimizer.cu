// cuda_custom_optimizer: examples/custom_optimizer's own transform, unchanged, on device memory.
//
// TwoEmaRows (row normalization, a fast EMA, SlowEma -- a transform written in
// examples/custom_optimizer/slow_ema.hpp, not in the library -- the width scale, a step) is the
// same type as in the CPU example; only the parameter set says its memory is on a CUDA device.
// SlowEma's Elem is STEEPEST_HD, so the device executor runs it in its fused kernel. The program
// runs the chain on both backends side by side and prints how far apart they end.
// Exits 77 (skipped) when no CUDA device is visible.
#include <steepest/steepest.hpp>
#include <steepest/cuda/cuda.cuh>

#include <cmath>
#include <cstdio>
#include <vector>

#include "../custom_optimizer/slow_ema.hpp"

namespace st = steepest;
namespace sc = steepest::cuda;

int main() {
  if (sc::device_count() == 0) {
    std::printf("cuda_custom_optimizer: no CUDA device visible -- skipped\n");
    return 77;
  }
  const int m = 64, n = 32;
  std::vector<float> w(m * n, 0.0f), g(m * n);
  float *d_w = nullptr, *d_g = nullptr;
  sc::check(cudaMalloc(&d_w, w.size() * sizeof(float)), "cudaMalloc");
  sc::check(cudaMalloc(&d_g, g.size() * sizeof(float)), "cudaMalloc");
  sc::check(cudaMemset(d_w, 0, w.size() * sizeof(float)), "cudaMemset");

  sc::Context ctx(nullptr, sc::GemmPrecision::FP32);
  st::ParamSet<float> host;                                   // the CPU example's set-up
  host.add("layer", st::Role::Hidden, w.data(), m, n);
  st::ParamSet<float, sc::Device> device(sc::Device{&ctx});   // the same, on the device
  device.add("layer", st::Role::Hidden, d_w, m, n);
  st::Gradients<float> hg;
  hg.add(g.data(), m, n);
  st::Gradients<float, sc::Device> dg;
  dg.add(d_g, m, n);

  st::Hyper hp;
  hp.lr = 0.05;
  hp.beta1 = 0.8;
  hp.beta2 = 0.95;
  hp.weight_decay = 0.01;
  const auto opt = two_ema_rows(hp);
  auto hs = opt.init(host);
  auto ds = opt.init(device);

  // Minimize ||W - T||_F^2 / 2 for a fixed target T: the gradient is W - T (computed on the host
  // from the host weights and copied over, so both backends see the same gradients).
  std::vector<float> wd(w.size());
  for (int t = 0; t < 200; ++t) {
    double loss = 0;
    for (int i = 0; i < m * n; ++i) {
      const float target = float((i * 37) % 11) / 11.0f - 0.5f;
      g[std::size_t(i)] = w[std::size_t(i)] - target;
      loss += 0.5 * double(g[std::size_t(i)]) * g[std::size_t(i)];
    }
    if (t % 40 == 0) std::printf("step %3d  loss %.4f\n", t, loss);
    sc::check(cudaMemcpy(d_g, g.data(), g.size() * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy");
    opt.step(host, hg, hs);
    opt.step(device, dg, ds);
  }
  sc::check(cudaMemcpy(wd.data(), d_w, wd.size() * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy");
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < w.size(); ++i) {
    diff += double(wd[i] - w[i]) * double(wd[i] - w[i]);
    norm += double(w[i]) * double(w[i]);
  }
  std::printf("%s on the device: %zu bytes of state; after 200 steps ||W_gpu - W_cpu|| / ||W_cpu|| = %.2e\n",
              opt.name().c_str(), ds.state_bytes(), std::sqrt(diff / norm));
  cudaFree(d_w), cudaFree(d_g);
  return std::sqrt(diff / norm) < 1e-4 ? 0 : 1;
}
