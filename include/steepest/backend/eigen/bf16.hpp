// steepest/backend/eigen/bf16.hpp -- bf16 storage with stochastic rounding, for optimizer state.
//
// A bf16 value is the top 16 bits of a float (same sign and exponent, 7 mantissa bits), so
//   widen:   f = bits(b) << 16                                   (exact)
//   narrow:  b = (bits(f) + r) >> 16,  r uniform in [0, 2^16)   (stochastic rounding)
// The narrowing rounds |f| up to the next bf16 with probability (dropped bits) / 2^16 and down
// otherwise, so E[b] = f: the rounding error averages out over steps instead of accumulating.
// Why not round-to-nearest: an optimizer moment moves by a small fraction of itself per step
// (Adam's v by (1 - b2) (g^2 - v), 0.1% of v at b2 = 0.999), below half a bf16 ulp (2^-9
// relative), so round-to-nearest maps v back to itself and the moment freezes. Stochastic rounding
// keeps the expected update.
//
// The dither r is a hash of the entry's flat index and the step (not a random generator): it is
// the same on every thread count, in the fused and unfused passes and on the host and a device,
// so a step is reproducible bit for bit. For entry i at step t:
//   seed = mix32(uint32(t) * 0x9E3779B9 + 0x7F4A7C15)        once per step (full avalanche)
//   y = (uint32(i) ^ seed) * 0x9E3779B1,  h = y ^ (y >> 16)  per entry (mod 2^32)
// with mix32 the integer finalizer below. Over the steps, one entry's seed-xored index is
// uniform and independent from step to step, and y is a bijection of it, so its 16-bit dithers
// are too; the odd multiply and the fold mix the index bits so that neighbouring entries do not
// share a pattern. The per-entry hash is kept that short on purpose: a step is memory-bound only
// while it spends a few instructions per entry (a full mix32 per entry measured the bf16 AdamW
// step slower than the fp32 one at one thread). A transform with two buffers rounds the first
// by the low 16 bits of h and the second by the high 16. Layers of more than 2^32 entries reuse
// dithers (the index wraps); harmless, as the dithers of one entry over steps stay independent.
//
// Non-finite values: +-inf is stored as +-inf; NaN is not dithered, only truncated, and stays a
// NaN because every NaN a step computes is quiet (its top mantissa bit, which bf16 keeps, is set).

// Each helper takes the float packet type or a float (loop tails and CUDA device code), like
// packet.hpp's. The widening and narrowing are written with x86 intrinsics where the packet type
// is known (Eigen has no 16-bit lane type for SSE or AVX), and lane by lane otherwise.
#pragma once

#include <Eigen/Core>

#include <cstdint>
#include <cstring>

#include "packet.hpp"

// Packet types carry vector attributes that GCC drops, with a warning, when they are template
// arguments (int_lanes<Packet16f>); Eigen silences the same warning in its own headers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif

namespace steepest::simd {

/// An integer permutation of 32-bit words with good avalanche (each input bit flips each output
/// bit with probability ~1/2): two rounds of xor-shift and odd multiply.
STEEPEST_HD constexpr std::uint32_t mix32(std::uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

/// The dither seed of step t (see the file comment).
STEEPEST_HD constexpr std::uint32_t dither_seed(long long t) {
  return mix32(static_cast<std::uint32_t>(t) * 0x9E3779B9U + 0x7F4A7C15U);
}

/// The integer packet with the lanes of float packet P (uint32 for a scalar float).
template <class P>
struct int_lanes {
  using type = typename ei::unpacket_traits<P>::integer_packet;
};
template <>
struct int_lanes<float> {
  using type = std::uint32_t;
};
template <class P>
using IntPacket = typename int_lanes<P>::type;

alignas(64) inline constexpr int kLaneIndex[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

/// The 32-bit dither words h of entries i, i+1, ..., one per lane of P (see the file comment).
template <class P>
STEEPEST_HD inline IntPacket<P> dither(Index i, std::uint32_t seed) {
  if constexpr (std::is_same_v<P, float>) {
    const std::uint32_t y = (static_cast<std::uint32_t>(i) ^ seed) * 0x9E3779B1U;
    return y ^ (y >> 16);
  } else {
    using Pi = IntPacket<P>;
    static_assert(ei::unpacket_traits<Pi>::size <= 16, "simd::dither: at most 16 lanes");
    // int32 lanes: the wrap-around adds and multiplies give the uint32 results bit for bit.
    Pi x = ei::padd(ei::pset1<Pi>(static_cast<int>(static_cast<std::uint32_t>(i))), ei::ploadu<Pi>(kLaneIndex));
    x = ei::pmul(ei::pxor(x, ei::pset1<Pi>(static_cast<int>(seed))), ei::pset1<Pi>(static_cast<int>(0x9E3779B1U)));
    return ei::pxor(x, ei::plogical_shift_right<16>(x));
  }
}
/// The high 16 bits of each dither word, moved to the low half (the second buffer's dither).
template <class P>
STEEPEST_HD inline IntPacket<P> dither_high(const IntPacket<P>& h) {
  if constexpr (std::is_same_v<P, float>) return h >> 16;
  else return ei::plogical_shift_right<16>(h);
}

/// float -> bf16 bits, rounded stochastically by the low 16 bits of r (see the file comment).
STEEPEST_HD inline std::uint16_t bf16_round(float f, std::uint32_t r) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if (f == f) u += r & 0xFFFFU;  // finite: carries into the kept bits with probability frac; inf: no carry
  return static_cast<std::uint16_t>(u >> 16);  // NaN: truncated (quiet: stays NaN)
}

/// Loads the bf16 entries p[0..lanes) widened to floats.
template <class P>
STEEPEST_HD inline P load_bf16(const std::uint16_t* p) {
  if constexpr (std::is_same_v<P, float>) {
    return bf16_to_float(*p);
  }
#if defined(EIGEN_VECTORIZE_AVX512)
  else if constexpr (kind<P>(16, true)) {
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
  }
#endif
#if defined(EIGEN_VECTORIZE_AVX)
  else if constexpr (kind<P>(8, true) && sizeof(P) == 32) {
    // Interleaving zeros below each 16-bit word is the shift by 16 (SSE2 has no 16->32 widening).
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), z = _mm_setzero_si128();
    const __m256i w = _mm256_insertf128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi16(z, v)),
                                              _mm_unpackhi_epi16(z, v), 1);
    return _mm256_castsi256_ps(w);
  }
#endif
#if defined(EIGEN_VECTORIZE_SSE2)
  else if constexpr (kind<P>(4, true) && sizeof(P) == 16) {
    const __m128i v = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    return _mm_castsi128_ps(_mm_unpacklo_epi16(_mm_setzero_si128(), v));
  }
#endif
  else {
    constexpr int n = ei::unpacket_traits<P>::size;
    float tmp[n];
    for (int k = 0; k < n; ++k) tmp[k] = bf16_to_float(p[k]);
    return ei::ploadu<P>(tmp);
  }
}

/// Stores x into the bf16 entries p[0..lanes), each rounded stochastically by the low 16 bits of
/// its lane of r (the same rule as bf16_round, lane by lane).
template <class P>
STEEPEST_HD inline void store_bf16(std::uint16_t* p, const P& x, const IntPacket<P>& r) {
  if constexpr (std::is_same_v<P, float>) {
    *p = bf16_round(x, r);
  }
#if defined(EIGEN_VECTORIZE_AVX512)
  else if constexpr (kind<P>(16, true)) {
    // A mask register: the dither is kept in the lanes that are not NaN by a zero-masked and.
    const __mmask16 ordered = _mm512_cmp_ps_mask(x, x, _CMP_ORD_Q);
    const __m512i add = _mm512_maskz_and_epi32(ordered, r, _mm512_set1_epi32(0xFFFF));
    const __m512i u = _mm512_add_epi32(_mm512_castps_si512(x), add);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(_mm512_srli_epi32(u, 16)));
  }
#endif
  else {
    using Pi = IntPacket<P>;
    const Pi ordered = ei::preinterpret<Pi>(ei::pcmp_eq(x, x));  // all ones where x is not NaN
    const Pi u = ei::padd(ei::preinterpret<Pi>(x), ei::pand(ei::pand(r, ei::pset1<Pi>(0xFFFF)), ordered));
    if constexpr (false) {
    }
#if defined(EIGEN_VECTORIZE_AVX)
    else if constexpr (kind<P>(8, true) && sizeof(P) == 32) {
      // Arithmetic shift: each lane lands in [-2^15, 2^15), so the signed saturating pack keeps
      // it, and its low 16 bits are the logical shift's.
      const Pi s = ei::parithmetic_shift_right<16>(u);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                       _mm_packs_epi32(_mm256_castsi256_si128(s), _mm256_extractf128_si256(s, 1)));
    }
#endif
#if defined(EIGEN_VECTORIZE_SSE2)
    else if constexpr (kind<P>(4, true) && sizeof(P) == 16) {
      const Pi s = ei::parithmetic_shift_right<16>(u);  // as above
      _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packs_epi32(s, s));
    }
#endif
    else {
      constexpr int n = ei::unpacket_traits<P>::size;
      int tmp[n];
      ei::pstoreu(tmp, ei::plogical_shift_right<16>(u));
      for (int k = 0; k < n; ++k) p[k] = static_cast<std::uint16_t>(tmp[k]);
    }
  }
}

}  // namespace steepest::simd

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
