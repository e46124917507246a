// steepest/polar/planner.hpp -- pick the fastest Newton-Schulz engine for a shape, once.
//
//   #include <steepest/polar/planner.hpp>
//   using Polar = st::SpectralNorm<st::NewtonSchulz<st::QuinticSchedule, 5,
//                                  st::Planned<st::EigenProducts, st::GramProducts<>>>>;
//   auto opt = st::muon<Polar>(hp);            // (add st::OneDnnBf16, st::OpenBlas<> when linked)
//   ...
//   for (const auto& p : st::polar_planner().plans()) std::printf("%s\n", p.describe().c_str());
//
// Which engine forms Newton-Schulz's products fastest depends on the machine (bf16 products win
// where the CPU multiplies bf16 at twice its fp32 rate, fp32 where it does not), on the shape
// (the Gram form pays from an aspect ratio of about 2) and on the thread count. `Planned<E...>`
// is a products engine that chooses among E... the first time it meets a (k, l, threads,
// schedule, steps, scalar) key, as FFTW's planner and cuDNN's benchmark mode do, and reuses the
// choice for every later call with that key:
//   - Measure (the default): each engine runs once to warm up and twice timed on the call's own
//     input; the fastest whose output is within the planner's tolerance (2e-2 relative Frobenius
//     distance by default) of the first engine's output is chosen. The first engine is the
//     reference (EigenProducts: fp32 or fp64 products). An engine that throws (oneDNN on a CPU it
//     cannot serve) is left out. The quintic schedule's output is itself 0.68-1.21 times the
//     polar factor's singular values, so 2e-2 keeps an engine well inside that band.
//   - Estimate: no timing; among engines that state their flops (`static double flops(k, l,
//     steps)`), the one with the fewest, else the first. Deterministic for a given build.
//   - A small layer (k l < 2^16 entries) takes the first engine without measuring: timings that
//     short are noise, and its results stay the same from run to run.
//   - `force(name)` picks the engine of that name (`name()`, "" for EigenProducts: "eigen")
//     wherever it is in the list; a name no engine has is an error at the next call.
// `polar_planner().plans()` lists every choice with its timings; `clear()` forgets them.
// The plan is per process (threads share it under a mutex; engines run outside the lock).
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "newton_schulz.hpp"

namespace steepest {

/// How Planned chooses (see the file comment).
enum class PlanMode {
  Measure,  ///< time each engine once per key on the call's input
  Estimate  ///< fewest stated flops, no timing
};

/// One choice of the planner.
struct PolarPlan {
  Index k = 0;       ///< the wide iterate's rows (min(m, n))
  Index l = 0;       ///< its columns (max(m, n))
  int threads = 1;   ///< OpenMP threads when chosen
  int steps = 0;     ///< Newton-Schulz steps
  std::string schedule;  ///< the schedule's name
  std::string engine;    ///< the chosen engine's name
  std::string how;       ///< "measured", "estimated", "small", "forced"
  /// Per candidate engine: (name, best seconds or -1 when not timed, relative distance to the
  /// reference or -1, accepted).
  std::vector<std::tuple<std::string, double, double, bool>> candidates;
  /// One line: shape, threads, the choice and each candidate's time.
  std::string describe() const {
    std::string s = std::to_string(k) + "x" + std::to_string(l) + " " + schedule + "x" + std::to_string(steps) +
                    " threads " + std::to_string(threads) + ": " + engine + " (" + how + ")";
    for (const auto& [name, secs, dist, ok] : candidates) {
      char b[160];
      std::snprintf(b, sizeof b, "; %s %.3f ms, distance %.1e%s", name.c_str(), secs * 1e3, dist, ok ? "" : " (refused)");
      s += b;
    }
    return s;
  }
};

/// The process's plans and the planner's settings (see the file comment).
class PolarPlanner {
 public:
  /// Measure (default) or Estimate.
  void set_mode(PlanMode m) {
    std::lock_guard<std::mutex> g(mu_);
    mode_ = m;
  }
  /// The largest relative Frobenius distance to the reference engine an engine may have.
  void set_tolerance(double t) {
    std::lock_guard<std::mutex> g(mu_);
    tolerance_ = t;
  }
  /// Always choose the engine called `name` ("eigen" for EigenProducts); "" chooses again.
  /// Forgets the plans made so far.
  void force(std::string name) {
    std::lock_guard<std::mutex> g(mu_);
    forced_ = std::move(name);
    plans_.clear();
    indices_.clear();
  }
  /// Forgets every plan (the next call of each key chooses again).
  void clear() {
    std::lock_guard<std::mutex> g(mu_);
    plans_.clear();
    indices_.clear();
  }
  /// Every choice made, in key order.
  std::vector<PolarPlan> plans() const {
    std::lock_guard<std::mutex> g(mu_);
    std::vector<PolarPlan> out;
    for (const auto& kv : plans_) out.push_back(kv.second);
    return out;
  }

  /// The settings, read together.
  struct Settings {
    PlanMode mode;       ///< Measure or Estimate
    double tolerance;    ///< the largest accepted distance to the reference engine
    std::string forced;  ///< the forced engine's name, or ""
  };
  /// The current settings (one lock).
  Settings settings() const {
    std::lock_guard<std::mutex> g(mu_);
    return {mode_, tolerance_, forced_};
  }
  /// The plan recorded under `key`, if any: its engine's index in the list is `index`.
  bool find(const std::string& key, std::size_t& index) const {
    std::lock_guard<std::mutex> g(mu_);
    const auto it = indices_.find(key);
    if (it == indices_.end()) return false;
    index = it->second;
    return true;
  }
  /// Records a choice (the first one recorded for a key wins when two threads raced).
  std::size_t record(const std::string& key, std::size_t index, PolarPlan plan) {
    std::lock_guard<std::mutex> g(mu_);
    const auto it = indices_.find(key);
    if (it != indices_.end()) return it->second;
    indices_[key] = index;
    plans_[key] = std::move(plan);
    return index;
  }

 private:
  mutable std::mutex mu_;
  PlanMode mode_ = PlanMode::Measure;
  double tolerance_ = 2e-2;
  std::string forced_;
  std::map<std::string, PolarPlan> plans_;
  std::map<std::string, std::size_t> indices_;
};

/// The process's planner.
inline PolarPlanner& polar_planner() {
  static PolarPlanner p;
  return p;
}

namespace detail {
/// A type carried as a value (a fold over the engines).
template <class E>
struct engine_tag {
  using type = E;
};
template <class E, class = void>
struct states_flops : std::false_type {};
template <class E>
struct states_flops<E, std::void_t<decltype(E::flops(Index(1), Index(1), 1))>> : std::true_type {};
/// An engine's name as the planner shows it: EigenProducts' empty name is "eigen".
template <class E>
std::string engine_name() {
  const std::string n = E::name();
  return n.empty() ? "eigen" : n;
}
inline int planner_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}
}  // namespace detail

/// A products engine that runs the one of Engines... the planner chose for the call's shape (see
/// the file comment). The first engine is the accuracy reference and the small-layer choice.
template <class... Engines>
struct Planned {
  static_assert(sizeof...(Engines) > 0, "steepest::Planned needs at least one engine");

  /// Each engine's workspace.
  template <class Scalar>
  struct Workspace {
    std::tuple<typename Engines::template Workspace<Scalar>...> engines;  ///< one per engine
  };
  /// "planned": the choice is per shape (PolarPlanner::plans() lists it).
  static std::string name() { return "planned"; }

  /// out = Newton-Schulz_steps(G) by the chosen engine.
  template <class Schedule, class D, class O>
  static void run(const Eigen::MatrixBase<D>& G, const Eigen::MatrixBase<O>& out, int steps,
                  Workspace<typename D::Scalar>& ws) {
    using Scalar = typename D::Scalar;
    const Index k = std::min(G.rows(), G.cols()), l = std::max(G.rows(), G.cols());
    const int threads = detail::planner_threads();
    const std::string key = std::to_string(k) + "x" + std::to_string(l) + "/" + std::to_string(threads) + "/" +
                            Schedule::name() + "/" + std::to_string(steps) + "/" + std::to_string(sizeof(Scalar)) +
                            "/" + names();
    PolarPlanner& p = polar_planner();
    std::size_t index = 0;
    if (!p.find(key, index)) index = choose<Schedule>(G, steps, ws, k, l, threads, key);
    run_index<Schedule>(index, G, out, steps, ws, std::index_sequence_for<Engines...>{});
  }

  /// The engines' names joined by "+" (part of the plan's key).
  static std::string names() {
    std::string s;
    ((s += (s.empty() ? "" : "+") + detail::engine_name<Engines>()), ...);
    return s;
  }

 private:
  template <class Schedule, class D, class O, std::size_t... I>
  static void run_index(std::size_t index, const Eigen::MatrixBase<D>& G, const Eigen::MatrixBase<O>& out, int steps,
                        Workspace<typename D::Scalar>& ws, std::index_sequence<I...>) {
    ((index == I ? (Engines::template run<Schedule>(G, out, steps, std::get<I>(ws.engines)), 0) : 0), ...);
  }

  template <class Schedule, class D>
  static std::size_t choose(const Eigen::MatrixBase<D>& G, int steps, Workspace<typename D::Scalar>& ws, Index k,
                            Index l, int threads, const std::string& key) {
    using Scalar = typename D::Scalar;
    using Mat = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
    const PolarPlanner::Settings set = polar_planner().settings();
    const std::vector<std::string> all{detail::engine_name<Engines>()...};
    PolarPlan plan{k, l, threads, steps, Schedule::name(), "", "", {}};
    std::size_t index = 0;
    if (!set.forced.empty()) {
      index = all.size();
      for (std::size_t i = 0; i < all.size(); ++i)
        if (all[i] == set.forced) index = i;
      if (index == all.size())
        throw std::invalid_argument("steepest::Planned: no engine '" + set.forced + "' among " + names());
      plan.how = "forced";
    } else if (k * l < (Index(1) << 16)) {
      plan.how = "small";
    } else if (set.mode == PlanMode::Estimate) {
      double best = std::numeric_limits<double>::infinity();
      std::size_t i = 0;
      auto consider = [&](auto tag) {
        using E = typename decltype(tag)::type;
        if constexpr (detail::states_flops<E>::value) {
          const double f = E::flops(k, l, steps);
          plan.candidates.emplace_back(all[i], -1.0, -1.0, true);
          if (f < best) best = f, index = i;
        }
        ++i;
      };
      (consider(detail::engine_tag<Engines>{}), ...);
      plan.how = "estimated";
    } else {
      // Measure: the reference first, then every engine on the call's own input.
      Mat ref(G.rows(), G.cols()), out(G.rows(), G.cols());
      double best = std::numeric_limits<double>::infinity();
      std::size_t i = 0;
      auto measure = [&](auto tag, auto& engine_ws) {
        using E = typename decltype(tag)::type;
        Mat& dst = i == 0 ? ref : out;
        double secs = -1, dist = -1;
        bool ok = false;
        try {
          E::template run<Schedule>(G, dst, steps, engine_ws);  // warm-up (sizes the workspace)
          secs = std::numeric_limits<double>::infinity();
          for (int r = 0; r < 2; ++r) {
            const auto t0 = std::chrono::steady_clock::now();
            E::template run<Schedule>(G, dst, steps, engine_ws);
            secs = std::min(secs, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
          }
          const double rn = double(ref.norm());
          dist = i == 0 ? 0.0 : double((dst - ref).norm()) / (rn > 0 ? rn : 1.0);
          ok = dist <= set.tolerance && std::isfinite(dist);
        } catch (const std::exception&) {
          ok = false;  // an engine this machine cannot run
        }
        plan.candidates.emplace_back(all[i], secs, dist, ok);
        if (ok && secs < best) best = secs, index = i;
        ++i;
      };
      std::apply([&](auto&... w) { (measure(detail::engine_tag<Engines>{}, w), ...); }, ws.engines);
      plan.how = "measured";
    }
    plan.engine = all[index];
    return polar_planner().record(key, index, std::move(plan));
  }
};

}  // namespace steepest
