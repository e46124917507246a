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
//   - Measure (the default): each engine runs once on the call's own input (but one whose
//     stated flops, at the reference's measured rate, would take over 2x the fastest run so
//     far), then those within 1.5x of the fastest first run twice more; the fastest (best of
//     its runs) whose output is within the planner's tolerance (3e-2 relative Frobenius distance by default) of the first
//     engine's output is chosen. The first engine is the reference (EigenProducts: fp32 or fp64
//     products). An engine that throws (oneDNN on a CPU it cannot serve) is left out. 3e-2 is
//     the band tests/test_onednn.cpp holds bf16 products to against fp32 ones: bf16 rounding
//     moves the output 1e-2 to 2.5e-2 on Gaussian inputs (what torch.optim.Muon's bf16 iteration
//     also does), while the quintic schedule's output itself spreads over 0.68-1.21 times the
//     polar factor's singular values. A wrong engine lands near 1.
//   - Estimate: no timing; among engines that state their flops (`static double flops(k, l,
//     steps)`), the one with the fewest, else the first. Deterministic for a given build.
//   - A small layer (k l < 2^16 entries) takes the first engine without measuring: timings that
//     short are noise, and its results stay the same from run to run.
//   - `force(name)` picks the engine of that name (`name()`, "" for EigenProducts: "eigen")
//     wherever it is in the list; a name no engine has is an error at the next call.
// `polar_planner().plans()` lists every choice with its timings; `clear()` forgets them.
// The plan is per process (threads share it under a mutex; engines run outside the lock).
//
// Plans persist as FFTW's wisdom does: `save(path)` writes the measured and estimated choices
// (a text file, one key and engine a line, headed by the CPU's model name), `load(path)`
// replaces the plans by a file's. With the environment variable STEEPEST_POLAR_PLAN naming a
// file, the planner loads it at its first use when it exists and rewrites it after each new
// choice, so a restarted training run does not time the engines again. A file made on another
// CPU model, or one that is not such a file, is refused with the reason (delete it to plan anew).
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
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

#include "../io/file.hpp"
#include "../io/integer.hpp"
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
  std::string how;       ///< "measured", "estimated", "small", "forced", "loaded"
  /// Per candidate engine: (name, best seconds or -1 when not timed, relative distance to the
  /// reference or -1, accepted). An engine not run because its flops could not win has its
  /// estimated seconds, distance -1 and accepted false.
  std::vector<std::tuple<std::string, double, double, bool>> candidates;
  /// One line: shape, threads, the choice and each candidate's time.
  std::string describe() const {
    std::string s = std::to_string(k) + "x" + std::to_string(l) + " " + schedule + "x" + std::to_string(steps) +
                    " threads " + std::to_string(threads) + ": " + engine + " (" + how + ")";
    for (const auto& [name, secs, dist, ok] : candidates) {
      char b[160];
      if (!ok && secs > 0 && dist < 0)
        std::snprintf(b, sizeof b, "; %s not run (%.3f ms estimated from its flops)", name.c_str(), secs * 1e3);
      else
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
  /// The plan recorded under `key`, if any: its engine's index in the list is `index`. The first
  /// call loads the file STEEPEST_POLAR_PLAN names, when it exists.
  bool find(const std::string& key, std::size_t& index) {
    std::lock_guard<std::mutex> g(mu_);
    load_environment_file();
    const auto it = indices_.find(key);
    if (it == indices_.end()) return false;
    index = it->second;
    return true;
  }
  /// Records a choice (the first one recorded for a key wins when two threads raced) and, with
  /// STEEPEST_POLAR_PLAN set, rewrites that file.
  std::size_t record(const std::string& key, std::size_t index, PolarPlan plan) {
    std::lock_guard<std::mutex> g(mu_);
    const auto it = indices_.find(key);
    if (it != indices_.end()) return it->second;
    indices_[key] = index;
    const bool lasting = plan.how == "measured" || plan.how == "estimated";
    plans_[key] = std::move(plan);
    if (lasting && !env_path_.empty()) save_locked(env_path_);
    return index;
  }

  /// Writes the measured and estimated plans to `path` (atomically: a temporary, then rename).
  void save(const std::string& path) const {
    std::lock_guard<std::mutex> g(mu_);
    save_locked(path);
  }
  /// Replaces every plan by those in `path` (written by save()). A file that is not a plan file,
  /// has a malformed or repeated line, names an engine its key does not list, or was made on
  /// another CPU model is refused (state_file_error) and the plans are left as they were.
  void load(const std::string& path) {
    std::lock_guard<std::mutex> g(mu_);
    load_locked(path);
  }

  /// Keeps the plans in `path` from now on, as STEEPEST_POLAR_PLAN does: loads it when it exists
  /// (replacing the plans), and rewrites it after each new choice. "" stops writing.
  void set_file(const std::string& path) {
    std::lock_guard<std::mutex> g(mu_);
    env_checked_ = true;  // an explicit file overrides the environment's
    env_path_.clear();
    if (!path.empty() && may_exist(path.c_str())) load_locked(path);
    env_path_ = path;
  }

  /// The CPU's model name as plan files record it ("unknown" where /proc/cpuinfo has none).
  static std::string cpu_model() {
    std::string model = "unknown";
    std::FILE* f = std::fopen("/proc/cpuinfo", "r");
    if (f == nullptr) return model;
    char buf[512];
    while (std::fgets(buf, sizeof buf, f) != nullptr) {
      std::string line(buf);
      if (line.rfind("model name", 0) != 0) continue;
      while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
      const auto colon = line.find(':');
      const auto b = colon == std::string::npos ? colon : line.find_first_not_of(" \t", colon + 1);
      if (b != std::string::npos) model = line.substr(b);
      break;
    }
    std::fclose(f);
    return model;
  }

 private:
  static constexpr const char* kMagic = "steepest polar plans v1";
  static constexpr std::uint64_t kMaxFileBytes = std::uint64_t(1) << 20;

  mutable std::mutex mu_;
  PlanMode mode_ = PlanMode::Measure;
  double tolerance_ = 3e-2;
  std::string forced_;
  std::map<std::string, PolarPlan> plans_;
  std::map<std::string, std::size_t> indices_;
  bool env_checked_ = false;
  std::string env_path_;

  /// The pieces of `s` between the separators `c` (n separators: n + 1 pieces, empty ones kept).
  static std::vector<std::string> split(const std::string& s, char c) {
    std::vector<std::string> out;
    std::size_t b = 0;
    for (std::size_t e; (e = s.find(c, b)) != std::string::npos; b = e + 1) out.push_back(s.substr(b, e - b));
    out.push_back(s.substr(b));
    return out;
  }
  /// False only when `path` certainly does not exist (a plan file is then written, not read).
  static bool may_exist(const char* path) {
    struct stat sb;
    return !(::lstat(path, &sb) != 0 && errno == ENOENT);
  }

  void load_environment_file() {
    if (env_checked_) return;
    const char* p = std::getenv("STEEPEST_POLAR_PLAN");
    // A file that is refused is refused again at every call: no plan is made around it.
    if (p != nullptr && *p != '\0' && may_exist(p)) load_locked(p);
    if (p != nullptr) env_path_ = p;  // written at the first choice when it does not exist yet
    env_checked_ = true;
  }

  void save_locked(const std::string& path) const {
    std::string text = std::string(kMagic) + "\ncpu " + cpu_model() + "\n";
    for (const auto& [key, plan] : plans_)
      if (plan.how == "measured" || plan.how == "estimated" || plan.how == "loaded")
        text += key + " " + plan.engine + "\n";
    io::DurableWriter w(path);
    w.write(text.data(), text.size());
    w.commit();
  }

  /// Parses "KxL/threads/schedule/steps/scalar bytes/engine+engine..." into a plan without
  /// timings; false when any field is malformed or out of range, or the engine is not listed.
  static bool parse_line(const std::string& key, const std::string& engine, PolarPlan& plan, std::size_t& index) {
    const std::vector<std::string> f = split(key, '/');
    if (f.size() != 6) return false;
    const auto x = f[0].find('x');
    std::uint64_t k, l, threads, steps, bytes;
    constexpr std::uint64_t kMaxDim = std::uint64_t(1) << 31;
    if (x == std::string::npos || !io::parse_decimal(std::string_view(f[0]).substr(0, x), kMaxDim, k) ||
        !io::parse_decimal(std::string_view(f[0]).substr(x + 1), kMaxDim, l) || k == 0 || k > l ||
        !io::parse_decimal(f[1], 1 << 16, threads) || threads == 0 || !io::parse_decimal(f[3], 1 << 10, steps) ||
        !io::parse_decimal(f[4], 8, bytes) || (bytes != 4 && bytes != 8))
      return false;
    auto name_ok = [](const std::string& n) {
      return !n.empty() && n.size() <= 64 &&
             std::all_of(n.begin(), n.end(), [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'; });
    };
    if (!name_ok(f[2]) || !name_ok(engine)) return false;
    const std::vector<std::string> engines = split(f[5], '+');
    index = engines.size();
    for (std::size_t i = 0; i < engines.size(); ++i) {
      if (!name_ok(engines[i])) return false;
      if (engines[i] == engine && index == engines.size()) index = i;
    }
    if (index == engines.size()) return false;
    plan = PolarPlan{Index(k), Index(l), int(threads), int(steps), f[2], engine, "loaded", {}};
    return true;
  }

  void load_locked(const std::string& path) {
    io::InputFile in(path);
    auto refuse = [&](const std::string& why) {
      throw state_file_error("polar plan file '" + path + "': " + why + " (delete it to plan anew)");
    };
    if (in.size() > kMaxFileBytes) refuse("larger than 1 MiB");
    std::string text(std::size_t(in.size()), '\0');
    in.read(text.data(), text.size());
    std::vector<std::string> lines = split(text, '\n');
    if (!lines.back().empty()) refuse("its last line is not ended");
    lines.pop_back();  // the empty piece after the last newline
    if (lines.size() < 2 || lines[0] != kMagic) refuse("not a plan file (no '" + std::string(kMagic) + "' line)");
    const std::string cpu = cpu_model();
    if (lines[1] != "cpu " + cpu) refuse("made on another CPU ('" + lines[1] + "'; this one is '" + cpu + "')");
    std::map<std::string, PolarPlan> plans;
    std::map<std::string, std::size_t> indices;
    for (std::size_t i = 2; i < lines.size(); ++i) {
      const auto sp = lines[i].find(' ');
      PolarPlan plan;
      std::size_t index = 0;
      const std::string key = lines[i].substr(0, sp);
      if (sp == std::string::npos || !parse_line(key, lines[i].substr(sp + 1), plan, index))
        refuse("line " + std::to_string(i + 1) + " is not 'KxL/threads/schedule/steps/bytes/engines engine'");
      if (!indices.emplace(key, index).second) refuse("line " + std::to_string(i + 1) + " repeats a key");
      plans.emplace(key, std::move(plan));
    }
    plans_ = std::move(plans);
    indices_ = std::move(indices);
  }
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
    if (!p.find(key, index)) index = choose<Schedule, O>(G, steps, ws, k, l, threads, key);
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

  template <class Schedule, class O, class D>
  static std::size_t choose(const Eigen::MatrixBase<D>& G, int steps, Workspace<typename D::Scalar>& ws, Index k,
                            Index l, int threads, const std::string& key) {
    // The outputs measured are of the caller's output's own matrix type, so the engines' run is
    // instantiated for the same (input, output) types as the call they plan: no second copy
    // of every engine in the user's object file.
    using Mat = typename O::PlainObject;
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
      // Measure, on the call's own input, in two rounds: every engine once (the first is the
      // reference; this run also sizes the workspaces), then two more timed runs of each engine
      // within the band whose first run was within 1.5x the fastest first run. An engine far
      // behind is not run again: at 4096 x 4096 one fp32 run takes seconds. In the first round
      // the engines that state their flops run last, and one whose flops at the reference's
      // measured rate would take over 2x the fastest run so far is not run at all (it could
      // not be chosen unless it ran at twice the reference's rate per flop; the Gram form at
      // 4096 x 4096 once bf16 has run is such an engine).
      Mat ref(G.rows(), G.cols()), out(G.rows(), G.cols());
      std::vector<double> secs(all.size(), -1.0), dist(all.size(), -1.0);
      std::vector<char> ok(all.size(), 0);
      auto timed = [&](auto tag, auto& engine_ws, Mat& dst) {
        using E = typename decltype(tag)::type;
        const auto t0 = std::chrono::steady_clock::now();
        E::template run<Schedule>(G, dst, steps, engine_ws);
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      };
      using Reference = std::tuple_element_t<0, std::tuple<Engines...>>;
      double reference_flops = -1.0;
      if constexpr (detail::states_flops<Reference>::value) reference_flops = Reference::flops(k, l, steps);
      double fastest = std::numeric_limits<double>::infinity();
      std::size_t i = 0;
      auto first = [&](auto tag, auto& engine_ws, int pass) {
        using E = typename decltype(tag)::type;
        const bool estimable = i > 0 && detail::states_flops<E>::value;
        if ((pass == 1) != estimable) {
          ++i;
          return;
        }
        if constexpr (detail::states_flops<E>::value) {
          if (estimable && ok[0] && reference_flops > 0) {
            const double estimate = secs[0] * E::flops(k, l, steps) / reference_flops;
            if (estimate > 2.0 * fastest) {
              secs[i] = estimate;  // not run: its estimate, with no distance (see describe())
              ++i;
              return;
            }
          }
        }
        Mat& dst = i == 0 ? ref : out;
        try {
          secs[i] = timed(tag, engine_ws, dst);
          const double rn = double(ref.norm());
          dist[i] = i == 0 ? 0.0 : double((dst - ref).norm()) / (rn > 0 ? rn : 1.0);
          ok[i] = dist[i] <= set.tolerance && std::isfinite(dist[i]);
          if (ok[i]) fastest = std::min(fastest, secs[i]);
        } catch (const std::exception&) {
          secs[i] = -1.0;
          ok[i] = 0;  // an engine this machine cannot run
        }
        ++i;
      };
      for (int pass = 0; pass < 2; ++pass) {
        i = 0;
        std::apply([&](auto&... w) { (first(detail::engine_tag<Engines>{}, w, pass), ...); }, ws.engines);
      }
      double fastest_first = std::numeric_limits<double>::infinity();
      for (std::size_t j = 0; j < all.size(); ++j)
        if (ok[j]) fastest_first = std::min(fastest_first, secs[j]);
      i = 0;
      auto again = [&](auto tag, auto& engine_ws) {
        if (ok[i] && secs[i] <= 1.5 * fastest_first)
          for (int r = 0; r < 2; ++r) secs[i] = std::min(secs[i], timed(tag, engine_ws, out));
        ++i;
      };
      std::apply([&](auto&... w) { (again(detail::engine_tag<Engines>{}, w), ...); }, ws.engines);
      double best = std::numeric_limits<double>::infinity();
      for (std::size_t j = 0; j < all.size(); ++j) {
        plan.candidates.emplace_back(all[j], secs[j], dist[j], ok[j] != 0);
        if (ok[j] && secs[j] < best) best = secs[j], index = j;
      }
      plan.how = "measured";
    }
    plan.engine = all[index];
    return polar_planner().record(key, index, std::move(plan));
  }
};

}  // namespace steepest
