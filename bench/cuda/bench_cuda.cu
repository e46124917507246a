// CUDA benchmark: each device rule against a reference measured in the same binary.
//   elementwise / row rules: GB/s against cudaMemcpy device-to-device of the same bytes
//   Newton-Schulz: GFLOP/s against one cuBLAS GEMM of the Gram shape in the same precision,
//                  for each precision (TF32, BF16, FP32), GEMM engine and Gram mode
// Times are cudaEvent medians of 20 launches after 3 warm-ups. Prints a table; exits 77
// (skipped) without a device.
#include <steepest/steepest.hpp>
#include <steepest/cuda/cuda.cuh>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <vector>

namespace sc = steepest::cuda;
namespace st = steepest;

// Every CUDA call here is checked where it is made, so an error names the call that failed (an
// unchecked call's error would otherwise surface in the next check, under another name).
static float median_ms(const std::function<void()>& f, cudaStream_t s) {
  cudaEvent_t a, b;
  sc::check(cudaEventCreate(&a), "cudaEventCreate");
  sc::check(cudaEventCreate(&b), "cudaEventCreate");
  for (int i = 0; i < 3; ++i) f();
  std::vector<float> t;
  for (int i = 0; i < 20; ++i) {
    sc::check(cudaEventRecord(a, s), "cudaEventRecord");
    f();
    sc::check(cudaEventRecord(b, s), "cudaEventRecord");
    sc::check(cudaEventSynchronize(b), "cudaEventSynchronize");
    float ms = 0;
    sc::check(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
    t.push_back(ms);
  }
  sc::check(cudaEventDestroy(a), "cudaEventDestroy");
  sc::check(cudaEventDestroy(b), "cudaEventDestroy");
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

static float* alloc(std::size_t n) {
  float* p = nullptr;
  sc::check(cudaMalloc(&p, n * sizeof(float)), "cudaMalloc");
  sc::check(cudaMemset(p, 0, n * sizeof(float)), "cudaMemset");
  return p;
}

int main() {
  if (sc::device_count() == 0) {
    std::printf("steepest CUDA bench: no CUDA device visible -- skipped\n");
    return 77;
  }
  cudaDeviceProp prop{};
  sc::check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  std::printf("device: %s\n\n", prop.name);
  sc::Context ctx;
  const cudaStream_t s = ctx.stream();
  st::Hyper hp;
  hp.on_non_finite = st::NonFinitePolicy::Unchecked;

  std::printf("%-28s %12s %10s %10s %8s\n", "rule", "shape", "ms", "GB/s", "vs copy");
  for (const auto& shape : std::vector<std::pair<long, long>>{{4096, 4096}, {8192, 4096}, {16384, 4096}}) {
    const long m = shape.first, n = shape.second;  // plain variables: lambdas capture them below
    const std::size_t N = std::size_t(m) * std::size_t(n);
    float *w = alloc(N), *g = alloc(N);
    // Reference: copy as many bytes as AdamW moves (read w g m v, write w m v = 7 x 4 B): a copy
    // of B bytes moves 2B, so 14N bytes from one buffer of that size into another.
    const double adam_bytes = 7.0 * 4.0 * double(N);
    const std::size_t copy_floats = 7 * N / 2;
    float *src = alloc(copy_floats), *dst = alloc(copy_floats);
    const float copy_ms = median_ms(
        [&] {
          sc::check(cudaMemcpyAsync(dst, src, copy_floats * sizeof(float), cudaMemcpyDeviceToDevice, s),
                    "cudaMemcpyAsync (reference copy)");
        },
        s);
    // cudaMemcpy of B bytes moves 2B (read + write).
    const double copy_gbs = adam_bytes / (copy_ms * 1e6);
    Eigen::bfloat16* gb = nullptr;  // the gradient in bf16 (the bf16-gradient rows)
    sc::check(cudaMalloc(&gb, N * sizeof(Eigen::bfloat16)), "cudaMalloc");
    sc::check(cudaMemset(gb, 0, N * sizeof(Eigen::bfloat16)), "cudaMemset");
    st::ParamSet<float, sc::Device> ps(sc::Device{&ctx});
    st::Gradients<float, sc::Device> gs;
    st::Gradients<Eigen::bfloat16, sc::Device> gbs;
    ps.add("w", st::Role::Hidden, w, m, n);
    gs.add(g, m, n);
    gbs.add(gb, m, n);
    auto run_with = [&](const char* name, auto opt, double bytes, const auto& grads) {
      auto state = opt.init(ps);
      const float ms = median_ms([&] { opt.step(ps, grads, state); }, s);
      const double gbs_rate = bytes / (ms * 1e6);
      std::printf("%-28s %5ldx%-6ld %10.3f %10.1f %8.2f\n", name, m, n, ms, gbs_rate, gbs_rate / copy_gbs);
    };
    auto run = [&](const char* name, auto opt, double bytes) { run_with(name, opt, bytes, gs); };
    std::printf("%-28s %5ldx%-6ld %10.3f %10.1f %8.2f\n", "memcpy D2D (reference)", m, n, copy_ms, copy_gbs, 1.0);
    run("AdamW", st::adamw(hp), 7.0 * 4 * double(N));
    run("rescaled AdamW", st::adamw_rescaled(hp), 7.0 * 4 * double(N));
    run("Lion", st::lion(hp), 5.0 * 4 * double(N));
    run("sign descent", st::sign_descent(hp), 3.0 * 4 * double(N));
    run("MOGA-row (row-norm prepass)", st::moga_row(hp), 7.0 * 4 * double(N));  // bytes of the main pass
    run("MOGA-col (col-norm prepass)", st::moga_col(hp), 7.0 * 4 * double(N));
    // Fewer bytes per parameter: bf16 moments (20 B), bf16 gradients (26 B), both (18 B).
    run("AdamW, bf16 state", st::adamw<st::Bf16State>(hp), 20.0 * double(N));
    run_with("AdamW, bf16 grads", st::adamw(hp), 26.0 * double(N), gbs);
    run_with("AdamW, bf16 grads+state", st::adamw<st::Bf16State>(hp), 18.0 * double(N), gbs);
    run_with("MOGA-row, bf16 grads", st::moga_row(hp), 26.0 * double(N), gbs);
    for (float* p : {w, g, src, dst}) sc::check(cudaFree(p), "cudaFree");
    sc::check(cudaFree(gb), "cudaFree");
  }

  // Newton-Schulz in each product precision, engine and Gram mode, against one cuBLAS GEMM of
  // the Gram shape (k x k x l) in the same precision: "vs GEMM" is the NS FLOP rate over the
  // GEMM's. Per NS step: X X^T (2 k^2 l), A A (2 k^3), B X (2 k^2 l).
  std::printf("\n%-34s %12s %10s %10s %8s\n", "Newton-Schulz (quintic, 5 steps)", "shape", "ms", "GFLOP/s", "vs GEMM");
  struct Variant {
    const char* name;
    sc::GemmPrecision precision;
    sc::GemmEngine engine;
    sc::GramProduct gram;
  };
  const Variant variants[] = {
      {"tf32, cuBLASLt epilogues", sc::GemmPrecision::TF32, sc::GemmEngine::Lt, sc::GramProduct::Gemm},
      {"tf32, classic cuBLAS + copies", sc::GemmPrecision::TF32, sc::GemmEngine::Classic, sc::GramProduct::Gemm},
      {"tf32, cuBLASLt, syrk Gram", sc::GemmPrecision::TF32, sc::GemmEngine::Lt, sc::GramProduct::Syrk},
      {"bf16, cuBLASLt epilogues", sc::GemmPrecision::BF16, sc::GemmEngine::Lt, sc::GramProduct::Gemm},
      {"fp32, cuBLASLt epilogues", sc::GemmPrecision::FP32, sc::GemmEngine::Lt, sc::GramProduct::Gemm},
  };
  for (const auto& shape : std::vector<std::pair<long, long>>{{768, 768}, {1024, 4096}, {4096, 4096}}) {
    const long m = shape.first, n = shape.second;
    const long k = std::min(m, n), l = std::max(m, n);
    float *G = alloc(std::size_t(m * n)), *D = alloc(std::size_t(m * n)), *A = alloc(std::size_t(k * k));
    {  // some data: NS's cost does not depend on the values, but NaNs would slow nothing either
      std::vector<float> h(std::size_t(m * n));
      for (std::size_t i = 0; i < h.size(); ++i) h[i] = float((i * 2654435761u) % 1000) / 500.0f - 1.0f;
      sc::check(cudaMemcpy(G, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy");
    }
    for (const Variant& v : variants) {
      sc::Context c(s, v.precision);
      c.engine = v.engine, c.gram = v.gram;
      const float gemm_ms = median_ms(
          [&] {
            const float one = 1, zero = 0;
            sc::check(cublasGemmEx(c.blas(), CUBLAS_OP_T, CUBLAS_OP_N, int(k), int(k), int(l), &one, G, CUDA_R_32F,
                                   int(l), G, CUDA_R_32F, int(l), &zero, A, CUDA_R_32F, int(k), c.compute_type(),
                                   CUBLAS_GEMM_DEFAULT),
                      "cublasGemmEx (reference GEMM)");
          },
          s);
      const double gemm_rate = 2.0 * double(k) * double(k) * double(l) / (gemm_ms * 1e6);
      const double ns_flops = 5.0 * (4.0 * double(k) * k * l + 2.0 * double(k) * k * k);
      const float ns_ms = median_ms(
          [&] { sc::newton_schulz<st::QuinticSchedule>(sc::view(G, m, n), sc::view(D, m, n), 5, c); }, s);
      const double ns_rate = ns_flops / (ns_ms * 1e6);
      std::printf("%-34s %5ldx%-6ld %10.3f %10.0f %8.2f\n", v.name, m, n, ns_ms, ns_rate, ns_rate / gemm_rate);
    }
    for (float* p : {G, D, A}) sc::check(cudaFree(p), "cudaFree");
  }

  // GPT-2 small (124M parameters): a whole optimizer step over the model's tensors.
  // Hidden matrices per block (out x in): qkv 2304x768, attention proj 768x768, fc 3072x768,
  // mlp proj 768x3072; the tied embedding 50257x768 and position embedding 1024x768; vectors.
  {
    std::vector<std::pair<long, long>> hidden, other;
    for (int l = 0; l < 12; ++l) {
      hidden.insert(hidden.end(), {{2304, 768}, {768, 768}, {3072, 768}, {768, 3072}});
      other.insert(other.end(), {{2304, 1}, {768, 1}, {3072, 1}, {768, 1}, {768, 1}, {768, 1}, {768, 1}, {768, 1}});
    }
    other.insert(other.end(), {{50257, 768}, {1024, 768}, {768, 1}, {768, 1}});
    std::vector<float*> bufs;
    // The model as a training program would hand it over: one parameter set, roles by kind.
    st::ParamSet<float, sc::Device> ps(sc::Device{&ctx});
    st::Gradients<float, sc::Device> gs;
    double params = 0, hparams = 0;
    auto add = [&](const std::vector<std::pair<long, long>>& shapes, bool is_hidden) {
      for (auto [m, n] : shapes) {
        float* w = alloc(std::size_t(m * n));
        float* g = alloc(std::size_t(m * n));
        bufs.push_back(w), bufs.push_back(g);
        // GPT-2 ties the head to the token embedding, so there is no separate Output.
        const st::Role role = is_hidden ? st::Role::Hidden : n == 1 ? st::Role::Vector : st::Role::Embedding;
        ps.add("t" + std::to_string(ps.size()), role, w, m, n);
        gs.add(g, m, n);
        params += double(m * n);
        if (is_hidden) hparams += double(m * n);
      }
    };
    add(hidden, true);
    add(other, false);
    auto adam = st::adamw(hp);
    auto sa = adam.init(ps);
    const float adam_ms = median_ms([&] { adam.step(ps, gs, sa); }, s);
    st::Hyper mh = hp;
    mh.lr = 0.02, mh.beta1 = 0.95;
    // Muon's hidden-matrix part alone: the routes' first optimizer over a set of the hidden
    // matrices (the same 48 tensors, the same pointers).
    st::Gradients<float, sc::Device> hgs;
    for (std::size_t i = 0; i < hidden.size(); ++i) hgs.add(gs.data(i), ps[i].rows, ps[i].cols);
    auto muon_hidden = st::muon_chain(mh);
    auto hidden_step_ms = [&](sc::Context& c) {  // the hidden matrices as a set on context c
      st::ParamSet<float, sc::Device> hid(sc::Device{&c});
      for (std::size_t i = 0; i < hidden.size(); ++i)
        hid.add(ps[i].name, st::Role::Hidden, ps[i].data, ps[i].rows, ps[i].cols);
      auto sm = muon_hidden.init(hid);
      return median_ms([&] { muon_hidden.step(hid, hgs, sm); }, s);
    };
    const float muon_ms = hidden_step_ms(ctx);
    sc::Context bf(s, sc::GemmPrecision::BF16);
    const float muon_bf_ms = hidden_step_ms(bf);
    std::printf("\nGPT-2 small: AdamW step over all %.1fM parameters: %.3f ms (%.0f GB/s)\n", params / 1e6, adam_ms,
                28.0 * params / (adam_ms * 1e6));
    std::printf("GPT-2 small: Muon step over the %.1fM hidden-matrix parameters (48 matrices, 4 shape groups, "
                "batched NS): %.3f ms with tf32 products, %.3f ms with bf16\n", hparams / 1e6, muon_ms, muon_bf_ms);
    auto moga = st::moga_row(hp);
    auto sg = moga.init(ps);
    const float moga_ms = median_ms([&] { moga.step(ps, gs, sg); }, s);
    auto muon = st::muon(mh, hp);  // Muon on the hidden matrices, AdamW on the rest
    auto smf = muon.init(ps);
    const float muon_full_ms = median_ms([&] { muon.step(ps, gs, smf); }, s);
    std::printf("GPT-2 small, every parameter by role: MOGA-row step %.3f ms (%.0f GB/s), Muon + AdamW step %.3f ms\n",
                moga_ms, 28.0 * params / (moga_ms * 1e6), muon_full_ms);
    std::printf("compare: python3 bench/cuda/torch_peer.py (torch.optim.AdamW(fused=True), torch.optim.Muon)\n");
    for (float* p : bufs) sc::check(cudaFree(p), "cudaFree");
  }
  return 0;
}
