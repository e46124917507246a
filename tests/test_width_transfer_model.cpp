// The width-transfer example's model: its hand-written backward pass against central finite
// differences of its own forward loss (double precision), the loss against a plain-loop
// reference forward, and the corpus split.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>

#include "../examples/width_transfer/corpus.hpp"
#include "../examples/width_transfer/experiment.hpp"
#include "../examples/width_transfer/mlp_lm.hpp"

using namespace width_transfer;

namespace {

struct Batch {
  std::vector<std::uint8_t> ctx, tgt;
};

Batch random_batch(int B, int k, int V, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> id(0, V - 1);
  Batch b;
  for (int i = 0; i < B * k; ++i) b.ctx.push_back(std::uint8_t(id(rng)));
  for (int i = 0; i < B; ++i) b.tgt.push_back(std::uint8_t(id(rng)));
  return b;
}

// Plain-loop forward of the same model, written from the formula in mlp_lm.hpp.
double reference_loss(const MlpLM<double>& m, const Batch& b) {
  const auto& P = m.params();
  const ModelShape s = m.shape();
  const int B = int(b.tgt.size()), w = s.width, V = s.vocab, k = s.context;
  double total = 0;
  for (int e = 0; e < B; ++e) {
    std::vector<double> a(static_cast<std::size_t>(w));
    for (int i = 0; i < w; ++i) {
      double z = P[1].data[std::size_t(i)];
      for (int j = 0; j < k; ++j) z += P[0].data[std::size_t(i * k * V + j * V + b.ctx[std::size_t(e * k + j)])];
      a[std::size_t(i)] = std::max(0.0, z);
    }
    for (int l = 1; l <= s.depth; ++l) {
      const auto& W = P[std::size_t(2 * l)].data;
      const auto& bias = P[std::size_t(2 * l + 1)].data;
      std::vector<double> next(static_cast<std::size_t>(w));
      for (int i = 0; i < w; ++i) {
        double z = bias[std::size_t(i)];
        for (int j = 0; j < w; ++j) z += W[std::size_t(i * w + j)] * a[std::size_t(j)];
        next[std::size_t(i)] = std::max(0.0, z);
      }
      a = next;
    }
    const auto& H = P[P.size() - 2].data;
    const auto& c = P.back().data;
    std::vector<double> logit(static_cast<std::size_t>(V));
    double mx = -1e300;
    for (int v = 0; v < V; ++v) {
      double z = c[std::size_t(v)];
      for (int j = 0; j < w; ++j) z += H[std::size_t(v * w + j)] * a[std::size_t(j)];
      logit[std::size_t(v)] = z;
      mx = std::max(mx, z);
    }
    double sum = 0;
    for (double z : logit) sum += std::exp(z - mx);
    total += -(logit[b.tgt[std::size_t(e)]] - mx - std::log(sum));
  }
  return total / B;
}

}  // namespace

TEST_CASE("width_transfer model: loss matches a plain-loop forward") {
  for (int depth : {1, 2, 3}) {
    MlpLM<double> m({7, 3, 5, depth});
    m.init_standard(11u + unsigned(depth));
    // Nonzero biases so the bias paths are exercised.
    std::mt19937 rng(3);
    std::normal_distribution<double> nd;
    for (auto& t : m.params())
      if (t.role == steepest::Role::Vector)
        for (auto& v : t.data) v = 0.3 * nd(rng);
    const Batch b = random_batch(9, 3, 7, 5u);
    CHECK(m.forward_backward(b.ctx, b.tgt, false) == doctest::Approx(reference_loss(m, b)).epsilon(1e-12));
    CHECK(m.forward_backward(b.ctx, b.tgt, true) == doctest::Approx(reference_loss(m, b)).epsilon(1e-12));
  }
}

TEST_CASE("width_transfer model: gradients match central finite differences") {
  // Small shapes, repeated context bytes (so embedding columns accumulate several rows), every
  // parameter entry perturbed. A ReLU kink within h of an entry would spoil the difference
  // quotient; with h = 1e-6 and Gaussian weights none occurs for these seeds.
  for (int depth : {1, 2}) {
    MlpLM<double> m({6, 4, 7, depth});
    m.init_standard(21u + unsigned(depth));
    std::mt19937 rng(9);
    std::normal_distribution<double> nd;
    for (auto& t : m.params())
      if (t.role == steepest::Role::Vector)
        for (auto& v : t.data) v = 0.2 * nd(rng);
    Batch b = random_batch(10, 4, 6, 17u);
    b.ctx[1] = b.ctx[0];  // the same byte twice in one context
    m.forward_backward(b.ctx, b.tgt, true);
    const auto grads = m.grads();  // copy: the probes below overwrite them
    const double h = 1e-6;
    double worst = 0;
    int checked = 0;
    for (std::size_t p = 0; p < m.params().size(); ++p) {
      auto& data = m.params()[p].data;
      for (std::size_t i = 0; i < data.size(); ++i) {
        const double keep = data[i];
        data[i] = keep + h;
        const double up = m.forward_backward(b.ctx, b.tgt, false);
        data[i] = keep - h;
        const double down = m.forward_backward(b.ctx, b.tgt, false);
        data[i] = keep;
        const double fd = (up - down) / (2 * h);
        const double err = std::abs(fd - grads[p].data[i]) / std::max(1e-3, std::abs(fd));
        worst = std::max(worst, err);
        ++checked;
        INFO(m.params()[p].name << "[" << i << "]: analytic " << grads[p].data[i] << ", finite difference " << fd);
        CHECK(std::abs(fd - grads[p].data[i]) <= 1e-7 + 1e-5 * std::abs(fd));
      }
    }
    MESSAGE("depth " << depth << ": " << checked << " entries, worst relative error " << worst);
    // Embedding columns of (position, byte) pairs absent from the batch get exactly zero.
    const auto& gE = grads[0];
    int unused = 0;
    for (int j = 0; j < 4; ++j)
      for (int v = 0; v < 6; ++v) {
        bool seen = false;
        for (int e = 0; e < 10; ++e) seen = seen || b.ctx[std::size_t(e * 4 + j)] == v;
        if (seen) continue;
        ++unused;
        for (int i = 0; i < 7; ++i) CHECK(gE.data[std::size_t(i * 24 + j * 6 + v)] == 0.0);
      }
    CHECK(unused > 0);
  }
}

TEST_CASE("width_transfer model: float gradients agree with double") {
  MlpLM<double> md({9, 3, 16, 2});
  MlpLM<float> mf({9, 3, 16, 2});
  md.init_standard(4);
  for (std::size_t p = 0; p < md.params().size(); ++p)
    for (std::size_t i = 0; i < md.params()[p].data.size(); ++i)
      mf.params()[p].data[i] = float(md.params()[p].data[i]);
  const Batch b = random_batch(32, 3, 9, 8u);
  const double ld = md.forward_backward(b.ctx, b.tgt, true);
  const double lf = mf.forward_backward(b.ctx, b.tgt, true);
  CHECK(lf == doctest::Approx(ld).epsilon(1e-5));
  for (std::size_t p = 0; p < md.grads().size(); ++p) {
    const auto& gd = md.grads()[p].data;
    const auto& gf = mf.grads()[p].data;
    double scale = 0;
    for (double v : gd) scale = std::max(scale, std::abs(v));
    for (std::size_t i = 0; i < gd.size(); ++i) CHECK(std::abs(gf[i] - gd[i]) <= 1e-4 * scale + 1e-7);
  }
}

TEST_CASE("width_transfer: RMS->inf norm, schedule and corpus split") {
  Tensor<float> W{"w", steepest::Role::Output, 2, 4, {1, 1, 1, 1, 0, 3, 4, 0}};
  // rows have l2 norms 2 and 5; sqrt(n) * max = 2 * 5
  CHECK(rms_to_inf_norm(W) == doctest::Approx(10.0));
  CHECK(schedule(0, 100) == doctest::Approx(0.2));    // warm-up over 5 steps
  CHECK(schedule(4, 100) == doctest::Approx(1.0));
  CHECK(schedule(99, 100) == doctest::Approx(1.0 / 95));
  CHECK(schedule(100, 100) == doctest::Approx(0.0));

  // A synthetic corpus: every 10th 4 KiB block goes to validation.
  const std::string path = "width_transfer_corpus_test.txt";
  {
    std::ofstream f(path, std::ios::binary);
    for (int i = 0; i < 20 * 4096; ++i) f.put(char('a' + (i / 4096) % 10));
  }
  const Corpus c = load_corpus({path});
  CHECK(c.vocab() == 10);
  CHECK(c.val.size() == 2 * 4096);
  CHECK(c.train.size() == 18 * 4096);
  for (auto id : c.val) CHECK(c.bytes[id] == 'j');  // blocks 9 and 19
  BatchSampler s(c.train, 8, 1), s2(c.train, 8, 1);
  std::vector<std::uint8_t> x1, y1, x2, y2;
  s.next(16, x1, y1);
  s2.next(16, x2, y2);
  CHECK(x1 == x2);  // same seed, same batches
  CHECK(y1 == y2);
  std::remove(path.c_str());
  CHECK_THROWS_WITH_AS(load_corpus({"/nonexistent/corpus.txt"}), doctest::Contains("cannot read corpus file"),
                       std::runtime_error);
}
