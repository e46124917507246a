// Named optimizers against independent scalar references (plain loops, double), plus the
// properties the optimizer issue asks for: Scion's constraint, weight decay, loss decrease,
// save/load equivalence, refused files, non-finite and shape errors.
#include <doctest/doctest.h>

#include <steepest/steepest.hpp>

#include "optim_helpers.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <random>
#include <vector>

namespace st = steepest;
using Md = Eigen::MatrixXd;
using Vec = std::vector<double>;

namespace {

// A tiny model: one hidden matrix (m x n, row-major buffer) and one bias vector.
struct Model {
  int m = 7, n = 5;  // odd sizes: SIMD tails are exercised
  Vec w, b;
  st::ParamSet<double> params;
  Model() : w(std::size_t(m * n)), b(std::size_t(m)) {
    for (std::size_t i = 0; i < w.size(); ++i) w[i] = 0.1 * std::sin(double(i) + 1.0);
    for (std::size_t i = 0; i < b.size(); ++i) b[i] = 0.05 * std::cos(double(i));
    params.add("h", st::Role::Hidden, w.data(), m, n);
    params.add_vector("b", b.data(), m);
  }
};

using optim_test::grad_at;
using optim_test::hyper;

Md as_mat(const Vec& v, int m, int n) {  // row-major buffer -> matrix
  Md A(m, n);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) A(i, j) = v[std::size_t(i * n + j)];
  return A;
}
Vec as_vec(const Md& A) {
  Vec v;
  for (int i = 0; i < A.rows(); ++i)
    for (int j = 0; j < A.cols(); ++j) v.push_back(A(i, j));
  return v;
}

double max_rel_diff(const Vec& a, const Vec& b);

// Runs the library optimizer for `steps` steps on a fresh Model.
template <class Opt>
Model run_lib_once(const Opt& opt, int steps) {
  Model md;
  auto state = opt.init(md.params);
  for (int t = 1; t <= steps; ++t) {
    const Vec gw = grad_at(md.w.size(), t, 0.0), gb = grad_at(md.b.size(), t, 2.0);
    st::Gradients<double> g;
    g.add(gw.data(), md.m, md.n);
    g.add_vector(gb.data(), md.m);
    REQUIRE(opt.step(md.params, g, state));
  }
  CHECK(state.step == steps);
  return md;
}

// Runs both code paths: the fused one-pass kernels (default) and transform by transform; they
// must agree, and the fused result is returned for comparison with the reference.
template <class Opt>
Model run_lib(Opt opt, int steps) {
  opt.fuse = false;
  const Model slow = run_lib_once(opt, steps);
  opt.fuse = true;
  Model fast = run_lib_once(opt, steps);
  CHECK(max_rel_diff(fast.w, slow.w) < 1e-13);
  CHECK(max_rel_diff(fast.b, slow.b) < 1e-13);
  return fast;
}

double max_rel_diff(const Vec& a, const Vec& b) {
  double d = 0, s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    d = std::max(d, std::abs(a[i] - b[i]));
    s = std::max(s, std::abs(b[i]));
  }
  return d / std::max(s, 1e-300);
}

// ---- scalar building blocks of the references --------------------------------------------
struct AdamRef {
  Vec m, v;
  explicit AdamRef(std::size_t n) : m(n, 0.0), v(n, 0.0) {}
  Vec update(const Vec& g, int t, double b1, double b2, double eps) {
    Vec u(g.size());
    for (std::size_t i = 0; i < g.size(); ++i) {
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
      const double mh = m[i] / (1 - std::pow(b1, t)), vh = v[i] / (1 - std::pow(b2, t));
      u[i] = mh / (std::sqrt(vh) + eps);
    }
    return u;
  }
};
Vec normalize_rows(const Vec& g, int m, int n) {
  Vec d(g.size());
  for (int i = 0; i < m; ++i) {
    double s = 0;
    for (int j = 0; j < n; ++j) s += g[std::size_t(i * n + j)] * g[std::size_t(i * n + j)];
    s = std::sqrt(s);
    for (int j = 0; j < n; ++j) d[std::size_t(i * n + j)] = s > 0 ? g[std::size_t(i * n + j)] / s : 0;
  }
  return d;
}
Vec normalize_cols(const Vec& g, int m, int n) {
  Vec d(g.size());
  for (int j = 0; j < n; ++j) {
    double s = 0;
    for (int i = 0; i < m; ++i) s += g[std::size_t(i * n + j)] * g[std::size_t(i * n + j)];
    s = std::sqrt(s);
    for (int i = 0; i < m; ++i) d[std::size_t(i * n + j)] = s > 0 ? g[std::size_t(i * n + j)] / s : 0;
  }
  return d;
}
Vec rms_normalize(const Vec& g) {
  double s = 0;
  for (double x : g) s += x * x;
  const double rms = std::sqrt(s / double(g.size()));
  Vec d(g.size());
  for (std::size_t i = 0; i < g.size(); ++i) d[i] = g[i] / rms;
  return d;
}
Vec polar(const Vec& g, int m, int n) {  // U V^T by Jacobi SVD
  Eigen::JacobiSVD<Md> svd(as_mat(g, m, n), Eigen::ComputeThinU | Eigen::ComputeThinV);
  return as_vec(svd.matrixU() * svd.matrixV().transpose());
}
double sgn(double x) { return double((x > 0) - (x < 0)); }
void step(Vec& w, const Vec& u, double lr, double wd, double rho = 1.0) {
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = (1 - lr * wd) * w[i] - lr * rho * u[i];
}

// Runs a reference: `update(layer, g, t)` returns the update u; the step is decoupled unless
// `constrained`.
template <class F>
Model run_ref(int steps, double lr, double wd, F&& update, bool constrained = false,
              double rho_w = 1.0, double rho_b = 1.0) {
  Model md;
  for (int t = 1; t <= steps; ++t) {
    const Vec gw = grad_at(md.w.size(), t, 0.0), gb = grad_at(md.b.size(), t, 2.0);
    const Vec uw = update(0, gw, t), ub = update(1, gb, t);
    if (constrained) {
      for (std::size_t i = 0; i < md.w.size(); ++i) md.w[i] = (1 - lr) * md.w[i] - lr * rho_w * uw[i];
      for (std::size_t i = 0; i < md.b.size(); ++i) md.b[i] = (1 - lr) * md.b[i] - lr * rho_b * ub[i];
    } else {
      step(md.w, uw, lr, wd);
      step(md.b, ub, lr, wd);
    }
  }
  return md;
}

void check_same(const Model& lib, const Model& ref, double tol = 1e-12) {
  CHECK(max_rel_diff(lib.w, ref.w) < tol);
  CHECK(max_rel_diff(lib.b, ref.b) < tol);
}

}  // namespace

TEST_CASE("AdamW matches a scalar reference") {
  const auto hp = hyper(1e-2, 0.9, 0.99, 0.1);
  std::vector<AdamRef> a{AdamRef(35), AdamRef(7)};
  const Model ref = run_ref(7, hp.lr, hp.weight_decay, [&](int k, const Vec& g, int t) {
    return a[std::size_t(k)].update(g, t, 0.9, 0.99, 1e-8);
  });
  check_same(run_lib(st::adamw(hp), 7), ref);
}

TEST_CASE("a tensor without a gradient is not stepped; bias corrections follow its own step count") {
  // torch's AdamW: a parameter whose .grad is None is left alone (weights, moments, weight decay)
  // and its "step" does not advance. Here h has no gradient at step 3, b none at steps 2 and 5.
  const auto hp = hyper(1e-2, 0.9, 0.99, 0.1);
  const auto has = [](int k, int t) { return k == 0 ? t != 3 : t != 2 && t != 5; };
  Model ref;
  AdamRef a[2]{AdamRef(35), AdamRef(7)};
  int own[2] = {0, 0};
  for (int t = 1; t <= 7; ++t) {
    const Vec g[2] = {grad_at(ref.w.size(), t, 0.0), grad_at(ref.b.size(), t, 2.0)};
    Vec* w[2] = {&ref.w, &ref.b};
    for (int k = 0; k < 2; ++k)
      if (has(k, t)) step(*w[k], a[k].update(g[k], ++own[k], 0.9, 0.99, 1e-8), hp.lr, hp.weight_decay);
  }
  for (bool fuse : {true, false}) {
    CAPTURE(fuse);
    auto opt = st::adamw(hp);
    opt.fuse = fuse;
    Model md;
    auto state = opt.init(md.params);
    for (int t = 1; t <= 7; ++t) {
      const Vec gw = grad_at(md.w.size(), t, 0.0), gb = grad_at(md.b.size(), t, 2.0);
      const Model before = md;
      st::Gradients<double> g;
      if (has(0, t)) g.add("h", gw.data(), md.m, md.n);
      else g.skip("h");
      if (has(1, t)) g.add_vector("b", gb.data(), md.m);
      else g.skip("b");
      REQUIRE(opt.step(md.params, g, state));
      CHECK((md.w == before.w) == !has(0, t));  // bitwise unchanged exactly when skipped
      CHECK((md.b == before.b) == !has(1, t));
    }
    CHECK(state.step == 7);
    CHECK(state.skipped == std::vector<long long>{1, 2});
    check_same(md, ref);
  }
  // A skipped tensor needs no shape, and its gradient is not read for the finite check; a
  // gradient given for the wrong tensor is still refused by name.
  auto opt = st::muon(hyper(0.02, 0.95, 0, 0.1));
  Model md;
  auto state = opt.init(md.params);
  const Vec gb(7, std::numeric_limits<double>::quiet_NaN());
  st::Gradients<double> g;
  g.skip("h");
  g.add_vector("b", gb.data(), md.m);
  const Model before = md;
  CHECK_THROWS_AS(opt.step(md.params, g, state), st::non_finite_error);
  st::Gradients<double> wrong;
  wrong.skip("b");
  wrong.skip("h");
  CHECK_THROWS_WITH_AS(opt.step(md.params, wrong, state), doctest::Contains("is given for 'b'"), st::shape_error);
  st::Gradients<double> none;
  none.skip("h");
  none.skip("b");
  REQUIRE(opt.step(md.params, none, state));  // every tensor skipped: a step that changes nothing but counts
  CHECK(md.w == before.w);
  CHECK(md.b == before.b);
  CHECK(state.step == 1);
  CHECK(state.part<0>().skipped == std::vector<long long>{1});
  CHECK(state.part<1>().skipped == std::vector<long long>{1});
}

TEST_CASE("rescaled AdamW: hidden update times 1/fan_in, vectors unscaled") {
  const auto hp = hyper(1e-2, 0.9, 0.99, 0.0);
  std::vector<AdamRef> a{AdamRef(35), AdamRef(7)};
  const Model ref = run_ref(5, hp.lr, 0.0, [&](int k, const Vec& g, int t) {
    Vec u = a[std::size_t(k)].update(g, t, 0.9, 0.99, 1e-8);
    if (k == 0)
      for (double& x : u) x /= 5.0;  // n = 5
    return u;
  });
  check_same(run_lib(st::adamw_rescaled(hp), 5), ref);
}

TEST_CASE("SGD with heavy-ball and Nesterov momentum match scalar references") {
  for (int nesterov = 0; nesterov < 2; ++nesterov) {
    const auto hp = hyper(0.05, 0.9, 0.0, 0.01);
    std::vector<Vec> buf{Vec(35, 0.0), Vec(7, 0.0)};
    const Model ref = run_ref(6, hp.lr, hp.weight_decay, [&](int k, const Vec& g, int) {
      Vec& m = buf[std::size_t(k)];
      Vec u(g.size());
      for (std::size_t i = 0; i < g.size(); ++i) {
        m[i] = 0.9 * m[i] + g[i];
        u[i] = nesterov ? g[i] + 0.9 * m[i] : m[i];
      }
      return u;
    });
    if (nesterov)
      check_same(run_lib(st::sgd_nesterov(hp), 6), ref);
    else
      check_same(run_lib(st::sgd(hp), 6), ref);
  }
}

TEST_CASE("sign descent and Lion match scalar references") {
  {
    const auto hp = hyper(0.01, 0.0, 0.0, 0.1);
    const Model ref = run_ref(4, hp.lr, hp.weight_decay, [&](int, const Vec& g, int) {
      Vec u(g.size());
      for (std::size_t i = 0; i < g.size(); ++i) u[i] = sgn(g[i]);
      return u;
    });
    check_same(run_lib(st::sign_descent(hp), 4), ref);
  }
  {
    const auto hp = hyper(1e-3, 0.9, 0.99, 0.1);
    std::vector<Vec> mom{Vec(35, 0.0), Vec(7, 0.0)};
    const Model ref = run_ref(6, hp.lr, hp.weight_decay, [&](int k, const Vec& g, int) {
      Vec& m = mom[std::size_t(k)];
      Vec u(g.size());
      for (std::size_t i = 0; i < g.size(); ++i) {
        u[i] = sgn(0.9 * m[i] + 0.1 * g[i]);
        m[i] = 0.99 * m[i] + 0.01 * g[i];
      }
      return u;
    });
    check_same(run_lib(st::lion(hp), 6), ref);
  }
}

TEST_CASE("MOGA-row and MOGA-col, both orders, match scalar references") {
  const auto hp = hyper(1e-2, 0.9, 0.95, 0.1);
  for (int col = 0; col < 2; ++col) {
    for (int after = 0; after < 2; ++after) {
      CAPTURE(col);
      CAPTURE(after);
      std::vector<AdamRef> a{AdamRef(35), AdamRef(7)};
      const double s = col ? std::sqrt(7.0) / 5.0 : 1.0 / std::sqrt(5.0);  // 1̄->2̄ / 2̄->inf
      const Model ref = run_ref(6, hp.lr, hp.weight_decay, [&](int k, const Vec& g, int t) {
        auto& ad = a[std::size_t(k)];
        if (k == 1) return ad.update(g, t, 0.9, 0.95, 1e-8);  // vectors: plain AdamW
        auto norm = [&](const Vec& x) { return col ? normalize_cols(x, 7, 5) : normalize_rows(x, 7, 5); };
        Vec u = after ? norm(ad.update(g, t, 0.9, 0.95, 1e-8)) : ad.update(norm(g), t, 0.9, 0.95, 1e-8);
        for (double& x : u) x *= s;
        return u;
      });
      Model lib;
      if (col)
        lib = after ? run_lib(st::moga_col<st::MogaOrder::AdamThenNormalize>(hp), 6)
                    : run_lib(st::moga_col(hp), 6);
      else
        lib = after ? run_lib(st::moga_row<st::MogaOrder::AdamThenNormalize>(hp), 6)
                    : run_lib(st::moga_row(hp), 6);
      check_same(lib, ref, 1e-11);
    }
  }
}

TEST_CASE("MOGA-row momentum-only matches a scalar reference (rows normalized, EMA, n^-1/2; vectors by RMS)") {
  const auto hp = hyper(1e-2, 0.9, 0.0, 0.1);
  std::vector<Vec> mom{Vec(35, 0.0), Vec(7, 0.0)};
  const Model ref = run_ref(6, hp.lr, hp.weight_decay, [&](int k, const Vec& g, int) {
    Vec d;
    if (k == 0) {
      d = normalize_rows(g, 7, 5);
    } else {  // g / rms(g)
      double ss = 0;
      for (double x : g) ss += x * x;
      const double rms = std::sqrt(ss / double(g.size()));
      for (double x : g) d.push_back(x / rms);
    }
    Vec& m = mom[std::size_t(k)];
    Vec u(g.size());
    for (std::size_t i = 0; i < g.size(); ++i) {
      m[i] = 0.9 * m[i] + 0.1 * d[i];
      u[i] = m[i] * (k == 0 ? 1.0 / std::sqrt(5.0) : 1.0);
    }
    return u;
  });
  check_same(run_lib(st::moga_row_momentum(hp), 6), ref, 1e-11);
  // 20 bytes per parameter: one state buffer (the momentum) besides W and the gradient.
  Model md;
  auto opt = st::moga_row_momentum(hp);
  auto state = opt.init(md.params);
  CHECK(state.state_bytes() == sizeof(double) * (35 + 7));
}

TEST_CASE("Muon (hidden: Muon, exact-SVD path; the rest: AdamW) matches a scalar reference; NS path within the measured band") {
  const auto hp = hyper(0.02, 0.95, 0.0, 0.1);
  const auto adam = hyper(0.02, 0.9, 0.99, 0.1);  // same lr and decay: run_ref steps both alike
  Vec mom(35, 0.0);
  AdamRef bias(7);
  const Model ref = run_ref(5, hp.lr, hp.weight_decay, [&](int k, const Vec& g, int t) {
    if (k == 1) return bias.update(g, t, 0.9, 0.99, 1e-8);  // the vector: plain AdamW
    Vec u(g.size());
    for (std::size_t i = 0; i < g.size(); ++i) {
      mom[i] = 0.95 * mom[i] + 0.05 * g[i];
      u[i] = 0.05 * g[i] + 0.95 * mom[i];
    }
    Vec d = polar(u, 7, 5);
    for (double& x : d) x *= std::sqrt(std::max(1.0, 7.0 / 5.0));
    return d;
  });
  check_same(run_lib(st::muon<st::SpectralExact>(hp, adam), 5), ref, 1e-10);
  // Quintic NS: the Muon direction of one step vs the SVD polar factor of the same momentum.
  const Model ns = run_lib(st::muon(hp, adam), 1);
  const Model ex = run_lib(st::muon<st::SpectralExact>(hp, adam), 1);
  Model init;
  Vec dn(35), de(35);
  for (std::size_t i = 0; i < 35; ++i) {
    dn[i] = ((1 - hp.lr * hp.weight_decay) * init.w[i] - ns.w[i]) / hp.lr;
    de[i] = ((1 - hp.lr * hp.weight_decay) * init.w[i] - ex.w[i]) / hp.lr;
  }
  const Eigen::VectorXd s = st::singular_values(as_mat(dn, 7, 5) / std::sqrt(1.4));
  CHECK(s.minCoeff() >= 0.67);  // the quintic band of tests/test_newton_schulz.cpp
  CHECK(s.maxCoeff() <= 1.22);
  CHECK(max_rel_diff(dn, de) < 0.35);
}

TEST_CASE("Scion matches a scalar reference and keeps ||W|| <= radius over 100 steps") {
  auto hp = hyper(0.1, 0.9, 0.0, 0.0);
  {
    std::vector<Vec> mom{Vec(35, 0.0), Vec(7, 0.0)};
    const Model ref = run_ref(
        5, hp.lr, 0.0,
        [&](int k, const Vec& g, int) {
          Vec& m = mom[std::size_t(k)];
          for (std::size_t i = 0; i < g.size(); ++i) m[i] = 0.9 * m[i] + 0.1 * g[i];
          if (k == 1) return rms_normalize(m);
          Vec d = polar(m, 7, 5);
          for (double& x : d) x *= std::sqrt(7.0 / 5.0);
          return d;
        },
        /*constrained=*/true, 2.0, 3.0);
    st::ScionRadii radii;
    radii.hidden = 2.0;
    radii.vector = 3.0;
    auto opt = st::scion<st::SpectralExact>(hp, radii);  // the polar method as a template argument
    REQUIRE(opt.roles[0].geometry == st::geometry<st::MeanNormalized<st::SpectralExact>>());
    check_same(run_lib(opt, 5), ref, 1e-10);
  }
  // The constraint, in float with both the exact LMO and quintic Newton-Schulz.
  for (int exact = 0; exact < 2; ++exact) {
    const int m = 32, n = 16;
    std::vector<float> w(m * n), g(m * n);
    st::ParamSet<float> P;
    P.add("h", st::Role::Hidden, w.data(), m, n);
    st::ScionRadii radii;
    radii.hidden = 5.0;
    auto opt = st::scion(hp, radii);
    if (exact) opt = st::scion<st::SpectralExact>(hp, radii);
    st::norm_matched_init(P, opt, 1);
    const double rho = 5.0;
    CHECK(st::MeanNormalized<st::SpectralExact>::value(P[0].matrix()) == doctest::Approx(rho).epsilon(1e-5));
    auto state = opt.init(P);
    std::mt19937 rng(3);
    std::normal_distribution<float> nd;
    double worst = 0;
    for (int t = 0; t < 100; ++t) {
      for (auto& x : g) x = nd(rng);
      st::Gradients<float> G;
      G.add(g.data(), m, n);
      opt.step(P, G, state);
      worst = std::max(worst, st::MeanNormalized<st::SpectralExact>::value(P[0].matrix()));
    }
    // Exact LMO: ||D|| = 1 so the convex combination stays in the ball. Quintic NS: ||D|| can
    // reach the band's top 1.21, so the bound is that much looser.
    CHECK(worst <= rho * (exact ? 1.0 + 1e-5 : 1.22));
  }
}

TEST_CASE("a large weight decay visibly shrinks weights (AdamW, Muon, MOGA)") {
  auto hp = hyper(0.1, 0.9, 0.99, 1.0);
  auto shrink = [&](auto opt) {
    Model md;
    const Vec w0 = md.w;
    auto state = opt.init(md.params);
    const Vec zero_w(md.w.size(), 0.0), zero_b(md.b.size(), 0.0);
    st::Gradients<double> G;
    G.add(zero_w.data(), md.m, md.n);
    G.add_vector(zero_b.data(), md.m);
    for (int t = 0; t < 10; ++t) opt.step(md.params, G, state);
    // Zero gradients give zero updates, so only the decay acts: w = (1 - lr*wd)^10 w0.
    for (std::size_t i = 0; i < w0.size(); ++i) CHECK(md.w[i] == doctest::Approx(std::pow(0.9, 10) * w0[i]));
  };
  shrink(st::adamw(hp));
  shrink(st::muon(hp));
  shrink(st::moga_row(hp));
}

TEST_CASE("least squares: every optimizer lowers the loss") {
  // L(W, b) = ||W X + b 1^T - Y||^2 / (2N) with X: n x N, targets from a planted W*.
  const int m = 8, n = 16, N = 64;
  std::mt19937 rng(42);
  std::normal_distribution<double> nd;
  Md X(n, N), Ws(m, n);
  for (Eigen::Index i = 0; i < X.size(); ++i) X.data()[i] = nd(rng);
  for (Eigen::Index i = 0; i < Ws.size(); ++i) Ws.data()[i] = nd(rng) / 4;
  const Md Y = Ws * X;
  auto fit = [&](auto opt, int steps) {
    Vec w(std::size_t(m * n), 0.0), b(std::size_t(m), 0.0), gw(w.size()), gb(b.size());
    st::ParamSet<double> P;
    P.add("W", st::Role::Hidden, w.data(), m, n);
    P.add_vector("b", b.data(), m);
    auto state = opt.init(P);
    auto loss_and_grad = [&]() {
      const Md W = as_mat(w, m, n);
      const Eigen::VectorXd bv = Eigen::Map<Eigen::VectorXd>(b.data(), m);
      const Md R = (W * X).colwise() + bv - Y;
      const Md G = R * X.transpose() / N;
      gw = as_vec(G);
      Eigen::Map<Eigen::VectorXd>(gb.data(), m) = R.rowwise().sum() / N;
      return R.squaredNorm() / (2.0 * N);
    };
    const double l0 = loss_and_grad();
    double l = l0;
    for (int t = 0; t < steps; ++t) {
      st::Gradients<double> G;
      G.add(gw.data(), m, n);
      G.add_vector(gb.data(), m);
      opt.step(P, G, state);
      l = loss_and_grad();
    }
    return l / l0;
  };
  CHECK(fit(st::sgd(hyper(0.02, 0.9, 0, 0)), 100) < 0.1);
  CHECK(fit(st::sgd_nesterov(hyper(0.02, 0.9, 0, 0)), 100) < 0.1);
  CHECK(fit(st::adamw(hyper(0.02, 0.9, 0.99, 0)), 100) < 0.1);
  CHECK(fit(st::adamw_rescaled(hyper(0.2, 0.9, 0.99, 0)), 100) < 0.1);
  CHECK(fit(st::sign_descent(hyper(0.005, 0, 0, 0)), 100) < 0.1);
  CHECK(fit(st::lion(hyper(0.005, 0.9, 0.99, 0)), 100) < 0.1);
  CHECK(fit(st::moga_row(hyper(0.05, 0.9, 0.99, 0)), 100) < 0.1);
  CHECK(fit(st::moga_col(hyper(0.05, 0.9, 0.99, 0)), 100) < 0.1);
  CHECK(fit(st::muon(hyper(0.02, 0.9, 0, 0), hyper(0.02, 0.9, 0.99, 0)), 100) < 0.1);
  CHECK(fit(st::muon_scion(hyper(0.02, 0.9, 0, 0)), 100) < 0.1);
  CHECK(fit(st::scion_unconstrained(hyper(0.03, 0.9, 0, 0), {1, 1, 1, 1}), 100) < 0.1);
  CHECK(fit(st::scion_unconstrained<st::SpectralPolarExpress>(hyper(0.03, 0.9, 0, 0), {1, 1, 1, 1}), 100) < 0.1);
}

TEST_CASE("a custom optimizer in a few lines: Nesterov + compile-time row geometry") {
  using MyChain = st::Chain<st::Momentum<st::MomentumKind::Nesterov>,
                            st::Dualize<st::MeanNormalized<st::RowNorm<2>>>, st::DecoupledStep>;
  st::Optimizer<MyChain> opt(hyper(0.1, 0.5, 0, 0));
  Model md;
  const Vec w0 = md.w;
  auto state = opt.init(md.params);
  const Vec gw = grad_at(35, 1, 0.0), gb = grad_at(7, 1, 2.0);
  st::Gradients<double> G;
  G.add(gw.data(), 7, 5);
  G.add_vector(gb.data(), 7);
  opt.step(md.params, G, state);
  // Step 1: m = g, u = g + 0.5 g = 1.5 g; rows normalized (the 1.5 cancels), times n^{-1/2}.
  const Vec d = normalize_rows(gw, 7, 5);
  for (std::size_t i = 0; i < 35; ++i) CHECK(md.w[i] == doctest::Approx(w0[i] - 0.1 * d[i] / std::sqrt(5.0)));
}

TEST_CASE("save -> load -> continue equals an uninterrupted run bit for bit") {
  const std::string path = "steepest_test_state.bin";
  auto check = [&](auto opt) {
    const Model straight = run_lib(opt, 10);
    Model md;
    auto state = opt.init(md.params);
    auto feed = [&](int t, auto& s) {
      const Vec gw = grad_at(md.w.size(), t, 0.0), gb = grad_at(md.b.size(), t, 2.0);
      st::Gradients<double> g;
      g.add(gw.data(), md.m, md.n);
      g.add_vector(gb.data(), md.m);
      opt.step(md.params, g, s);
    };
    for (int t = 1; t <= 5; ++t) feed(t, state);
    st::save(opt, state, path);
    auto resumed = opt.init(md.params);  // a fresh process would start here
    st::load(opt, resumed, path);
    CHECK(resumed.step == 5);
    for (int t = 6; t <= 10; ++t) feed(t, resumed);
    CHECK(md.w == straight.w);  // bitwise
    CHECK(md.b == straight.b);
  };
  check(st::adamw(hyper(0.01, 0.9, 0.99, 0.1)));
  check(st::muon(hyper(0.02, 0.95, 0, 0.1)));
  check(st::moga_row(hyper(0.01, 0.9, 0.95, 0.1)));
  check(st::lion(hyper(0.001, 0.9, 0.99, 0.1)));
  std::remove(path.c_str());
}

TEST_CASE("corrupt, truncated, wrong-version, wrong-shape and wrong-optimizer files are refused") {
  const std::string path = "steepest_test_bad.bin";
  auto opt = st::adamw(hyper(0.01, 0.9, 0.99, 0.0));
  Model md;
  auto state = opt.init(md.params);
  const Vec gw = grad_at(35, 1, 0.0), gb = grad_at(7, 1, 2.0);
  st::Gradients<double> G;
  G.add(gw.data(), 7, 5);
  G.add_vector(gb.data(), 7);
  opt.step(md.params, G, state);
  st::save(opt, state, path);
  std::string good;
  {
    std::ifstream f(path, std::ios::binary);
    good.assign(std::istreambuf_iterator<char>(f), {});
  }
  auto write = [&](const std::string& bytes) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), std::streamsize(bytes.size()));
  };
  auto snapshot = [&](auto& s) {
    Vec all;
    for (auto& l : s.layers) decltype(opt)::chain::visit(l, [&](auto& b) { all.insert(all.end(), b.data(), b.data() + b.size()); });
    return std::make_pair(s.step, all);
  };
  const auto before = snapshot(state);
  auto refused = [&](const std::string& bytes, const char* what) {
    CAPTURE(what);
    write(bytes);
    CHECK_THROWS_AS(st::load(opt, state, path), st::state_file_error);
    CHECK(snapshot(state) == before);  // nothing in memory changed
  };
  refused(good.substr(0, good.size() / 2), "truncated");
  refused(good.substr(0, 10), "truncated header");
  refused("", "empty");
  std::string v = good;
  const auto at = v.find("\"format_version\":\"2\"");
  REQUIRE(at != std::string::npos);
  v[at + 18] = '3';  // the version field
  refused(v, "wrong version");
  std::string c = good;
  c[c.size() - 3] ^= 0x5a;  // a tensor byte
  refused(c, "corrupt");
  refused("NOTSTEEPxxxxxxxxxxxxxxxxxxxx", "wrong magic");
  try {
    write(v);
    st::load(opt, state, path);
  } catch (const st::state_file_error& e) {
    CHECK(std::string(e.what()).find("version 3") != std::string::npos);
  }
  // Wrong shape: a model whose hidden layer is 4x6.
  {
    Vec w(35), b(7);
    st::ParamSet<double> P;
    P.add("h", st::Role::Hidden, w.data(), 5, 7);
    P.add_vector("b", b.data(), 7);
    auto other = opt.init(P);
    write(good);
    CHECK_THROWS_WITH_AS(st::load(opt, other, path), doctest::Contains("5x7"), st::state_file_error);
  }
  // Wrong optimizer: an AdamW file into Muon state.
  {
    auto muon = st::muon();
    auto ms = muon.init(md.params);
    write(good);
    CHECK_THROWS_WITH_AS(st::load(muon, ms, path), doctest::Contains("saved by optimizer 'adam+step'"),
                         st::state_file_error);
  }
  CHECK_THROWS_AS(st::load(opt, state, "/nonexistent/dir/file.bin"), st::state_file_error);
  std::remove(path.c_str());
}

TEST_CASE("non-finite gradients: error by default, skip as an option; nothing changes") {
  for (int skip = 0; skip < 2; ++skip) {
    auto hp = hyper(0.01, 0.9, 0.99, 0.1);
    if (skip) hp.on_non_finite = st::NonFinitePolicy::Skip;
    auto opt = st::adamw(hp);
    Model md;
    auto state = opt.init(md.params);
    Vec gw = grad_at(35, 1, 0.0), gb = grad_at(7, 1, 2.0);
    st::Gradients<double> G;
    G.add(gw.data(), 7, 5);
    G.add_vector(gb.data(), 7);
    opt.step(md.params, G, state);
    const Vec w = md.w, b = md.b;
    gb[3] = std::numeric_limits<double>::quiet_NaN();
    if (skip) {
      CHECK_FALSE(opt.step(md.params, G, state));
    } else {
      CHECK_THROWS_WITH_AS(opt.step(md.params, G, state), doctest::Contains("'b'"), st::non_finite_error);
    }
    CHECK(state.step == 1);
    CHECK(md.w == w);
    CHECK(md.b == b);
    gb[3] = std::numeric_limits<double>::infinity();
    if (!skip) CHECK_THROWS_AS(opt.step(md.params, G, state), st::non_finite_error);
  }
}

TEST_CASE("NonFinitePolicy::Unchecked takes the step and lets NaN through (documented)") {
  auto hp = hyper(0.01, 0.9, 0.99, 0.0);
  hp.on_non_finite = st::NonFinitePolicy::Unchecked;
  auto opt = st::adamw(hp);
  Model md;
  auto state = opt.init(md.params);
  Vec gw = grad_at(35, 1, 0.0), gb = grad_at(7, 1, 2.0);
  gw[4] = std::numeric_limits<double>::quiet_NaN();
  st::Gradients<double> G;
  G.add(gw.data(), 7, 5);
  G.add_vector(gb.data(), 7);
  CHECK(opt.step(md.params, G, state));
  CHECK(state.step == 1);
  CHECK(std::isnan(md.w[4]));
  CHECK(std::isfinite(md.w[5]));
}

TEST_CASE("finite input gives finite output: every rule at the gradient limit, refusal past it") {
  // The limit is |g| < 2^40 for float (hyper.hpp: every 2-norm and Adam's second moment stay
  // finite below it). Gradients of the largest magnitude that passes, with mixed signs, on every
  // shape class, for several steps: parameters and state stay finite. Before the limit, a
  // FLT_MAX gradient made SGD-Nesterov's parameter -Inf and AdamW's second moment Inf.
  const float big = std::nextafter(std::ldexp(1.0f, st::gradient_limit_exponent<float>), 0.0f);
  auto run = [&](const char* what, auto opt) {
    CAPTURE(what);
    std::vector<float> h(64 * 48), e(48 * 32), o(16 * 64), v(64);
    for (auto* p : {&h, &e, &o, &v})
      for (std::size_t i = 0; i < p->size(); ++i) (*p)[i] = 0.02f * float(std::sin(double(i)));
    st::ParamSet<float> P;
    P.add("h", st::Role::Hidden, h.data(), 64, 48);
    P.add("e", st::Role::Embedding, e.data(), 48, 32);
    P.add("o", st::Role::Output, o.data(), 16, 64);
    P.add_vector("v", v.data(), 64);
    auto state = opt.init(P);
    for (int t = 1; t <= 3; ++t) {
      std::vector<std::vector<float>> g;
      for (const auto* p : {&h, &e, &o, &v}) {
        g.emplace_back(p->size());
        for (std::size_t i = 0; i < p->size(); ++i) g.back()[i] = ((i * 7 + std::size_t(t)) % 3 == 0 ? -big : big);
      }
      st::Gradients<float> G;
      G.add(g[0].data(), 64, 48);
      G.add(g[1].data(), 48, 32);
      G.add(g[2].data(), 16, 64);
      G.add_vector(g[3].data(), 64);
      REQUIRE(opt.step(P, G, state));
      if (t == 3) {  // the limit itself is refused and changes nothing
        const auto w = h;
        g[0][5] = std::ldexp(1.0f, st::gradient_limit_exponent<float>);
        CHECK_THROWS_WITH_AS(opt.step(P, G, state), doctest::Contains("magnitude >= 2^40"), st::non_finite_error);
        CHECK(h == w);
      }
    }
    bool finite = true;
    for (const auto* p : {&h, &e, &o, &v})
      for (float x : *p) finite = finite && std::isfinite(x);
    CHECK(finite);
    state.for_each_layer([&](const st::LayerRecord& r, const std::string&, auto&& visit) {
      visit([&](const std::string& key, auto& b, st::Domain) {
        CAPTURE(r.name);
        CAPTURE(key);
        CHECK(b.array().isFinite().all());
      });
    });
  };
  st::Hyper hp = hyper(1e-3, 0.9, 0.999, 0.1);
  run("sgd", st::sgd(hp));
  run("sgd-nesterov", st::sgd_nesterov(hp));
  run("adamw", st::adamw(hp));
  run("adamw-rescaled", st::adamw_rescaled(hp));
  run("sign", st::sign_descent(hp));
  run("lion", st::lion(hp));
  run("moga-row", st::moga_row(hp));
  run("moga-col", st::moga_col(hp));
  run("moga-row-momentum", st::moga_row_momentum(hp));
  run("muon", st::muon(hp));
  run("muon-polar-express", st::muon<st::SpectralPolarExpress>(hp));
  run("muon-svd", st::muon<st::SpectralExact>(hp));
  run("muon-scion", st::muon_scion(hp));
  run("scion", st::scion(hp));
  run("scion-unconstrained", st::scion_unconstrained(hp));
}

TEST_CASE("all_finite<Limit> is exactly |x| < 2^Limit, NaN and Inf refused") {
  const float lim = std::ldexp(1.0f, 40);
  for (std::size_t n : {std::size_t(1), std::size_t(17), std::size_t(300000)}) {
    std::vector<float> v(n, 0.5f);
    v[n - 1] = -std::nextafter(lim, 0.0f);
    CHECK(st::simd::all_finite<40>(v.data(), st::Index(n)));
    v[n / 2] = lim;
    CHECK_FALSE(st::simd::all_finite<40>(v.data(), st::Index(n)));
    CHECK(st::simd::all_finite(v.data(), st::Index(n)));  // no limit: only finiteness
    v[n / 2] = std::numeric_limits<float>::quiet_NaN();
    CHECK_FALSE(st::simd::all_finite<40>(v.data(), st::Index(n)));
  }
  const double dl = std::ldexp(1.0, st::gradient_limit_exponent<double>);
  std::vector<double> d(9, std::nextafter(dl, 0.0));
  CHECK(st::simd::all_finite<st::gradient_limit_exponent<double>>(d.data(), 9));
  d[8] = -dl;
  CHECK_FALSE(st::simd::all_finite<st::gradient_limit_exponent<double>>(d.data(), 9));
}

TEST_CASE("Unchecked is a stated limit: a NaN gradient stays in Lion's moment for good") {
  auto hp = hyper(1e-3, 0.9, 0.99, 0.0);
  hp.on_non_finite = st::NonFinitePolicy::Unchecked;
  auto opt = st::lion(hp);
  Model md;
  auto state = opt.init(md.params);
  for (int t = 1; t <= 4; ++t) {
    Vec gw = grad_at(35, t, 0.0), gb = grad_at(7, t, 2.0);
    if (t == 1) gw[2] = std::numeric_limits<double>::quiet_NaN();
    st::Gradients<double> G;
    G.add(gw.data(), 7, 5);
    G.add_vector(gb.data(), 7);
    opt.step(md.params, G, state);
  }
  // sign(NaN) = 0 keeps the parameter where it was, but m = b2 m + (1 - b2) g stays NaN.
  CHECK(std::isnan(std::get<0>(state.layers[0]).m(0, 2)));
  CHECK(std::isfinite(std::get<0>(state.layers[0]).m(0, 3)));
}

TEST_CASE("shape mismatches between parameter, gradient and state are clear errors") {
  auto opt = st::muon();
  Model md;
  auto state = opt.init(md.params);
  Vec gw(35), gb(7);
  {
    st::Gradients<double> G;
    G.add(gw.data(), 5, 7);  // transposed
    G.add_vector(gb.data(), 7);
    CHECK_THROWS_WITH_AS(opt.step(md.params, G, state),
                         "parameter 'h': gradient is 5x7 but the weight is 7x5", st::shape_error);
  }
  {
    st::Gradients<double> G;
    G.add(gw.data(), 7, 5);
    CHECK_THROWS_WITH_AS(opt.step(md.params, G, state), doctest::Contains("1 gradients for 2"),
                         st::shape_error);
  }
  {
    Model other;
    Vec extra(3);
    other.params.add_vector("c", extra.data(), 3);
    st::Gradients<double> G;
    G.add(gw.data(), 7, 5);
    G.add_vector(gb.data(), 7);
    G.add_vector(extra.data(), 3);
    CHECK_THROWS_WITH_AS(opt.step(other.params, G, state), doctest::Contains("state has 2 layers"),
                         st::shape_error);
  }
  CHECK(state.step == 0);
}

TEST_CASE("parameter sets: roles pick geometries, overrides win, norms list the head first") {
  const int vocab = 10, d = 8;
  Vec emb(std::size_t(vocab * d)), h(std::size_t(d * d)), head(std::size_t(vocab * d)), g(8),
      conv(2 * 3 * 3 * 3), heads(3 * 4 * 2);
  st::ParamSet<double> P;
  P.add("embed", st::Role::Embedding, emb.data(), d, vocab);
  P.add("h0", st::Role::Hidden, h.data(), d, d);
  P.add("head", st::Role::Output, head.data(), vocab, d);
  P.add_vector("ln.g", g.data(), d);
  P.add_conv("conv", conv.data(), 2, 3, 3, 3);
  P.add_batched("attn", st::Role::Hidden, heads.data(), 3, 4, 2);
  CHECK(P.size() == 8);
  CHECK(P.at("conv").cols == 27);
  CHECK(P.at("attn[2]").data == heads.data() + 16);
  auto opt = st::scion();
  CHECK(opt.geometry_of(P.at("h0")) == st::geometry<st::MeanNormalized<st::Spectral>>());
  CHECK(opt.geometry_of(P.at("embed")) == st::geometry<st::MeanNormalized<st::ColNormalize>>());
  CHECK(opt.geometry_of(P.at("head")) == st::geometry<st::MeanNormalized<st::SignNorm>>());
  CHECK(opt.geometry_of(P.at("ln.g")) == st::geometry<st::VectorRMS>());
  P.at("h0").geometry = st::geometry<st::MeanNormalized<st::RowNormalize>>();
  CHECK(opt.geometry_of(P.at("h0")) == st::geometry<st::MeanNormalized<st::RowNormalize>>());
  st::norm_matched_init(P, opt, 7);
  const auto norms = opt.operator_norms(P);
  REQUIRE(norms.size() == 8);
  CHECK(norms[0].name == "head");
  CHECK(norms[0].value == doctest::Approx(3000.0));  // norm-matched to the head's radius
  CHECK(norms[1].name == "embed");
  CHECK(norms[2].value == doctest::Approx(50.0));
  CHECK_THROWS_AS(P.add("h0", st::Role::Hidden, h.data(), d, d), std::invalid_argument);
}

TEST_CASE("all_finite agrees with std::isfinite, on the serial and the block-parallel paths") {
  for (std::size_t n : {std::size_t(0), std::size_t(3), std::size_t(1000), std::size_t(300000)}) {
    std::vector<float> v(n, 1.5f);
    CHECK(st::simd::all_finite(v.data(), st::Index(n)));
    for (std::size_t pos : {std::size_t(0), n / 2, n - 1}) {
      if (n == 0) break;
      for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                        -std::numeric_limits<float>::infinity()}) {
        v[pos] = bad;
        bool ref = true;
        for (float x : v) ref = ref && std::isfinite(x);
        CHECK(st::simd::all_finite(v.data(), st::Index(n)) == ref);
        v[pos] = 1.5f;
      }
    }
  }
}

TEST_CASE("all_finite finds one bad entry anywhere: every position, the four sub-ranges and the rest") {
  // The probe reads four sub-ranges side by side plus a remainder (packet_size * 4 + 3 entries at
  // most); every length up to 200 covers every split, and around the sub-range and thread-range
  // seams of a long array a bad entry at each position is found (reference: std::isfinite, and
  // |x| < 2^40 for the limit).
  for (std::size_t n = 1; n <= 200; ++n) {
    std::vector<float> v(n, -0.25f);
    REQUIRE(st::simd::all_finite<40>(v.data(), st::Index(n)));
    for (std::size_t pos = 0; pos < n; ++pos) {
      v[pos] = std::numeric_limits<float>::infinity();
      CHECK_FALSE(st::simd::all_finite(v.data(), st::Index(n)));
      v[pos] = std::ldexp(1.0f, 40);
      CHECK_FALSE(st::simd::all_finite<40>(v.data(), st::Index(n)));
      CHECK(st::simd::all_finite(v.data(), st::Index(n)));
      v[pos] = -0.25f;
    }
  }
  const std::size_t n = 300007;  // above the parallel threshold, odd
  std::vector<double> d(n, 3.0);
  REQUIRE(st::simd::all_finite<40>(d.data(), st::Index(n)));
  // Seams at 1 and 2 threads: the sub-ranges start near every n/8 (each thread's range split in
  // four, whole packets), and the remainder just before n.
  for (std::size_t seam : {std::size_t(0), n / 8, n / 4, 3 * n / 8, n / 2, 5 * n / 8, 3 * n / 4, 7 * n / 8, n - 8})
    for (std::size_t pos = seam < 8 ? 0 : seam - 8; pos < std::min(n, seam + 8); ++pos) {
      d[pos] = std::numeric_limits<double>::quiet_NaN();
      CHECK_FALSE(st::simd::all_finite(d.data(), st::Index(n)));
      d[pos] = -std::ldexp(1.0, 40);
      CHECK_FALSE(st::simd::all_finite<40>(d.data(), st::Index(n)));
      d[pos] = 3.0;
    }
  CHECK(st::simd::all_finite<40>(d.data(), st::Index(n)));
}

TEST_CASE("the per-layer update scratch is allocated only by the transform-by-transform path") {
  // Fused chains (AdamW) never touch it: it must stay empty, not m x n of dead memory.
  // Muon's polar factor needs the whole matrix, so its hidden layer gets the buffer on step 1.
  std::vector<float> w(12 * 8, 0.1f), g(12 * 8), b(12, 0.0f), gb(12, 0.5f);
  for (std::size_t i = 0; i < g.size(); ++i) g[i] = float(int(i % 7) - 3);
  st::ParamSet<float> ps;
  ps.add("w", st::Role::Hidden, w.data(), 12, 8);
  ps.add_vector("b", b.data(), 12);
  st::Gradients<float> gs;
  gs.add(g.data(), 12, 8);
  gs.add_vector(gb.data(), 12);
  auto adam = st::adamw();
  auto sa = adam.init(ps);
  REQUIRE(adam.step(ps, gs, sa));
  CHECK(sa.scratch.update[0].size() == 0);
  CHECK(sa.scratch.update[1].size() == 0);
  auto muon = st::muon();
  auto sm = muon.init(ps);
  CHECK(sm.part<0>().scratch.update[0].size() == 0);
  REQUIRE(muon.step(ps, gs, sm));
  CHECK(sm.part<0>().scratch.update[0].rows() == 12);  // the hidden layer's route: Muon
  CHECK(sm.part<0>().scratch.update[0].cols() == 8);
  CHECK(sm.part<1>().scratch.update[0].size() == 0);   // the vector's route: fused AdamW
  adam.fuse = false;  // the slow path sizes it as needed
  REQUIRE(adam.step(ps, gs, sa));
  CHECK(sa.scratch.update[0].size() == 12 * 8);
}

namespace {
// A geometry defined here, not in the library: the Frobenius norm (self-dual, direction
// G / ||G||_F), with a workspace type of its own that counts calls, so the test also sees that
// a user's workspace is created once per layer and kept across steps.
struct UserFrobenius {
  static constexpr double p = 2.0, q = 2.0;
  struct Counter {
    int calls = 0;
  };
  template <class S>
  using Workspace = Counter;
  static std::string name() { return "user-frobenius"; }
  static double scale(st::Index, st::Index) { return 1.0; }
  /// Its mean-normalized version is the RMS geometry: s(m, n) = sqrt(m n).
  static double mean_normalized_scale(st::Index m, st::Index n) { return std::sqrt(double(m) * double(n)); }
  template <class M>
  static double value(const M& W) { return double(W.norm()); }
  template <class M>
  static double dual(const M& G) { return double(G.norm()); }
  template <class M, class O>
  static void dualize(const M& G, const O& out, Counter& c) {
    ++c.calls;
    const double n = double(G.norm());
    st::writable(out) = n > 0 ? (G / typename M::Scalar(n)).eval() : (G * 0).eval();
  }
  template <class M, class O>
  static void dualize(const M& G, const O& out) {
    Counter c;
    dualize(G, out, c);
  }
};
}  // namespace

TEST_CASE("a user-defined policy is one layer's geometry at run time (plain and mean-normalized)") {
  static_assert(st::is_norm_policy_v<UserFrobenius>);
  for (int mean = 0; mean < 2; ++mean) {
    CAPTURE(mean);
    const st::Geometry g = mean ? st::geometry<st::MeanNormalized<UserFrobenius>>() : st::geometry<UserFrobenius>();
    CHECK(g == (mean ? st::geometry<st::MeanNormalized<UserFrobenius>>() : st::geometry<UserFrobenius>()));
    CHECK(g != st::geometry<st::VectorRMS>());  // same math as the built-in, another policy
    CHECK(g.fused() == st::FusedForm::None);    // unknown to the fused kernels: runs as a chain
    // Sign descent's chain (geometry, then step), with the hidden layer switched to the user's
    // geometry and the vector left at the optimizer's sign.
    const auto hp = hyper(0.05, 0.0, 0.0, 0.1);
    auto opt = st::sign_descent(hp);
    const double s = mean ? std::sqrt(35.0) : 1.0;
    const Model ref = run_ref(4, hp.lr, hp.weight_decay, [&](int k, const Vec& gr, int) {
      Vec u(gr.size());
      double nrm = 0;
      for (double x : gr) nrm += x * x;
      nrm = std::sqrt(nrm);
      for (std::size_t i = 0; i < gr.size(); ++i) u[i] = k == 0 ? gr[i] / nrm : sgn(gr[i]);
      return u;
    });
    Model md;
    md.params.at("h").geometry = g;
    auto state = opt.init(md.params);
    for (int t = 1; t <= 4; ++t) {
      const Vec gw = grad_at(md.w.size(), t, 0.0), gb = grad_at(md.b.size(), t, 2.0);
      st::Gradients<double> G;
      G.add(gw.data(), md.m, md.n);
      G.add_vector(gb.data(), md.m);
      REQUIRE(opt.step(md.params, G, state));
    }
    // The sign-descent chain has no GeometryScale, so the mean-normalized handle gives the same
    // direction; its norm report is the mean-normalized one, ||W||_F / sqrt(mn).
    check_same(md, ref);
    REQUIRE(state.scratch.workspace[0].other != nullptr);
    CHECK(static_cast<UserFrobenius::Counter*>(state.scratch.workspace[0].other.get())->calls == 4);
    const auto norms = opt.operator_norms(md.params);
    double fro = 0;
    for (double x : md.w) fro += x * x;
    CHECK(norms[0].geometry == (mean ? "mean(user-frobenius)" : "user-frobenius"));
    CHECK(norms[0].value == doctest::Approx(std::sqrt(fro) / s));
  }
  // With the width scale applied (Scion's unconstrained chain: EMA, geometry, s(m, n), step).
  auto hp = hyper(0.01, 0.0, 0.0, 0.0);  // beta1 = 0: the EMA is the gradient
  auto opt = st::scion_unconstrained(hp, {1, 1, 1, 1});
  Model md;
  const Vec w0 = md.w;
  md.params.at("h").geometry = st::geometry<st::MeanNormalized<UserFrobenius>>();
  auto state = opt.init(md.params);
  const Vec gw = grad_at(md.w.size(), 1, 0.0), gb = grad_at(md.b.size(), 1, 2.0);
  st::Gradients<double> G;
  G.add(gw.data(), md.m, md.n);
  G.add_vector(gb.data(), md.m);
  REQUIRE(opt.step(md.params, G, state));
  double nrm = 0;
  for (double x : gw) nrm += x * x;
  for (std::size_t i = 0; i < 35; ++i)
    CHECK(md.w[i] == doctest::Approx(w0[i] - 0.01 * std::sqrt(35.0) * gw[i] / std::sqrt(nrm)).epsilon(1e-12));
}

namespace {
// Steps a 6 x 16 float layer once with gradient entries in [0.5, 1.5], then `quiet` times with a
// zero gradient, on the fused or the transform-by-transform path; after every step every state
// buffer entry must be 0 or a normal number. Returns the weights and whether every state entry
// ended at exactly 0.
template <class Opt>
std::pair<std::vector<float>, bool> decay_to_zero(Opt opt, bool fuse, int quiet) {
  opt.fuse = fuse;
  const int m = 6, n = 16;
  std::vector<float> w(m * n, 0.25f), g(m * n);
  for (int i = 0; i < m * n; ++i) g[std::size_t(i)] = 0.5f + float(i % 11) / 10.0f;
  st::ParamSet<float> ps;
  ps.add("w", st::Role::Hidden, w.data(), m, n);
  st::Gradients<float> gs;
  gs.add(g.data(), m, n);
  auto state = opt.init(ps);
  using Chain = typename Opt::chain;
  bool subnormal_seen = false;
  for (int t = 0; t <= quiet; ++t) {
    REQUIRE(opt.step(ps, gs, state));
    if (t == 0) std::fill(g.begin(), g.end(), 0.0f);
    for (auto& l : state.layers)
      Chain::visit(l, [&](auto& buf) {
        for (Eigen::Index i = 0; i < buf.size(); ++i)
          subnormal_seen = subnormal_seen || std::fpclassify(buf.data()[i]) == FP_SUBNORMAL;
      });
  }
  CHECK_FALSE(subnormal_seen);
  bool all_zero = true;
  for (auto& l : state.layers)
    Chain::visit(l, [&](auto& buf) {
      for (Eigen::Index i = 0; i < buf.size(); ++i) all_zero = all_zero && buf.data()[i] == 0.0f;
    });
  return {w, all_zero};
}
}  // namespace

TEST_CASE("stored state never holds subnormals: a moment whose gradient stops decays to exactly 0") {
  // Why the library flushes: in round-to-nearest float arithmetic, an EMA of zeros sticks in the
  // subnormal range and never reaches 0 (0.9 * 4 * 2^-149 = 3.6 * 2^-149 rounds back to
  // 4 * 2^-149), and x86 runs arithmetic on subnormals in microcode. The plain loop shows the trap
  // the flush avoids.
  volatile float trap = 0.1f;  // volatile: computed at run time, in the default FP environment
  for (int t = 0; t < 1200; ++t) trap = 0.9f * trap;
  CHECK(trap == std::ldexp(4.0f, -149));
  CHECK(std::fpclassify(trap) == FP_SUBNORMAL);

  // beta2 = 0.9 as well, so every moment falls below FLT_MIN within the 1200 quiet steps
  // (0.9^1200 ~ 1e-55) and must then be exactly 0, on both code paths, which agree on the weights.
  const auto hp = hyper(1e-3, 0.9, 0.9, 0.0);
  auto both = [](auto opt) {
    const auto fused = decay_to_zero(opt, true, 1200), slow = decay_to_zero(opt, false, 1200);
    CHECK(fused.second);
    CHECK(slow.second);
    double diff = 0, scale = 0;  // the two paths round alike up to FMA contraction
    for (std::size_t i = 0; i < fused.first.size(); ++i) {
      diff = std::max(diff, double(std::abs(fused.first[i] - slow.first[i])));
      scale = std::max(scale, double(std::abs(slow.first[i])));
    }
    CHECK(diff <= 1e-6 * scale);
  };
  SUBCASE("AdamW (Adam moments)") { both(st::adamw(hp)); }
  SUBCASE("Lion (its moment)") { both(st::lion(hp)); }
  SUBCASE("SGD, heavy ball") { both(st::sgd(hp)); }
  SUBCASE("SGD, Nesterov") { both(st::sgd_nesterov(hp)); }
  SUBCASE("MOGA-row momentum (EMA)") { both(st::moga_row_momentum(hp)); }
  SUBCASE("Muon chain (Nesterov EMA, then Newton-Schulz)") { both(st::muon_chain(hp)); }
}
