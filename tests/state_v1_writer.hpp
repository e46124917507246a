// tests/state_v1_writer.hpp -- a version-1 state file, written from the format's description
// (the private layout of earlier releases, which st::load still reads), for the tests and the
// fuzzer's seed corpus.
#pragma once

#include <steepest/steepest.hpp>

#include <cstdint>
#include <string>

namespace optim_test {

/// A version-1 file, written here from the format's description (state_io.hpp of version 1):
/// "STEEPEST" | u32 1 | u32 sizeof(S) | u64+chain | i64 step | u64 layers | per layer u64+name,
/// i64 rows, i64 cols, u64 buffers, per buffer i64 rows, i64 cols, data | u64 FNV-1a.
template <class State>
inline std::string v1_file(const std::string& chain, State& s) {
  using S = typename State::scalar_type;
  std::string out = "STEEPEST";
  auto put = [&](auto v) { out.append(reinterpret_cast<const char*>(&v), sizeof v); };
  auto put_s = [&](const std::string& x) { put(std::uint64_t(x.size())), out += x; };
  put(std::uint32_t(1)), put(std::uint32_t(sizeof(S)));
  put_s(chain);
  put(std::int64_t(s.step));
  std::uint64_t n = 0;
  s.for_each_layer([&](const steepest::LayerRecord&, const std::string&, auto&&) { ++n; });
  put(n);
  s.for_each_layer([&](const steepest::LayerRecord& r, const std::string&, auto&& visit) {
    put_s(r.name), put(std::int64_t(r.rows)), put(std::int64_t(r.cols));
    std::uint64_t k = 0;
    visit([&](const std::string&, auto&, steepest::Domain) { ++k; });
    put(k);
    visit([&](const std::string&, auto& b, steepest::Domain) {
      put(std::int64_t(b.rows())), put(std::int64_t(b.cols()));
      out.append(reinterpret_cast<const char*>(b.data()), sizeof(S) * std::size_t(b.size()));
    });
  });
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : out) h = (h ^ c) * 1099511628211ull;
  put(h);
  return out;
}

}  // namespace optim_test
