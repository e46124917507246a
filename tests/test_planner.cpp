// The Newton-Schulz engine planner (polar/planner.hpp): a forced engine, an engine outside the
// accuracy band never chosen however fast, one that cannot run left out, the estimate mode's
// flop counts, small layers, and the plans it shows. References: the engines' own outputs
// (the planner must run exactly the engine it names), flop counts written out by hand.
#include <doctest/doctest.h>

#include <steepest/polar/gram_newton_schulz.hpp>
#include <steepest/polar/planner.hpp>
#include <steepest/steepest.hpp>

#include "reference.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace st = steepest;
using Mf = Eigen::MatrixXf;

namespace {

/// Fast and wrong: writes zeros (distance 1 from any nonzero reference).
struct ZeroProducts {
  template <class Scalar>
  struct Workspace {};
  static std::string name() { return "zero"; }
  static double flops(st::Index, st::Index, int) { return 0.0; }
  template <class Schedule, class D, class O>
  static void run(const Eigen::MatrixBase<D>&, const Eigen::MatrixBase<O>& out, int, Workspace<typename D::Scalar>&) {
    st::writable(out).setZero();
  }
};
/// An engine this machine "cannot serve": it throws, as oneDNN does on a CPU without the ISA.
struct ThrowingProducts {
  template <class Scalar>
  struct Workspace {};
  static std::string name() { return "throws"; }
  template <class Schedule, class D, class O>
  static void run(const Eigen::MatrixBase<D>&, const Eigen::MatrixBase<O>&, int, Workspace<typename D::Scalar>&) {
    throw std::runtime_error("this CPU cannot run it");
  }
};

/// States flops no engine could run in time, and counts its runs: the planner must not run it.
struct HopelessProducts {
  static inline int runs = 0;
  template <class Scalar>
  struct Workspace {};
  static std::string name() { return "hopeless"; }
  static double flops(st::Index, st::Index, int) { return 1e30; }
  template <class Schedule, class D, class O>
  static void run(const Eigen::MatrixBase<D>& G, const Eigen::MatrixBase<O>& out, int steps, Workspace<typename D::Scalar>&) {
    ++runs;
    st::NewtonSchulzWorkspace<typename D::Scalar> ws;
    st::newton_schulz<Schedule>(G, out, steps, ws);
  }
};

template <class Products>
Mf run(const Mf& G, int steps = 5) {
  Mf out(G.rows(), G.cols());
  typename Products::template Workspace<float> ws;
  Products::template run<st::QuinticSchedule>(G, out, steps, ws);
  return out;
}

/// Clears the process's planner before a test and resets it after (it is global: every default
/// Muon in the other tests plans through it).
struct PlannerReset {
  PlannerReset() { st::polar_planner().clear(); }
  ~PlannerReset() {
    st::polar_planner().force("");
    st::polar_planner().set_mode(st::PlanMode::Measure);
    st::polar_planner().set_tolerance(3e-2);
    st::polar_planner().clear();
  }
};

Mf input(int m, int n) { return ref::conditioned(m, n, 10.0, unsigned(m + n)).G.cast<float>(); }

}  // namespace

TEST_CASE("planner: measured, it never takes an engine outside the band or one that throws") {
  PlannerReset reset;
  using P = st::Planned<st::EigenProducts, ZeroProducts, ThrowingProducts, st::GramProducts<>>;
  const Mf G = input(128, 512);
  const Mf out = run<P>(G);
  const auto plans = st::polar_planner().plans();
  REQUIRE(plans.size() == 1);
  const st::PolarPlan& p = plans[0];
  CAPTURE(p.describe());
  CHECK(p.how == "measured");
  CHECK((p.engine == "eigen" || p.engine == "gram-restart3"));
  REQUIRE(p.candidates.size() == 4);
  CHECK(std::get<0>(p.candidates[1]) == "zero");
  CHECK_FALSE(std::get<3>(p.candidates[1]));  // fastest, and refused: distance 1
  CHECK(std::get<2>(p.candidates[1]) == doctest::Approx(1.0));
  CHECK_FALSE(std::get<3>(p.candidates[2]));  // threw: left out
  CHECK(std::get<3>(p.candidates[3]));        // the Gram form: within the band
  CHECK(std::get<2>(p.candidates[3]) < 1e-4);
  // The plan's engine is what ran, and what runs again (bitwise its own output).
  const Mf mine = p.engine == "eigen" ? run<st::EigenProducts>(G) : run<st::GramProducts<>>(G);
  CHECK(out == mine);
  CHECK(run<P>(G) == mine);
  CHECK(st::polar_planner().plans().size() == 1);  // reused, not chosen again
}

TEST_CASE("planner: a forced engine, the estimate mode's flop counts, small layers") {
  PlannerReset reset;
  using P = st::Planned<st::EigenProducts, st::GramProducts<>>;
  const Mf wide = input(128, 512), square = input(256, 256);
  st::polar_planner().force("gram-restart3");
  CHECK(run<P>(square) == run<st::GramProducts<>>(square));  // forced even where it is slower
  CHECK(st::polar_planner().plans()[0].how == "forced");
  st::polar_planner().force("no-such-engine");
  CHECK_THROWS_WITH_AS(run<P>(square), doctest::Contains("no engine 'no-such-engine' among eigen+gram-restart3"),
                       std::invalid_argument);
  st::polar_planner().force("");
  // Estimate: the fewest flops. 5 steps at k = 128, l = 512: the plain iteration 5 (4 k^2 l +
  // 2 k^3) = 90 k^3; the Gram form with its restart 60 k^3 (2 k^2 l at each end and at the
  // restart twice, 8 k^3 per middle step; the file comment of gram_newton_schulz.hpp). Square:
  // 30 k^3 against 36 k^3.
  const double k3 = 128.0 * 128 * 128;
  CHECK(st::EigenProducts::flops(128, 512, 5) == doctest::Approx(90 * k3));
  CHECK(st::GramProducts<>::flops(128, 512, 5) == doctest::Approx(60 * k3));
  CHECK(st::GramProducts<0>::flops(128, 512, 5) == doctest::Approx(50 * k3));
  CHECK(st::GramProducts<>::flops(256, 256, 5) == doctest::Approx(36.0 * 256 * 256 * 256));
  st::polar_planner().set_mode(st::PlanMode::Estimate);
  CHECK(run<P>(wide) == run<st::GramProducts<>>(wide));
  CHECK(run<P>(square) == run<st::EigenProducts>(square));
  for (const auto& p : st::polar_planner().plans()) CHECK(p.how == "estimated");
  // A small layer takes the first engine without timing, in either mode.
  st::polar_planner().clear();
  const Mf small = input(32, 128);  // 4096 entries < 2^16
  CHECK(run<P>(small) == run<st::EigenProducts>(small));
  REQUIRE(st::polar_planner().plans().size() == 1);
  CHECK(st::polar_planner().plans()[0].how == "small");
}

TEST_CASE("planner: Muon through the planned engine steps as its chosen engine does") {
  PlannerReset reset;
  using Polar = st::SpectralNorm<st::NewtonSchulz<st::QuinticSchedule, 5, st::Planned<st::EigenProducts, st::GramProducts<>>>>;
  CHECK(Polar::name().find("planned") != std::string::npos);
  st::polar_planner().force("gram-restart3");
  const Mf G0 = input(96, 800);
  std::vector<float> w(96 * 800, 0.01f), w2 = w, g(G0.size());
  Eigen::Map<st::RowMatrix<float>>(g.data(), 96, 800) = G0;
  auto step = [&](auto opt, std::vector<float>& weights) {
    st::ParamSet<float> params;
    params.add("w", st::Role::Hidden, weights.data(), 96, 800);
    st::Gradients<float> grads;
    grads.add(g.data(), 96, 800);
    auto state = opt.init(params);
    opt.step(params, grads, state);
  };
  st::Hyper hp;
  hp.lr = 0.02;
  step(st::muon<Polar>(hp), w);
  step(st::muon<st::SpectralGram>(hp), w2);
  CHECK(w == w2);
}

TEST_CASE("planner: the default Muon plans its Newton-Schulz engine; small layers keep their bits") {
  PlannerReset reset;
  static_assert(std::is_same_v<st::Spectral::polar_method::products, st::AutoProducts>,
                "the default spectral geometry plans its products");
  CHECK(st::Spectral::name() == "2->2 (quinticx5)");  // the engine is not part of the checkpointed name
  const std::string names = st::AutoProducts::names();
  CHECK(names.rfind("eigen+gram-restart3", 0) == 0);
#if defined(STEEPEST_ONEDNN)
  CHECK(names.find("onednn-bf16") != std::string::npos);
#endif
  st::Hyper hp;
  hp.lr = 0.02;
  auto step = [&](auto opt, int m, int n) {
    const Mf G = input(m, n);
    std::vector<float> w(std::size_t(m) * n, 0.01f), g(G.size());
    Eigen::Map<st::RowMatrix<float>>(g.data(), m, n) = G;
    st::ParamSet<float> params;
    params.add("w", st::Role::Hidden, w.data(), m, n);
    st::Gradients<float> grads;
    grads.add(g.data(), m, n);
    auto state = opt.init(params);
    opt.step(params, grads, state);
    return w;
  };
  using EigenPolar = st::SpectralNorm<st::NewtonSchulz<st::QuinticSchedule, 5, st::EigenProducts>>;
  // Small: the reference engine, bitwise, without timing.
  CHECK(step(st::muon(hp), 32, 96) == step(st::muon<EigenPolar>(hp), 32, 96));
  REQUIRE(st::polar_planner().plans().size() == 1);
  CHECK(st::polar_planner().plans()[0].how == "small");
  // Large: measured among the built-in engines; what runs is the engine it names.
  const auto planned = step(st::muon(hp), 96, 800);
  const auto plans = st::polar_planner().plans();
  REQUIRE(plans.size() == 2);
  const st::PolarPlan& p = plans[0].k == 96 ? plans[0] : plans[1];
  CAPTURE(p.describe());
  CHECK(p.how == "measured");
  st::polar_planner().force(p.engine);
  CHECK(planned == step(st::muon(hp), 96, 800));
}

namespace {
std::string temp_path(const char* name) { return (std::string(std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp") + "/steepest_plan_") + name + "_" + std::to_string(::getpid()); }
void write_text(const std::string& path, const std::string& text) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  std::fwrite(text.data(), 1, text.size(), f);
  std::fclose(f);
}
std::string read_text(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return "";
  std::string s;
  char b[4096];
  for (std::size_t n; (n = std::fread(b, 1, sizeof b, f)) > 0;) s.append(b, n);
  std::fclose(f);
  return s;
}
}  // namespace

TEST_CASE("planner: plans saved to a file are used as they are, without timing") {
  PlannerReset reset;
  using P = st::Planned<st::EigenProducts, st::GramProducts<>>;
  const Mf wide = input(128, 512), square = input(256, 256);
  st::polar_planner().set_mode(st::PlanMode::Estimate);  // deterministic choices: gram, eigen
  (void)run<P>(wide);
  (void)run<P>(square);
  const std::string path = temp_path("save");
  st::polar_planner().save(path);
  const std::string text = read_text(path);
  CHECK(text.rfind("steepest polar plans v1\ncpu " + st::PolarPlanner::cpu_model() + "\n", 0) == 0);
  CHECK(text.find("128x512/") != std::string::npos);
  // Loaded into a planner that would measure: the loaded choices run, and none is made anew.
  st::polar_planner().set_mode(st::PlanMode::Measure);
  st::polar_planner().clear();
  st::polar_planner().load(path);
  auto plans = st::polar_planner().plans();
  REQUIRE(plans.size() == 2);
  for (const auto& p : plans) {
    CHECK(p.how == "loaded");
    CHECK(p.engine == (p.k == 128 ? "gram-restart3" : "eigen"));
  }
  CHECK(run<P>(wide) == run<st::GramProducts<>>(wide));
  CHECK(run<P>(square) == run<st::EigenProducts>(square));
  CHECK(st::polar_planner().plans().size() == 2);  // nothing planned anew
  // A saved file of loaded plans is the same file.
  const std::string again = temp_path("again");
  st::polar_planner().save(again);
  CHECK(read_text(again) == text);
  // set_file: loads the file, and each new choice rewrites it.
  st::polar_planner().clear();
  st::polar_planner().set_mode(st::PlanMode::Estimate);
  st::polar_planner().set_file(again);
  CHECK(st::polar_planner().plans().size() == 2);
  (void)run<P>(input(160, 640));
  CHECK(read_text(again).find("160x640/") != std::string::npos);
  st::polar_planner().set_file("");
  std::remove(path.c_str());
  std::remove(again.c_str());
}

TEST_CASE("planner: a crafted plan file is refused and the plans stay as they were") {
  PlannerReset reset;
  using P = st::Planned<st::EigenProducts, st::GramProducts<>>;
  st::polar_planner().set_mode(st::PlanMode::Estimate);
  (void)run<P>(input(128, 512));
  const auto before = st::polar_planner().plans();
  REQUIRE(before.size() == 1);
  const std::string head = "steepest polar plans v1\ncpu " + st::PolarPlanner::cpu_model() + "\n";
  const std::string key = "128x512/1/quintic/5/4/eigen+gram-restart3";
  const std::string path = temp_path("crafted");
  auto refused = [&](const std::string& text, const char* why) {
    CAPTURE(text);
    write_text(path, text);
    CHECK_THROWS_WITH_AS(st::polar_planner().load(path), doctest::Contains(why), st::state_file_error);
    const auto after = st::polar_planner().plans();
    REQUIRE(after.size() == before.size());
    CHECK(after[0].engine == before[0].engine);
    CHECK(after[0].how == before[0].how);
  };
  refused("", "not a plan file");
  refused("steepest polar plans v2\ncpu x\n", "not a plan file");
  refused("steepest polar plans v1\ncpu Another CPU\n", "made on another CPU");
  refused(head + key + " eigen", "last line is not ended");
  refused(head + key + " openblas-syrk\n", "line 3");                 // an engine the key does not list
  refused(head + key + " eigen\n" + key + " eigen\n", "repeats a key");
  refused(head + "512x128/1/quintic/5/4/eigen eigen\n", "line 3");     // k > l
  refused(head + "18446744073709551616x9/1/quintic/5/4/eigen eigen\n", "line 3");  // 2^64
  refused(head + "128x512/0/quintic/5/4/eigen eigen\n", "line 3");     // no threads
  refused(head + "128x512/1/quintic/5/2/eigen eigen\n", "line 3");     // 2-byte scalars
  refused(head + "128x512/1/quintic/5/4/eigen\n", "line 3");           // no engine
  refused(head + "128x512/1/quin tic/5/4/eigen eigen\n", "line 3");
  refused(head + "128x512/1/quintic/5/4/-x/eigen eigen\n", "line 3");  // seven fields
  refused(head + std::string(std::size_t(1) << 20, '#') + "\n", "larger than 1 MiB");
  // Not a regular file: a directory and a FIFO (which must not hang the open).
  const std::string dir = temp_path("dir");
  REQUIRE(::mkdir(dir.c_str(), 0700) == 0);
  CHECK_THROWS_WITH_AS(st::polar_planner().load(dir), doctest::Contains("not a regular file"), st::state_file_error);
  ::rmdir(dir.c_str());
  const std::string fifo = temp_path("fifo");
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK_THROWS_WITH_AS(st::polar_planner().load(fifo), doctest::Contains("not a regular file"), st::state_file_error);
  // Saving over a symbolic link is refused too (the link and its target are left alone).
  const std::string link = temp_path("link");
  REQUIRE(::symlink(path.c_str(), link.c_str()) == 0);
  const std::string target_before = read_text(path);
  CHECK_THROWS_WITH_AS(st::polar_planner().save(link), doctest::Contains("symbolic link"), st::state_file_error);
  CHECK(read_text(path) == target_before);
  ::unlink(link.c_str());
  ::unlink(fifo.c_str());
  std::remove(path.c_str());
}

TEST_CASE("planner: an engine whose stated flops cannot win is not run") {
  PlannerReset reset;
  using P = st::Planned<st::EigenProducts, HopelessProducts, st::GramProducts<>>;
  HopelessProducts::runs = 0;
  const Mf G = input(128, 512);
  (void)run<P>(G);
  CHECK(HopelessProducts::runs == 0);
  const auto plans = st::polar_planner().plans();
  REQUIRE(plans.size() == 1);
  const st::PolarPlan& p = plans[0];
  CAPTURE(p.describe());
  CHECK(p.engine != "hopeless");
  CHECK_FALSE(std::get<3>(p.candidates[1]));
  CHECK(std::get<2>(p.candidates[1]) < 0);  // no distance: it did not run
  CHECK(std::get<1>(p.candidates[1]) > 1e3);  // its estimate: 1e30 flops at the reference's rate
  CHECK(p.describe().find("hopeless not run") != std::string::npos);
  CHECK(std::get<3>(p.candidates[2]));  // the Gram form (2/3 of the reference's flops) ran
  // Forced, it runs.
  st::polar_planner().force("hopeless");
  (void)run<P>(G);
  CHECK(HopelessProducts::runs == 1);
}
