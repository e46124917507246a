// experiment.hpp -- one training run of the width-transfer sweep: an optimizer by name, a width,
// a learning rate and a seed in; losses, the output head's norm and timings out.
#pragma once
#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <tuple>
#if defined(__SSE__) || defined(__x86_64__)
#include <pmmintrin.h>
#include <xmmintrin.h>
#endif
#include <utility>
#include <vector>

#include "corpus.hpp"
#include "mlp_lm.hpp"

namespace width_transfer {

namespace st = steepest;

/// The optimizers of the sweep. Every one is steered by one global learning rate `lr`;
/// everything else is fixed across widths (see docs/TRANSFER.md for why each is set up this way).
inline const std::vector<std::string>& all_optimizers() {
  static const std::vector<std::string> names = {
      "adamw",           // AdamW, standard parametrization: one lr for every tensor
      "adamw_1inf",      // AdamW with the 1̄->inf scale 1/fan_in on hidden and head (Adam's muP)
      "muon",            // Muon on hidden + head, shape factor sqrt(max(1, m/n))
      "muon_mup",        // Muon on hidden + head, spectral muP factor sqrt(m/n)
      "moga_row",        // MOGA-row: row-normalize, Adam, s = n^{-1/2} (library default order)
      "moga_col",        // MOGA-col: column-normalize, Adam, s = sqrt(m)/n (library default order)
      "moga_row_post",   // MOGA-row, Adam first then row-normalize (AdamThenNormalize)
      "moga_col_post",   // MOGA-col, Adam first then column-normalize
      "scion",           // Scion, constrained, per-role radii
  };
  return names;
}

/// Optimizers the sweep runs only when named (--optimizers): precision variants of the above.
inline const std::vector<std::string>& extra_optimizers() {
  static const std::vector<std::string> names = {
      "adamw_bf16",  // AdamW with its moments stored in bf16 (st::Bf16State), fp32 arithmetic
  };
  return names;
}

inline bool is_spectral_optimizer(const std::string& n) {
  return n == "muon" || n == "muon_mup" || n == "scion" || n == "scion_unconstrained";
}

struct RunConfig {
  std::string optimizer;
  int width = 64;
  double lr = 1e-3;
  unsigned seed = 0;
  int steps = 200;
  int batch = 128;
  int context = 8;
  int depth = 2;
  int eval_tokens = 8192;
  int trace_points = 0;  // > 0: record the head's norms this many times along training (and at 0)
};

/// One point of a run's trace: the output head's norms after `step` steps (`tokens` = step x
/// batch training predictions), and the mean training loss since the previous point.
struct TracePoint {
  int step = 0;
  long long tokens = 0;
  double head_rms_inf = 0;   // ||H||_{RMS->inf}, as rms_to_inf_norm
  double head_geometry = 0;  // ||H|| in the geometry the optimizer gives the head (operator_norms)
  double train_loss = std::numeric_limits<double>::quiet_NaN();
};

struct RunResult {
  RunConfig cfg;
  double train_loss = std::numeric_limits<double>::quiet_NaN();  // mean over the last 10% of steps
  double val_loss = std::numeric_limits<double>::quiet_NaN();
  bool diverged = false;
  int steps_done = 0;
  double head_norm = std::numeric_limits<double>::quiet_NaN();  // ||H||_{RMS->inf} at the end
  double wall_s = 0;
  double step_ms = 0;  // optimizer + forward/backward, per step
  double opt_ms = 0;   // optimizer step alone, per step
  double head_geometry = std::numeric_limits<double>::quiet_NaN();  // ||H|| in the head's geometry, at the end
  std::string head_geometry_name;
  std::vector<TracePoint> trace;  // cfg.trace_points + 1 points when asked (fewer if it diverged)
};

/// ||W||_{RMS->inf} = sqrt(n) * max_i ||W_i,:||_2: the output-layer norm the norm-transfer paper
/// tracks (the 2̄->inf norm). Computed here with a plain loop so it does not depend on any optimizer.
template <class S>
double rms_to_inf_norm(const Tensor<S>& W) {
  double best = 0;
  for (Index i = 0; i < W.rows; ++i) {
    double s = 0;
    for (Index j = 0; j < W.cols; ++j) s += double(W.data[std::size_t(i * W.cols + j)]) * double(W.data[std::size_t(i * W.cols + j)]);
    best = std::max(best, std::sqrt(s));
  }
  return best * std::sqrt(double(W.cols));
}

/// Learning-rate schedule shared by every run: linear warm-up over the first 5% of steps, then
/// linear decay to zero.
inline double schedule(int t, int steps) {
  const int warm = std::max(1, steps / 20);
  if (t < warm) return double(t + 1) / double(warm);
  return std::max(0.0, double(steps - t) / double(steps - warm));
}

/// Per-run fixed settings of each optimizer (everything but lr), applied to a bound ParamSet.
struct Setup {
  // Adam-family settings shared by AdamW, rescaled AdamW and MOGA.
  static st::Hyper adam(double lr) {
    st::Hyper hp;
    hp.lr = lr;
    hp.beta1 = 0.9;
    hp.beta2 = 0.95;
    hp.eps = 1e-8;
    hp.weight_decay = 0;
    return hp;
  }
  static st::Hyper momentum(double lr, double beta) {
    st::Hyper hp;
    hp.lr = lr;
    hp.beta1 = beta;
    hp.weight_decay = 0;
    return hp;
  }
};

/// The embedding's inputs are one-hot over a vocabulary, whose size is not a width: for the
/// mean-normalized geometries the input norm is taken as the plain l_p norm, which multiplies
/// the embedding's update by n_in^{1/p} (n_in = k V, fixed across widths). Scion applies the
/// same factor to the embedding's radius instead, since its lr is also its decay rate.
inline double embedding_input_factor(const st::Geometry& g, double n_in) {
  return std::pow(n_in, 1.0 / g.p());  // p = 1: sign, columns; p = 2: rows, spectral
}

/// Sets flush-to-zero and denormals-are-zero for the calling thread's SSE/AVX arithmetic. Long
/// runs (thousands of steps) fill some of the model's matrices with subnormal floats, which x86
/// multiplies in microcode: a 4,000-step w = 64 run went from 0.5 to 11.7 ms/step, 84% of it in the
/// model's GEMMs, and back to 0.5 with these two bits set. norm_transfer sets them in every worker;
/// width_transfer (200-step runs, no slowdown) leaves the default so its recorded results stand.
inline void flush_subnormals_in_this_thread() {
#if defined(__SSE__) || defined(__x86_64__)
  _MM_SET_FLUSH_ZERO_MODE(_MM_FLUSH_ZERO_ON);
  _MM_SET_DENORMALS_ZERO_MODE(_MM_DENORMALS_ZERO_ON);
#endif
}

/// The output head's norm in the geometry `opt` gives it, through the library's operator_norms
/// (the head is reported first).
template <class Opt, class S>
std::pair<double, std::string> head_norm_in_geometry(const st::ParamSet<S>& ps, const Opt& opt) {
  for (const auto& n : st::operator_norms(ps, opt))
    if (n.role == st::Role::Output) return {n.value, n.geometry};
  return {std::numeric_limits<double>::quiet_NaN(), ""};
}

template <class Opt>
RunResult train(Opt opt, const RunConfig& cfg, const Corpus& corpus, bool scion_radius = false) {
  using S = float;
  using clock = std::chrono::steady_clock;
  RunResult r;
  r.cfg = cfg;
  MlpLM<S> model({corpus.vocab(), cfg.context, cfg.width, cfg.depth});
  model.init_standard(1000u + cfg.seed);
  st::ParamSet<S> ps;
  st::Gradients<S> gs;
  model.bind(ps, gs);
  const double n_in = double(cfg.context) * corpus.vocab();
  for (auto& l : ps) {
    if (l.role != st::Role::Embedding) continue;
    const auto g = opt.geometry_of(l);
    if (!g.mean_normalized()) continue;
    const double f = embedding_input_factor(g, n_in);
    if (scion_radius)
      l.radius = opt.radius_of(l) * f;
    else
      l.lr_scale = f;
  }
  auto state = opt.init(ps);
  const double base_lr = opt.hp.lr;
  BatchSampler train_batches(corpus.train, cfg.context, 7u + cfg.seed);
  std::vector<std::uint8_t> ctx, tgt;
  const auto t0 = clock::now();
  double opt_s = 0, tail = 0;
  int tail_n = 0;
  const double give_up = 1.5 * std::log(double(corpus.vocab()));  // well above the init loss
  // Trace: points at steps round(k * steps / trace_points), k = 0..trace_points; the norms are
  // read between steps, outside the timed optimizer step.
  int next_trace = 0, trace_k = 0;
  double trace_loss = 0;
  int trace_n = 0;
  auto record = [&](int t) {
    TracePoint p;
    p.step = t;
    p.tokens = (long long)t * cfg.batch;
    p.head_rms_inf = rms_to_inf_norm(model.head());
    p.head_geometry = head_norm_in_geometry(ps, opt).first;
    if (trace_n) p.train_loss = trace_loss / trace_n;
    trace_loss = 0, trace_n = 0;
    r.trace.push_back(p);
    ++trace_k;
    next_trace = int(std::lround(double(trace_k) * cfg.steps / std::max(1, cfg.trace_points)));
  };
  for (int t = 0; t < cfg.steps; ++t) {
    if (cfg.trace_points > 0 && t == next_trace) record(t);
    train_batches.next(cfg.batch, ctx, tgt);
    const double loss = model.forward_backward(ctx, tgt, true);
    trace_loss += loss, ++trace_n;
    if (!std::isfinite(loss) || (t > cfg.steps / 10 && loss > give_up)) {
      r.diverged = true;
      break;
    }
    if (t >= cfg.steps - std::max(1, cfg.steps / 10)) {
      tail += loss;
      ++tail_n;
    }
    opt.hp.lr = base_lr * schedule(t, cfg.steps);
    const auto o0 = clock::now();
    try {
      opt.step(ps, gs, state);
    } catch (const st::non_finite_error&) {
      r.diverged = true;
      break;
    }
    opt_s += std::chrono::duration<double>(clock::now() - o0).count();
    r.steps_done = t + 1;
  }
  r.wall_s = std::chrono::duration<double>(clock::now() - t0).count();
  r.step_ms = 1e3 * r.wall_s / std::max(1, r.steps_done);
  r.opt_ms = 1e3 * opt_s / std::max(1, r.steps_done);
  r.head_norm = rms_to_inf_norm(model.head());
  std::tie(r.head_geometry, r.head_geometry_name) = head_norm_in_geometry(ps, opt);
  if (cfg.trace_points > 0 && !r.diverged && r.steps_done == cfg.steps) record(cfg.steps);
  if (r.diverged) return r;
  r.train_loss = tail / std::max(1, tail_n);
  BatchSampler val(corpus.val, cfg.context, 0);
  double sum = 0;
  int n = 0;
  for (int first = 0; first < cfg.eval_tokens; first += 512) {
    const int b = std::min(512, cfg.eval_tokens - first);
    val.fixed(first, b, cfg.eval_tokens, ctx, tgt);
    sum += model.forward_backward(ctx, tgt, false) * b;
    n += b;
  }
  r.val_loss = sum / n;
  if (!std::isfinite(r.val_loss) || r.val_loss > give_up) r.diverged = true;
  return r;
}

/// Comma-separated list -> items (empty items dropped): the drivers' list arguments.
inline std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= s.size()) {
    const std::size_t end = std::min(s.find(',', start), s.size());
    if (end > start) out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

/// One rule's learning-rate window, lr = 2^e for e in [lo, hi] (the wide one) or
/// [quick_lo, quick_hi] (the narrow one); the drivers keep a table of these per mode.
struct LrRange {
  const char* name;
  int lo, hi, quick_lo, quick_hi;
};

/// The grid of `name` from `table`: the narrow window when `narrow`, and its top two points
/// only when `smoke` (lo = hi - 1). Throws for a name the table lacks.
template <std::size_t N>
std::vector<double> lr_grid_from(const LrRange (&table)[N], const std::string& name, bool narrow, bool smoke) {
  for (const LrRange& r : table)
    if (name == r.name) {
      int lo = narrow ? r.quick_lo : r.lo;
      const int hi = narrow ? r.quick_hi : r.hi;
      if (smoke) lo = hi - 1;
      std::vector<double> g;
      for (int e = lo; e <= hi; ++e) g.push_back(std::ldexp(1.0, e));
      return g;
    }
  throw std::invalid_argument("no lr grid for " + name);
}

/// Scion's radii, set by hand before any sweep (docs/TRANSFER.md says how) and fixed across widths.
inline st::ScionRadii scion_radii() {
  st::ScionRadii radii;
  radii.hidden = 3.0;
  radii.embedding = 1.0;  // times n_in (see embedding_input_factor): entries of size ~1
  radii.output = 16.0;
  radii.vector = 1.0;
  return radii;
}

/// Runs one configuration of the rules that the norm-transfer study sweeps (Scion constrained
/// and unconstrained, AdamW with the 1̄->inf scale, MOGA-row); false if cfg.optimizer is another.
inline bool run_norm_rule(const RunConfig& cfg, const Corpus& corpus, RunResult& out) {
  const std::string& o = cfg.optimizer;
  const double lr = cfg.lr;
  if (o == "adamw_1inf") out = train(st::adamw_rescaled(Setup::adam(lr)), cfg, corpus);
  else if (o == "moga_row") out = train(st::moga_row(Setup::adam(lr)), cfg, corpus);
  else if (o == "scion") out = train(st::scion(Setup::momentum(lr, 0.9), scion_radii()), cfg, corpus, true);
  // Unconstrained: W <- W - lr rho D(M), no decay (Setup::momentum sets weight_decay 0), the
  // same radii as step multipliers: nothing holds the norms, so they grow with lr and steps.
  else if (o == "scion_unconstrained")
    out = train(st::scion_unconstrained(Setup::momentum(lr, 0.9), scion_radii()), cfg, corpus, true);
  else return false;
  return true;
}

/// Runs one configuration with the optimizer named in cfg.optimizer (any of all_optimizers() or
/// scion_unconstrained). A template only so that a translation unit that does not call it does
/// not compile every optimizer's training loop (norm_transfer calls run_norm_rule alone).
template <class = void>
RunResult run(const RunConfig& cfg, const Corpus& corpus) {
  RunResult r;
  if (run_norm_rule(cfg, corpus, r)) return r;
  const std::string& o = cfg.optimizer;
  const double lr = cfg.lr;
  if (o == "adamw") return train(st::adamw(Setup::adam(lr)), cfg, corpus);
  if (o == "adamw_bf16") return train(st::adamw<st::Bf16State>(Setup::adam(lr)), cfg, corpus);
  if (o == "moga_col") return train(st::moga_col(Setup::adam(lr)), cfg, corpus);
  if (o == "moga_row_post") return train(st::moga_row<st::MogaOrder::AdamThenNormalize>(Setup::adam(lr)), cfg, corpus);
  if (o == "moga_col_post") return train(st::moga_col<st::MogaOrder::AdamThenNormalize>(Setup::adam(lr)), cfg, corpus);
  if (o == "muon" || o == "muon_mup") {
    // Muon's chain on every layer (not st::muon's AdamW for the rest): the head is a matrix like
    // the hidden ones (Newton-Schulz and the same shape factor), the embedding gets Scion's mean
    // column geometry and the vectors RMS (st::muon_scion's roles).
    auto opt = st::muon_scion(Setup::momentum(lr, 0.95),
                              o == "muon" ? st::ShapeFactor::MuonMax1 : st::ShapeFactor::SpectralMuP);
    opt.roles[std::size_t(st::Role::Output)].geometry = st::geometry<st::Spectral>();
    return train(opt, cfg, corpus);
  }
  throw std::invalid_argument("unknown optimizer '" + o + "'");
}

}  // namespace width_transfer
