// Checkpoints (optim/state_io.hpp): the safetensors layout, identity and value checks, version-1
// files, durability and tidiness, memory, and the small JSON and CRC-32 pieces under them.
// Independent references: the CRC-32 check value of the standard, hand-written JSON, a
// version-1 writer written here from the format's description, bytes edited by hand.
#include <doctest/doctest.h>

#include "skip.hpp"

#include <steepest/steepest.hpp>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "optim_helpers.hpp"
#include "state_v1_writer.hpp"

namespace st = steepest;
using optim_test::grad_at;
using optim_test::hyper;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
void spit(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}
bool exists(const std::string& path) {
  struct stat sb;
  return ::stat(path.c_str(), &sb) == 0;
}

/// A small model with every role: hidden 6x5, embedding 5x4, output 3x6, a vector of 6.
template <class S>
struct Net {
  std::vector<S> h, e, o, v;
  st::ParamSet<S> params;
  explicit Net(bool swap_roles = false) : h(30), e(20), o(18), v(6) {
    for (auto* p : {&h, &e, &o, &v})
      for (std::size_t i = 0; i < p->size(); ++i) (*p)[i] = S(0.1 * std::sin(double(i) + double(p->size())));
    params.add("h", st::Role::Hidden, h.data(), 6, 5);
    params.add("e", swap_roles ? st::Role::Output : st::Role::Embedding, e.data(), 5, 4);
    params.add("o", swap_roles ? st::Role::Embedding : st::Role::Output, o.data(), 3, 6);
    params.add_vector("v", v.data(), 6);
  }
  /// Step t; tensor `without` (0 h, 1 e, 2 o, 3 v) has no gradient when given.
  template <class Opt, class State>
  void step(const Opt& opt, State& state, int t, int without = -1) {
    std::vector<std::vector<S>> g;
    st::Gradients<S> G;
    for (const auto* p : {&h, &e, &o, &v}) {
      const auto d = grad_at(p->size(), t, double(p->size()));
      g.emplace_back(d.begin(), d.end());
    }
    const std::pair<st::Index, st::Index> shapes[] = {{6, 5}, {5, 4}, {3, 6}, {6, 1}};
    for (int i = 0; i < 4; ++i)
      if (i == without) G.skip();
      else G.add(g[std::size_t(i)].data(), shapes[i].first, shapes[i].second);
    opt.step(params, G, state);
  }
};

/// Every buffer of a state, flattened, and its step: what "nothing changed" compares.
template <class State>
std::pair<long long, std::vector<double>> snapshot(State& s) {
  std::vector<double> all;
  s.for_each_layer([&](const st::LayerRecord&, const std::string&, auto&& visit) {
    visit([&](const std::string&, auto& b, st::Domain) { all.insert(all.end(), b.data(), b.data() + b.size()); });
  });
  return {s.step, all};
}

/// The header of a version-2 file, and its tensor bytes.
struct Parts {
  std::string header, payload;
};
Parts split(const std::string& file) {
  std::uint64_t n = 0;
  std::memcpy(&n, file.data(), 8);
  return {file.substr(8, n), file.substr(8 + n)};
}
/// Reassembles a file from an edited header and payload, padding the header and recomputing the
/// CRC as save() does (so that a test reaches the check it means to reach).
std::string join(std::string header, const std::string& payload, bool fix_crc = true) {
  while (!header.empty() && header.back() == ' ') header.pop_back();
  header.append((8 - (8 + header.size()) % 8) % 8, ' ');
  std::string out(8, '\0');
  const std::uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  out += header + payload;
  const auto at = out.find("\"crc32\":\"");
  if (fix_crc && at != std::string::npos) {
    out.replace(at + 9, 8, "00000000");
    char hex[9];
    std::snprintf(hex, sizeof hex, "%08x", unsigned(st::io::crc32(out.data(), out.size())));
    out.replace(at + 9, 8, hex);
  }
  return out;
}
std::string replace_once(std::string s, const std::string& from, const std::string& to) {
  const auto at = s.find(from);
  REQUIRE_MESSAGE(at != std::string::npos, from);
  return s.replace(at, from.size(), to);
}

/// One rows x cols hidden matrix and its AdamW state after one step: a large state to save.
struct BigAdamW {
  std::vector<float> w, g;
  st::ParamSet<float> params;
  st::Optimizer<st::AdamWChain> opt = st::adamw(hyper(0.01, 0.9, 0.99, 0.0));
  st::Optimizer<st::AdamWChain>::State<float> state;
  BigAdamW(st::Index rows, st::Index cols) : w(std::size_t(rows * cols), 0.5f), g(w.size(), 0.25f) {
    params.add("w", st::Role::Hidden, w.data(), rows, cols);
    st::Gradients<float> G;
    G.add(g.data(), rows, cols);
    state = opt.init(params);
    opt.step(params, G, state);
  }
};

}  // namespace

TEST_CASE("CRC-32 and the JSON reader against their standards") {
  CHECK(st::io::crc32("123456789", 9) == 0xCBF43926u);  // the check value of CRC-32/ISO-HDLC
  CHECK(st::io::crc32("", 0) == 0u);
  std::string long_text(1000, 'x');
  for (std::size_t i = 0; i < long_text.size(); ++i) long_text[i] = char(i * 7 + 3);
  st::io::Crc32 c;  // incremental == one shot, across 8-byte and odd boundaries
  c.update(long_text.data(), 13);
  c.update(long_text.data() + 13, 987);
  CHECK(c.value() == st::io::crc32(long_text.data(), long_text.size()));
  std::uint32_t bitwise = 0xFFFFFFFFu;  // the plain bit-at-a-time definition
  for (unsigned char ch : long_text) {
    bitwise ^= ch;
    for (int k = 0; k < 8; ++k) bitwise = (bitwise & 1u) ? (bitwise >> 1) ^ 0xEDB88320u : bitwise >> 1;
  }
  CHECK((bitwise ^ 0xFFFFFFFFu) == c.value());

  namespace js = st::json;
  const auto v = js::parse(R"( {"a": [1, -2.5e3, true, null], "b\u00e9\ud83d\ude00": "x\"\\\/\n", "n": 18446744073709551615} )");
  REQUIRE(v.is(js::Value::Type::Object));
  CHECK(v.find("a")->items.size() == 4);
  CHECK(v.find("b\xc3\xa9\xf0\x9f\x98\x80")->text == "x\"\\/\n");
  std::uint64_t u = 0;
  CHECK(v.find("n")->to_u64(u));
  CHECK(u == 18446744073709551615ull);
  CHECK_FALSE(v.find("a")->items[1].to_u64(u));                        // negative, fraction: not a count
  CHECK_FALSE(js::parse("18446744073709551616").to_u64(u));            // 2^64 overflows
  for (const char* bad : {"", "{", "{\"a\":1,}", "[1 2]", "{\"a\":1,\"a\":2}", "01", "1.", "\"\\ud800\"",
                          "\"a\nb\"", "{} x", "nul", "[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]", "\"\\x\""}) {
    CAPTURE(bad);
    CHECK_THROWS_AS(js::parse(bad), js::parse_error);
  }
  CHECK(js::parse(js::quote(std::string("q\"\\\x01\t"))).text == std::string("q\"\\\x01\t"));
  CHECK(js::number(0.1) == "0.1");
  CHECK(std::strtod(js::number(1.0 / 3.0).c_str(), nullptr) == 1.0 / 3.0);
}

TEST_CASE("every named optimizer: save -> load restores every buffer bitwise, in the safetensors layout") {
  const std::string path = "steepest_ckpt_named.safetensors";
  auto check = [&](const char* what, auto opt) {
    CAPTURE(what);
    Net<float> a, b;
    auto sa = opt.init(a.params);
    for (int t = 1; t <= 3; ++t) a.step(opt, sa, t);
    st::save(opt, sa, path);
    CHECK_FALSE(exists(path + ".tmp"));
    auto sb = opt.init(b.params);
    st::load(opt, sb, path);
    CHECK(snapshot(sb) == snapshot(sa));
    b.h = a.h, b.e = a.e, b.o = a.o, b.v = a.v;  // the same weights, then the same steps
    for (int t = 4; t <= 5; ++t) a.step(opt, sa, t), b.step(opt, sb, t);
    CHECK(a.h == b.h);
    CHECK(a.e == b.e);
    CHECK(a.o == b.o);
    CHECK(a.v == b.v);
    // The layout: 8-byte length, JSON header padded to 8 bytes, tensors in layer order.
    const std::string file = slurp(path);
    const Parts p = split(file);
    CHECK((8 + p.header.size()) % 8 == 0);
    const auto h = st::json::parse(p.header);
    const auto* meta = h.find("__metadata__");
    REQUIRE(meta);
    CHECK(meta->find("format")->text == "steepest.optimizer-state");
    CHECK(meta->find("step")->text == "3");
    CHECK(meta->find("optimizer")->text == opt.name());
    std::size_t bytes = 0;
    for (const auto& [k, v] : h.members)
      if (k != "__metadata__") {
        std::uint64_t r = 0, c = 0;
        REQUIRE(v.find("shape")->items[0].to_u64(r));
        REQUIRE(v.find("shape")->items[1].to_u64(c));
        bytes += 4 * std::size_t(r * c);
      }
    CHECK(bytes == p.payload.size());
  };
  const st::Hyper hp = hyper(0.01, 0.9, 0.99, 0.1);
  check("sgd", st::sgd(hp));
  check("sgd-nesterov", st::sgd_nesterov(hp));
  check("adamw", st::adamw(hp));
  check("adamw-rescaled", st::adamw_rescaled(hp));
  check("sign", st::sign_descent(hp));
  check("lion", st::lion(hp));
  check("moga-row", st::moga_row(hp));
  check("moga-col", st::moga_col(hp));
  check("moga-row-momentum", st::moga_row_momentum(hp));
  check("muon", st::muon(hp));
  check("muon-polar-express", st::muon<st::SpectralPolarExpress>(hp));
  check("muon-scion", st::muon_scion(hp));
  check("scion", st::scion(hp));
  check("scion-unconstrained", st::scion_unconstrained(hp));
  std::remove(path.c_str());
}

TEST_CASE("a file from another optimizer, geometry, role layout or scalar type is refused, nothing changes") {
  const std::string path = "steepest_ckpt_identity.safetensors";
  const st::Hyper hp = hyper(0.01, 0.9, 0.99, 0.0);
  auto refused = [&](auto saver, auto loader, const char* expect, bool swap_roles = false) {
    CAPTURE(expect);
    Net<float> a, b(swap_roles);
    auto sa = saver.init(a.params);
    a.step(saver, sa, 1);
    st::save(saver, sa, path);
    auto sb = loader.init(b.params);
    b.step(loader, sb, 1);
    b.step(loader, sb, 2);
    const auto before = snapshot(sb);
    CHECK_THROWS_WITH_AS(st::load(loader, sb, path), doctest::Contains(expect), st::state_file_error);
    CHECK(snapshot(sb) == before);
  };
  // Same chain, other geometry: MOGA-row <-> MOGA-col, Muon by Newton-Schulz / Polar Express / SVD.
  refused(st::moga_row(hp), st::moga_col(hp), "saved with geometry 'mean(2->inf)', the optimizer gives it 'mean(1->2)'");
  refused(st::moga_col(hp), st::moga_row(hp), "saved with geometry 'mean(1->2)'");
  refused(st::muon(hp), st::muon<st::SpectralPolarExpress>(hp), "geometry '2->2 (quinticx5)'");
  refused(st::muon<st::SpectralPolarExpress>(hp), st::muon<st::SpectralExact>(hp), "geometry '2->2 (polar-expressx5)'");
  refused(st::muon<st::SpectralExact>(hp), st::muon(hp), "geometry '2->2 (svd)'");
  // Swapped roles (same names and shapes): AdamW gives every role the same geometry, so only the
  // role tells them apart.
  refused(st::adamw(hp), st::adamw(hp), "layer 'e': saved with role 'embedding', the optimizer gives it 'output'", true);
  // Another chain, another routing.
  refused(st::adamw(hp), st::lion(hp), "saved by optimizer 'adam+step', not 'lion+step'");
  refused(st::muon(hp), st::muon_scion(hp), "saved by optimizer 'routed(role=hidden");
  // Another scalar type.
  {
    Net<double> d;
    auto opt = st::adamw(hp);
    auto sd = opt.init(d.params);
    d.step(opt, sd, 1);
    st::save(opt, sd, path);
    Net<float> f;
    auto sf = opt.init(f.params);
    const auto before = snapshot(sf);
    CHECK_THROWS_WITH_AS(st::load(opt, sf, path), doctest::Contains("dtype F64, the state's is F32"), st::state_file_error);
    CHECK(snapshot(sf) == before);
  }
  std::remove(path.c_str());
}

TEST_CASE("crafted files: impossible values, broken structure and wrong sizes are refused, nothing changes") {
  const std::string path = "steepest_ckpt_crafted.safetensors";
  const st::Hyper hp = hyper(0.01, 0.9, 0.99, 0.0);
  auto opt = st::muon(hp);  // momentum on h, Adam's m and v on the rest
  Net<float> net;
  auto state = opt.init(net.params);
  net.step(opt, state, 1);
  net.step(opt, state, 2);
  st::save(opt, state, path);
  const std::string good = slurp(path);
  const Parts p = split(good);
  const auto before = snapshot(state);
  auto refused = [&](const std::string& bytes, const char* expect) {
    CAPTURE(expect);
    spit(path, bytes);
    CHECK_THROWS_WITH_AS(st::load(opt, state, path), doctest::Contains(expect), st::state_file_error);
    CHECK(snapshot(state) == before);
  };
  // The file as saved loads (the edits below are what makes each one fail).
  spit(path, join(p.header, p.payload));
  st::load(opt, state, path);
  CHECK(snapshot(state) == before);

  // Step counts outside [0, 2^53].
  for (const char* step : {"-3", "-6400000000000000000", "9007199254740993", "1e3", "", "abc"})
    refused(join(replace_once(p.header, "\"step\":\"2\"", std::string("\"step\":\"") + step + "\""), p.payload),
            "is not a count in [0, 2^53]");
  // Values outside their buffer's domain, at a known entry (the tensors' offsets are read from the header).
  auto poke = [&](const std::string& tensor, std::size_t entry, float value) {
    const auto h = st::json::parse(p.header);
    std::uint64_t begin = 0;
    REQUIRE(h.find(tensor));
    REQUIRE(h.find(tensor)->find("data_offsets")->items[0].to_u64(begin));
    std::string payload = p.payload;
    std::memcpy(&payload[begin + 4 * entry], &value, 4);
    return join(p.header, payload);
  };
  refused(poke("e/adam.m", 3, std::numeric_limits<float>::quiet_NaN()), "layer 'e', buffer 'adam.m': entry 3 is nan");
  refused(poke("o/adam.v", 0, -1.0f), "layer 'o', buffer 'adam.v': entry 0 is -1, outside its domain (finite and >= 0");
  refused(poke("h/nesterov-ema.m", 29, std::numeric_limits<float>::infinity()), "buffer 'nesterov-ema.m': entry 29 is inf");
  // A flipped tensor byte without a new CRC; the CRC field itself damaged.
  std::string flipped = good;
  flipped[flipped.size() - 2] ^= 0x10;
  refused(flipped, "checksum mismatch");
  refused(join(replace_once(p.header, "\"crc32\":\"", "\"crc32\":\"x"), p.payload, false), "malformed crc32");
  // Structure: the header length, the JSON, the tensor table, the file size.
  refused("", "truncated (0 bytes)");
  refused(good.substr(0, 7), "truncated (7 bytes)");
  refused(good.substr(0, good.size() - 1), "size");
  refused(good + "x", "size");
  std::string huge = good;
  const std::uint64_t too_long = good.size();
  std::memcpy(huge.data(), &too_long, 8);
  refused(huge, "header length");
  refused(join("{\"__metadata__\":", p.payload), "header: JSON");
  refused(join(replace_once(p.header, "{\"__metadata__\":{", "{\"__metadata__\":{\"format\":\"x\","), p.payload),
          "duplicate key");
  refused(join(replace_once(p.header, "steepest.optimizer-state", "other.format"), p.payload), "format 'other.format'");
  refused(join(replace_once(p.header, "\"format_version\":\"2\"", "\"format_version\":\"7\""), p.payload), "version 7");
  refused(join(replace_once(p.header, "\"e/adam.m\"", "\"e/adam.q\""), p.payload), "no tensor 'e/adam.m'");
  refused(join(replace_once(p.header, "\"dtype\":\"F32\",\"shape\":[5,4]", "\"dtype\":\"F16\",\"shape\":[5,4]"), p.payload),
          "is not F32");
  refused(join(replace_once(p.header, "\"shape\":[5,4]", "\"shape\":[4,5]"), p.payload), "shape differs");
  {
    // e/adam.m's offsets moved onto its neighbour's: the tiling check.
    const auto h = st::json::parse(p.header);
    std::uint64_t b0 = 0, e0 = 0, b1 = 0, e1 = 0;
    REQUIRE(h.find("e/adam.m")->find("data_offsets")->items[0].to_u64(b0));
    REQUIRE(h.find("e/adam.m")->find("data_offsets")->items[1].to_u64(e0));
    REQUIRE(h.find("e/adam.v")->find("data_offsets")->items[0].to_u64(b1));
    REQUIRE(h.find("e/adam.v")->find("data_offsets")->items[1].to_u64(e1));
    const std::string from = "[" + std::to_string(b0) + "," + std::to_string(e0) + "]";
    refused(join(replace_once(p.header, from, "[" + std::to_string(b1) + "," + std::to_string(e1) + "]"), p.payload),
            "overlap or leave gaps");
  }
  {
    std::string extra = p.header;  // one tensor more, before the header's closing brace
    while (extra.back() == ' ') extra.pop_back();
    extra.insert(extra.size() - 1, ",\"extra\":{\"dtype\":\"F32\",\"shape\":[0,0],\"data_offsets\":[0,0]}");
    refused(join(extra, p.payload), "8 tensors, the state has 7");
  }
  // Not regular files: refused before any read.
  for (const char* special : {"/dev/zero", "."}) {
    CHECK_THROWS_WITH_AS(st::load(opt, state, special), doctest::Contains("not a regular file"), st::state_file_error);
  }
  const std::string fifo = "steepest_ckpt_fifo";
  std::remove(fifo.c_str());
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK_THROWS_WITH_AS(st::load(opt, state, fifo), doctest::Contains("not a regular file"), st::state_file_error);
  std::remove(fifo.c_str());
  CHECK(snapshot(state) == before);

  // A file another tool rewrote without the CRC field loads (it only loses the check).
  spit(path, join(replace_once(p.header, "\"crc32\":\"" + st::json::parse(p.header).find("__metadata__")->find("crc32")->text + "\"",
                               "\"note\":\"edited\""),
                  p.payload));
  st::load(opt, state, path);
  CHECK(snapshot(state) == before);
  std::remove(path.c_str());
}


TEST_CASE("version-1 files still load and resume bitwise; damaged ones are refused") {
  const std::string path = "steepest_ckpt_v1.bin";
  const st::Hyper hp = hyper(0.01, 0.9, 0.99, 0.1);
  auto opt = st::muon(hp);
  Net<double> a, b;
  auto sa = opt.init(a.params);
  for (int t = 1; t <= 3; ++t) a.step(opt, sa, t);
  const std::string good = optim_test::v1_file(opt.name(), sa);
  spit(path, good);
  auto sb = opt.init(b.params);
  st::load(opt, sb, path);
  CHECK(snapshot(sb) == snapshot(sa));
  b.h = a.h, b.e = a.e, b.o = a.o, b.v = a.v;
  a.step(opt, sa, 4), b.step(opt, sb, 4);
  CHECK(a.h == b.h);
  CHECK(a.v == b.v);

  const auto before = snapshot(sb);
  auto refused = [&](std::string bytes, const char* expect) {
    CAPTURE(expect);
    spit(path, bytes);
    CHECK_THROWS_WITH_AS(st::load(opt, sb, path), doctest::Contains(expect), st::state_file_error);
    CHECK(snapshot(sb) == before);
  };
  std::string c = good;
  c[c.size() - 20] ^= 0x01;
  refused(c, "checksum mismatch");
  refused(good.substr(0, good.size() - 9), "size");
  std::string v = good;
  v[8] = 3;
  refused(v, "version 3");
  refused(optim_test::v1_file("adam+step", sa), "saved by optimizer 'adam+step'");
  // Impossible values are refused in version-1 files too (with a valid checksum).
  Net<double> n;
  auto sn = opt.init(n.params);
  n.step(opt, sn, 1);
  sn.step = -3;
  refused(optim_test::v1_file(opt.name(), sn), "step -3 is outside [0, 2^53]");
  sn.step = 1;
  std::get<0>(sn.part<1>().layers[0]).v(2, 1) = -1.0;  // "e"'s Adam second moment
  refused(optim_test::v1_file(opt.name(), sn), "layer 'e', buffer 'adam.v': entry 9 is -1");
  std::remove(path.c_str());
}

TEST_CASE("saving is tidy and atomic: one temporary name, reused; a failed save leaves the old file") {
  const std::string path = "steepest_ckpt_tidy.safetensors";
  auto opt = st::adamw(hyper(0.01, 0.9, 0.99, 0.0));
  Net<float> net;
  auto state = opt.init(net.params);
  net.step(opt, state, 1);
  spit(path + ".tmp", std::string(100000, 'x'));  // a stale temporary of a killed save
  st::save(opt, state, path);
  CHECK_FALSE(exists(path + ".tmp"));
  const std::string saved = slurp(path);
  // A save that cannot write its temporary (here: a directory sits on its name) throws and
  // leaves the previous file as it was.
  REQUIRE(::mkdir((path + ".tmp").c_str(), 0700) == 0);
  net.step(opt, state, 2);
  CHECK_THROWS_WITH_AS(st::save(opt, state, path), doctest::Contains("cannot write"), st::state_file_error);
  CHECK(slurp(path) == saved);
  ::rmdir((path + ".tmp").c_str());
  CHECK_THROWS_AS(st::save(opt, state, "/nonexistent/dir/state.safetensors"), st::state_file_error);
  std::remove(path.c_str());
}

TEST_CASE("SIGKILL during saves: the file is always the old or the new state, at most one temporary") {
  const std::string path = "steepest_ckpt_kill.safetensors";
  BigAdamW big(2000, 1000);  // ~16 MB of state, so a kill lands inside the write most of the time
  auto& P = big.params;
  auto& opt = big.opt;
  auto& state = big.state;
  st::save(opt, state, path);
  int killed_mid_save = 0;
  for (int trial = 0; trial < 12; ++trial) {
    std::remove((path + ".tmp").c_str());  // a temporary seen below is this child's
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      for (;;) {  // the child saves until it is killed
        try {
          st::save(opt, state, path);
        } catch (...) {
          ::_exit(1);
        }
      }
    }
    // Kill the child inside a save: once its temporary exists, after a delay that differs by
    // trial (0-5 ms: the header, the buffers or the rename).
    for (int wait = 0; wait < 20000 && !exists(path + ".tmp"); ++wait) ::usleep(100);
    ::usleep(useconds_t(7919 * trial % 5000));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (exists(path + ".tmp")) ++killed_mid_save;
    auto fresh = opt.init(P);
    st::load(opt, fresh, path);  // must load: the old file or the new one, never a torn one
    CHECK(fresh.step == 1);
  }
  MESSAGE(killed_mid_save << " of 12 kills landed mid-save");
  CHECK(killed_mid_save >= 6);  // the property was put to the test, not passed by default
  st::save(opt, state, path);  // the next save takes over the stale temporary
  CHECK_FALSE(exists(path + ".tmp"));
  std::remove(path.c_str());
}

namespace {
/// A "<field>: <n> kB" line of /proc/self/status in bytes (Linux), or -1.
long long status_bytes(const std::string& field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1)) * 1024;
  return -1;
}
/// Peak resident memory since the last reset.
long long peak_rss() { return status_bytes("VmHWM"); }
long long current_rss() { return status_bytes("VmRSS"); }
bool reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
  f.flush();
  return bool(f);
}
}  // namespace

TEST_CASE("memory: save streams (no file image); load needs the state's size once, plus 1 MiB") {
  const std::string path = "steepest_ckpt_memory.safetensors";
  BigAdamW big(4000, 2000);  // 64 MB of Adam state
  auto& opt = big.opt;
  auto& state = big.state;
#if defined(__SANITIZE_ADDRESS__)
  test_skip::skip_program("AddressSanitizer build: its shadow memory and quarantine make RSS no measure of the loader");
#endif
  if (!reset_peak_rss() || peak_rss() < 0) test_skip::skip_program("peak-RSS reset not available here");
  const double file = double(state.state_bytes());
  long long base = current_rss();
  st::save(opt, state, path);
  const double save_extra = double(peak_rss() - base) / file;
  REQUIRE(reset_peak_rss());
  base = current_rss();
  st::load(opt, state, path);
  const double load_extra = double(peak_rss() - base) / file;
  MESSAGE("extra peak memory per file byte: save " << save_extra << ", load " << load_extra);
  CHECK(save_extra < 0.1);
  CHECK(load_extra < 1.1);
  std::remove(path.c_str());
}


TEST_CASE("bf16 state: BF16 tensors in the file, bitwise round trip and resume, wrong precision or values refused") {
  const auto hp = hyper(0.01, 0.9, 0.99, 0.1);
  auto opt = st::adamw<st::Bf16State>(hp);
  Net<float> a, b;
  auto sa = opt.init(a.params);
  for (int t = 1; t <= 3; ++t) a.step(opt, sa, t);
  const std::string file = st::save_bytes(opt, sa);
  const Parts parts = split(file);
  // h 6x5, e 5x4, o 3x6, v 6: 74 entries, two bf16 buffers each.
  CHECK(parts.payload.size() == 74 * 2 * 2);
  CHECK(parts.header.find("\"h/adam-bf16.m\":{\"dtype\":\"BF16\",\"shape\":[6,5],\"data_offsets\":[0,60]}") !=
        std::string::npos);
  CHECK(parts.header.find("\"dtype\":\"F32\",\"step\":\"3\"") != std::string::npos);  // the parameters' type

  // Round trip and resume: b loads a's state and weights, then both take the same step.
  b.h = a.h, b.e = a.e, b.o = a.o, b.v = a.v;
  auto sb = opt.init(b.params);
  st::load_bytes(opt, sb, file);
  CHECK(snapshot(sb) == snapshot(sa));
  a.step(opt, sa, 4);
  b.step(opt, sb, 4);
  CHECK(snapshot(sb) == snapshot(sa));
  CHECK(a.h == b.h);
  CHECK(a.v == b.v);

  const auto before = snapshot(sb);
  const auto refused = [&](const std::string& bytes, const std::string& why) {
    CAPTURE(why);
    try {
      st::load_bytes(opt, sb, bytes);
      FAIL("loaded");
    } catch (const st::state_file_error& e) {
      CHECK_MESSAGE(std::string(e.what()).find(why) != std::string::npos, e.what());
    }
    CHECK(snapshot(sb) == before);
  };
  // A full-precision AdamW file is another optimizer, and the other way round.
  auto f32 = st::adamw(hp);
  auto s32 = f32.init(a.params);
  a.step(f32, s32, 1);
  refused(st::save_bytes(f32, s32), "saved by optimizer 'adam+step', not 'adam-bf16+step'");
  const auto before32 = snapshot(s32);
  CHECK_THROWS_AS(st::load_bytes(f32, s32, file), st::state_file_error);
  CHECK(snapshot(s32) == before32);
  // A tensor's dtype edited to F32 (same bytes): refused before any value is read.
  refused(join(replace_once(parts.header, "\"h/adam-bf16.m\":{\"dtype\":\"BF16\"", "\"h/adam-bf16.m\":{\"dtype\":\"F32\""),
               parts.payload),
          "tensor 'h/adam-bf16.m' is not BF16");
  // Values outside their domain, as bf16 bits: v = -1 (0xBF80), m = NaN (0x7FC0), m = +inf (0x7F80).
  std::string payload = parts.payload;
  payload[60] = char(0x80), payload[61] = char(0xBF);  // h's v starts after h's m (60 bytes)
  refused(join(parts.header, payload), "layer 'h', buffer 'adam-bf16.v': entry 0 is -1, outside its domain");
  payload = parts.payload;
  payload[2] = char(0xC0), payload[3] = char(0x7F);
  refused(join(parts.header, payload), "layer 'h', buffer 'adam-bf16.m': entry 1 is");
  payload = parts.payload;
  payload[0] = char(0x80), payload[1] = char(0x7F);
  refused(join(parts.header, payload), "outside its domain (finite");
  // Truncated by one bf16 entry.
  refused(file.substr(0, file.size() - 2), "size");
}

// ---- Crafted files and a hostile checkpoint directory ----

namespace {

/// `file` with the CRC-32 recomputed as save() does: its 8 digits at byte `digits_at` (of the
/// file) taken as '0', the result written there in hex (`upper`: capital letters).
std::string with_crc_at(std::string file, std::size_t digits_at, bool upper = false) {
  file.replace(digits_at, 8, "00000000");
  char hex[9];
  std::snprintf(hex, sizeof hex, upper ? "%08X" : "%08x", unsigned(st::io::crc32(file.data(), file.size())));
  return file.replace(digits_at, 8, hex);
}
/// A header without its crc32 field (which the format allows).
std::string drop_crc(const std::string& header) {
  const auto at = header.find(",\"crc32\":\"");
  REQUIRE(at != std::string::npos);
  return std::string(header).erase(at, 19);
}
bool present(const std::string& path) {  // anything at the name, a dangling link included
  struct stat sb;
  return ::lstat(path.c_str(), &sb) == 0;
}
unsigned mode_of(const std::string& path) {
  struct stat sb;
  REQUIRE(::stat(path.c_str(), &sb) == 0);
  return unsigned(sb.st_mode & 07777);
}

}  // namespace

TEST_CASE("integers in files: one checked parser, digits only, no overflow") {
  std::uint64_t v = 7;
  CHECK(st::io::parse_decimal("18446744073709551615", UINT64_MAX, v));
  CHECK(v == UINT64_MAX);
  v = 7;
  for (const char* bad : {"18446744073709551616", "99999999999999999999", "", "-1", "+1", " 1", "1 ", "0x10", "1e3", "1.0"})
    CHECK_FALSE_MESSAGE(st::io::parse_decimal(bad, UINT64_MAX, v), bad);
  CHECK(v == 7);  // a refusal leaves the output alone
  CHECK(st::io::parse_decimal("9007199254740992", std::uint64_t(1) << 53, v));
  CHECK(v == (std::uint64_t(1) << 53));
  for (const char* above : {"9007199254740993", "9223372036854775808", "9300000000000000000", "10000000000000000000"})
    CHECK_FALSE_MESSAGE(st::io::parse_decimal(above, std::uint64_t(1) << 53, v), above);
  CHECK(st::io::parse_hex("DEADbeef", 0xffffffffu, v));
  CHECK(v == 0xdeadbeefu);
  CHECK_FALSE(st::io::parse_hex("100000000", 0xffffffffu, v));
  CHECK_FALSE(st::io::parse_hex("dead beef", 0xffffffffu, v));
}

TEST_CASE("a crafted step count past 2^53 is refused, with its CRC fixed up and with the field removed") {
  auto opt = st::adamw(hyper(0.01, 0.9, 0.99, 0.0));
  Net<float> net;
  auto state = opt.init(net.params);
  net.step(opt, state, 1);
  const Parts p = split(st::save_bytes(opt, state));
  const auto before = snapshot(state);
  // 9.3e18 lies between 2^63 and 10^19: 19 digits, which a signed 64-bit accumulator wraps to a
  // negative count that passed a "> 2^53" test; the others bracket 2^53, 2^63 and 2^64.
  for (const char* step : {"9300000000000000000", "9223372036854775808", "18446744073709551615",
                           "18446744073709551616", "9007199254740993", "-1", "1e3", " 1"}) {
    const std::string header = replace_once(p.header, "\"step\":\"1\"", std::string("\"step\":\"") + step + "\"");
    for (const std::string& h : {header, drop_crc(header)}) {
      CHECK_THROWS_WITH_AS(st::load_bytes(opt, state, join(h, p.payload)), doctest::Contains("is not a count in [0, 2^53]"),
                           st::state_file_error);
      CHECK(snapshot(state) == before);
    }
  }
  // 2^53 itself is a count, with and without a CRC.
  const std::string top = replace_once(p.header, "\"step\":\"1\"", "\"step\":\"9007199254740992\"");
  for (const std::string& h : {top, drop_crc(top)}) {
    auto fresh = opt.init(net.params);
    st::load_bytes(opt, fresh, join(h, p.payload));
    CHECK(fresh.step == (1LL << 53));
  }
}

TEST_CASE("skipped steps: counted per layer in the file only when set, resumed bitwise, crafted counts refused") {
  const auto check = [](auto opt) {
    CAPTURE(opt.name());
    // e has no gradient at steps 2 and 3, h none at step 6.
    const auto without = [](int t) { return t == 2 || t == 3 ? 1 : t == 6 ? 0 : -1; };
    Net<float> straight, net;
    auto s0 = opt.init(straight.params);
    for (int t = 1; t <= 8; ++t) straight.step(opt, s0, t, without(t));
    auto state = opt.init(net.params);
    for (int t = 1; t <= 4; ++t) net.step(opt, state, t, without(t));
    const std::string file = st::save_bytes(opt, state);
    const Parts p = split(file);
    CHECK(p.header.find("skipped\\\":\\\"2\\\"") != std::string::npos);  // e's count, inside the layers string
    CHECK(p.header.find("skipped") == p.header.rfind("skipped"));          // and no other layer's
    auto resumed = opt.init(net.params);
    st::load_bytes(opt, resumed, file);
    for (int t = 5; t <= 8; ++t) net.step(opt, resumed, t, without(t));
    CHECK(net.h == straight.h);  // bitwise
    CHECK(net.e == straight.e);
    CHECK(net.o == straight.o);
    CHECK(net.v == straight.v);
    CHECK(snapshot(resumed) == snapshot(s0));
    // A count past the step, or not a count, is refused and nothing changes (CRC fixed up or
    // the field dropped, so that the count's own check is what refuses).
    const auto before = snapshot(resumed);
    for (const char* bad : {"5", "9", "-1", "x", "18446744073709551617"}) {
      const std::string h = replace_once(p.header, "skipped\\\":\\\"2", std::string("skipped\\\":\\\"") + bad);
      for (const std::string& hh : {h, drop_crc(h)}) {
        CHECK_THROWS_WITH_AS(st::load_bytes(opt, resumed, join(hh, p.payload)), doctest::Contains("\"skipped\" is not a count"),
                             st::state_file_error);
        CHECK(snapshot(resumed) == before);
      }
    }
    // Loading a file without counts clears them.
    Net<float> plain;
    auto ps = opt.init(plain.params);
    plain.step(opt, ps, 1);
    const std::string no_skips = st::save_bytes(opt, ps);
    CHECK(no_skips.find("skipped") == std::string::npos);
    st::load_bytes(opt, resumed, no_skips);
    for (const long long* k : resumed.skip_counts()) CHECK(*k == 0);
  };
  check(st::adamw(hyper(0.01, 0.9, 0.99, 0.1)));
  check(st::muon(hyper(0.02, 0.95, 0.95, 0.1), hyper(0.01, 0.9, 0.99, 0.1)));
  check(st::moga_row(hyper(0.01, 0.9, 0.95, 0.1)));
}

TEST_CASE("the crc32 field: found at any spacing and in either case; a stale one says to drop it") {
  auto opt = st::adamw(hyper(0.01, 0.9, 0.99, 0.0));
  Net<float> net;
  auto state = opt.init(net.params);
  net.step(opt, state, 1);
  const std::string file = st::save_bytes(opt, state);
  const Parts p = split(file);
  // Spaced as Python's json.dumps writes it: "crc32": "...".
  {
    const std::string spaced = join(replace_once(p.header, "\"crc32\":\"", "\"crc32\" :  \""), p.payload, false);
    auto fresh = opt.init(net.params);
    st::load_bytes(opt, fresh, with_crc_at(spaced, spaced.find("\"crc32\" :  \"") + 12));
    CHECK(snapshot(fresh) == snapshot(state));
  }
  {  // capital hex digits
    auto fresh = opt.init(net.params);
    st::load_bytes(opt, fresh, with_crc_at(file, file.find("\"crc32\":\"") + 9, true));
    CHECK(snapshot(fresh) == snapshot(state));
  }
  // A metadata field added by a tool that copied the rest, crc32 included: refused, naming the fix.
  const std::string rewritten =
      join(replace_once(p.header, "\"__metadata__\":{", "\"__metadata__\":{\"note\":\"rewritten\","), p.payload, false);
  CHECK_THROWS_WITH_AS(st::load_bytes(opt, state, rewritten), doctest::Contains("must drop the crc32 field"),
                       st::state_file_error);
  // The same without the field loads.
  auto fresh = opt.init(net.params);
  st::load_bytes(opt, fresh, join(drop_crc(split(rewritten).header), p.payload));
  CHECK(snapshot(fresh) == snapshot(state));
  // Malformed: too short, an escape standing for a digit, a sign.
  const auto at = p.header.find("\"crc32\":\"") + 9;
  for (const std::string& digits : {std::string("0000000"), std::string("\\u00300000000"), std::string("+0000000")}) {
    std::string h = p.header;
    h.replace(at, 8, digits);
    CHECK_THROWS_WITH_AS(st::load_bytes(opt, state, join(h, p.payload, false)), doctest::Contains("malformed crc32"),
                         st::state_file_error);
  }
}

TEST_CASE("save never writes through a planted link, keeps the old file's mode, refuses a link as target") {
  const std::string path = "steepest_ckpt_links.safetensors", tmp = path + ".tmp", victim = "steepest_ckpt_victim.txt";
  auto opt = st::adamw(hyper(0.01, 0.9, 0.99, 0.0));
  Net<float> net;
  auto state = opt.init(net.params);
  net.step(opt, state, 1);
  std::remove(path.c_str());
  std::remove(tmp.c_str());
  spit(victim, "precious");
  // A symbolic link planted at the temporary's name: unlinked, never followed.
  REQUIRE(::symlink(victim.c_str(), tmp.c_str()) == 0);
  st::save(opt, state, path);
  CHECK(slurp(victim) == "precious");
  CHECK_FALSE(present(tmp));
  CHECK(slurp(path) == st::save_bytes(opt, state));
  // A hard link to the victim there: neither truncated nor rewritten.
  REQUIRE(::link(victim.c_str(), tmp.c_str()) == 0);
  net.step(opt, state, 2);
  st::save(opt, state, path);
  CHECK(slurp(victim) == "precious");
  CHECK_FALSE(present(tmp));
  // The target's permission bits survive a save, whatever the umask.
  for (unsigned mode : {0600u, 0640u, 0604u}) {
    REQUIRE(::chmod(path.c_str(), mode) == 0);
    st::save(opt, state, path);
    CHECK(mode_of(path) == mode);
  }
  // A new file: 0666 less the umask.
  std::remove(path.c_str());
  const mode_t old_mask = ::umask(027);
  st::save(opt, state, path);
  ::umask(old_mask);
  CHECK(mode_of(path) == 0640u);
  // A symbolic link at the target itself: refused; the link and what it names are untouched.
  std::remove(path.c_str());
  REQUIRE(::symlink(victim.c_str(), path.c_str()) == 0);
  CHECK_THROWS_WITH_AS(st::save(opt, state, path), doctest::Contains("symbolic link"), st::state_file_error);
  struct stat sb;
  REQUIRE(::lstat(path.c_str(), &sb) == 0);
  CHECK(S_ISLNK(sb.st_mode));
  CHECK(slurp(victim) == "precious");
  CHECK_FALSE(present(tmp));
  std::remove(path.c_str());
  std::remove(victim.c_str());
}

namespace {

/// How far resident memory rose above its level at the call while f() ran, in bytes (the peak
/// is reset first: reset_peak_rss above).
template <class F>
long long peak_rise(F&& f) {
#if defined(__SANITIZE_ADDRESS__)
  test_skip::skip_program("AddressSanitizer build: its shadow memory makes RSS no measure of the parser");
#endif
  if (!reset_peak_rss()) test_skip::skip_program("peak-RSS reset not available here");
  const long long before = current_rss();
  f();
  return peak_rss() - before;
}

}  // namespace

TEST_CASE("memory: a near-limit wide header, or a wide layers string, is refused at a small multiple of its size") {
  const std::string path = "steepest_ckpt_wide.safetensors";
  auto opt = st::adamw(hyper(0.01, 0.9, 0.99, 0.0));
  Net<float> net;
  auto state = opt.init(net.params);
  const auto before = snapshot(state);
  const std::size_t target = 99'900'000;  // just under the 100 MB a header may have
  const auto write_file = [&](const std::string& open, const std::string& close) {
    std::string header = open;
    header.reserve(target + 64);
    while (header.size() + close.size() + 2 < target) header += "0,";
    header += "0" + close;
    header.append((8 - (8 + header.size()) % 8) % 8, ' ');
    std::string len(8, '\0');
    const std::uint64_t n = header.size();
    std::memcpy(len.data(), &n, 8);
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f << len << header;
    return double(n);
  };
  // One long array beside the metadata.
  const double n1 = write_file("{\"__metadata__\":{\"format\":\"steepest.optimizer-state\"},\"x\":[", "]}");
  const long long rise1 = peak_rise([&] {
    CHECK_THROWS_WITH_AS(st::load(opt, state, path), doctest::Contains("values"), st::state_file_error);
  });
  // The same inside the "layers" metadata string, parsed after the header.
  const double n2 = write_file(
      "{\"__metadata__\":{\"format\":\"steepest.optimizer-state\",\"format_version\":\"2\",\"dtype\":\"F32\","
      "\"step\":\"1\",\"optimizer\":\"adam+step\",\"layers\":\"[",
      "]\"}}");
  const long long rise2 = peak_rise([&] {
    CHECK_THROWS_WITH_AS(st::load(opt, state, path), doctest::Contains("values"), st::state_file_error);
  });
  MESSAGE("refused header of " << n1 / 1e6 << " MB: resident memory rose " << double(rise1) / 1e6
          << " MB; as the layers string: " << double(rise2) / 1e6 << " MB");
  // The header's own bytes (and, for the string, its decoded copy), and little more.
  CHECK(double(rise1) <= 1.1 * n1 + 16e6);
  CHECK(double(rise2) <= 2.1 * n2 + 16e6);
  CHECK(snapshot(state) == before);
  std::remove(path.c_str());
}

TEST_CASE("a first moment no gradient sequence can reach is refused, naming layer, buffer, entry and value") {
  auto opt = st::adamw(hyper(0.01, 0.9, 0.99, 0.0));
  Net<float> net;
  auto state = opt.init(net.params);
  net.step(opt, state, 1);
  auto crafted = state;
  std::get<0>(crafted.layers[1]).m(0, 2) = 3.4e38f;  // layer "e"; finite, and v there is small
  const std::string file = st::save_bytes(opt, crafted);
  auto target = opt.init(net.params);
  const auto before = snapshot(target);
  CHECK_THROWS_WITH_AS(st::load_bytes(opt, target, file),
                       doctest::Contains("layer 'e', buffer 'adam.m': entry 2 is 3.3999999521443642e+38, outside its domain"),
                       st::state_file_error);
  CHECK(snapshot(target) == before);
  // Under NonFinitePolicy::Unchecked no gradient bound holds, so any finite moment is reachable.
  auto unchecked_hp = hyper(0.01, 0.9, 0.99, 0.0);
  unchecked_hp.on_non_finite = st::NonFinitePolicy::Unchecked;
  auto unchecked = st::adamw(unchecked_hp);
  st::load_bytes(unchecked, target, file);
  CHECK(std::get<0>(target.layers[1]).m(0, 2) == 3.4e38f);
}

namespace {

/// The largest magnitude a buffer may have, written out here from the recurrences (gradients
/// below G = 2^40, betas b1 = 0.9, b2 = 0.99): an EMA stays below G, a heavy-ball sum below
/// G / (1 - b1), Adam's second moment below G^2; load() allows twice that for rounding.
double expected_limit(const std::string& key) {
  const double G = std::ldexp(1.0, 40), b1 = 0.9;
  const auto starts = [&](const char* p) { return key.rfind(p, 0) == 0; };
  const bool second = key.size() > 2 && key.compare(key.size() - 2, 2, ".v") == 0;
  if (starts("adam")) return second ? 2 * G * G : 2 * G;
  if (starts("row-second-moment")) return 2 * G * G;  // an EMA of row means of squares
  if (starts("second-moment")) return 2 * G * G;      // an EMA of squares
  if (starts("nesterov-ema") || starts("ema") || starts("lion")) return 2 * G;
  if (starts("momentum") || starts("nesterov")) return 2 * G / (1 - b1);
  FAIL("no reach written for buffer '" << key << "'");
  return 0;
}
/// Sets b[i] to the representable value of b's type nearest `x` from below in magnitude.
template <class B>
void set_below(B& b, long i, double x) {
  b.data()[i] = static_cast<typename B::Scalar>(float(x));
  if (std::fabs(double(static_cast<float>(b.data()[i]))) > std::fabs(x))  // rounded up: one bf16 unit down
    b.data()[i] = static_cast<typename B::Scalar>(float(x * (1.0 - std::ldexp(1.0, -7))));
  REQUIRE(std::fabs(double(static_cast<float>(b.data()[i]))) <= std::fabs(x));
}

/// Every buffer of a fresh state of `opt` at the edge of what load() accepts (alternating signs;
/// second moments alternate 0 and the edge), saved and loaded back; then one step with gradients
/// of zero and one with the largest accepted entries (2^40 - 2^16, alternating signs): the
/// parameters and the state stay finite. One entry just past its edge is refused.
template <class Opt>
void edge_state_steps_finitely(const Opt& opt, const char* what) {
  CAPTURE(what);
  Net<float> net;
  auto edge = opt.init(net.params);
  std::string first_key;
  edge.for_each_layer([&](const st::LayerRecord&, const std::string&, auto&& visit) {
    visit([&](const std::string& key, auto& b, st::Domain d) {
      const double limit = expected_limit(key);
      for (long i = 0; i < b.size(); ++i)
        set_below(b, i, d == st::Domain::NonNegative ? (i % 2 ? limit : 0.0) : (i % 2 ? -limit : limit));
      if (first_key.empty()) first_key = key;
    });
  });
  const std::string file = st::save_bytes(opt, edge);
  const std::vector<float> w0[] = {net.h, net.e, net.o, net.v};
  for (const double g : {0.0, std::ldexp(1.0, 40) - std::ldexp(1.0, 16)}) {
    auto state = opt.init(net.params);
    st::load_bytes(opt, state, file);  // accepted: at the edge, not past it
    std::vector<float> gh(30), ge(20), go(18), gv(6);
    for (auto* G : {&gh, &ge, &go, &gv})
      for (std::size_t i = 0; i < G->size(); ++i) (*G)[i] = float(i % 2 ? -g : g);
    st::Gradients<float> grads;
    grads.add(gh.data(), 6, 5);
    grads.add(ge.data(), 5, 4);
    grads.add(go.data(), 3, 6);
    grads.add_vector(gv.data(), 6);
    REQUIRE(opt.step(net.params, grads, state));
    for (const auto* w : {&net.h, &net.e, &net.o, &net.v})
      for (float x : *w) REQUIRE_MESSAGE(std::isfinite(x), "gradient entries " << g);
    state.for_each_layer([&](const st::LayerRecord&, const std::string&, auto&& visit) {
      visit([&](const std::string& key, auto& b, st::Domain) {
        for (long i = 0; i < b.size(); ++i) REQUIRE_MESSAGE(std::isfinite(double(static_cast<float>(b.data()[i]))), key);
      });
    });
    net.h = w0[0], net.e = w0[1], net.o = w0[2], net.v = w0[3];
  }
  if (first_key.empty()) return;  // no state (sign descent)
  // Past the edge by 1%: refused, naming the buffer.
  bool done = false;
  edge.for_each_layer([&](const st::LayerRecord&, const std::string&, auto&& visit) {
    visit([&](const std::string& key, auto& b, st::Domain) {
      if (done) return;
      b.data()[0] = static_cast<typename std::decay_t<decltype(b)>::Scalar>(float(1.01 * expected_limit(key)));
      done = true;
    });
  });
  auto state = opt.init(net.params);
  const std::string expected = "buffer '" + first_key + "': entry 0 is";
  CHECK_THROWS_WITH_AS(st::load_bytes(opt, state, st::save_bytes(opt, edge)), doctest::Contains(expected.c_str()),
                       st::state_file_error);
}

}  // namespace

TEST_CASE("every named optimizer: a state at the edge of the accepted domain plus any accepted gradient stays finite") {
  st::Hyper hp = hyper(0.01, 0.9, 0.99, 0.1);
  edge_state_steps_finitely(st::sgd(hp), "sgd");
  edge_state_steps_finitely(st::sgd_nesterov(hp), "sgd_nesterov");
  edge_state_steps_finitely(st::adamw(hp), "adamw");
  edge_state_steps_finitely(st::adamw<st::Bf16State>(hp), "adamw<Bf16State>");
  edge_state_steps_finitely(st::adamw_rescaled(hp), "adamw_rescaled");
  edge_state_steps_finitely(st::sign_descent(hp), "sign_descent");
  edge_state_steps_finitely(st::lion(hp), "lion");
  edge_state_steps_finitely(st::moga_row(hp), "moga_row");
  edge_state_steps_finitely(st::moga_row<st::MogaOrder::AdamThenNormalize>(hp), "moga_row<AdamThenNormalize>");
  edge_state_steps_finitely(st::moga_col(hp), "moga_col");
  edge_state_steps_finitely(st::moga_row_momentum(hp), "moga_row_momentum");
  edge_state_steps_finitely(st::moga_row_momentum<st::Bf16State>(hp), "moga_row_momentum<Bf16State>");
  edge_state_steps_finitely(st::muon(hp, hp), "muon");
  edge_state_steps_finitely(st::muon_scion(hp), "muon_scion");
  edge_state_steps_finitely(st::normuon(hp, hp), "normuon");
  edge_state_steps_finitely(st::adamuon(hp, hp), "adamuon");
  edge_state_steps_finitely(st::polargrad(hp, hp), "polargrad");
  edge_state_steps_finitely(st::muon_eq(hp, hp), "muon_eq");
  edge_state_steps_finitely(st::muon_plus(hp, hp), "muon_plus");
  edge_state_steps_finitely(st::cautious_adamw(hp), "cautious_adamw");
  edge_state_steps_finitely(st::scion(hp), "scion");
  edge_state_steps_finitely(st::scion_unconstrained(hp), "scion_unconstrained");
}
