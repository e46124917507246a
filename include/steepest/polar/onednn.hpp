// steepest/polar/onednn.hpp -- Newton-Schulz with its products in bf16, on oneDNN's matmul (CPU).
//
//   #include <steepest/polar/onednn.hpp>          // link oneDNN: CMake target steepest::onednn
//   using SpectralBf16 = st::SpectralNorm<st::NewtonSchulz<st::QuinticSchedule, 5, st::OneDnnBf16>>;
//   auto opt = st::muon<SpectralBf16>(hp);
//
// Why bf16: Newton-Schulz is three GEMMs per step, and a CPU with AVX512-BF16 or AMX multiplies
// bf16 at several times its fp32 FMA rate (docs/PERFORMANCE.md has the measured rates). The
// iteration only needs the polar factor to the accuracy of its own polynomial (the quintic
// schedule's output singular values already spread over [0.68, 1.21]), which is also why GPU Muon
// runs it in bf16. Why oneDNN: it is the engine made for this (JIT kernels per ISA, AMX tiles,
// its own threading), from Debian's libdnnl-dev; Debian's OpenBLAS is built without sbgemm.
//
// One step, on the wide orientation X (k x l, k <= l), everything k x l or k x k:
//   Xb = bf16(X)                       oneDNN reorder (round to nearest even)
//   A  = Xb Xb^T                       matmul, fp32 accumulation and output
//   Ab = bf16(A);  A <- c Ab Ab + b A  matmul; c is its output scale, b A its sum post-op
//   Bb = bf16(A);  X <- Bb Xb + a X    matmul; a X its sum post-op, written over X
// so every product sees bf16 inputs and every sum is fp32 and happens inside the product that
// feeds it (no pass of its own); the iterate X itself stays fp32 between steps (rounding it to
// bf16 only as a product's input). A double input is rounded the same way (the products are
// bf16 either way) and the result returned in double.
//
// Layouts, chosen by measurement (docs/PERFORMANCE.md): oneDNN's AMX matmul reads its right
// operand fastest when it is stored transposed (format `ba`), 1.3x on the k x k square here. The
// Gram product's right operand is Xb^T, i.e. Xb read as `ba` for free, and A is symmetric, so the
// square reads Ab as `ba` too. (For the last product that would need a transposed copy of Xb:
// a reorder of its own that cost as much as it saved.)
//
// The sum's scales are fixed when a primitive is made (oneDNN 2.x), so the workspace keeps one
// pair of primitives per distinct (a, b, c) of the schedule: one for the quintic, one per step
// for Polar Express.
#pragma once

#include <oneapi/dnnl/dnnl.hpp>

#include <Eigen/Core>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../norms/spectral.hpp"
#include "newton_schulz.hpp"

namespace steepest {

/// Scratch of OneDnnBf16: the fp32 iterate, the bf16 product inputs and the oneDNN primitives of
/// the current shape and schedule (rebuilt when either changes; oneDNN JIT-compiles a primitive
/// once).
struct OneDnnNewtonSchulzWorkspace {
  using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  /// The two products of one step whose sums depend on the step's coefficients.
  struct StepProducts {
    PolarCoefficients pc;
    dnnl::matmul square;  // A <- c Ab Ab + b A
    dnnl::matmul apply;   // X <- Bb Xb + a X
  };
  Index k = -1, l = -1;
  Mat X, A;                             // fp32: the iterate; the Gram matrix, then B in its place
  std::vector<std::uint16_t> Xb, Ab;    // bf16 bit patterns (oneDNN's bf16 layout)
  dnnl::engine engine;
  dnnl::stream stream;
  dnnl::memory::desc kl_f32, kl_bf16, kk_f32, kk_bf16, kk_bf16_t, lk_bf16_t;
  dnnl::matmul gram;                    // A = Xb Xb^T
  std::vector<StepProducts> steps;      // per step of the schedule (steps with equal coefficients share)
  std::vector<int> step_of;             // step s -> index into `steps`
  dnnl::reorder to_bf16_kl, to_bf16_kk;
  std::string impl;                     // the matmul implementation oneDNN chose (e.g. brg:avx512_core_amx_bf16)

  /// Makes the primitives for a k_ x l_ iterate and the coefficients `pcs` (one per step).
  void prepare(Index k_, Index l_, const std::vector<PolarCoefficients>& pcs) {
    if (k_ == k && l_ == l && same_schedule(pcs)) return;
    using dnnl::memory;
    using dt = memory::data_type;
    using tag = memory::format_tag;
    try {
      if (!engine) {
        engine = dnnl::engine(dnnl::engine::kind::cpu, 0);
        stream = dnnl::stream(engine);
      }
      const memory::dim K = k_, L = l_;
      kl_f32 = memory::desc({K, L}, dt::f32, tag::ab);
      kl_bf16 = memory::desc({K, L}, dt::bf16, tag::ab);
      lk_bf16_t = memory::desc({L, K}, dt::bf16, tag::ba);  // Xb^T: the same bytes as Xb, read transposed
      kk_f32 = memory::desc({K, K}, dt::f32, tag::ab);
      kk_bf16 = memory::desc({K, K}, dt::bf16, tag::ab);
      kk_bf16_t = memory::desc({K, K}, dt::bf16, tag::ba);  // Ab read transposed: Ab^T = Ab (A symmetric)
      const dnnl::matmul::primitive_desc pg(dnnl::matmul::desc(kl_bf16, lk_bf16_t, kk_f32), engine);
      gram = dnnl::matmul(pg);
      steps.clear();
      step_of.clear();
      for (const PolarCoefficients& pc : pcs) {
        std::size_t i = 0;
        while (i < steps.size() && !(steps[i].pc.a == pc.a && steps[i].pc.b == pc.b && steps[i].pc.c == pc.c)) ++i;
        if (i == steps.size()) {
          dnnl::primitive_attr sq;
          sq.set_output_scales(0, {float(pc.c)});
          dnnl::post_ops sq_sum;
          sq_sum.append_sum(float(pc.b));
          sq.set_post_ops(sq_sum);
          dnnl::primitive_attr ap;
          dnnl::post_ops ap_sum;
          ap_sum.append_sum(float(pc.a));
          ap.set_post_ops(ap_sum);
          const dnnl::matmul::primitive_desc ps(dnnl::matmul::desc(kk_bf16, kk_bf16_t, kk_f32), sq, engine);
          const dnnl::matmul::primitive_desc pa(dnnl::matmul::desc(kk_bf16, kl_bf16, kl_f32), ap, engine);
          steps.push_back({pc, dnnl::matmul(ps), dnnl::matmul(pa)});
        }
        step_of.push_back(int(i));
      }
      to_bf16_kl = dnnl::reorder(dnnl::reorder::primitive_desc(engine, kl_f32, engine, kl_bf16));
      to_bf16_kk = dnnl::reorder(dnnl::reorder::primitive_desc(engine, kk_f32, engine, kk_bf16));
      impl = pg.impl_info_str();
    } catch (const dnnl::error& e) {
      k = l = -1;
      steps.clear();
      step_of.clear();
      throw std::runtime_error(std::string("steepest::OneDnnBf16: oneDNN has no bf16 matmul here (") + e.what() +
                               "); it needs a CPU with AVX-512; use the default EigenProducts");
    }
    X.resize(k_, l_);
    A.resize(k_, k_);
    Xb.resize(std::size_t(k_ * l_));
    Ab.resize(std::size_t(k_ * k_));
    k = k_;
    l = l_;
  }

  dnnl::memory mem(const dnnl::memory::desc& d, void* p) const { return dnnl::memory(d, engine, p); }

 private:
  bool same_schedule(const std::vector<PolarCoefficients>& pcs) const {
    if (pcs.size() != step_of.size()) return false;
    for (std::size_t s = 0; s < pcs.size(); ++s) {
      const PolarCoefficients& q = steps[std::size_t(step_of[s])].pc;
      if (!(q.a == pcs[s].a && q.b == pcs[s].b && q.c == pcs[s].c)) return false;
    }
    return true;
  }
};

/// Newton-Schulz products engine: bf16 inputs, fp32 accumulation, on oneDNN (see the file comment).
struct OneDnnBf16 {
  template <class Scalar>
  using Workspace = OneDnnNewtonSchulzWorkspace;
  static std::string name() { return "onednn-bf16"; }

  template <class Schedule, class D, class O>
  static void run(const Eigen::MatrixBase<D>& G, const Eigen::MatrixBase<O>& out_, int steps,
                  OneDnnNewtonSchulzWorkspace& ws) {
    using Scalar = typename D::Scalar;
    O& out = writable(out_);
    NewtonSchulzStart<Scalar> st;
    if (!newton_schulz_start<Schedule>(G, out, steps, "newton_schulz (oneDNN bf16)", st)) return;
    std::vector<PolarCoefficients> pcs(static_cast<std::size_t>(steps));
    for (int s = 0; s < steps; ++s) pcs[std::size_t(s)] = Schedule::at(s, steps);
    ws.prepare(st.k, st.l, pcs);  // throws before anything is written when oneDNN cannot serve this CPU
    // The normalization in the input's precision, then fp32 (the iterate's type).
    if (st.tall)
      detail::assign_transposed(ws.X, G, st.inv);
    else
      ws.X = (G * st.inv).template cast<float>();

    using dnnl::memory;
    memory x = ws.mem(ws.kl_f32, ws.X.data()), xb = ws.mem(ws.kl_bf16, ws.Xb.data()),
           xbt = ws.mem(ws.lk_bf16_t, ws.Xb.data());
    memory a = ws.mem(ws.kk_f32, ws.A.data()), ab = ws.mem(ws.kk_bf16, ws.Ab.data()),
           abt = ws.mem(ws.kk_bf16_t, ws.Ab.data());
    // One stream, in order: each primitive starts after the one before it has finished.
    for (int s = 0; s < steps; ++s) {
      const auto& p = ws.steps[std::size_t(ws.step_of[std::size_t(s)])];
      ws.to_bf16_kl.execute(ws.stream, x, xb);
      ws.gram.execute(ws.stream, {{DNNL_ARG_SRC, xb}, {DNNL_ARG_WEIGHTS, xbt}, {DNNL_ARG_DST, a}});
      ws.to_bf16_kk.execute(ws.stream, a, ab);
      p.square.execute(ws.stream, {{DNNL_ARG_SRC, ab}, {DNNL_ARG_WEIGHTS, abt}, {DNNL_ARG_DST, a}});
      ws.to_bf16_kk.execute(ws.stream, a, ab);
      p.apply.execute(ws.stream, {{DNNL_ARG_SRC, ab}, {DNNL_ARG_WEIGHTS, xb}, {DNNL_ARG_DST, x}});
    }
    ws.stream.wait();
    if (st.tall)
      detail::assign_transposed(out, ws.X);
    else
      out = ws.X.template cast<Scalar>();
  }
};

/// The spectral norm with bf16 Newton-Schulz products (quintic, 5 steps), and its
/// Polar Express counterpart.
using SpectralBf16 = SpectralNorm<NewtonSchulz<QuinticSchedule, QuinticSchedule::default_steps, OneDnnBf16>>;
using SpectralPolarExpressBf16 =
    SpectralNorm<NewtonSchulz<PolarExpressSchedule, PolarExpressSchedule::default_steps, OneDnnBf16>>;

}  // namespace steepest
