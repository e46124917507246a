// steepest/backend/eigen/vectorwise.hpp -- per-row r-norms and r-dual directions on Eigen.
//
// Every row/column geometry reduces to one vector problem, solved row by row:
//   ||g||_r                     (the norm of each row)
//   d = sign(g) |g|^{r-1} / ||g||_r^{r-1}   (the unit vector of the dual norm r* that attains
//                                            <g, d> = ||g||_r, Hoelder's equality case)
// Column geometries call the same code on transposed views, so there is one implementation.
// Closed forms are used for r = 1 (sign), r = 2 (normalize) and r = inf (signed one-hot of the
// largest entry, first one on ties); any other r >= 1 goes through a max-scaled power formula
// so |g|^r cannot overflow or underflow:  t = |g| / max|g|,  ||g||_r = max|g| (sum t^r)^{1/r},
//   d = sign(g) t^{r-1} / (sum t^r)^{(r-1)/r}.
// A zero row gives a zero direction and a zero norm, never NaN.
//
// Loops are Eigen expressions (partial reductions, diagonal products) rather than scalar loops:
// Eigen vectorizes them with SSE2 at -O2 without -ffast-math, whatever the user's flags.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "../../core/config.hpp"
#include "packet.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace steepest::eigen_detail {

/// Scratch space for row/column kernels: per-row factors. Resized on first use only.
template <class Scalar>
struct VectorwiseWorkspace {
  Eigen::Matrix<Scalar, Eigen::Dynamic, 1> a, b;
  Eigen::Matrix<Index, Eigen::Dynamic, 1> idx;
};

inline bool is_inf(double r) { return r == std::numeric_limits<double>::infinity(); }

/// Rows longer than this have their sum of squares taken in blocks (see row_sumsq).
inline constexpr Index kAccurateBlock = 4096;

/// sum_j row_j^2 of one row, in double. Blocks of kAccurateBlock entries are summed in the row's
/// scalar type (Eigen's vectorized reduction) and the block sums added in double: one float
/// accumulator over the 3e5 entries of a 300 x 1000 tensor taken as one vector drifted 4e-5
/// relative from the exact sum (measured), the size of error a whole-tensor norm (VectorNorm,
/// the RMS geometry) must not have. Rows of up to one block cost what `squaredNorm()` costs.
/// The blocking itself: block_sum(j, len) is the sum of squares of entries [j, j + len) in the
/// row's scalar type; the blocks are added in double.
template <class BlockSum>
double blocked_sumsq(Index n, BlockSum block_sum) {
  if (n <= kAccurateBlock) return double(block_sum(Index(0), n));
  double s = 0.0;
  for (Index j = 0; j < n; j += kAccurateBlock) s += double(block_sum(j, std::min(kAccurateBlock, n - j)));
  return s;
}
template <class Row>
double row_sumsq(const Row& row) {
  if (row.size() <= kAccurateBlock) return double(row.squaredNorm());  // the row itself, no segment
  return blocked_sumsq(row.size(), [&](Index j, Index len) { return row.segment(j, len).squaredNorm(); });
}

/// row_sumsq of n bf16 entries (their bits at p), bit for bit what row_sumsq gives on the widened
/// float row: each block of kAccurateBlock entries is widened into a per-thread buffer and
/// summed by the same reduction (Eigen's does not depend on where the row lies in memory).
inline double row_sumsq_bf16(const std::uint16_t* p, Index n) {
  using P = simd::Packet<float>;
  constexpr Index PS = simd::packet_size<float>;
  static thread_local std::vector<float> buf;
  buf.resize(std::size_t(std::min(n, kAccurateBlock)));
  return blocked_sumsq(n, [&](Index at, Index len) {  // one block widened, then summed
    const std::uint16_t* q = p + at;
    float* b = buf.data();
    Index j = 0;
    for (; j + PS <= len; j += PS) simd::store(b + j, simd::load_wide<P>(q + j));
    for (; j < len; ++j) b[j] = simd::bf16_to_float(q[j]);
    return Eigen::Map<const Eigen::Matrix<float, 1, Eigen::Dynamic>>(b, len).squaredNorm();
  });
}

/// out(i) = ||G.row(i)||_r, computed in the matrix's scalar type.
template <class D, class V>
void row_norms(const Eigen::MatrixBase<D>& G, double r, V& out) {
  using Scalar = typename D::Scalar;
  out.resize(G.rows());
  if (G.cols() == 0) {
    out.setZero();
    return;
  }
  if (r == 1.0) {
    out.noalias() = G.cwiseAbs().rowwise().sum();
  } else if (r == 2.0 && G.cols() > kAccurateBlock) {
    for (Index i = 0; i < G.rows(); ++i) out(i) = static_cast<Scalar>(std::sqrt(row_sumsq(G.row(i))));
  } else if (r == 2.0) {
    out.noalias() = G.rowwise().norm();
  } else if (is_inf(r)) {
    out.noalias() = G.cwiseAbs().rowwise().maxCoeff();
  } else {
    const Scalar rs = static_cast<Scalar>(r);
    for (Index i = 0; i < G.rows(); ++i) {
      const Scalar mx = G.row(i).cwiseAbs().maxCoeff();
      if (!(mx > Scalar(0))) {
        out(i) = mx;  // 0, or NaN propagated
        continue;
      }
      const Scalar s = (G.row(i).array().abs() / mx).pow(rs).sum();
      out(i) = mx * std::pow(s, Scalar(1) / rs);
    }
  }
}

/// out(j) = sum_i g(i, j)^2 of the row-major rows x cols matrix at g. Each column is summed over
/// the rows in order whatever the thread count, so the sums are the same bits at 1 or N threads:
/// the columns are split into one contiguous range per thread (ranges a multiple of 64 bytes of
/// `out` long, so two threads share at most the one cache line where `out`'s alignment puts a
/// boundary), and each thread reads its range row by row (contiguous, in SIMD packets). Threads
/// when the user's build enables OpenMP, the matrix is large and no parallel region is active (the
/// same team as the fused pass's, see simd::all_finite).
///
/// Four rows are read per sweep of the range, each column still summed over them in order
/// (s += a^2, then s += b^2, ...: the same bits as one row at a time), with a prefetch of the next
/// four rows. Why: one row at a time is a single read stream, which alone runs at a fraction of
/// the bandwidth (see simd::finite_probe); measured on 4096x4096 at 1 thread, cold: 4.2 ms for
/// four streams against 5.0 ms for one (AVX-512), 4.5 against 6.8 (SSE2).
///
/// g may hold bf16 bits (T = std::uint16_t): each entry is widened exactly as it is read, so the
/// sums are those of the widened float matrix, bit for bit.
template <class T, class V>
void col_sumsq(const T* g, Index rows, Index cols, V& out) {
  namespace ei = Eigen::internal;
  using S = simd::wide_t<T>;
  using P = simd::Packet<S>;
  constexpr Index PS = simd::packet_size<S>;
  out.resize(cols);
  out.setZero();
  S* o = out.data();
  auto sq = [](const T* p) {  // one entry squared, in S (the scalar tails)
    const S x = simd::load_wide<S>(p);
    return x * x;
  };
  auto sum_range = [&](Index c0, Index c1) {
    if (c0 >= c1) return;
    Index r = 0;
    for (; r + 4 <= rows; r += 4) {
      const T* a = g + r * cols;
      const T* b = a + cols;
      const T* c = b + cols;
      const T* d = c + cols;
      const T* next = r + 8 <= rows ? d + cols : nullptr;  // the next four rows, when all exist
      Index j = c0;
      for (; j + PS <= c1; j += PS) {
#if defined(__GNUC__)
        if (next) {
          __builtin_prefetch(next + j);
          __builtin_prefetch(next + cols + j);
          __builtin_prefetch(next + 2 * cols + j);
          __builtin_prefetch(next + 3 * cols + j);
        }
#endif
        P s = ei::ploadu<P>(o + j), t = simd::load_wide<P>(a + j);
        s = ei::padd(s, ei::pmul(t, t));
        t = simd::load_wide<P>(b + j);
        s = ei::padd(s, ei::pmul(t, t));
        t = simd::load_wide<P>(c + j);
        s = ei::padd(s, ei::pmul(t, t));
        t = simd::load_wide<P>(d + j);
        s = ei::padd(s, ei::pmul(t, t));
        ei::pstoreu(o + j, s);
      }
      for (; j < c1; ++j) {
        S s = o[j];
        s += sq(a + j);
        s += sq(b + j);
        s += sq(c + j);
        s += sq(d + j);
        o[j] = s;
      }
    }
    for (; r < rows; ++r) {
      const T* a = g + r * cols;
      Index j = c0;
      for (; j + PS <= c1; j += PS) {
        const P t = simd::load_wide<P>(a + j);
        ei::pstoreu(o + j, ei::padd(ei::ploadu<P>(o + j), ei::pmul(t, t)));
      }
      for (; j < c1; ++j) o[j] += sq(a + j);
    }
  };
#if defined(_OPENMP)
  constexpr Index kLine = Index(64 / sizeof(S));
  if (rows * cols >= (Index(1) << 16) && cols >= 2 * kLine && !omp_in_parallel()) {
#pragma omp parallel
    {
      const Index nt = omp_get_num_threads(), t = omp_get_thread_num();
      const Index lines = (cols + kLine - 1) / kLine, per = (lines + nt - 1) / nt;
      sum_range(std::min(cols, t * per * kLine), std::min(cols, (t + 1) * per * kLine));
    }
    return;
  }
#endif
  sum_range(0, cols);
}

/// out = the row-wise r-dual direction of G (see the file comment). `out` may alias `G`.
template <class D, class O>
void row_dualize(const Eigen::MatrixBase<D>& G, double r, const Eigen::MatrixBase<O>& out_,
                 VectorwiseWorkspace<typename D::Scalar>& ws) {
  using Scalar = typename D::Scalar;
  O& out = writable(out_);
  const Index m = G.rows();
  if (G.size() == 0) return;
  if (r == 1.0) {
    out = G.cwiseSign();
  } else if (r == 2.0) {
    ws.a.resize(m);
    row_norms(G, 2.0, ws.a);
    // 1/||g|| for nonzero rows, 0 for zero rows: a zero row stays zero.
    ws.a = ws.a.unaryExpr([](Scalar v) { return v > Scalar(0) ? Scalar(1) / v : Scalar(0); });
    out = ws.a.asDiagonal() * G;
  } else if (is_inf(r)) {
    // Record sign and position first, then write: safe when out aliases G.
    ws.a.resize(m);
    ws.idx.resize(m);
    for (Index i = 0; i < m; ++i) {
      Index j = 0;
      const Scalar mx = G.row(i).cwiseAbs().maxCoeff(&j);
      ws.idx(i) = j;
      ws.a(i) = mx > Scalar(0) ? (G(i, j) > Scalar(0) ? Scalar(1) : Scalar(-1)) : Scalar(0);
    }
    out.setZero();
    for (Index i = 0; i < m; ++i) out(i, ws.idx(i)) = ws.a(i);
  } else {
    const Scalar rs = static_cast<Scalar>(r);
    ws.a.resize(m);
    ws.b.resize(m);
    for (Index i = 0; i < m; ++i) {
      const Scalar mx = G.row(i).cwiseAbs().maxCoeff();
      if (!(mx > Scalar(0))) {
        ws.a(i) = ws.b(i) = Scalar(0);
        continue;
      }
      const Scalar s = (G.row(i).array().abs() / mx).pow(rs).sum();
      ws.a(i) = Scalar(1) / mx;
      ws.b(i) = std::pow(s, -(rs - Scalar(1)) / rs);
    }
    out = (G.array().cwiseSign() * (G.array().abs().colwise() * ws.a.array()).pow(rs - Scalar(1)))
              .colwise() *
          ws.b.array();
  }
}

}  // namespace steepest::eigen_detail
