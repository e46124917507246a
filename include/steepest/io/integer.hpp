// steepest/io/integer.hpp -- the one parser of integers written as text in a file.
//
// Every integer a checkpoint spells out (the step count, shapes, data offsets, the CRC-32) is
// read here, and nowhere else: digits only (no sign, blank, '+' or "0x"), accumulated in an
// unsigned 64-bit integer whose overflow is tested before each multiply-add, then compared with
// the caller's maximum. No signed arithmetic is involved, so no input reaches undefined
// behaviour, and a value above 2^64 - 1 is refused instead of wrapping.
#pragma once

#include <cstdint>
#include <string_view>

namespace steepest::io {

namespace detail {
inline int digit_value(char c, unsigned base) {
  int d = -1;
  if (c >= '0' && c <= '9') d = c - '0';
  else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
  else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
  return d >= 0 && unsigned(d) < base ? d : -1;
}
inline bool parse_unsigned(std::string_view s, unsigned base, std::uint64_t max, std::uint64_t& out) {
  if (s.empty()) return false;
  std::uint64_t v = 0;
  for (char c : s) {
    const int d = digit_value(c, base);
    if (d < 0) return false;
    // v * base + d <= max, tested without overflowing: v <= (max - d) / base.
    if (std::uint64_t(d) > max || v > (max - std::uint64_t(d)) / base) return false;
    v = v * base + std::uint64_t(d);
  }
  out = v;
  return true;
}
}  // namespace detail

/// `s` is decimal digits only, with value <= max: sets `out` and returns true. Otherwise (empty,
/// any other character, a value above `max`) returns false and leaves `out` unchanged.
inline bool parse_decimal(std::string_view s, std::uint64_t max, std::uint64_t& out) {
  return detail::parse_unsigned(s, 10, max, out);
}

/// `s` is hexadecimal digits only (either case), with value <= max: as parse_decimal.
inline bool parse_hex(std::string_view s, std::uint64_t max, std::uint64_t& out) {
  return detail::parse_unsigned(s, 16, max, out);
}

}  // namespace steepest::io
