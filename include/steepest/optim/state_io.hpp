// steepest/optim/state_io.hpp -- saving and loading optimizer state (checkpoints).
//
//   st::save(opt, state, "opt.safetensors");   // durable, atomic, streaming
//   st::load(opt, state, "opt.safetensors");   // refuses a wrong or damaged file, changes nothing
//
// File format (version 2): the safetensors layout, so Python's `safetensors` and numpy read it
// and `scripts/read_checkpoint.py` prints it. The container (framing, tensor entries, their
// tiling, the CRC field) is io/safetensors.hpp; this file is the optimizer's schema within it:
//   u64 N (little-endian) | N bytes of JSON header, space-padded so 8 + N is a multiple of 8 |
//   the tensors' raw little-endian bytes, back to back.
// The header maps each tensor name "<layer>/<transform>.<buffer>" (e.g. "blocks.0.qkv[1]/adam.v")
// to {"dtype": "F32"|"F64"|"BF16", "shape": [rows, cols], "data_offsets": [begin, end]} (offsets
// into the tensor bytes; a buffer's dtype is its own: "BF16" for state kept in bf16 by
// Bf16State, optim/precision.hpp, the parameters' otherwise), and "__metadata__" (strings only,
// as safetensors requires) to:
//   format          "steepest.optimizer-state"
//   format_version  "2"
//   dtype           "F32" or "F64": the parameters' scalar type
//   step            completed steps, decimal
//   optimizer       the optimizer's name: its chain ("adam+step") or its routes ("routed(...)")
//   layers          JSON array, one object per layer in parameter-set order: name, shape, role,
//                   geometry (norm, polar method, schedule), chain, buffers (the keys after
//                   "<layer>/") and domains ("finite", "non-negative" or "any", per buffer)
//                   and, only for a layer that had no gradient at some steps (Gradients::skip),
//                   "skipped": that count, a decimal string at most step
//   routes          JSON array, one object per route: selector, chain, every hyper-parameter,
//                   the role defaults (geometry, radius, lr_scale) and, when any transform owns
//                   coefficients, "coefficients": [{"at": position, "beta1": ...}, ...].
//                   Recorded, not compared: a new learning rate, weight decay or beta on resume
//                   is a legitimate schedule.
//   crc32           CRC-32 (zlib's) of the whole file with these 8 hex digits written as '0'.
// A file written by another tool may omit crc32 (it then loads without the check); a tool that
// rewrites a file must drop it (a copied crc32 no longer matches, and the file is refused).
//
// What load() refuses, before anything of the caller's state changes (state_file_error, the
// message naming the file, and the layer and buffer where there is one):
//   - not a regular file (a FIFO, /dev/zero, a directory); a header length that does not fit the
//     file or exceeds 100 MB; a file size other than the one the header describes (checked before
//     the tensor bytes are read);
//   - invalid JSON (io/json.hpp: strict), or JSON with more values than the state's layout needs
//     (HeaderLimits: refused while parsing, so a refused header costs about its own size, twice
//     for a long "layers" string); another format, another version, another dtype;
//   - another optimizer, or any layer whose name, shape, role, geometry or chain differs from the
//     state's (so MOGA-row and MOGA-col files, or Muon with Newton-Schulz and with Polar Express,
//     do not load into each other), missing, extra, misshapen or overlapping tensors;
//   - a step outside [0, 2^53] (2^53: the step count is used as a double; every integer is read
//     by io/integer.hpp, which cannot overflow); a value outside its buffer's domain (BufferSpec:
//     moments finite, second moments finite and >= 0) or above what its transform can reach from
//     gradients inside the step's bound under `opt`'s coefficients (BufferSpec::reach, times
//     kReachSlack; not under NonFinitePolicy::Unchecked, where no bound holds), so that the next
//     step from a loaded state is finite;
//   - a CRC-32 mismatch (truncated or corrupt).
// Memory: save streams the state through a 1 MiB staging buffer (no file image). load reads
// into freshly allocated buffers in the state's memory space, 1 MiB at a time, and swaps them in
// only when everything has been checked: the extra memory is the state's size plus 1 MiB.
//
// Version 1 (the private "STEEPEST" layout of earlier releases) still loads, with the checks it
// allows: chain name, layer names and shapes, size, FNV-1a checksum, step and value domains (it
// recorded no roles or geometries). save() writes version 2 only.
//
// Layers are stored in parameter-set order for plain and routed optimizers alike, and in any
// memory space: device buffers are staged through the host (copy_to_host / copy_from_host), so a
// state saved on the GPU loads on the CPU and the other way round. Writing is durable and tidy
// (io/file.hpp): "<path>.tmp" is created exclusively (never through a link), written, fsync'ed
// and renamed over `path` with the old file's permissions, and the directory is fsync'ed; a save
// killed midway leaves at most that one temporary, which the next save replaces.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../io/crc32.hpp"
#include "../io/file.hpp"
#include "../io/integer.hpp"
#include "../io/json.hpp"
#include "../io/safetensors.hpp"
#include "routing.hpp"

namespace steepest {

/// The version save() writes; load() reads it and version 1.
inline constexpr std::uint32_t kStateFileVersion = 2;
/// The format name in a checkpoint's metadata.
inline constexpr const char* kStateFileFormat = "steepest.optimizer-state";
/// Largest step count a checkpoint may hold (2^53: exact as a double, which bias corrections use).
inline constexpr long long kMaxStateStep = 1LL << 53;

namespace detail {

inline constexpr std::size_t kStagingBytes = std::size_t(1) << 20;

inline void require_little_endian() {
  if (!io::safetensors::little_endian()) throw state_file_error("steepest state files are little-endian; this machine is not");
}
using io::safetensors::dtype_name;
/// The scalar type a state buffer holds.
template <class B>
using buffer_scalar_t = std::remove_cv_t<std::remove_pointer_t<decltype(std::declval<B&>().data())>>;

inline double to_double(float x) { return x; }
inline double to_double(double x) { return x; }
inline double to_double(Eigen::bfloat16 x) { return double(static_cast<float>(x)); }

inline const char* domain_name(Domain d) {
  switch (d) {
    case Domain::Finite: return "finite";
    case Domain::NonNegative: return "finite and >= 0";
    default: return "any value";
  }
}
/// The domain's name in a checkpoint's "layers" metadata (for readers; load uses its own).
inline const char* domain_key(Domain d) {
  switch (d) {
    case Domain::Finite: return "finite";
    case Domain::NonNegative: return "non-negative";
    default: return "any";
  }
}
/// Index of the first of p[0..n) outside `d` or above `limit` in magnitude, or n.
template <class S>
std::size_t first_outside(const S* p, std::size_t n, Domain d, double limit) {
  if (d == Domain::Any) return n;
  for (std::size_t i = 0; i < n; ++i) {
    const double x = to_double(p[i]);
    if (!std::isfinite(x) || std::fabs(x) > limit) return i;
    if (d == Domain::NonNegative && x < 0.0) return i;
  }
  return n;
}

/// A loaded buffer may hold up to kReachSlack times what its transform can reach (BufferSpec::
/// reach): the recurrences' bounds hold in exact arithmetic, and each step's rounding (and
/// Bf16State's stochastic rounding, up to one bf16 unit, 2^-8 relative) may go past them.
inline constexpr double kReachSlack = 2.0;

/// Per buffer of layer `j` of a plain optimizer's state `p`, in save order: the largest magnitude
/// a loaded value may have (see kReachSlack), +infinity where nothing bounds it. Bounds follow
/// from the gradient bound 2^gradient_limit_exponent<S>, which holds only where gradients are
/// checked: with NonFinitePolicy::Unchecked, any finite value is reachable.
template <class O, class P>
void push_limits(const O& o, P& p, std::size_t j, NonFinitePolicy policy, std::vector<double>& out) {
  using C = typename P::chain_type;
  const double g = std::ldexp(1.0, gradient_limit_exponent<typename P::scalar_type>);
  C::visit_reach(
      p.layers[j], o.hp, g,
      [&](double limit) { out.push_back(policy == NonFinitePolicy::Unchecked ? reach::unbounded : kReachSlack * limit); },
      o.coefficients);
}
template <class C, class State>
std::vector<double> value_limits(const Optimizer<C>& o, State& st) {
  std::vector<double> out;
  for (std::size_t j = 0; j < st.layers.size(); ++j) push_limits(o, st, j, o.hp.on_non_finite, out);
  return out;
}
template <class R, class State, std::size_t... I>
void routed_limits(const R& r, State& st, std::vector<double>& out, std::index_sequence<I...>) {
  for (std::size_t k = 0; k < st.route.size(); ++k)
    ((st.route[k] == I ? push_limits(std::get<I>(r.routes).opt, std::get<I>(st.parts), st.local[k], r.on_non_finite, out)
                       : void()),
     ...);
}
template <class... Opts, class State>
std::vector<double> value_limits(const Routed<Opts...>& r, State& st) {
  std::vector<double> out;
  routed_limits(r, st, out, std::index_sequence_for<Opts...>{});
  return out;
}

inline const char* shape_factor_name(ShapeFactor f) {
  switch (f) {
    case ShapeFactor::None: return "none";
    case ShapeFactor::MuonMax1: return "muon-max1";
    case ShapeFactor::MatchAdamW: return "match-adamw";
    case ShapeFactor::SpectralMuP: return "spectral-mup";
  }
  return "?";
}
inline const char* non_finite_name(NonFinitePolicy p) {
  switch (p) {
    case NonFinitePolicy::Error: return "error";
    case NonFinitePolicy::Skip: return "skip";
    case NonFinitePolicy::Unchecked: return "unchecked";
  }
  return "?";
}

/// One route of the optimizer as JSON (a plain optimizer is one route taking every layer).
template <class C>
std::string route_json(const std::string& selector, const Optimizer<C>& o) {
  using json::number;
  using json::quote;
  const Hyper& h = o.hp;
  std::string s = "{\"selector\":" + quote(selector) + ",\"chain\":" + quote(o.name()) + ",\"hyper\":{";
  s += "\"lr\":" + number(h.lr) + ",\"beta1\":" + number(h.beta1) + ",\"beta2\":" + number(h.beta2) +
       ",\"eps\":" + number(h.eps) + ",\"weight_decay\":" + number(h.weight_decay) +
       ",\"shape_factor\":" + quote(shape_factor_name(h.shape_factor)) +
       ",\"on_non_finite\":" + quote(non_finite_name(h.on_non_finite)) + "},\"roles\":{";
  for (std::size_t r = 0; r < o.roles.size(); ++r) {
    const RoleDefaults& d = o.roles[r];
    if (r) s += ",";
    s += quote(role_name(Role(r))) + ":{\"geometry\":" + quote(d.geometry.name()) +
         ",\"radius\":" + number(d.radius) + ",\"lr_scale\":" + number(d.lr_scale) + "}";
  }
  s += "}";
  // The coefficients transforms own (Coefficients), by position in the chain; only when set,
  // so a file of an optimizer without them is byte-identical to one written before they existed.
  std::string own;
  for (std::size_t i = 0; i < o.coefficients.size(); ++i) {
    const Coefficients& c = o.coefficients[i];
    if (c.empty()) continue;
    std::string e = "{\"at\":" + std::to_string(i);
    if (c.beta1) e += ",\"beta1\":" + number(*c.beta1);
    if (c.beta2) e += ",\"beta2\":" + number(*c.beta2);
    if (c.eps) e += ",\"eps\":" + number(*c.eps);
    if (c.weight_decay) e += ",\"weight_decay\":" + number(*c.weight_decay);
    own += (own.empty() ? "" : ",") + e + "}";
  }
  if (!own.empty()) s += ",\"coefficients\":[" + own + "]";
  return s + "}";
}
template <class C>
std::string routes_json(const Optimizer<C>& o) {
  return "[" + route_json("*", o) + "]";
}
template <class... Opts>
std::string routes_json(const Routed<Opts...>& r) {
  std::string s = "[";
  std::apply([&](const auto&... rt) { ((s += (s.size() > 1 ? "," : "") + route_json(rt.select.what, rt.opt)), ...); },
             r.routes);
  return s + "]";
}

/// The step count: decimal digits (io/integer.hpp, the one parser of integers in files), at
/// most `max`; false otherwise.
inline bool parse_count(const std::string& s, long long max, long long& out) {
  std::uint64_t v = 0;
  if (!io::parse_decimal(s, std::uint64_t(max), v)) return false;
  out = static_cast<long long>(v);
  return true;
}

/// A buffer of the state being loaded: where its bytes go and what they may hold. A buffer
/// holds the parameters' scalar S or, kept by Bf16State, Eigen::bfloat16 (`bf16`).
template <class S, class Space>
struct LoadTarget {
  std::string layer, key;
  Domain domain;
  Index rows, cols;
  bool bf16 = false;
  /// Filled from the file, swapped into the state once everything is checked (one of the two).
  buffer_t<S, Space> fresh;
  buffer_t<Eigen::bfloat16, Space> fresh_bf16;
  std::uint64_t offset = 0;  ///< into the tensor bytes (version 2)
  double limit = reach::unbounded;  ///< largest magnitude accepted (value_limits)
  std::size_t scalar_bytes() const { return bf16 ? sizeof(Eigen::bfloat16) : sizeof(S); }
  const char* dtype() const { return bf16 ? dtype_name<Eigen::bfloat16>() : dtype_name<S>(); }
  std::uint64_t bytes() const { return scalar_bytes() * std::uint64_t(rows) * std::uint64_t(cols); }
};

/// Streams a buffer's scalars (of type E) from the file into `fresh` through a staging buffer of
/// at most kStagingBytes, checking their domain and feeding `hash` the raw bytes.
template <class E, class B, class T, class Hash, class Source>
void read_typed(Source& f, const T& t, B& fresh, Hash& hash) {
  const std::size_t total = std::size_t(t.rows) * std::size_t(t.cols), chunk = kStagingBytes / sizeof(E);
  std::vector<E> values(std::min(chunk, total));
  for (std::size_t done = 0; done < total;) {
    const std::size_t n = std::min(chunk, total - done);
    f.read(values.data(), n * sizeof(E));
    hash.update(values.data(), n * sizeof(E));
    const std::size_t bad = first_outside(values.data(), n, t.domain, t.limit);
    if (bad < n) {
      const auto text = [](double x) {
        std::string v = json::number(x);
        return !v.empty() && v.front() == '"' ? v.substr(1, v.size() - 2) : v;
      };
      std::string domain = domain_name(t.domain);
      if (t.limit < reach::unbounded)
        domain += ", at most " + text(t.limit) +
                  " in magnitude: what gradients inside the step's bound can reach under these hyper-parameters";
      throw state_file_error("state file '" + f.path() + "': layer '" + t.layer + "', buffer '" + t.key +
                             "': entry " + std::to_string(done + bad) + " is " + text(to_double(values[bad])) +
                             ", outside its domain (" + domain + ")");
    }
    copy_from_host(fresh, Index(done), Index(n), values.data());
    done += n;
  }
}
template <class S, class Space, class Hash, class Source>
void read_values(Source& f, LoadTarget<S, Space>& t, Hash& hash) {
  if (t.bf16) read_typed<Eigen::bfloat16>(f, t, t.fresh_bf16, hash);
  else read_typed<S>(f, t, t.fresh, hash);
}

/// The buffers of `st` in save order, each with a fresh buffer of its shape in st's space and
/// the values `opt` lets it hold.
template <class Opt, class State>
auto load_targets(const Opt& opt, State& st) {
  using S = typename State::scalar_type;
  using Space = typename State::space_type;
  std::vector<LoadTarget<S, Space>> targets;
  st.for_each_layer([&](const LayerRecord& rec, const std::string&, auto&& visit) {
    visit([&](const std::string& key, auto& b, Domain d) {
      using B = std::decay_t<decltype(b)>;
      constexpr bool bf16 = std::is_same_v<B, buffer_t<Eigen::bfloat16, Space>>;
      static_assert(std::is_same_v<B, buffer_t<S, Space>> || bf16,
                    "steepest::load: a transform's state buffers must be steepest::buffer_t<S, Space> "
                    "or steepest::buffer_t<Eigen::bfloat16, Space>");
      LoadTarget<S, Space> t{rec.name, key, d, b.rows(), b.cols(), bf16, {}, {}};
      if constexpr (bf16) t.fresh_bf16 = B::Zero(b.rows(), b.cols());
      else t.fresh = B::Zero(b.rows(), b.cols());
      targets.push_back(std::move(t));
    });
  });
  const std::vector<double> limits = value_limits(opt, st);
  if (limits.size() != targets.size()) throw std::logic_error("steepest::load: value limits do not match the state's buffers");
  for (std::size_t i = 0; i < targets.size(); ++i) targets[i].limit = limits[i];
  return targets;
}
/// Everything checked: the fresh buffers replace the state's (swaps: nothing can fail here),
/// with the step counter and each layer's skipped-step count (`skipped`: one per layer, or none
/// for all zero).
template <class State, class Targets>
void commit_targets(State& st, Targets& targets, long long step, const std::vector<long long>& skipped = {}) {
  std::size_t i = 0;
  st.for_each_layer([&](const LayerRecord&, const std::string&, auto&& visit) {
    visit([&](const std::string&, auto& b, Domain) {
      if constexpr (std::is_same_v<buffer_scalar_t<std::decay_t<decltype(b)>>, Eigen::bfloat16>)
        b.swap(targets[i++].fresh_bf16);
      else
        b.swap(targets[i++].fresh);
    });
  });
  st.set_step(step);
  const std::vector<long long*> counts = st.skip_counts();
  for (std::size_t j = 0; j < counts.size(); ++j) *counts[j] = skipped.empty() ? 0 : skipped[j];
}

/// FNV-1a over bytes, incrementally (version 1's checksum).
struct Fnv1a {
  std::uint64_t h = 1469598103934665603ull;
  void update(const void* data, std::size_t n) {
    const unsigned char* p = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < n; ++i) {
      h ^= p[i];
      h *= 1099511628211ull;
    }
  }
};
/// Reads a trivially copyable T from the file, hashing its bytes.
template <class T, class Hash, class Source>
T read_pod(Source& f, Hash& hash) {
  T v;
  f.read(&v, sizeof(T));
  hash.update(&v, sizeof(T));
  return v;
}

/// Version 1 (see the file comment): read after its 8-byte magic.
template <class Opt, class State, class Source>
void load_v1(const Opt& opt, State& st, Source& f) {
  using S = typename State::scalar_type;
  const std::string& path = f.path();
  const auto fail = [&](const std::string& why) { throw state_file_error("state file '" + path + "': " + why); };
  Fnv1a hash;
  hash.update("STEEPEST", 8);
  if (f.size() < 8 + 4 + 4 + 8) fail("truncated");
  const auto version = read_pod<std::uint32_t>(f, hash);
  if (version != 1) fail("version " + std::to_string(version) + ", this build reads versions 1 and 2");
  const auto scalar = read_pod<std::uint32_t>(f, hash);
  if (scalar != sizeof(S)) fail("scalar size " + std::to_string(scalar) + " bytes, expected " + std::to_string(sizeof(S)));

  auto targets = load_targets(opt, st);
  std::vector<const LayerRecord*> records;
  std::vector<std::size_t> buffers_of;
  st.for_each_layer([&](const LayerRecord& rec, const std::string&, auto&& visit) {
    records.push_back(&rec);
    std::size_t n = 0;
    visit([&](const std::string&, auto&, Domain) { ++n; });
    buffers_of.push_back(n);
  });
  // The size this state's file must have; checked before any tensor byte is read.
  const std::string chain_expected = opt.name();
  std::uint64_t expected = 8 + 4 + 4 + 8 + chain_expected.size() + 8 + 8 + 8;
  for (const auto* r : records) expected += 8 + r->name.size() + 8 + 8 + 8;
  for (const auto& t : targets) expected += 16 + t.bytes();

  const auto read_string = [&]() {
    const auto n = read_pod<std::uint64_t>(f, hash);
    if (n > f.size() - f.position() || n > (std::uint64_t(1) << 20))
      fail("corrupt (a name of " + std::to_string(n) + " bytes)");
    std::string s(n, '\0');
    f.read(s.data(), n);
    hash.update(s.data(), n);
    return s;
  };
  const std::string chain = read_string();
  if (chain != chain_expected) fail("saved by optimizer '" + chain + "', not '" + chain_expected + "'");
  if (f.size() != expected)
    fail("size " + std::to_string(f.size()) + " bytes, a version-1 file of this state has " + std::to_string(expected));
  const auto step = read_pod<std::int64_t>(f, hash);
  if (step < 0 || step > kMaxStateStep) fail("step " + std::to_string(step) + " is outside [0, 2^53]");
  const auto nlayers = read_pod<std::uint64_t>(f, hash);
  if (nlayers != records.size())
    fail(std::to_string(nlayers) + " layers, the model has " + std::to_string(records.size()));
  std::size_t ti = 0;
  for (std::size_t i = 0; i < records.size(); ++i) {
    const LayerRecord& want = *records[i];
    const std::string name = read_string();
    const auto rows = read_pod<std::int64_t>(f, hash), cols = read_pod<std::int64_t>(f, hash);
    if (name != want.name || rows != want.rows || cols != want.cols)
      fail("layer " + std::to_string(i) + " is '" + name + "' " + shape_string(rows, cols) + ", the model's is '" + want.name + "' " +
           shape_string(want.rows, want.cols));
    if (read_pod<std::uint64_t>(f, hash) != buffers_of[i]) fail("layer '" + want.name + "': wrong number of buffers");
    for (std::size_t k = 0; k < buffers_of[i]; ++k, ++ti) {
      auto& t = targets[ti];
      const auto br = read_pod<std::int64_t>(f, hash), bc = read_pod<std::int64_t>(f, hash);
      if (br != t.rows || bc != t.cols)
        fail("layer '" + want.name + "': buffer is " + shape_string(br, bc) + ", expected " + shape_string(t.rows, t.cols));
      read_values(f, t, hash);
    }
  }
  const std::uint64_t computed = hash.h;
  std::uint64_t stored;
  f.read(&stored, 8);
#if !defined(STEEPEST_STATE_IO_FUZZING)  // the fuzzing build lets mutated files past the checksum
  if (stored != computed) fail("checksum mismatch (truncated or corrupt)");
#else
  (void)computed;
#endif
  commit_targets(st, targets, step);
}

/// How many JSON values a version-2 header (and its "layers" string) of a state with `layers`
/// layers and `buffers` buffers may hold: what save() writes (8 per tensor; 10 + 2 per buffer
/// per layer) with room for 1000 more (metadata another tool adds, fields of later versions).
/// Anything wider is refused while it is parsed, before it costs memory (io/json.hpp).
struct HeaderLimits {
  json::Limits header, layers;
};
template <class State>
HeaderLimits header_limits(State& st) {
  std::size_t layers = 0, buffers = 0;
  st.for_each_layer([&](const LayerRecord&, const std::string&, auto&& visit) {
    ++layers;
    visit([&](const std::string&, auto&, Domain) { ++buffers; });
  });
  HeaderLimits l;
  l.header.max_values = 8 * buffers + 1024;
  l.layers.max_values = 16 * layers + 4 * buffers + 1024;
  return l;
}

inline const json::Value& member(const json::Value& obj, const char* key, json::Value::Type type,
                                 const std::string& where, const std::string& path) {
  const json::Value* v = obj.find(key);
  if (!v || !v->is(type))
    throw state_file_error("state file '" + path + "': " + where + " has no valid \"" + key + "\"");
  return *v;
}

}  // namespace detail

namespace detail {
/// The checkpoint of `st` into `out` (io::DurableWriter or io::MemoryWriter).
template <class Opt, class State, class Sink>
void save_to(const Opt& opt, State& st, Sink& out) {
  using S = typename State::scalar_type;
  using json::quote;
  detail::require_little_endian();
  const char* dtype = detail::dtype_name<S>();

  // The header: tensors in parameter-set order, back to back.
  std::string layers = "[";
  std::vector<io::safetensors::Entry> tensors;
  const std::vector<long long*> skipped = st.skip_counts();
  std::size_t li = 0;
  st.for_each_layer([&](const LayerRecord& rec, const std::string& chain, auto&& visit) {
    std::string keys, domains;
    visit([&](const std::string& key, auto& b, Domain d) {
      using E = buffer_scalar_t<std::decay_t<decltype(b)>>;
      const std::uint64_t rows = std::uint64_t(b.rows()), cols = std::uint64_t(b.cols());
      tensors.push_back({rec.name + "/" + key, dtype_name<E>(), rows, cols, sizeof(E) * rows * cols});
      keys += (keys.empty() ? "" : ",") + quote(key);
      domains += (domains.empty() ? "" : ",") + quote(detail::domain_key(d));
    });
    layers += (layers.size() > 1 ? "," : "") + std::string("{\"name\":") + quote(rec.name) + ",\"shape\":[" +
              std::to_string(rec.rows) + "," + std::to_string(rec.cols) + "],\"role\":" + quote(role_name(rec.role)) +
              ",\"geometry\":" + quote(rec.geometry) + ",\"chain\":" + quote(chain) + ",\"buffers\":[" + keys + "],\"domains\":[" + domains + "]" +
              // only for a layer that skipped steps: files of runs that never skip stay as they were
              (*skipped[li] ? ",\"skipped\":\"" + std::to_string(*skipped[li]) + "\"" : std::string()) + "}";
    ++li;
  });
  layers += "]";
  const std::string metadata = "\"format\":" + quote(kStateFileFormat) + ",\"format_version\":\"" +
                               std::to_string(kStateFileVersion) + "\",\"dtype\":\"" + dtype + "\",\"step\":\"" +
                               std::to_string(st.step) + "\",\"optimizer\":" + quote(opt.name()) +
                               ",\"layers\":" + quote(layers) + ",\"routes\":" + quote(detail::routes_json(opt));
  io::safetensors::Writer<Sink> file(out, io::safetensors::make_header(metadata, tensors));
  std::vector<unsigned char> staging(detail::kStagingBytes);
  st.for_each_layer([&](const LayerRecord&, const std::string&, auto&& visit) {
    visit([&](const std::string&, auto& b, Domain) {
      constexpr std::size_t es = sizeof(buffer_scalar_t<std::decay_t<decltype(b)>>);
      const Index total = b.rows() * b.cols();
      for (Index done = 0; done < total;) {
        const Index k = std::min<Index>(Index(staging.size() / es), total - done);
        copy_to_host(b, done, k, staging.data());  // device buffers: one chunk down at a time
        file.write(staging.data(), es * std::size_t(k));
        done += k;
      }
    });
  });
  file.finish();
}

/// Reads a checkpoint from `f` (io::InputFile or io::MemoryReader) into `st`.
template <class Opt, class State, class Source>
void load_from(const Opt& opt, State& st, Source& f) {
  using S = typename State::scalar_type;
  using json::Value;
  require_little_endian();
  const std::string& path = f.path();
  const auto fail = [&](const std::string& why) { throw state_file_error("state file '" + path + "': " + why); };
  if (f.size() < 8) fail("truncated (" + std::to_string(f.size()) + " bytes): not a steepest state file");
  unsigned char first[8];
  f.read(first, 8);
  if (std::memcmp(first, "STEEPEST", 8) == 0) return detail::load_v1(opt, st, f);

  const HeaderLimits limits = header_limits(st);
  const io::safetensors::ReadHeader header = io::safetensors::read_header(f, first, limits.header, fail);
  const Value& h = header.root;
  const Value* meta = header.metadata;
  const auto field = [&](const char* key) -> const std::string& {
    return detail::member(*meta, key, Value::Type::String, "__metadata__", path).text;
  };
  if (field("format") != kStateFileFormat) fail("not a steepest optimizer-state file (format '" + field("format") + "')");
  if (field("format_version") != std::to_string(kStateFileVersion))
    fail("version " + field("format_version") + ", this build reads versions 1 and 2");
  if (field("dtype") != detail::dtype_name<S>())
    fail("dtype " + field("dtype") + ", the state's is " + detail::dtype_name<S>());
  if (field("optimizer") != opt.name()) fail("saved by optimizer '" + field("optimizer") + "', not '" + opt.name() + "'");
  long long step = 0;
  if (!detail::parse_count(field("step"), kMaxStateStep, step))
    fail("step '" + field("step") + "' is not a count in [0, 2^53]");

  // The layers: each one's identity against the state's.
  Value layers;
  try {
    layers = json::parse(field("layers"), limits.layers);
  } catch (const json::parse_error& e) {
    fail(std::string("metadata \"layers\": ") + e.what());
  }
  if (!layers.is(Value::Type::Array)) fail("metadata \"layers\" is not an array");
  std::size_t li = 0;
  std::vector<long long> skipped;
  st.for_each_layer([&](const LayerRecord& want, const std::string& chain, auto&& visit) {
    if (li >= layers.items.size())
      fail(std::to_string(layers.items.size()) + " layers, the model has more (first missing: '" + want.name + "')");
    const Value& l = layers.items[li];
    const std::string where = "layer " + std::to_string(li);
    const auto text = [&](const char* key) -> const std::string& {
      return detail::member(l, key, Value::Type::String, where, path).text;
    };
    const Value& shape = detail::member(l, "shape", Value::Type::Array, where, path);
    std::uint64_t r = 0, c = 0;
    if (shape.items.size() != 2 || !shape.items[0].to_u64(r) || !shape.items[1].to_u64(c))
      fail(where + ": invalid shape");
    if (text("name") != want.name || r != std::uint64_t(want.rows) || c != std::uint64_t(want.cols))
      fail(where + " is '" + text("name") + "' " + shape_string(Index(r), Index(c)) + ", the model's is '" + want.name +
           "' " + shape_string(want.rows, want.cols));
    const auto same = [&](const char* what, const std::string& saved, const std::string& now) {
      if (saved != now)
        fail("layer '" + want.name + "': saved with " + what + " '" + saved + "', the optimizer gives it '" + now + "'");
    };
    same("role", text("role"), role_name(want.role));
    same("geometry", text("geometry"), want.geometry);
    same("chain", text("chain"), chain);
    const Value& bufs = detail::member(l, "buffers", Value::Type::Array, where, path);
    std::size_t k = 0;
    visit([&](const std::string& key, auto&, Domain) {
      if (k >= bufs.items.size() || !bufs.items[k].is(Value::Type::String) || bufs.items[k].text != key)
        fail("layer '" + want.name + "': buffer " + std::to_string(k) + " is not '" + key + "'");
      ++k;
    });
    if (k != bufs.items.size()) fail("layer '" + want.name + "': wrong number of buffers");
    long long skips = 0;  // steps this layer had no gradient (absent: none); at most every step
    if (const Value* v = l.find("skipped"))
      if (!v->is(Value::Type::String) || !detail::parse_count(v->text, step, skips))
        fail("layer '" + want.name + "': \"skipped\" is not a count in [0, step " + std::to_string(step) + "]");
    skipped.push_back(skips);
    ++li;
  });
  if (li != layers.items.size())
    fail(std::to_string(layers.items.size()) + " layers, the model has " + std::to_string(li));

  // The tensors: each one present, of the state's dtype and shape; together they tile the bytes
  // after the header exactly (safetensors' rule), which fixes the file's size.
  std::unordered_map<std::string, const Value*> entries;
  for (const auto& [key, v] : h.members)
    if (key != "__metadata__") entries.emplace(key, &v);
  auto targets = detail::load_targets(opt, st);
  if (entries.size() != targets.size())
    fail(std::to_string(entries.size()) + " tensors, the state has " + std::to_string(targets.size()));
  std::vector<std::uint64_t> offsets, sizes;
  for (auto& t : targets) {
    const std::string name = t.layer + "/" + t.key;
    const auto it = entries.find(name);
    if (it == entries.end()) fail("no tensor '" + name + "'");
    t.offset = io::safetensors::entry_offset(
        *it->second, {name, t.dtype(), std::uint64_t(t.rows), std::uint64_t(t.cols), t.bytes()}, fail);
    offsets.push_back(t.offset);
    sizes.push_back(t.bytes());
  }
  const std::vector<std::size_t> order =
      io::safetensors::tiling_order(offsets, sizes, f.size(), header.text.size(), fail);

  // The tensor bytes, in file order, into the fresh buffers; then the checksum.
  io::Crc32 crc;
  std::uint64_t stored_crc = 0;
  const bool stored = io::safetensors::header_crc(header, first, crc, stored_crc, fail);
  for (std::size_t i : order) detail::read_values(f, targets[i], crc);
#if !defined(STEEPEST_STATE_IO_FUZZING)  // the fuzzing build lets mutated files past the checksum
  if (stored && stored_crc != crc.value())
    fail("checksum mismatch (truncated or corrupt; or rewritten by a tool that copied the metadata, "
         "crc32 included: such a tool must drop the crc32 field)");
#else
  (void)stored;
#endif
  detail::commit_targets(st, targets, step, skipped);
}
}  // namespace detail

/// Writes `st` (the state of optimizer `opt`, plain or routed) to `path`, atomically and
/// durably, in the format described at the top of this file.
template <class Opt, class State>
void save(const Opt& opt, State& st, const std::string& path) {
  io::DurableWriter out(path);
  detail::save_to(opt, st, out);
  out.commit();
}

/// Replaces `st` with the state stored in `path`, which must have been saved by the same
/// optimizer for the same layers (names, shapes, roles, geometries, chains) and scalar type.
/// Throws state_file_error otherwise (see the file comment), leaving `st` unchanged.
template <class Opt, class State>
void load(const Opt& opt, State& st, const std::string& path) {
  io::InputFile f(path);
  detail::load_from(opt, st, f);
}

/// The checkpoint of `st` as bytes in memory (the same format as save's file), for embedding in
/// another archive (e.g. the libtorch adapter's torch::save).
template <class Opt, class State>
std::string save_bytes(const Opt& opt, State& st) {
  io::MemoryWriter out;
  detail::save_to(opt, st, out);
  return out.take();
}

/// load() from bytes in memory; `name` stands for the file name in messages.
template <class Opt, class State>
void load_bytes(const Opt& opt, State& st, std::string_view bytes, const std::string& name = "(memory)") {
  io::MemoryReader f(bytes, name);
  detail::load_from(opt, st, f);
}

}  // namespace steepest
