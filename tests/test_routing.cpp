// Routing (layers to chains by role, name or predicate) and logical views (one tensor stepped as
// several matrices), against scalar references written here.
#include <doctest/doctest.h>

#include <steepest/steepest.hpp>

#include "optim_helpers.hpp"

#include <cmath>
#include <cstdio>
#include <vector>

namespace st = steepest;
using Md = Eigen::MatrixXd;
using Vec = std::vector<double>;

namespace {

using optim_test::grad_at;
using optim_test::hyper;

// Independent references: plain loops over row-major buffers.
struct AdamRef {
  Vec m, v;
  explicit AdamRef(std::size_t n) : m(n, 0.0), v(n, 0.0) {}
  void step(Vec& w, const Vec& g, int t, const st::Hyper& hp) {
    for (std::size_t i = 0; i < g.size(); ++i) {
      m[i] = hp.beta1 * m[i] + (1 - hp.beta1) * g[i];
      v[i] = hp.beta2 * v[i] + (1 - hp.beta2) * g[i] * g[i];
      const double u = (m[i] / (1 - std::pow(hp.beta1, t))) / (std::sqrt(v[i] / (1 - std::pow(hp.beta2, t))) + hp.eps);
      w[i] = (1 - hp.lr * hp.weight_decay) * w[i] - hp.lr * u;
    }
  }
};
// Muon on one matrix: Nesterov-EMA momentum, exact polar factor (Jacobi SVD), sqrt(max(1, m/n)).
struct MuonRef {
  Md mom;
  MuonRef(int m, int n) : mom(Md::Zero(m, n)) {}
  void step(Md& W, const Md& G, const st::Hyper& hp) {
    mom = hp.beta1 * mom + (1 - hp.beta1) * G;
    const Md U = (1 - hp.beta1) * G + hp.beta1 * mom;
    Eigen::JacobiSVD<Md> svd(U, Eigen::ComputeThinU | Eigen::ComputeThinV);
    const Md D = svd.matrixU() * svd.matrixV().transpose();
    W = (1 - hp.lr * hp.weight_decay) * W - hp.lr * std::sqrt(std::max(1.0, double(W.rows()) / double(W.cols()))) * D;
  }
};

Md as_mat(const Vec& v, int m, int n) {
  Md A(m, n);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) A(i, j) = v[std::size_t(i * n + j)];
  return A;
}

double max_abs(const Md& A) { return A.cwiseAbs().maxCoeff(); }

}  // namespace

TEST_CASE("glob patterns match whole names") {
  using st::detail::glob_match;
  CHECK(glob_match("*", ""));
  CHECK(glob_match("*.bias", "h0.attn.bias"));
  CHECK_FALSE(glob_match("*.bias", "h0.attn.bias2"));
  CHECK(glob_match("h?.mlp*", "h3.mlp.fc"));
  CHECK_FALSE(glob_match("h?.mlp*", "h12.mlp.fc"));
  CHECK(glob_match("a*b*c", "aXXbYYbZc"));
  CHECK_FALSE(glob_match("a*b*c", "aXXbYYbZ"));
  CHECK(glob_match("qkv[*]", "qkv[2]"));
}

TEST_CASE("routes: first match wins, each route its own chain and hyper-parameters, one step counter") {
  // Three tensors: a hidden matrix, an embedding, a bias. Route the bias by name to SGD
  // (lr 0.1), hidden matrices to Muon (exact polar), everything else to AdamW (lr 0.01).
  const int m = 6, n = 4;
  Vec h(std::size_t(m * n)), e(std::size_t(5 * 3)), b(static_cast<std::size_t>(m));
  for (std::size_t i = 0; i < h.size(); ++i) h[i] = 0.1 * std::cos(double(i));
  for (std::size_t i = 0; i < e.size(); ++i) e[i] = 0.05 * std::sin(double(i));
  st::ParamSet<double> P;
  P.add("h0", st::Role::Hidden, h.data(), m, n);
  P.add("embed", st::Role::Embedding, e.data(), 5, 3);
  P.add_vector("h0.bias", b.data(), m);
  const auto mh = hyper(0.02, 0.95, 0.0, 0.1), ah = hyper(0.01, 0.9, 0.99, 0.05), sh = hyper(0.1, 0.0, 0.0, 0.0);
  auto opt = st::routed(st::route(st::name_glob("*.bias"), st::sgd(sh)),
                        st::route(st::roles({st::Role::Hidden}), st::muon_chain<st::SpectralExact>(mh)),
                        st::route(st::everything(), st::adamw(ah)));
  auto state = opt.init(P);
  CHECK(state.route == std::vector<std::size_t>{1, 2, 0});
  CHECK(opt.geometry_of(P.at("h0")) == st::geometry<st::SpectralExact>());
  CHECK(opt.geometry_of(P.at("embed")).is_identity());
  CHECK(opt.name() == "routed(name=*.bias: momentum+step; role=hidden: nesterov-ema+geometry+geometry-scale+shape+step; *: adam+step)");

  Md Wh = as_mat(h, m, n);
  Vec we = e, wb = b;
  MuonRef muon(m, n);
  AdamRef adam(e.size());
  for (int t = 1; t <= 4; ++t) {
    const Vec gh = grad_at(h.size(), t, 0), ge = grad_at(e.size(), t, 1), gb = grad_at(b.size(), t, 2);
    st::Gradients<double> G;
    G.add(gh.data(), m, n);
    G.add(ge.data(), 5, 3);
    G.add_vector(gb.data(), m);
    REQUIRE(opt.step(P, G, state));
    muon.step(Wh, as_mat(gh, m, n), mh);
    adam.step(we, ge, t, ah);
    for (std::size_t i = 0; i < wb.size(); ++i) wb[i] -= sh.lr * gb[i];  // beta1 = 0: plain SGD
  }
  CHECK(state.step == 4);
  CHECK(state.part<0>().step == 4);
  CHECK(max_abs(as_mat(h, m, n) - Wh) < 1e-12);
  CHECK(max_abs(as_mat(e, 5, 3) - as_mat(we, 5, 3)) < 1e-14);
  CHECK(max_abs(as_mat(b, m, 1) - as_mat(wb, m, 1)) < 1e-14);

  // A layer no route takes is refused at init, naming it.
  auto partial = st::routed(st::route(st::roles({st::Role::Hidden}), st::adamw()));
  CHECK_THROWS_WITH_AS(partial.init(P), doctest::Contains("no route takes parameter 'embed'"), std::invalid_argument);
  // A predicate route.
  auto wide = st::routed(st::route(st::where("wide", [](const st::LayerInfo& l) { return l.cols > l.rows; }), st::sgd()),
                         st::route(st::everything(), st::adamw()));
  CHECK(wide.init(P).route == std::vector<std::size_t>{1, 1, 1});
}

TEST_CASE("st::muon is Muon on hidden matrices and AdamW on the rest; a refused step changes nothing in any route") {
  const int m = 8, n = 5;
  Vec h(std::size_t(m * n), 0.0), b(static_cast<std::size_t>(m), 0.0);
  st::ParamSet<double> P;
  P.add("h", st::Role::Hidden, h.data(), m, n);
  P.add_vector("b", b.data(), m);
  auto mh = hyper(0.02, 0.95, 0.0, 0.1);
  mh.on_non_finite = st::NonFinitePolicy::Skip;
  const auto ah = hyper(3e-3, 0.9, 0.95, 0.0);
  auto opt = st::muon<st::SpectralExact>(mh, ah);
  CHECK(opt.optimizer<1>().hp.on_non_finite == st::NonFinitePolicy::Skip);
  auto state = opt.init(P);
  Md Wh = Md::Zero(m, n);
  Vec wb(b.size(), 0.0);
  MuonRef muon(m, n);
  AdamRef adam(b.size());
  for (int t = 1; t <= 3; ++t) {
    const Vec gh = grad_at(h.size(), t, 0), gb = grad_at(b.size(), t, 2);
    st::Gradients<double> G;
    G.add(gh.data(), m, n);
    G.add_vector(gb.data(), m);
    REQUIRE(opt.step(P, G, state));
    muon.step(Wh, as_mat(gh, m, n), mh);
    adam.step(wb, gb, t, ah);
  }
  CHECK(max_abs(as_mat(h, m, n) - Wh) < 1e-12);
  CHECK(max_abs(as_mat(b, m, 1) - as_mat(wb, m, 1)) < 1e-14);
  // A NaN in the AdamW route's gradient skips the whole step: Muon's layer is untouched too.
  const Vec h_before = h, b_before = b;
  Vec gh = grad_at(h.size(), 4, 0), gb = grad_at(b.size(), 4, 2);
  gb[2] = std::nan("");
  st::Gradients<double> G;
  G.add(gh.data(), m, n);
  G.add_vector(gb.data(), m);
  CHECK_FALSE(opt.step(P, G, state));
  CHECK(h == h_before);
  CHECK(b == b_before);
  CHECK(state.step == 3);
}

TEST_CASE("logical views: row, column and interleaved blocks each get their own geometry and state") {
  // One 6 x 4 tensor. Muon (exact polar) on its blocks must equal Muon run separately on each
  // block extracted by hand; AdamW (elementwise) on the blocks must equal AdamW on the whole
  // tensor, on the fused path (contiguous row blocks) and the gathered one (strided blocks).
  const int m = 6, n = 4;
  struct Case {
    const char* what;
    st::Blocks blocks;
    std::vector<std::vector<int>> rows, cols;  // each block's rows and columns in the tensor
  };
  const std::vector<Case> cases = {
      {"rows(3)", st::Blocks::rows(3), {{0, 1}, {2, 3}, {4, 5}}, {{0, 1, 2, 3}, {0, 1, 2, 3}, {0, 1, 2, 3}}},
      {"cols(2)", st::Blocks::cols(2), {{0, 1, 2, 3, 4, 5}, {0, 1, 2, 3, 4, 5}}, {{0, 1}, {2, 3}}},
      {"interleaved_rows(2)", st::Blocks::interleaved_rows(2), {{0, 2, 4}, {1, 3, 5}}, {{0, 1, 2, 3}, {0, 1, 2, 3}}},
  };
  const auto mh = hyper(0.05, 0.9, 0.0, 0.1), ah = hyper(0.01, 0.9, 0.99, 0.1);
  for (const Case& c : cases) {
    CAPTURE(c.what);
    for (int adam = 0; adam < 2; ++adam) {
      CAPTURE(adam);
      Vec w(std::size_t(m * n));
      for (std::size_t i = 0; i < w.size(); ++i) w[i] = 0.1 * std::sin(double(i) * 0.7);
      const Vec w0 = w;
      st::ParamSet<double> P;
      P.add_blocks("qkv", st::Role::Hidden, w.data(), m, n, c.blocks);
      REQUIRE(P.size() == c.rows.size());
      CHECK(P[1].name == "qkv[1]");
      auto run = [&](auto opt) {
        auto state = opt.init(P);
        for (int t = 1; t <= 3; ++t) {
          const Vec g = grad_at(w.size(), t, 0);
          st::Gradients<double> G;
          G.add(g.data(), m, n);  // one gradient for the whole tensor
          REQUIRE(opt.step(P, G, state));
        }
      };
      if (adam) {
        run(st::adamw(ah));
        Vec ref = w0;
        AdamRef a(ref.size());
        for (int t = 1; t <= 3; ++t) a.step(ref, grad_at(w.size(), t, 0), t, ah);
        CHECK(max_abs(as_mat(w, m, n) - as_mat(ref, m, n)) < 1e-14);
        continue;
      }
      run(st::muon_chain<st::SpectralExact>(mh));
      for (std::size_t k = 0; k < c.rows.size(); ++k) {
        const auto& R = c.rows[k];
        const auto& C = c.cols[k];
        auto block = [&](const Vec& v) {
          Md B(R.size(), C.size());
          for (std::size_t i = 0; i < R.size(); ++i)
            for (std::size_t j = 0; j < C.size(); ++j) B(i, j) = v[std::size_t(R[i] * n + C[j])];
          return B;
        };
        Md Wk = block(w0);
        MuonRef ref(int(R.size()), int(C.size()));
        for (int t = 1; t <= 3; ++t) ref.step(Wk, block(grad_at(w.size(), t, 0)), mh);
        CHECK(max_abs(block(w) - Wk) < 1e-12);
      }
    }
  }
  // Blocks that do not divide the tensor are refused, before anything is added.
  Vec w(6 * 4);
  st::ParamSet<double> P;
  CHECK_THROWS_WITH_AS(P.add_blocks("x", st::Role::Hidden, w.data(), 6, 4, st::Blocks::cols(3)),
                       doctest::Contains("4 columns do not split into 3"), st::shape_error);
  CHECK(P.size() == 0);
  CHECK(P.tensors().empty());
}

TEST_CASE("batched experts: one [b, m, n] tensor, one gradient, b layers with their own polar factors") {
  const int b = 3, m = 4, n = 2;
  Vec w(std::size_t(b * m * n), 0.0), g = grad_at(std::size_t(b * m * n), 1, 0);
  st::ParamSet<double> P;
  P.add_batched("experts", st::Role::Hidden, w.data(), b, m, n);
  st::Gradients<double> G;
  G.add_batched(g.data(), b, m, n);
  auto opt = st::muon_chain<st::SpectralExact>(hyper(0.1, 0.0, 0.0, 0.0));
  auto state = opt.init(P);
  REQUIRE(opt.step(P, G, state));
  for (int e = 0; e < b; ++e) {
    const Md Ge = as_mat(Vec(g.begin() + e * m * n, g.begin() + (e + 1) * m * n), m, n);
    Eigen::JacobiSVD<Md> svd(Ge, Eigen::ComputeThinU | Eigen::ComputeThinV);
    const Md want = -0.1 * std::sqrt(2.0) * svd.matrixU() * svd.matrixV().transpose();  // sqrt(max(1, 4/2))
    CHECK(max_abs(as_mat(Vec(w.begin() + e * m * n, w.begin() + (e + 1) * m * n), m, n) - want) < 1e-12);
  }
  // A gradient for the wrong number of experts names the tensor and both shapes.
  st::Gradients<double> bad;
  bad.add_batched(g.data(), 2, m, n);
  CHECK_THROWS_WITH_AS(opt.step(P, bad, state), "parameter 'experts': gradient is 8x2 but the weight is 12x2",
                       st::shape_error);
}

TEST_CASE("a routed optimizer saves, loads and continues bit for bit") {
  const std::string path = "steepest_test_routed.bin";
  const int m = 6, n = 4;
  auto make = [] { return st::muon(hyper(0.02, 0.95, 0.0, 0.1), hyper(0.01, 0.9, 0.99, 0.1)); };
  auto fresh_model = [&](Vec& w, Vec& b, st::ParamSet<double>& P) {
    w.assign(std::size_t(m * n), 0.01);
    b.assign(std::size_t(m), 0.0);
    P.add_blocks("qkv", st::Role::Hidden, w.data(), m, n, st::Blocks::rows(2));
    P.add_vector("b", b.data(), m);
  };
  auto opt = make();
  auto feed = [&](st::ParamSet<double>& P, auto& s, int t) {
    const Vec g = grad_at(std::size_t(m * n), t, 0), gb = grad_at(std::size_t(m), t, 1);
    st::Gradients<double> G;
    G.add(g.data(), m, n);
    G.add_vector(gb.data(), m);
    REQUIRE(opt.step(P, G, s));
  };
  Vec w1, b1, w2, b2;
  st::ParamSet<double> P1, P2;
  fresh_model(w1, b1, P1);
  fresh_model(w2, b2, P2);
  auto s1 = opt.init(P1);
  for (int t = 1; t <= 8; ++t) feed(P1, s1, t);
  auto s2 = opt.init(P2);
  for (int t = 1; t <= 4; ++t) feed(P2, s2, t);
  st::save(opt, s2, path);
  auto resumed = opt.init(P2);
  st::load(opt, resumed, path);
  CHECK(resumed.step == 4);
  CHECK(resumed.part<1>().step == 4);
  for (int t = 5; t <= 8; ++t) feed(P2, resumed, t);
  CHECK(w1 == w2);
  CHECK(b1 == b2);
  // A plain AdamW cannot read it.
  auto adam = st::adamw();
  auto as = adam.init(P2);
  CHECK_THROWS_WITH_AS(st::load(adam, as, path), doctest::Contains("saved by optimizer 'routed(role=hidden"),
                       st::state_file_error);
  std::remove(path.c_str());
}

TEST_CASE("a routed optimizer's lr_factor scales every route's learning rate (a schedule)") {
  // Two SGD routes (beta1 = 0: W <- W - lr g) with different learning rates; lr_factor 0.25.
  Vec a(4, 1.0), b(3, 1.0);
  const Vec ga = {1, 2, 3, 4}, gb = {-1, 0, 1};
  st::ParamSet<double> P;
  P.add_vector("a", a.data(), 4);
  P.add_vector("b", b.data(), 3);
  auto opt = st::routed(st::route(st::name_glob("a"), st::sgd(hyper(0.1, 0.0, 0.0, 0.0))),
                        st::route(st::everything(), st::sgd(hyper(0.4, 0.0, 0.0, 0.0))));
  opt.lr_factor = 0.25;
  auto state = opt.init(P);
  st::Gradients<double> G;
  G.add_vector(ga.data(), 4);
  G.add_vector(gb.data(), 3);
  REQUIRE(opt.step(P, G, state));
  for (std::size_t i = 0; i < 4; ++i) CHECK(a[i] == doctest::Approx(1.0 - 0.025 * ga[i]));
  for (std::size_t i = 0; i < 3; ++i) CHECK(b[i] == doctest::Approx(1.0 - 0.1 * gb[i]));
}

TEST_CASE("a plain optimizer is a table of one route: the same lr factor, policy and routing calls") {
  // SGD (heavy ball, then W -= lr m): a factor f on lr gives lr f exactly when f is a power of 2.
  st::Hyper hp = hyper(0.1, 0.9, 0.99, 0.0);
  std::vector<float> w1(12, 0.5f), w2(12, 0.5f), w3(12, 0.5f);
  st::ParamSet<float> p1, p2, p3;
  p1.add("w", st::Role::Hidden, w1.data(), 3, 4);
  p2.add("w", st::Role::Hidden, w2.data(), 3, 4);
  p3.add("w", st::Role::Hidden, w3.data(), 3, 4);
  auto scheduled = st::sgd(hp);
  scheduled.lr_factor = 0.5;
  st::Hyper half = hp;
  half.lr = 0.05;
  const auto reference = st::sgd(half);
  // A route's own factor and the table's multiply: 0.25 x 2.
  auto inner = st::sgd(hp);
  inner.lr_factor = 0.25;
  auto table = st::routed(st::route(st::everything(), inner));
  table.lr_factor = 2.0;
  auto s1 = scheduled.init(p1);
  auto s2 = reference.init(p2);
  auto s3 = table.init(p3);
  for (int t = 1; t <= 3; ++t) {
    const auto d = grad_at(12, t, 0.5);
    const std::vector<float> g(d.begin(), d.end());
    st::Gradients<float> G;
    G.add(g.data(), 3, 4);
    scheduled.step(p1, G, s1);
    reference.step(p2, G, s2);
    table.step(p3, G, s3);
  }
  CHECK(w1 == w2);
  CHECK(w3 == w2);
  CHECK(w1 != std::vector<float>(12, 0.5f));
  // The calls code written for either kind uses.
  CHECK(scheduled.route_of(p1[0]) == 0);
  CHECK(decltype(scheduled)::route_count == 1);
  CHECK(decltype(st::muon())::route_count == 2);
  scheduled.non_finite_policy() = st::NonFinitePolicy::Skip;
  CHECK(scheduled.hp.on_non_finite == st::NonFinitePolicy::Skip);
  std::string chain;
  scheduled.with_route(0, [&](const auto& o) { chain = o.name(); });
  CHECK(chain == scheduled.name());
  CHECK_THROWS_AS(scheduled.init_routed(p1, {1}), std::invalid_argument);
  const auto again = scheduled.init_routed(p1, {0});
  CHECK(again.layers.size() == 1);
}

TEST_CASE("gradients given by name: two same-shape tensors swapped are refused, naming both; nothing changes") {
  std::vector<float> q(12, 0.5f), k(12, -0.5f), gq(12, 1.0f), gk(12, -1.0f);
  st::ParamSet<float> params;
  params.add("q", st::Role::Hidden, q.data(), 3, 4);
  params.add("k", st::Role::Hidden, k.data(), 3, 4);
  const auto opt = st::adamw(hyper(0.1, 0.9, 0.99, 0.0));
  auto state = opt.init(params);
  st::Gradients<float> swapped;
  swapped.add("k", gk.data(), 3, 4);
  swapped.add("q", gq.data(), 3, 4);
  CHECK_THROWS_WITH_AS(opt.step(params, swapped, state),
                       "step: gradient 0 is given for 'k' but parameter 0 is 'q'", st::shape_error);
  CHECK(q == std::vector<float>(12, 0.5f));
  CHECK(k == std::vector<float>(12, -0.5f));
  CHECK(state.step == 0);
  // By position the same swap is invisible (the shapes agree): names are what catch it.
  st::Gradients<float> named, mixed;
  named.add("q", gq.data(), 3, 4);
  named.add("k", gk.data(), 3, 4);
  mixed.add(gq.data(), 3, 4);
  mixed.add("k", gk.data(), 3, 4);
  CHECK(opt.step(params, named, state));
  CHECK(opt.step(params, mixed, state));
  CHECK(q[0] < 0.5f);
  CHECK(k[0] > -0.5f);
}
