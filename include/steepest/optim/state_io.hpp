// steepest/optim/state_io.hpp -- saving and loading optimizer state.
//
// File format (little-endian as written by this machine; version 1):
//   "STEEPEST" (8 bytes) | u32 version = 1 | u32 sizeof(Scalar)
//   u64 length + bytes: the optimizer's name (its chain, e.g. "adam+step", or its routes)
//   i64 step | u64 number of layers
//   per layer: u64 length + name bytes | i64 rows | i64 cols | u64 number of buffers
//              per buffer: i64 rows | i64 cols | rows*cols Scalars (row-major)
//   u64 FNV-1a checksum of every byte before it
// save() writes "<path>.tmp.<random>" and renames it over `path` (atomic on POSIX): a crash
// leaves either the old file or the new one. load() reads and checks the whole file into a
// fresh state first (magic, version, scalar size, chain, layer names and shapes, buffer shapes,
// size, checksum) and only then replaces the caller's state: a refused file changes nothing.
// Layers are stored in parameter-set order, for plain and routed optimizers alike, and in any
// memory space: device buffers are staged through the host (copy_to_host / copy_from_host), so
// a state saved on the GPU loads on the CPU and the other way round.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "optimizer.hpp"

namespace steepest {

class state_file_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline constexpr std::uint32_t kStateFileVersion = 1;

namespace detail {
inline std::uint64_t fnv1a(const std::string& bytes) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}
template <class T>
void put(std::string& out, const T& v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(T));
}
inline void put_string(std::string& out, const std::string& s) {
  put(out, std::uint64_t(s.size()));
  out += s;
}
struct Reader {
  const std::string& buf;
  std::size_t pos;
  const std::string& path;
  void need(std::size_t n) {
    if (buf.size() - pos < n) throw state_file_error("state file '" + path + "': truncated");
  }
  template <class T>
  T get() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, buf.data() + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }
  std::string get_string() {
    const auto n = get<std::uint64_t>();
    need(n);
    std::string s = buf.substr(pos, n);
    pos += n;
    return s;
  }
};
}  // namespace detail

/// Writes `st` (the state of optimizer `opt`, plain or routed) to `path` atomically.
template <class Opt, class State>
void save(const Opt& opt, State& st, const std::string& path) {
  std::string out;
  out.append("STEEPEST", 8);
  detail::put(out, kStateFileVersion);
  detail::put(out, std::uint32_t(sizeof(typename State::scalar_type)));
  detail::put_string(out, opt.name());
  detail::put(out, std::int64_t(st.step));
  std::uint64_t nlayers = 0;
  st.for_each_layer([&](const std::string&, Index, Index, auto&&) { ++nlayers; });
  detail::put(out, nlayers);
  st.for_each_layer([&](const std::string& name, Index rows, Index cols, auto&& visit) {
    detail::put_string(out, name);
    detail::put(out, std::int64_t(rows));
    detail::put(out, std::int64_t(cols));
    std::uint64_t nbuf = 0;
    visit([&](auto&) { ++nbuf; });
    detail::put(out, nbuf);
    visit([&](auto& b) {
      using S = typename State::scalar_type;
      detail::put(out, std::int64_t(b.rows()));
      detail::put(out, std::int64_t(b.cols()));
      const std::size_t at = out.size();
      out.resize(at + sizeof(S) * std::size_t(b.size()));
      copy_to_host(b, &out[at]);  // straight into the file image (device buffers: one copy down)
    });
  });
  detail::put(out, detail::fnv1a(out));

  std::random_device rd;
  const std::string tmp = path + ".tmp." + std::to_string(rd());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw state_file_error("cannot write '" + tmp + "'");
    f.write(out.data(), std::streamsize(out.size()));
    f.flush();
    if (!f) {
      std::remove(tmp.c_str());
      throw state_file_error("writing '" + tmp + "' failed");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw state_file_error("cannot rename '" + tmp + "' to '" + path + "'");
  }
}

/// Replaces `st` with the state stored in `path`, which must have been saved by the same
/// optimizer (chain names, routes) for the same layers (names and shapes) and scalar type.
/// Throws state_file_error otherwise, leaving `st` unchanged.
template <class Opt, class State>
void load(const Opt& opt, State& st, const std::string& path) {
  using S = typename State::scalar_type;
  std::ifstream f(path, std::ios::binary);
  if (!f) throw state_file_error("cannot open state file '" + path + "'");
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string buf = ss.str();
  const auto fail = [&](const std::string& why) { throw state_file_error("state file '" + path + "': " + why); };
  if (buf.size() < 8 + 8 || std::memcmp(buf.data(), "STEEPEST", 8) != 0) fail("not a steepest state file");
  {
    std::uint64_t stored;
    if (buf.size() < 8 + 4 + 4 + 8) fail("truncated");
    std::memcpy(&stored, buf.data() + buf.size() - 8, 8);
    detail::Reader r{buf, 8, path};
    const auto version = r.get<std::uint32_t>();
    if (version != kStateFileVersion)
      fail("version " + std::to_string(version) + ", this build reads version " +
           std::to_string(kStateFileVersion));
    if (stored != detail::fnv1a(buf.substr(0, buf.size() - 8))) fail("checksum mismatch (truncated or corrupt)");
  }
  detail::Reader r{buf, 12, path};
  const auto scalar = r.get<std::uint32_t>();
  if (scalar != sizeof(S))
    fail("scalar size " + std::to_string(scalar) + " bytes, expected " + std::to_string(sizeof(S)));
  const std::string chain = r.get_string();
  if (chain != opt.name()) fail("saved by optimizer '" + chain + "', not '" + opt.name() + "'");

  // Read into a copy of the state (same layers, same buffer shapes); commit only when the whole
  // file has been checked.
  State fresh = st;
  const auto step = r.get<std::int64_t>();
  if (step < 0) fail("negative step count");
  std::uint64_t expected = 0;
  st.for_each_layer([&](const std::string&, Index, Index, auto&&) { ++expected; });
  const auto nlayers = r.get<std::uint64_t>();
  if (nlayers != expected)
    fail(std::to_string(nlayers) + " layers, the model has " + std::to_string(expected));
  std::size_t i = 0;
  fresh.for_each_layer([&](const std::string& want, Index want_rows, Index want_cols, auto&& visit) {
    const std::string name = r.get_string();
    const auto rows = r.get<std::int64_t>(), cols = r.get<std::int64_t>();
    if (name != want || rows != want_rows || cols != want_cols)
      fail("layer " + std::to_string(i) + " is '" + name + "' " + shape_string(rows, cols) +
           ", the model's is '" + want + "' " + shape_string(want_rows, want_cols));
    std::uint64_t nbuf = 0;
    visit([&](auto&) { ++nbuf; });
    if (r.get<std::uint64_t>() != nbuf) fail("layer '" + name + "': wrong number of buffers");
    visit([&](auto& b) {
      const auto br = r.get<std::int64_t>(), bc = r.get<std::int64_t>();
      if (br != b.rows() || bc != b.cols())
        fail("layer '" + name + "': buffer is " + shape_string(br, bc) + ", expected " +
             shape_string(b.rows(), b.cols()));
      const std::size_t bytes = sizeof(S) * std::size_t(b.size());
      r.need(bytes);
      copy_from_host(b, buf.data() + r.pos);
      r.pos += bytes;
    });
    ++i;
  });
  if (r.pos != buf.size() - 8) fail("trailing bytes");
  fresh.set_step(step);
  st = std::move(fresh);  // everything checked: commit
}

}  // namespace steepest
