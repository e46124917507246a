// steepest/optim/precision.hpp -- the precision a transform stores its state in, per chain.
//
//   using AdamWBf16 = Chain<AdamMoments<Bf16State>, DecoupledStep>;   // or adamw<Bf16State>(hp)
//
// A state-precision policy is a type with
//   template <class S> using storage = ...;  // the state buffers' scalar (buffer_t<storage<S>, Space>)
//   template <class S> using word = ...;     // what the fused kernels address (S, or the raw bits)
//   static constexpr bool rounds;            // true: stores round stochastically (needs the dither)
//   static const char* suffix();             // appended to the transform's name ("adam-bf16")
// Arithmetic is always in the parameter's scalar S: a step widens the stored moments to S, updates
// them in S, uses the unrounded values for the update, and rounds only what it stores.
//
// | policy        | stored as                                   | AdamW bytes/param moved |
// |---------------|---------------------------------------------|-------------------------|
// | FullPrecision | S (the default)                             | 28 (fp32)               |
// | Bf16State     | bf16, stochastic rounding (bf16.hpp)        | 20 (fp32 w and g)       |
// Bf16State needs S = float. A checkpoint stores its buffers as safetensors "BF16"; the chain's
// name differs ("adam-bf16+step"), so a file of one precision does not load into the other.
#pragma once

#include <Eigen/Core>

#include <cstdint>
#include <type_traits>

#include "../backend/eigen/bf16.hpp"

namespace steepest {

/// State stored in the parameter's own scalar type (the default).
struct FullPrecision {
  /// Buffers hold S.
  template <class S>
  using storage = S;
  /// Raw words as the kernels load them: S.
  template <class S>
  using word = S;
  /// Stores round to nearest (no dithering).
  static constexpr bool rounds = false;
  /// No suffix on the chain's name.
  static const char* suffix() { return ""; }
};

/// State stored as bf16 (Eigen::bfloat16 buffers), rounded stochastically (backend/eigen/bf16.hpp);
/// float parameters only.
struct Bf16State {
  /// Buffers hold bf16.
  template <class S>
  using storage = Eigen::bfloat16;
  /// Raw words as the kernels load them: bf16 bits.
  template <class S>
  using word = std::uint16_t;
  /// Stores round stochastically.
  static constexpr bool rounds = true;
  /// "-bf16" on the chain's name.
  static const char* suffix() { return "-bf16"; }
};

template <class T>
struct is_state_precision : std::false_type {};
template <>
struct is_state_precision<FullPrecision> : std::true_type {};
template <>
struct is_state_precision<Bf16State> : std::true_type {};

template <class Precision, class S>
using state_storage_t = typename Precision::template storage<S>;
template <class Precision, class S>
using state_word_t = typename Precision::template word<S>;

namespace simd {

// Stored state is loaded with simd::load_wide (packet.hpp), which widens bf16 words exactly.

/// Stores x into state: as is (full precision) or rounded by the dither words r (bf16).
template <class P, class S, class R>
STEEPEST_HD inline void store_state(S* p, const P& x, const R&) {
  store(p, x);
}
template <class P, class R>
STEEPEST_HD inline void store_state(std::uint16_t* p, const P& x, const R& r) {
  store_bf16<P>(p, x, r);
}

/// The dither words of lanes starting at entry i when `Precision` rounds (else a dummy 0).
template <class Precision, class P>
STEEPEST_HD inline auto state_dither(Index i, std::uint32_t seed) {
  if constexpr (Precision::rounds) return dither<P>(i, seed);
  else return 0;
}
/// The dither of a transform's second buffer: the high halves of the first's words.
template <class Precision, class P, class R>
STEEPEST_HD inline R state_dither_high(const R& r) {
  if constexpr (Precision::rounds) return dither_high<P>(r);
  else return r;
}

}  // namespace simd

namespace detail {
/// The raw words of a state buffer, as its transform's fused kernel addresses them.
template <class Precision, class S, class B>
inline state_word_t<Precision, S>* state_words(B& b) {
  return reinterpret_cast<state_word_t<Precision, S>*>(b.data());
}
}  // namespace detail

}  // namespace steepest
