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
//   Bb = bf16(A);  X <- Bb Xb + a X    matmul, or from k >= 1536 a 1x1 convolution (below); a X
//                                      its sum post-op, written over X
// so every product sees bf16 inputs and every sum is fp32 and happens inside the product that
// feeds it (no pass of its own); the iterate X itself stays fp32 between steps (rounding it to
// bf16 only as a product's input). A double input is rounded the same way (the products are
// bf16 either way) and the result returned in double.
//
// Both symmetric products, A = Xb Xb^T and Ab Ab, are formed on their upper block triangles when
// k >= 1024, or k >= 768 with l >= 2k: the rows of the left operand are cut into 4 blocks and
// the 10 blocks i <= j are each one matmul (S_i S_j^T, the right operand read transposed in
// place; Ab is symmetric, so Ab Ab = Ab Ab^T), 10/16 of the flops. oneDNN 2.6 runs such strided
// products on its `gemm:jit` kernels, as fast per flop here but 3x slower with an output scale
// and a sum post-op, so the blocks carry none: one pass over the upper blocks
// (detail::symmetric_blocks_to_bf16, split over the threads) rounds A to Ab, and another forms
// Bb = bf16(c C + b A) from the square's blocks C, each writing a block and its transpose (no
// fp32 mirror, no separate conversion). Measured (docs/PERFORMANCE.md), time against one full
// square with post-ops: 0.92-0.94 at 4096 x 4096; 0.87 / 0.95 (quintic, 1 / 2 threads) and
// 0.96 / 1.05 (Polar Express) at 1024 x 1024, 0.80 / 0.82 at 1536 x 1536 (the engine alone);
// 0.96-0.99 at 1024 x 4096 and 4096 x 1024. Below these sizes the ten calls and the passes cost
// more than the flops they save (512 x 512 at 2 threads: 1.36), so smaller iterates keep one
// full product each, the square's sums as its post-ops. The last product,
// B X, has no symmetry to use.
//
// From k >= 1536 the last product is a 1x1 convolution, oneDNN 2.6's better-tuned AMX kernel
// for it (brgconv_1x1), where oneDNN has one that reads Bb and writes X as they are stored: Bb is the source (k channels at k points), X the destination (l channels),
// and the weights Xb^T, reordered from Xb each step into the blocked layout the kernel picks.
// Measured here (one thread, the whole iteration, convolution / matmul): 0.82-0.90 from k = 2048,
// 0.95-0.97 at k = 1536, but 1.00-1.06 at k = 1024 and below, where the reorder costs what the
// faster product saves (docs/PERFORMANCE.md). Every buffer a product reads or writes starts on a
// cache line (detail::CacheLineAllocator).
//
// The sums' scales are fixed when a primitive is made (oneDNN 2.x), so the workspace keeps one
// set of primitives per distinct (a, b, c) of the schedule: one for the quintic, one per step for
// Polar Express.
#pragma once

#include <oneapi/dnnl/dnnl.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cstdint>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "../backend/eigen/bf16.hpp"
#include "newton_schulz.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace steepest {

// Packet types lose their vector attributes, with a warning, as template arguments
// (IntPacket<Packet16f>); bf16.hpp silences the same warning.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif

namespace detail {

/// std::allocator on 64-byte (cache-line) boundaries, whatever the build's flags. Why: oneDNN's
/// AMX kernels load each operand row as whole tiles, and a row that starts 16 bytes into a line
/// (where malloc puts a large block) straddles one more line per load: measured at 1024x4096, one
/// thread, the last product took 19.3 ms from a 16-byte-aligned buffer and 10.7 ms from a
/// 64-byte-aligned one, with the same descriptors.
template <class T>
struct CacheLineAllocator {
  using value_type = T;
  static constexpr std::size_t alignment = 64;
  CacheLineAllocator() = default;
  template <class U>
  CacheLineAllocator(const CacheLineAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(alignment))); }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p, std::align_val_t(alignment)); }
  template <class U>
  bool operator==(const CacheLineAllocator<U>&) const noexcept { return true; }
  template <class U>
  bool operator!=(const CacheLineAllocator<U>&) const noexcept { return false; }
};

/// dst = bf16(alpha P + beta Q), rounded to nearest even, for a symmetric k x k result of which
/// only the upper block triangle of P and Q was formed (row blocks [cut[i], cut[i + 1])): each
/// block (i, j), i <= j, is rounded once and written to (i, j) and, transposed, to (j, i). P, Q
/// fp32 and dst bf16 bits, all row-major k x k; Q null means beta Q = 0. The ten block pairs are
/// split over the OpenMP threads (the rule is per entry, so the same bits at any thread count).
/// Why one pass: it replaces a mirror of the fp32 blocks, a sum and a conversion, three passes
/// over k^2 entries (and it reads only the upper triangle).
inline void symmetric_blocks_to_bf16(const float* P, float alpha, const float* Q, float beta, Index k,
                                     const std::vector<Index>& cut, std::uint16_t* dst) {
  using namespace simd;
  using Pk = Packet<float>;
  using Pi = IntPacket<Pk>;
  constexpr Index PS = packet_size<float>, T = 32;
  std::vector<std::pair<Index, Index>> pairs;
  for (std::size_t i = 0; i + 1 < cut.size(); ++i)
    for (std::size_t j = i; j + 1 < cut.size(); ++j) pairs.emplace_back(Index(i), Index(j));
  // Round to nearest even: add 0x7FFF plus the lowest kept bit, then keep the high 16 bits
  // (store_bf16's rule with that addend; NaN lanes are left unrounded there).
  auto rne = [](const Pk& x) {
    const Pi u = ei::preinterpret<Pi>(x);
    return ei::padd(ei::pset1<Pi>(0x7FFF), ei::pand(ei::plogical_shift_right<16>(u), ei::pset1<Pi>(1)));
  };
  auto rne1 = [](float x) {
    std::uint32_t u;
    std::memcpy(&u, &x, sizeof u);
    return bf16_round(x, 0x7FFFU + ((u >> 16) & 1U));
  };
  const Index npairs = Index(pairs.size());
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic, 1) if (!omp_in_parallel())
#endif
  for (Index q = 0; q < npairs; ++q) {
    const auto [bi, bj] = pairs[std::size_t(q)];
    const Index r0 = cut[std::size_t(bi)], r1 = cut[std::size_t(bi) + 1];
    const Index c0 = cut[std::size_t(bj)], c1 = cut[std::size_t(bj) + 1];
    alignas(64) std::uint16_t tile[T * T];  // one rounded tile, rows of T
    for (Index i = r0; i < r1; i += T)
      for (Index j = c0; j < c1; j += T) {
        const Index r = std::min(T, r1 - i), c = std::min(T, c1 - j);
        for (Index a = 0; a < r; ++a) {
          const float* p = P + (i + a) * k + j;
          const float* qq = Q ? Q + (i + a) * k + j : nullptr;
          std::uint16_t* out = tile + a * T;
          Index b = 0;
          for (; b + PS <= c; b += PS) {
            Pk x = ei::pmul(ei::pset1<Pk>(alpha), ei::ploadu<Pk>(p + b));
            if (qq) x = ei::padd(x, ei::pmul(ei::pset1<Pk>(beta), ei::ploadu<Pk>(qq + b)));
            store_bf16(out + b, x, rne(x));
          }
          for (; b < c; ++b) out[b] = rne1(alpha * p[b] + (qq ? beta * qq[b] : 0.0f));
          std::memcpy(dst + (i + a) * k + j, out, std::size_t(c) * sizeof(std::uint16_t));
        }
        if (bi != bj)  // the transposed tile below the diagonal
          for (Index b = 0; b < c; ++b)
            for (Index a = 0; a < r; ++a) dst[(j + b) * k + i + a] = tile[a * T + b];
      }
  }
}

}  // namespace detail

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

/// Scratch of OneDnnBf16: the fp32 iterate, the bf16 product inputs and the oneDNN primitives of
/// the current shape and schedule (rebuilt when either changes; oneDNN JIT-compiles a primitive
/// once).
struct OneDnnNewtonSchulzWorkspace {
  /// A row-major float matrix.
  using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  /// One matmul with its operands bound (the buffers below do not move between prepare()s).
  struct Product {
    dnnl::primitive mm;  ///< a matmul, or (the last product) a 1x1 convolution
    dnnl::memory src;  ///< Its memories.
    dnnl::memory wei;  ///< Its memories.
    dnnl::memory dst;  ///< Its memories.
    /// Executes it on s.
    void run(const dnnl::stream& s) const {
      mm.execute(s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}});
    }
  };
  /// One reorder (here fp32 -> bf16, round to nearest even) with its operands bound.
  struct Conversion {
    /// The primitive.
    dnnl::reorder reorder;
    dnnl::memory from;  ///< Its memories.
    dnnl::memory to;  ///< Its memories.
    /// Executes it on s.
    void run(const dnnl::stream& s) const {
      dnnl::memory f = from, t = to;  // handles: execute() takes them by non-const reference
      reorder.execute(s, f, t);
    }
  };
  /// The products of one step whose sums depend on the step's coefficients.
  struct StepProducts {
    /// The step's coefficients.
    PolarCoefficients pc;
    Product square;               ///< A <- c Ab Ab + b A (Ab read transposed: Ab^T = Ab); unused when blocked
    Product apply;                ///< X <- Bb Xb + a X: a matmul, or a 1x1 convolution reading Xw (apply_conv)
  };
  Index k = -1;  ///< The prepared shape (k x l).
  Index l = -1;  ///< The prepared shape (k x l).
  // fp32, row-major, on cache lines (detail::CacheLineAllocator; an Eigen matrix is aligned only
  // as far as the build's flags say): the k x l iterate X; the k x k Gram matrix A, then B in its
  // place; C = Ab Ab on its upper block triangle (blocked only). iterate() views X as a matrix.
  std::vector<float, detail::CacheLineAllocator<float>> X;  ///< fp32 iterate, Gram matrix and polynomial.
  std::vector<float, detail::CacheLineAllocator<float>> A;  ///< fp32 iterate, Gram matrix and polynomial.
  std::vector<float, detail::CacheLineAllocator<float>> C;  ///< fp32 iterate, Gram matrix and polynomial.
  std::vector<std::uint16_t, detail::CacheLineAllocator<std::uint16_t>> Xb;  ///< bf16 bit patterns
  std::vector<std::uint16_t, detail::CacheLineAllocator<std::uint16_t>> Ab;  ///< bf16 bit patterns
  std::vector<std::uint16_t, detail::CacheLineAllocator<std::uint16_t>> Xw;  ///< Xb^T, blocked for the last product
  std::vector<Index> cut;               ///< row block i of A is [cut[i], cut[i + 1])
  bool blocked = false;                 ///< both symmetric products on their block triangles (file comment)
  /// oneDNN's CPU engine.
  dnnl::engine engine;
  /// Its stream.
  dnnl::stream stream;
  std::vector<Product> gram;            ///< A = Xb Xb^T, on its upper block triangle (or whole)
  std::vector<Product> square_tri;      ///< C = Ab Ab^T (= Ab Ab) on its upper block triangle, when blocked
  std::vector<StepProducts> steps;      ///< per step of the schedule (steps with equal coefficients share)
  std::vector<int> step_of;             ///< step s -> index into `steps`
  Conversion to_bf16_kl;  ///< Xb = bf16(X), Ab = bf16(A) (the latter unblocked only)
  Conversion to_bf16_kk;  ///< Xb = bf16(X), Ab = bf16(A) (the latter unblocked only)
  Conversion to_apply_weights;          ///< Xw = Xb^T, reordered into the blocked weights layout
  bool apply_conv = false;              ///< the last product is a 1x1 convolution (file comment)
  bool conv_wanted = false;             ///< k >= convolution_from_k when prepared (so a CPU without the
                                        // convolution keeps its primitives instead of re-probing)
  /// The last product runs as a 1x1 convolution from this k on (file comment: measured faster
  /// from k = 1536, slower below), where oneDNN has a convolution that reads Bb and writes X in
  /// their plain layouts (else the matmul). A tuning point, read by prepare(); the tests lower it
  /// to run the convolution on small shapes.
  Index convolution_from_k = 1536;
  std::string impl;                     ///< the implementation oneDNN chose for the Gram product (e.g. brg:avx512_core_amx_bf16)

  OneDnnNewtonSchulzWorkspace() = default;
  // The primitives are bound to this workspace's own buffers, so a copy starts empty (it prepares
  // its own on first use, with the same convolution_from_k); a move keeps them (std::vector
  // moves keep the buffers).
  /// A copy prepares anew on first use.
  OneDnnNewtonSchulzWorkspace(const OneDnnNewtonSchulzWorkspace& o) : convolution_from_k(o.convolution_from_k) {}
  /// A copy prepares anew on first use.
  OneDnnNewtonSchulzWorkspace& operator=(const OneDnnNewtonSchulzWorkspace& o) {
    if (this != &o) *this = OneDnnNewtonSchulzWorkspace(o);
    return *this;
  }
  /// Takes the prepared primitives.
  OneDnnNewtonSchulzWorkspace(OneDnnNewtonSchulzWorkspace&&) = default;
  /// Takes the prepared primitives.
  OneDnnNewtonSchulzWorkspace& operator=(OneDnnNewtonSchulzWorkspace&&) = default;

  /// The fp32 iterate as a k x l row-major matrix (after prepare()).
  Eigen::Map<Mat> iterate() { return Eigen::Map<Mat>(X.data(), k, l); }

  /// Makes the primitives for a k_ x l_ iterate and the coefficients `pcs` (one per step).
  void prepare(Index k_, Index l_, const std::vector<PolarCoefficients>& pcs) {
    const bool want_conv = k_ >= convolution_from_k;
    if (k_ == k && l_ == l && same_schedule(pcs) && want_conv == conv_wanted) return;
    k = l = -1;  // until every primitive is made
    X.resize(std::size_t(k_ * l_));
    A.resize(std::size_t(k_ * k_));
    Xb.resize(std::size_t(k_ * l_));
    Ab.resize(std::size_t(k_ * k_));
    blocked = k_ >= 1024 || (k_ >= 768 && l_ >= 2 * k_);  // see the file comment
    C.resize(blocked ? std::size_t(k_ * k_) : 0);
    const Index blocks = blocked ? 4 : 1;
    const Index h = blocks == 1 ? k_ : (k_ + blocks - 1) / blocks;
    cut.clear();
    for (Index i = 0; i < blocks; ++i) cut.push_back(i * h);
    cut.push_back(k_);
    using dnnl::memory;
    using dt = memory::data_type;
    try {
      if (!engine) {
        engine = dnnl::engine(dnnl::engine::kind::cpu, 0);
        stream = dnnl::stream(engine);
      }
      gram = triangle_blocks(Xb.data(), l_, k_, A.data());
      square_tri.clear();
      if (blocked) square_tri = triangle_blocks(Ab.data(), k_, k_, C.data());
      steps.clear();
      step_of.clear();
      Xw.clear();
      to_apply_weights = Conversion();
      conv_wanted = want_conv;  // asked for; apply_conv says whether this CPU's oneDNN could
      apply_conv = want_conv && convolution_reads_plain_layouts(k_, l_);
      const memory::desc kk_bf16 = dense(k_, k_, dt::bf16), kl_bf16 = dense(k_, l_, dt::bf16),
                         kl_f32 = dense(k_, l_, dt::f32), kk_f32 = dense(k_, k_, dt::f32),
                         kk_bf16_t({k_, k_}, dt::bf16, memory::format_tag::ba);
      for (const PolarCoefficients& pc : pcs) {
        std::size_t i = 0;
        while (i < steps.size() && !same_coefficients(steps[i].pc, pc)) ++i;
        if (i == steps.size()) {
          dnnl::primitive_attr ap;
          dnnl::post_ops ap_sum;
          ap_sum.append_sum(float(pc.a));
          ap.set_post_ops(ap_sum);
          Product apply;
          if (apply_conv) {
            const dnnl::convolution_forward::primitive_desc pa = apply_desc(k_, l_, ap);
            if (Xw.empty()) {
              Xw.resize(pa.weights_desc().get_size() / sizeof(std::uint16_t));
              const memory::desc xbt({l_, k_, 1, 1}, dt::bf16, memory::dims{1, l_, 1, 1});  // Xb^T, in place
              to_apply_weights.from = memory(xbt, engine, Xb.data());
              to_apply_weights.to = memory(pa.weights_desc(), engine, Xw.data());
              to_apply_weights.reorder = dnnl::reorder(to_apply_weights.from, to_apply_weights.to);
            } else if (pa.weights_desc() != to_apply_weights.to.get_desc()) {
              throw std::runtime_error("steepest::OneDnnBf16: oneDNN chose different weight layouts for one shape");
            }
            apply = {dnnl::convolution_forward(pa), memory(pa.src_desc(), engine, Ab.data()), to_apply_weights.to,
                     memory(pa.dst_desc(), engine, X.data())};
          } else {
            const dnnl::matmul::primitive_desc pa(dnnl::matmul::desc(kk_bf16, kl_bf16, kl_f32), ap, engine);
            apply = {dnnl::matmul(pa), memory(kk_bf16, engine, Ab.data()), memory(kl_bf16, engine, Xb.data()),
                     memory(kl_f32, engine, X.data())};
          }
          Product square;  // blocked: the square is square_tri and its sums are a pass (file comment)
          if (!blocked) {
            dnnl::primitive_attr sq;
            sq.set_output_scales(0, {float(pc.c)});
            dnnl::post_ops sq_sum;
            sq_sum.append_sum(float(pc.b));
            sq.set_post_ops(sq_sum);
            const dnnl::matmul::primitive_desc ps(dnnl::matmul::desc(kk_bf16, kk_bf16_t, kk_f32), sq, engine);
            square = {dnnl::matmul(ps), memory(kk_bf16, engine, Ab.data()), memory(kk_bf16_t, engine, Ab.data()),
                      memory(kk_f32, engine, A.data())};
          }
          steps.push_back({pc, square, apply});
        }
        step_of.push_back(int(i));
      }
      to_bf16_kl.from = memory(kl_f32, engine, X.data());
      to_bf16_kl.to = memory(kl_bf16, engine, Xb.data());
      to_bf16_kl.reorder = dnnl::reorder(to_bf16_kl.from, to_bf16_kl.to);
      to_bf16_kk = Conversion();  // blocked: the passes over the blocks round A and B instead
      if (!blocked) {
        to_bf16_kk.from = memory(kk_f32, engine, A.data());
        to_bf16_kk.to = memory(kk_bf16, engine, Ab.data());
        to_bf16_kk.reorder = dnnl::reorder(to_bf16_kk.from, to_bf16_kk.to);
      }
    } catch (const dnnl::error& e) {
      steps.clear();
      step_of.clear();
      gram.clear();
      square_tri.clear();
      throw std::runtime_error(std::string("steepest::OneDnnBf16: oneDNN has no bf16 matmul here (") + e.what() +
                               "); it needs a CPU with AVX-512; use the default EigenProducts");
    }
    k = k_;
    l = l_;
  }

 private:
  /// X <- Bb Xb + a X as a 1x1 convolution (see the file comment): the k x k left operand Bb is
  /// the source, k channels at k points ([1, k, 1, k], nhwc: Bb row-major); the l output channels
  /// have the weights W(n, i) = Xb(i, n), i.e. Xb^T, in the layout the kernel picks (`any`); the
  /// destination [1, l, 1, k] nhwc is X row-major, its sum post-op a X. The layouts are checked:
  /// a primitive that would read them differently is refused rather than run on the wrong bytes.
  dnnl::convolution_forward::primitive_desc apply_desc(Index k_, Index l_, const dnnl::primitive_attr& attr) const {
    using dnnl::memory;
    using dt = memory::data_type;
    using tag = memory::format_tag;
    const memory::desc src({1, k_, 1, k_}, dt::bf16, tag::nhwc), dst({1, l_, 1, k_}, dt::f32, tag::nhwc),
        wei({l_, k_, 1, 1}, dt::bf16, tag::any);
    const dnnl::convolution_forward::primitive_desc pd(
        dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src,
                                        wei, dst, {1, 1}, {0, 0}, {0, 0}),
        attr, engine);
    if (pd.src_desc() != src || pd.dst_desc() != dst)
      throw std::runtime_error("steepest::OneDnnBf16: oneDNN's convolution wants other layouts than the iterate's");
    return pd;
  }

  /// Whether this CPU's oneDNN has the convolution of apply_desc on Bb and X as they are stored
  /// (another kernel could want blocked source or destination layouts, or none exist): if not,
  /// the last product stays a matmul rather than the step failing.
  bool convolution_reads_plain_layouts(Index k_, Index l_) const {
    dnnl::primitive_attr attr;
    dnnl::post_ops sum;
    sum.append_sum(1.0f);
    attr.set_post_ops(sum);
    try {
      (void)apply_desc(k_, l_, attr);
      return true;
    } catch (const std::exception&) {  // dnnl::error (no such convolution) or the layout check
      return false;
    }
  }

  static dnnl::memory::desc dense(Index rows, Index cols, dnnl::memory::data_type t) {
    return dnnl::memory::desc({rows, cols}, t, dnnl::memory::format_tag::ab);
  }

  /// The products D(i, j) = S_i S_j^T for row blocks i <= j of S (k x l, bf16, row-major), into
  /// D (f32, k x k); S_j^T is S_j read transposed in place. S = Xb gives the Gram matrix; S = Ab
  /// (symmetric) gives Ab Ab.
  std::vector<Product> triangle_blocks(std::uint16_t* S, Index l_, Index k_, float* D) {
    using dnnl::memory;
    using dt = memory::data_type;
    std::vector<Product> out;
    for (std::size_t i = 0; i + 1 < cut.size(); ++i)
      for (std::size_t j = i; j + 1 < cut.size(); ++j) {
        const Index mi = cut[i + 1] - cut[i], nj = cut[j + 1] - cut[j];
        const memory::desc src({mi, l_}, dt::bf16, memory::dims{l_, 1});
        const memory::desc wei({l_, nj}, dt::bf16, memory::dims{1, l_});
        const memory::desc dst({mi, nj}, dt::f32, memory::dims{k_, 1});
        const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, wei, dst), engine);
        if (i == 0 && j == 0 && D == A.data()) impl = pd.impl_info_str();
        out.push_back({dnnl::matmul(pd), memory(src, engine, S + cut[i] * l_), memory(wei, engine, S + cut[j] * l_),
                       memory(dst, engine, D + cut[i] * k_ + cut[j])});
      }
    return out;
  }

  static bool same_coefficients(const PolarCoefficients& p, const PolarCoefficients& q) {
    return p.a == q.a && p.b == q.b && p.c == q.c;
  }

  bool same_schedule(const std::vector<PolarCoefficients>& pcs) const {
    if (pcs.size() != step_of.size()) return false;
    for (std::size_t s = 0; s < pcs.size(); ++s) {
      if (!same_coefficients(steps[std::size_t(step_of[s])].pc, pcs[s])) return false;
    }
    return true;
  }
};

/// Newton-Schulz products engine: bf16 inputs, fp32 accumulation, on oneDNN (see the file comment).
struct OneDnnBf16 {
  /// Scratch reused across calls (the workspace argument of dualize).
  template <class Scalar>
  using Workspace = OneDnnNewtonSchulzWorkspace;
  /// "onednn-bf16".
  static std::string name() { return "onednn-bf16"; }

  /// out = Newton-Schulz_steps(G), bf16 products with fp32 sums.
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
    Eigen::Map<OneDnnNewtonSchulzWorkspace::Mat> X = ws.iterate();
    // The normalization in the input's precision, then fp32 (the iterate's type).
    if (st.tall)
      detail::assign_transposed(X, G, st.inv);
    else
      detail::assign_scaled(X, G, st.inv);

    // One stream, in order: each primitive starts after the one before it has finished (the CPU
    // stream runs them in the calling thread); the passes over the blocks wait for the stream first.
    const Index k = ws.k;
    for (int s = 0; s < steps; ++s) {
      const auto& p = ws.steps[std::size_t(ws.step_of[std::size_t(s)])];
      ws.to_bf16_kl.run(ws.stream);
      for (const auto& g : ws.gram) g.run(ws.stream);
      if (ws.blocked) {
        // Ab = bf16(A) and Bb = bf16(c C + b A) from the upper block triangles, mirrored as
        // they are rounded; the square C = Ab Ab on its block triangle, without post-ops.
        ws.stream.wait();
        detail::symmetric_blocks_to_bf16(ws.A.data(), 1.0f, nullptr, 0.0f, k, ws.cut, ws.Ab.data());
        for (const auto& q : ws.square_tri) q.run(ws.stream);
        ws.stream.wait();
        detail::symmetric_blocks_to_bf16(ws.C.data(), float(p.pc.c), ws.A.data(), float(p.pc.b), k, ws.cut,
                                         ws.Ab.data());
      } else {
        ws.to_bf16_kk.run(ws.stream);
        p.square.run(ws.stream);
        ws.to_bf16_kk.run(ws.stream);
      }
      if (ws.apply_conv) ws.to_apply_weights.run(ws.stream);
      p.apply.run(ws.stream);
    }
    ws.stream.wait();
    if (st.tall)
      detail::assign_transposed(out, X);
    else
      detail::assign_cast(out, X);
  }
};

}  // namespace steepest

// SpectralNorm, for the aliases below: included after the engine because the default engine
// (polar/auto_products.hpp, included by spectral.hpp) includes this header.
#include "../norms/spectral.hpp"

namespace steepest {

/// The spectral norm with bf16 Newton-Schulz products (quintic, 5 steps), and its
/// Polar Express counterpart.
using SpectralBf16 = SpectralNorm<NewtonSchulz<QuinticSchedule, QuinticSchedule::default_steps, OneDnnBf16>>;
using SpectralPolarExpressBf16 =
    SpectralNorm<NewtonSchulz<PolarExpressSchedule, PolarExpressSchedule::default_steps, OneDnnBf16>>;

}  // namespace steepest
