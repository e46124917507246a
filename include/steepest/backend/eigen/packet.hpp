// steepest/backend/eigen/packet.hpp -- SIMD helpers for fused elementwise update loops.
//
// Why not a plain loop: a header cannot choose the user's flags, and at -O2 without
// -ffast-math GCC does not vectorize std::sqrt (errno) nor reductions. Eigen's packet
// primitives (SSE2 baseline, AVX/AVX-512 when the user compiles for them) vectorize
// regardless, so fused kernels are written once over a type P that is either the packet type or
// the scalar (for the tail); Eigen's generic pmul/padd/psqrt/... accept both.
#pragma once

#include <Eigen/Core>

#include <type_traits>

namespace steepest::simd {

namespace ei = Eigen::internal;

template <class S>
using Packet = typename ei::packet_traits<S>::type;

template <class S>
inline constexpr int packet_size = ei::unpacket_traits<Packet<S>>::size;

template <class P, class S>
inline P load(const S* p) {
  return ei::ploadu<P>(p);
}
template <class P, class S>
inline void store(S* p, const P& v) {
  ei::pstoreu<S>(p, v);
}
template <class P, class S>
inline P set1(S v) {
  if constexpr (std::is_same_v<P, S>)
    return v;
  else
    return ei::pset1<P>(v);
}
template <class P>
inline P mul(const P& a, const P& b) { return ei::pmul(a, b); }
template <class P>
inline P add(const P& a, const P& b) { return ei::padd(a, b); }
template <class P>
inline P sub(const P& a, const P& b) { return ei::psub(a, b); }
template <class P>
inline P div(const P& a, const P& b) { return ei::pdiv(a, b); }
template <class P>
inline P sqrt(const P& a) {
  if constexpr (std::is_arithmetic_v<P>)
    return std::sqrt(a);
  else
    return ei::psqrt(a);
}
/// sign(x) in {-1, 0, +1} (0 for 0 and NaN), branch-free on packets.
template <class P, class S>
inline P sign(const P& x) {
  if constexpr (std::is_same_v<P, S>) {
    return static_cast<S>((x > S(0)) - (x < S(0)));
  } else {
    const P zero = ei::pzero(x), one = ei::pset1<P>(S(1));
    return ei::psub(ei::pand(ei::pcmp_lt(zero, x), one), ei::pand(ei::pcmp_lt(x, zero), one));
  }
}

}  // namespace steepest::simd
