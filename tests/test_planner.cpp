// The Newton-Schulz engine planner (polar/planner.hpp): a forced engine, an engine outside the
// accuracy band never chosen however fast, one that cannot run left out, the estimate mode's
// flop counts, small layers, and the plans it shows. References: the engines' own outputs
// (the planner must run exactly the engine it names), flop counts written out by hand.
#include <doctest/doctest.h>

#include <steepest/polar/gram_newton_schulz.hpp>
#include <steepest/polar/planner.hpp>
#include <steepest/steepest.hpp>

#include "reference.hpp"

#include <stdexcept>
#include <string>

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

template <class Products>
Mf run(const Mf& G, int steps = 5) {
  Mf out(G.rows(), G.cols());
  typename Products::template Workspace<float> ws;
  Products::template run<st::QuinticSchedule>(G, out, steps, ws);
  return out;
}

/// Resets the process's planner after a test (it is global).
struct PlannerReset {
  ~PlannerReset() {
    st::polar_planner().force("");
    st::polar_planner().set_mode(st::PlanMode::Measure);
    st::polar_planner().set_tolerance(2e-2);
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
