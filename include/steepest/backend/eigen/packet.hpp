// steepest/backend/eigen/packet.hpp -- SIMD helpers for fused elementwise update loops.
//
// Why not a plain loop: a header cannot choose the user's flags, and at -O2 without
// -ffast-math GCC does not vectorize std::sqrt (errno) nor reductions. Eigen's packet
// primitives (SSE2 baseline, AVX/AVX-512 when the user compiles for them) vectorize
// regardless, so fused kernels are written once over a type P that is either the packet type or
// the scalar (for the tail); Eigen's generic pmul/padd/psqrt/... accept both.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "../../core/config.hpp"

namespace steepest::simd {

namespace ei = Eigen::internal;

template <class S>
using Packet = typename ei::packet_traits<S>::type;

template <class S>
inline constexpr int packet_size = ei::unpacket_traits<Packet<S>>::size;

// Each helper takes the packet type or the scalar (the tail of a loop, and CUDA device code, which
// runs one element per thread): the scalar branch is plain C++ and STEEPEST_HD, so the transforms'
// Elem kernels built from these compile for the device unchanged.
template <class P, class S>
STEEPEST_HD inline P load(const S* p) {
  if constexpr (std::is_same_v<P, S>) return *p;
  else return ei::ploadu<P>(p);
}
template <class P, class S>
STEEPEST_HD inline void store(S* p, const P& v) {
  if constexpr (std::is_same_v<P, S>) *p = v;
  else ei::pstoreu<S>(p, v);
}
template <class P, class S>
STEEPEST_HD inline P set1(S v) {
  if constexpr (std::is_same_v<P, S>)
    return v;
  else
    return ei::pset1<P>(v);
}
template <class P>
STEEPEST_HD inline P mul(const P& a, const P& b) {
  if constexpr (std::is_arithmetic_v<P>) return a * b;
  else return ei::pmul(a, b);
}
template <class P>
STEEPEST_HD inline P add(const P& a, const P& b) {
  if constexpr (std::is_arithmetic_v<P>) return a + b;
  else return ei::padd(a, b);
}
template <class P>
STEEPEST_HD inline P sub(const P& a, const P& b) {
  if constexpr (std::is_arithmetic_v<P>) return a - b;
  else return ei::psub(a, b);
}
template <class P>
STEEPEST_HD inline P div(const P& a, const P& b) {
  if constexpr (std::is_arithmetic_v<P>) return a / b;
  else return ei::pdiv(a, b);
}

/// bf16 bits -> float, exactly (a bf16 is the top 16 bits of a float; bf16.hpp has the rest).
STEEPEST_HD inline float bf16_to_float(std::uint16_t b) {
  const std::uint32_t u = std::uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
/// Loads bf16 entries p[0..lanes) widened to floats (defined in bf16.hpp).
template <class P>
STEEPEST_HD inline P load_bf16(const std::uint16_t* p);

/// The scalar arithmetic is done in for entries stored as T: T itself, or float for bf16 bits
/// (std::uint16_t, the word bf16 optimizer state and bf16 gradients are addressed by).
template <class T>
using wide_t = std::conditional_t<std::is_same_v<T, std::uint16_t>, float, T>;
/// Loads lanes stored as T as P (the packet or scalar of wide_t<T>): bf16 bits are widened
/// exactly, anything else is loaded as is.
template <class P, class T>
STEEPEST_HD inline P load_wide(const T* p) {
  if constexpr (std::is_same_v<T, std::uint16_t>) return load_bf16<P>(p);
  else return load<P>(p);
}

// Identifies a packet by lane count and scalar type (comparing with __m128 etc. directly
// trips -Wignored-attributes on GCC).
template <class P>
constexpr bool kind(int lanes, bool is_float) {
  using T = typename ei::unpacket_traits<P>::type;
  return ei::unpacket_traits<P>::size == lanes &&
         (is_float ? std::is_same_v<T, float> : std::is_same_v<T, double>);
}

/// IEEE square root. Eigen's psqrt may use rsqrt + a Newton step plus fix-ups for 0 and inf
/// (EIGEN_FAST_MATH), which costs more instructions than the hardware sqrt in these
/// memory-bound loops, so the native instruction is used where the packet type is known.
template <class P>
STEEPEST_HD inline P sqrt(const P& a) {
  if constexpr (std::is_same_v<P, float>) {
    return ::sqrtf(a);  // the C functions exist on the host and in CUDA device code
  } else if constexpr (std::is_same_v<P, double>) {
    return ::sqrt(a);
  }
#if defined(__AVX512F__)
  else if constexpr (kind<P>(16, true)) { return _mm512_sqrt_ps(a); }
  else if constexpr (kind<P>(8, false) && sizeof(P) == 64) { return _mm512_sqrt_pd(a); }
#endif
#if defined(__AVX__)
  else if constexpr (kind<P>(8, true) && sizeof(P) == 32) { return _mm256_sqrt_ps(a); }
  else if constexpr (kind<P>(4, false) && sizeof(P) == 32) { return _mm256_sqrt_pd(a); }
#endif
#if defined(__SSE2__)
  else if constexpr (kind<P>(4, true) && sizeof(P) == 16) { return _mm_sqrt_ps(a); }
  else if constexpr (kind<P>(2, false) && sizeof(P) == 16) { return _mm_sqrt_pd(a); }
#endif
  else {
    return ei::psqrt(a);
  }
}
/// sign(x) in {-1, 0, +1} (0 for 0 and NaN), branch-free on packets.
template <class P, class S>
STEEPEST_HD inline P sign(const P& x) {
  if constexpr (std::is_same_v<P, S>) {
    return static_cast<S>((x > S(0)) - (x < S(0)));
  } else {
    const P zero = ei::pzero(x), one = ei::pset1<P>(S(1));
    return ei::psub(ei::pand(ei::pcmp_lt(zero, x), one), ei::pand(ei::pcmp_lt(x, zero), one));
  }
}

/// x with every entry of magnitude below the smallest normal number (FLT_MIN / DBL_MIN) set to
/// +0; normal numbers, infinities and NaN pass through unchanged. Optimizer state is stored
/// through it. Why: an EMA of a gradient that stays 0 (the momentum of a rare token's embedding
/// row) decays into the subnormal range and, rounding to nearest, sticks there (in float,
/// 0.9 * 4 * 2^-149 rounds back to 4 * 2^-149) instead of reaching 0; x86 multiplies
/// subnormals in microcode, so every later step on that entry is slow (a 1024^2 AdamW step with
/// subnormal moments measured 42x slower). The price is a compare and an and-not per packet
/// (a quick single-thread -O2 alternation read AdamW 5-14% slower on normal data; the bench has
/// to confirm it); the header cannot rely on the caller's flush-to-zero flags.
template <class P, class S>
STEEPEST_HD inline P flush_subnormal(const P& x) {
  constexpr S tiny = std::is_same_v<S, float> ? S(FLT_MIN) : S(DBL_MIN);
  if constexpr (std::is_same_v<P, S>) {
    return (x < tiny && x > -tiny) ? S(0) : x;
  }
#if defined(EIGEN_VECTORIZE_AVX512DQ)
  // One classify into a mask register and one zero-masked move instead of four vector ops (abs,
  // compare, mask to vector, and-not): classes 0x20 subnormal and 0x04 -0, so -0 becomes +0 as
  // in the generic form. Same bits as the generic form.
  else if constexpr (kind<P>(16, true)) {
    return _mm512_maskz_mov_ps(static_cast<__mmask16>(~_mm512_fpclass_ps_mask(x, 0x24)), x);
  } else if constexpr (kind<P>(8, false) && sizeof(P) == 64) {
    return _mm512_maskz_mov_pd(static_cast<__mmask8>(~_mm512_fpclass_pd_mask(x, 0x24)), x);
  }
#endif
  else {
    return ei::pandnot(x, ei::pcmp_lt(ei::pabs(x), ei::pset1<P>(tiny)));
  }
}

/// The same on an Eigen array expression target (the transforms' unfused paths).
template <class A>
void flush_subnormals(A&& a) {
  using S = typename std::decay_t<A>::Scalar;
  constexpr S tiny = std::is_same_v<S, float> ? S(FLT_MIN) : S(DBL_MIN);
  a = (a.abs() < tiny).select(S(0), a);
}

namespace detail {
/// The finite test of all_finite on p[lo, hi): 0 when every x * scale * 0 there is 0, else NaN.
/// Four sub-ranges are read side by side, each with its own accumulator and a software prefetch
/// kPrefetch entries ahead. Why: the check is a pure read stream, and one stream per core runs far
/// below the bandwidth the update pass gets with its four: measured on the 4096x4096 bench layer,
/// cold after an AdamW pass, 1 thread, 5 runs: 4.7-5.2 ms for one stream, 3.4-4.0 ms for four with
/// the prefetch (AVX-512); 6.4-6.8 against 2.9-3.9 ms at SSE2 width. The prefetch stays inside
/// each sub-range (no address past the data).
template <class S, class T>
S finite_probe(const T* p, Index lo, Index hi, S scale) {
  using P = Packet<S>;
  constexpr Index PS = packet_size<S>;
  constexpr Index kPrefetch = 2048 / Index(sizeof(T));  // 2 KiB ahead in each sub-range
  const P zero = ei::pset1<P>(S(0)), sc = ei::pset1<P>(scale);
  // x * scale * 0: 0 when x * scale is finite, NaN otherwise (see all_finite).
  auto term = [&](const T* at) { return ei::pmul(ei::pmul(load_wide<P>(at), sc), zero); };
  const Index q = (hi - lo) / 4 / PS * PS;  // each sub-range's length, whole packets
  const T* s0 = p + lo;
  const T* s1 = s0 + q;
  const T* s2 = s1 + q;
  const T* s3 = s2 + q;
  P a0 = zero, a1 = zero, a2 = zero, a3 = zero;
  Index i = 0;
  auto body = [&](Index k) {
    a0 = ei::padd(a0, term(s0 + k));
    a1 = ei::padd(a1, term(s1 + k));
    a2 = ei::padd(a2, term(s2 + k));
    a3 = ei::padd(a3, term(s3 + k));
  };
#if defined(__GNUC__)
  for (; i + kPrefetch < q; i += PS) {
    __builtin_prefetch(s0 + i + kPrefetch);
    __builtin_prefetch(s1 + i + kPrefetch);
    __builtin_prefetch(s2 + i + kPrefetch);
    __builtin_prefetch(s3 + i + kPrefetch);
    body(i);
  }
#endif
  for (; i < q; i += PS) body(i);
  // The rest after the four sub-ranges: fewer than 4 packets plus a scalar tail.
  Index k = lo + 4 * q;
  for (; k + PS <= hi; k += PS) a0 = ei::padd(a0, term(p + k));
  S tail = S(0);
  for (; k < hi; ++k) tail += (load_wide<S>(p + k) * scale) * S(0);
  return ei::predux(ei::padd(ei::padd(a0, a1), ei::padd(a2, a3))) + tail;
}
}  // namespace detail

/// True when every entry of p[0..n) is finite with |p[i]| < 2^Limit (Limit = 0: finite only).
/// p holds the entries as T: float or double, or bf16 bits (std::uint16_t), tested as the floats
/// they widen to (the same exponent range, so the same Limit means the same bound).
/// One SIMD read pass: x * 2^(E_max - Limit) overflows to +-inf exactly when |x| >= 2^Limit (the
/// largest value below 2^Limit scales to exactly the largest finite one), and y * 0 is 0 for
/// finite y and NaN for +-inf or NaN; NaN survives the sums. No early exit: the common case is
/// all-finite, and a branch-free loop runs at memory speed (detail::finite_probe says how it is
/// read). Arrays of more than kParallelMin entries are split into one contiguous range per
/// OpenMP thread when the user's build enables OpenMP and no parallel region is active; this
/// region and the update's must not be nested in another region, or libgomp serves them with
/// different thread teams and each step pays for it (measured: 3-10x slower at 2 threads).
template <int Limit = 0, class T>
bool all_finite(const T* p, Index n) {
  using S = wide_t<T>;
  constexpr int kScaleExp = Limit == 0 ? 0 : std::numeric_limits<S>::max_exponent - Limit;
  static_assert(Limit == 0 || (Limit > 0 && kScaleExp > 0), "all_finite: Limit out of range");
  const S scale = std::ldexp(S(1), kScaleExp);
#if defined(_OPENMP)
  constexpr Index kParallelMin = Index(1) << 16;
  if (n > kParallelMin && !omp_in_parallel()) {
    int bad = 0;
#pragma omp parallel reduction(| : bad)
    {
      const Index nt = omp_get_num_threads(), t = omp_get_thread_num();
      const Index lo = n * t / nt, hi = n * (t + 1) / nt;
      bad |= !(detail::finite_probe(p, lo, hi, scale) == S(0));
    }
    return bad == 0;
  }
#endif
  return detail::finite_probe(p, Index(0), n, scale) == S(0);
}

}  // namespace steepest::simd

// load_bf16 (declared above, used by all_finite on bf16 bits) is defined there.
#include "bf16.hpp"
