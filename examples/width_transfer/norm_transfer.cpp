// norm_transfer: is the output head's norm at the optimal (learning rate, batch size) the same
// across token budgets and widths?
//
// Trains the character-level MLP language model of mlp_lm.hpp (the width-transfer model) over a
// grid of (lr, batch B) at several token budgets D (training predictions: steps = D / B) and
// widths, for each rule, with one learning-rate schedule shape (5% warm-up, linear decay to 0).
// Every run logs the head's RMS->inf norm and its norm in the rule's own head geometry (the
// library's operator_norms) at trace points along training. Writes two CSVs (one row per run,
// one row per trace point) and prints, per rule, width and budget, the grid optimum (lr*, B*)
// and the head norms there. examples/width_transfer/norm_transfer.py fits the optima and exponents
// and draws the figures (docs/NORM_TRANSFER.md).
//
//   norm_transfer [--mode quick|full|smoke] [--rules a,b] [--widths 32,64] [--budgets 14,15,16]
//                 [--batches 16,32] [--seeds N] [--threads N] [--out runs.csv] [--trace trace.csv]
//                 [--corpus FILE]...
//
// --budgets are log2 of D. Runs are independent and spread over --threads worker threads.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "experiment.hpp"

using namespace width_transfer;

namespace {

const std::vector<std::string> kRules = {"scion", "scion_unconstrained", "adamw_1inf", "moga_row"};

struct Options {
  std::string mode = "quick";
  std::vector<std::string> corpus, rules = kRules;
  std::vector<int> widths, budgets, batches;
  int seeds = 0, threads = 0;
  std::string out = "norm_transfer.csv", trace = "norm_transfer_trace.csv";
};

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr,
               "norm_transfer: %s\nusage: norm_transfer [--mode quick|full|smoke] [--rules a,b] [--widths 32,64]\n"
               "       [--budgets 14,15,16 (log2 tokens)] [--batches 16,32] [--seeds N] [--threads N]\n"
               "       [--out runs.csv] [--trace trace.csv] [--corpus FILE]...\n"
               "rules: scion, scion_unconstrained, adamw_1inf, moga_row\n",
               msg);
  std::exit(2);
}

std::vector<int> ints(const std::string& flag, const std::string& v) {
  std::vector<int> out;
  for (const auto& x : split(v)) {
    char* end = nullptr;
    const long n = std::strtol(x.c_str(), &end, 10);
    if (*end != '\0' || n <= 0 || n > (1 << 20)) usage(("not a positive integer in " + flag + ": " + x).c_str());
    out.push_back(int(n));
  }
  if (out.empty()) usage(("empty list after " + flag).c_str());
  return out;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) usage(("missing value after " + a).c_str());
      return argv[++i];
    };
    if (a == "--mode") o.mode = val();
    else if (a == "--corpus") o.corpus.push_back(val());
    else if (a == "--rules") o.rules = split(val());
    else if (a == "--widths") o.widths = ints(a, val());
    else if (a == "--budgets") o.budgets = ints(a, val());
    else if (a == "--batches") o.batches = ints(a, val());
    else if (a == "--seeds") o.seeds = ints(a, val()).front();
    else if (a == "--threads") o.threads = ints(a, val()).front();
    else if (a == "--out") o.out = val();
    else if (a == "--trace") o.trace = val();
    else if (a == "--help" || a == "-h") usage("help");
    else usage(("unknown argument " + a).c_str());
  }
  if (o.mode != "quick" && o.mode != "full" && o.mode != "smoke") usage("mode must be quick, full or smoke");
  for (const auto& r : o.rules)
    if (std::find(kRules.begin(), kRules.end(), r) == kRules.end()) usage(("unknown rule " + r).c_str());
  for (int b : o.budgets)
    if (b > 30) usage("budgets are log2 of the token count, at most 30");
  return o;
}

/// Learning-rate grid per rule, lr = 2^e, e in [lo, hi]: from a pilot over the quick grid so the
/// optimum of every (budget, batch) cell lies inside and the top end degrades or diverges. The
/// quick and smoke modes use fewer points around the same optima.
std::vector<double> lr_grid(const std::string& rule, const std::string& mode) {
  static const LrRange ranges[] = {
      {"scion", -9, -3, -9, -4},
      {"scion_unconstrained", -11, -5, -11, -6},
      {"adamw_1inf", -6, 0, -6, -1},
      {"moga_row", -8, -2, -8, -3},
  };
  // Quick and smoke modes: the narrow window (smoke: its top two points).
  return lr_grid_from(ranges, rule, mode != "full", mode == "smoke");
}

struct Job {
  RunConfig cfg;
  int budget_log2 = 0;
};

double cost(const Job& j) {
  // Per-step work ~ B w^2 (+ w^3 per step for the spectral rules' Newton-Schulz).
  const double w = j.cfg.width, b = j.cfg.batch, steps = j.cfg.steps;
  return steps * (b * w * w + (is_spectral_optimizer(j.cfg.optimizer) ? 10.0 * w * w * w : 0.0));
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  Eigen::setNbThreads(1);
  std::vector<int> widths, budgets, batches;
  int seeds = 1, trace_points = 8;
  RunConfig base;
  if (o.mode == "quick") widths = {32, 64}, budgets = {14, 15, 16}, batches = {16, 32, 64, 128, 256};
  if (o.mode == "full")
    widths = {32, 64}, budgets = {15, 17, 19}, batches = {16, 32, 64, 128, 256, 512, 1024, 2048, 4096}, seeds = 2,
    trace_points = 16;
  if (o.mode == "smoke") widths = {16}, budgets = {10, 11}, batches = {8, 16}, base.eval_tokens = 1024;
  if (!o.widths.empty()) widths = o.widths;
  if (!o.budgets.empty()) budgets = o.budgets;
  if (!o.batches.empty()) batches = o.batches;
  if (o.seeds) seeds = o.seeds;
  base.eval_tokens = o.mode == "smoke" ? 1024 : 16384;
  base.trace_points = trace_points;
  const int threads = o.threads ? o.threads : int(std::max(1u, std::thread::hardware_concurrency()));

  Corpus corpus;
  try {
    corpus = load_corpus(o.corpus.empty() ? default_corpus_files() : o.corpus);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "norm_transfer: %s\n", e.what());
    return 1;
  }
  std::printf("corpus: %zu train / %zu val bytes, vocabulary %d\n", corpus.train.size(), corpus.val.size(),
              corpus.vocab());

  std::vector<Job> jobs;
  for (const auto& rule : o.rules)
    for (int w : widths)
      for (int d : budgets)
        for (int b : batches) {
          const long long steps = (1LL << d) / b;
          // Fewer than 32 steps leaves no room for the warm-up and decay; more than 2^14 steps
          // (the smallest batches at the largest budget, far from the optimum B*, which grows with D)
          // would cost most of the full mode: both are left out.
          if (steps < 32 || steps > 16384) continue;
          for (double lr : lr_grid(rule, o.mode))
            for (int s = 0; s < seeds; ++s) {
              Job j;
              j.cfg = base;
              j.cfg.optimizer = rule, j.cfg.width = w, j.cfg.batch = b, j.cfg.lr = lr, j.cfg.seed = unsigned(s);
              j.cfg.steps = int(steps);
              j.budget_log2 = d;
              jobs.push_back(j);
            }
        }
  std::stable_sort(jobs.begin(), jobs.end(), [](const Job& a, const Job& b) { return cost(a) > cost(b); });
  std::printf("%zu runs on %d threads (%s mode), %d seed(s); CSVs: %s, %s\n", jobs.size(), threads, o.mode.c_str(),
              seeds, o.out.c_str(), o.trace.c_str());

  std::ofstream csv(o.out), tcsv(o.trace);
  if (!csv || !tcsv) {
    std::fprintf(stderr, "norm_transfer: cannot write %s or %s\n", o.out.c_str(), o.trace.c_str());
    return 1;
  }
  csv << "rule,width,budget_log2,batch,lr,seed,steps,steps_done,train_loss,val_loss,diverged,head_rms_inf,"
         "head_geometry,head_geometry_name,wall_s,step_ms\n";
  tcsv << "rule,width,budget_log2,batch,lr,seed,step,tokens,head_rms_inf,head_geometry,train_loss\n";
  struct Done {
    Job job;
    RunResult r;
  };
  std::vector<Done> done;
  std::mutex mu;
  std::atomic<std::size_t> next{0};
  const auto t0 = std::chrono::steady_clock::now();
  auto worker = [&] {
    flush_subnormals_in_this_thread();  // see experiment.hpp: long runs slow down 20x without it
    for (std::size_t i; (i = next++) < jobs.size();) {
      const Job& j = jobs[i];
      RunResult r;
      run_norm_rule(j.cfg, corpus, r);  // the rules were checked in parse()
      std::lock_guard<std::mutex> lock(mu);
      const RunConfig& c = j.cfg;
      csv << c.optimizer << ',' << c.width << ',' << j.budget_log2 << ',' << c.batch << ',' << c.lr << ',' << c.seed
          << ',' << c.steps << ',' << r.steps_done << ',' << r.train_loss << ',' << r.val_loss << ','
          << (r.diverged ? 1 : 0) << ',' << r.head_norm << ',' << r.head_geometry << ',' << r.head_geometry_name
          << ',' << r.wall_s << ',' << r.step_ms << '\n';
      for (const auto& p : r.trace)
        tcsv << c.optimizer << ',' << c.width << ',' << j.budget_log2 << ',' << c.batch << ',' << c.lr << ','
             << c.seed << ',' << p.step << ',' << p.tokens << ',' << p.head_rms_inf << ',' << p.head_geometry << ','
             << p.train_loss << '\n';
      csv.flush(), tcsv.flush();
      done.push_back({j, r});
      const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (done.size() % 25 == 0 || done.size() == jobs.size())
        std::printf("[%5zu/%zu %6.0fs] last: %s w=%d D=2^%d B=%d lr=2^%.0f val %s\n", done.size(), jobs.size(), el,
                    c.optimizer.c_str(), c.width, j.budget_log2, c.batch, std::log2(c.lr),
                    r.diverged ? "diverged" : std::to_string(r.val_loss).substr(0, 6).c_str());
      std::fflush(stdout);
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(worker);
  for (auto& t : pool) t.join();

  // ---- summary: grid optimum per (rule, width, budget), on the mean validation loss over seeds ----
  struct Cell {
    std::vector<double> val, head, geom;
    bool diverged = false;
  };
  std::map<std::tuple<std::string, int, int>, std::map<std::pair<int, double>, Cell>> grid;
  for (const auto& d : done) {
    Cell& c = grid[{d.job.cfg.optimizer, d.job.cfg.width, d.job.budget_log2}][{d.job.cfg.batch, d.job.cfg.lr}];
    c.val.push_back(d.r.val_loss), c.head.push_back(d.r.head_norm), c.geom.push_back(d.r.head_geometry);
    c.diverged = c.diverged || d.r.diverged;
  }
  auto mean = [](const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x;
    return s / double(std::max<std::size_t>(1, v.size()));
  };
  std::printf("\nGrid optimum per rule, width and budget D (mean over %d seed(s)); head norms at the optimum\n", seeds);
  std::printf("%-20s %6s %6s %8s %6s %8s %12s %14s\n", "rule", "width", "D", "lr*", "B*", "val", "RMS->inf",
              "own geometry");
  for (const auto& rule : o.rules)
    for (int w : widths)
      for (int d : budgets) {
        auto it = grid.find({rule, w, d});
        if (it == grid.end()) continue;
        double best = std::numeric_limits<double>::infinity();
        const Cell* bc = nullptr;
        std::pair<int, double> bk{0, 0};
        for (const auto& [k, c] : it->second)
          if (!c.diverged && mean(c.val) < best) best = mean(c.val), bc = &c, bk = k;
        if (!bc) {
          std::printf("%-20s %6d %4s%-2d  every run diverged\n", rule.c_str(), w, "2^", d);
          continue;
        }
        std::printf("%-20s %6d %4s%-2d %5s%-3.0f %6d %8.4f %12.3f %14.4g\n", rule.c_str(), w, "2^", d, "2^",
                    std::log2(bk.second), bk.first, best, mean(bc->head), mean(bc->geom));
      }
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("\n%zu runs in %.0f s; CSVs written to %s and %s\n", done.size(), total, o.out.c_str(), o.trace.c_str());
  return 0;
}
