// steepest/core/config.hpp -- basic vocabulary shared by every header.
//
// Exponents of vector norms are template integers (1, 2, 3, ...) or `Inf`.
// At run time they become doubles, so conjugate exponents such as 3* = 1.5
// are exact and the same code path serves every p >= 1.
#pragma once

#include <Eigen/Core>

#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>

/// Restrict-qualified pointers let hot loops vectorize without -ffast-math or aliasing checks.
#if defined(__GNUC__) || defined(__clang__) || defined(_MSC_VER)
#define STEEPEST_RESTRICT __restrict
#else
#define STEEPEST_RESTRICT
#endif

/// Marks the per-element code of the optimizer transforms (their `Elem` kernels and the scalar
/// SIMD helpers) as callable from CUDA device code too, so the one written rule is what both
/// backends compile. Empty for host compilers.
#if defined(__CUDACC__)
#define STEEPEST_HD __host__ __device__
#else
#define STEEPEST_HD
#endif

namespace steepest {

using Index = Eigen::Index;

/// The exponent "infinity" for norm templates: `RowNorm<Inf>` is `inf -> inf`.
inline constexpr int Inf = std::numeric_limits<int>::max();

/// `Inf` as a double (+infinity), any other P as itself.
constexpr double exponent_value(int p) {
  return p == Inf ? std::numeric_limits<double>::infinity() : static_cast<double>(p);
}

/// Conjugate exponent r* with 1/r + 1/r* = 1 (1* = inf, inf* = 1).
constexpr double conjugate(double r) {
  if (r == 1.0) return std::numeric_limits<double>::infinity();
  if (r == std::numeric_limits<double>::infinity()) return 1.0;
  return r / (r - 1.0);
}

/// Human-readable exponent ("1", "2", "3", "inf") for names and messages.
inline std::string exponent_name(double r) {
  if (std::isinf(r)) return "inf";
  std::ostringstream s;
  s << r;
  return s.str();
}

/// Thrown for caller mistakes: shapes that do not match, bad arguments.
/// The message names the shapes involved.
class shape_error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

inline std::string shape_string(Index rows, Index cols) {
  return std::to_string(rows) + "x" + std::to_string(cols);
}

/// Throws `shape_error` unless `out` has the shape of `in`.
template <class A, class B>
void require_same_shape(const A& in, const B& out, const char* what) {
  if (in.rows() != out.rows() || in.cols() != out.cols()) {
    throw shape_error(std::string(what) + ": output is " + shape_string(out.rows(), out.cols()) +
                      " but the input is " + shape_string(in.rows(), in.cols()));
  }
}

/// Eigen's documented idiom for writing through a `const MatrixBase&`, which is what lets a
/// caller pass a temporary `Eigen::Map` or a block as the output argument.
template <class Derived>
Derived& writable(const Eigen::MatrixBase<Derived>& m) {
  return const_cast<Eigen::MatrixBase<Derived>&>(m).derived();
}

/// out *= s: how MeanNormalized applies its width-aware scale to a direction. An overload set
/// found by argument-dependent lookup, so a backend's matrix type brings its own (the CUDA
/// backend's launches a kernel on the workspace's stream).
template <class Derived, class Ws>
void scale_in_place(const Eigen::MatrixBase<Derived>& out, double s, Ws&) {
  writable(out) *= static_cast<typename Derived::Scalar>(s);
}

/// Workspace type of policies that need no scratch memory.
struct NoWorkspace {};

/// How Newton-Schulz forms its symmetric products (the Gram matrix X X^T, and A A = A A^T on the
/// host). Gemm: a full GEMM. Syrk: a symmetric rank-k update computes one triangle (half the
/// flops) and the other is mirrored. Which is faster depends on the engine, the shape and the
/// machine; the benchmarks measure both (docs/PERFORMANCE.md).
enum class GramProduct { Gemm, Syrk };

}  // namespace steepest
