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
//   Xb = bf16(X)                 oneDNN reorder (round to nearest even)
//   A  = Xb Xb^T                 matmul, fp32 accumulation and output
//   Ab = bf16(A);  C = Ab Ab     matmul
//   B  = b A + c C;  Bb = bf16(B)
//   X  = a X + Bb Xb             matmul, then the fp32 axpy
// so every product sees bf16 inputs and every sum is fp32; the iterate X itself stays fp32 between
// steps (rounding it to bf16 only as a product's input). A double input is rounded the same way
// (the products are bf16 either way) and the result returned in double.
//
// Threads: oneDNN runs its matmuls and reorders on its own OpenMP team (omp_set_num_threads /
// OMP_NUM_THREADS). A CPU without a bf16 matmul in oneDNN (no AVX-512) makes the first call throw
// std::runtime_error naming the reason, before anything is written.
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
/// the current shape (rebuilt when the shape changes; oneDNN JIT-compiles a primitive once).
struct OneDnnNewtonSchulzWorkspace {
  using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Index k = -1, l = -1;
  Mat X, Y, A, C;                       // fp32: iterate, next iterate, Gram matrix, its square
  std::vector<std::uint16_t> Xb, Ab;    // bf16 bit patterns (oneDNN's bf16 layout)
  dnnl::engine engine;
  dnnl::stream stream;
  dnnl::memory::desc kl_f32, kl_bf16, kk_f32, kk_bf16, lk_bf16_t;
  dnnl::matmul gram, square, apply;     // A = Xb Xb^T;  C = Ab Ab;  Y = Ab Xb
  dnnl::reorder to_bf16_kl, to_bf16_kk;
  std::string impl;                     // the matmul implementation oneDNN chose (e.g. brg:avx512_core_amx_bf16)

  void prepare(Index k_, Index l_) {
    if (k_ == k && l_ == l) return;
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
      lk_bf16_t = memory::desc({L, K}, dt::bf16, tag::ba);  // X^T: the same bytes as Xb, read transposed
      kk_f32 = memory::desc({K, K}, dt::f32, tag::ab);
      kk_bf16 = memory::desc({K, K}, dt::bf16, tag::ab);
      const dnnl::matmul::primitive_desc pg(dnnl::matmul::desc(kl_bf16, lk_bf16_t, kk_f32), engine);
      const dnnl::matmul::primitive_desc ps(dnnl::matmul::desc(kk_bf16, kk_bf16, kk_f32), engine);
      const dnnl::matmul::primitive_desc pa(dnnl::matmul::desc(kk_bf16, kl_bf16, kl_f32), engine);
      gram = dnnl::matmul(pg);
      square = dnnl::matmul(ps);
      apply = dnnl::matmul(pa);
      to_bf16_kl = dnnl::reorder(dnnl::reorder::primitive_desc(engine, kl_f32, engine, kl_bf16));
      to_bf16_kk = dnnl::reorder(dnnl::reorder::primitive_desc(engine, kk_f32, engine, kk_bf16));
      impl = pg.impl_info_str();
    } catch (const dnnl::error& e) {
      k = l = -1;
      throw std::runtime_error(std::string("steepest::OneDnnBf16: oneDNN has no bf16 matmul here (") + e.what() +
                               "); it needs a CPU with AVX-512; use the default EigenProducts");
    }
    X.resize(k_, l_);
    Y.resize(k_, l_);
    A.resize(k_, k_);
    C.resize(k_, k_);
    Xb.resize(std::size_t(k_ * l_));
    Ab.resize(std::size_t(k_ * k_));
    k = k_;
    l = l_;
  }

  dnnl::memory mem(const dnnl::memory::desc& d, void* p) const { return dnnl::memory(d, engine, p); }
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
    ws.prepare(st.k, st.l);  // throws before anything is written when oneDNN cannot serve this CPU
    // The normalization in the input's precision, then fp32 (the iterate's type).
    if (st.tall)
      ws.X = (G.transpose() * st.inv).template cast<float>();
    else
      ws.X = (G * st.inv).template cast<float>();

    using dnnl::memory;
    memory xb = ws.mem(ws.kl_bf16, ws.Xb.data()), xbt = ws.mem(ws.lk_bf16_t, ws.Xb.data());
    memory ab = ws.mem(ws.kk_bf16, ws.Ab.data());
    memory a = ws.mem(ws.kk_f32, ws.A.data()), c = ws.mem(ws.kk_f32, ws.C.data());
    for (int s = 0; s < steps; ++s) {
      const PolarCoefficients pc = Schedule::at(s, steps);
      memory x = ws.mem(ws.kl_f32, ws.X.data()), y = ws.mem(ws.kl_f32, ws.Y.data());
      ws.to_bf16_kl.execute(ws.stream, x, xb);
      ws.gram.execute(ws.stream, {{DNNL_ARG_SRC, xb}, {DNNL_ARG_WEIGHTS, xbt}, {DNNL_ARG_DST, a}});
      ws.to_bf16_kk.execute(ws.stream, a, ab);
      ws.square.execute(ws.stream, {{DNNL_ARG_SRC, ab}, {DNNL_ARG_WEIGHTS, ab}, {DNNL_ARG_DST, c}});
      ws.stream.wait();
      ws.A = float(pc.b) * ws.A + float(pc.c) * ws.C;  // B, in A's buffer (A is not needed again)
      ws.to_bf16_kk.execute(ws.stream, a, ab);
      ws.apply.execute(ws.stream, {{DNNL_ARG_SRC, ab}, {DNNL_ARG_WEIGHTS, xb}, {DNNL_ARG_DST, y}});
      ws.stream.wait();
      ws.Y += float(pc.a) * ws.X;
      std::swap(ws.X, ws.Y);  // swaps buffers; the memory objects are made anew each step
    }
    if (st.tall)
      out = ws.X.transpose().template cast<Scalar>();
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
