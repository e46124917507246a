// steepest/io/crc32.hpp -- CRC-32 (the zlib / PNG / gzip polynomial), incrementally.
//
// A checkpoint stores the CRC-32 of its tensor bytes, so any reader can check it with what it
// already has (Python: zlib.crc32). Reflected polynomial 0xEDB88320, initial value and final
// xor 0xFFFFFFFF: crc32("123456789") = 0xCBF43926.
//
// Why slicing-by-8: the byte-at-a-time table loop is bound by a load -> xor -> load dependency
// per byte (~1 byte per 2-3 cycles); eight tables let one 8-byte word advance the CRC with eight
// independent lookups, ~1 cycle per byte, several GB/s, so checking a checkpoint costs less than
// reading it from disk. Portable C++ (no CRC instruction: x86's crc32 is the Castagnoli
// polynomial, not this one, and header-only code cannot assume the user's -m flags).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace steepest::io {

namespace detail {
using CrcTables = std::array<std::array<std::uint32_t, 256>, 8>;
constexpr CrcTables make_crc_tables() {
  CrcTables t{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? (0xEDB88320u ^ (c >> 1)) : (c >> 1);
    t[0][i] = c;
  }
  // t[k][i]: the CRC of byte i followed by k zero bytes.
  for (std::size_t k = 1; k < 8; ++k)
    for (std::uint32_t i = 0; i < 256; ++i) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xFFu];
  return t;
}
inline constexpr CrcTables kCrcTables = make_crc_tables();
}  // namespace detail

/// Running CRC-32: feed bytes with update(), read value() at any point.
class Crc32 {
 public:
  /// Adds n bytes.
  void update(const void* data, std::size_t n) {
    const auto& t = detail::kCrcTables;
    const unsigned char* p = static_cast<const unsigned char*>(data);
    std::uint32_t c = state_;
    for (; n >= 8; n -= 8, p += 8) {
      std::uint32_t lo, hi;
      std::memcpy(&lo, p, 4);  // unaligned-safe loads; the tables assume little-endian words
      std::memcpy(&hi, p + 4, 4);
      lo ^= c;
      c = t[7][lo & 0xFFu] ^ t[6][(lo >> 8) & 0xFFu] ^ t[5][(lo >> 16) & 0xFFu] ^ t[4][lo >> 24] ^
          t[3][hi & 0xFFu] ^ t[2][(hi >> 8) & 0xFFu] ^ t[1][(hi >> 16) & 0xFFu] ^ t[0][hi >> 24];
    }
    for (; n > 0; --n, ++p) c = (c >> 8) ^ t[0][(c ^ *p) & 0xFFu];
    state_ = c;
  }
  /// The CRC-32 of the bytes so far.
  std::uint32_t value() const { return state_ ^ 0xFFFFFFFFu; }

 private:
  std::uint32_t state_ = 0xFFFFFFFFu;
};

/// CRC-32 of one buffer.
inline std::uint32_t crc32(const void* data, std::size_t n) {
  Crc32 c;
  c.update(data, n);
  return c.value();
}

}  // namespace steepest::io
