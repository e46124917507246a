// The sharded optimizer step under MPI: what each rule communicates and how long a step takes,
// split into the local step and the collectives. Run under mpirun (bench/distributed/run.sh runs it at
// 1, 2 and 4 ranks and feeds bench/distributed/cost_model.py):
//
//   mpirun -np 2 ./steepest_dist_bench [--d 256] [--layers 4] [--vocab 8192] [--steps 8] [--rounds 5]
//
// The model is a GPT-style stack (token embedding, per block a fused QKV, an attention output, an
// MLP up and down projection and two norm gains, then an untied output head): every shape a data-
// parallel trainer shards. Each step is step_reduce (this rank's gradient, reduce-scattered and
// averaged, the local step, the all-gather of the new rows), timed on every rank between two
// barriers; the figure kept per step is the slowest rank's (what the job waits for).
//
// Printed, one JSON object per line on rank 0 (and a readable table):
//   {"kind":"collective", "op":..., "ranks":P, "entries":n, "median_us":..., ...}
//       allgatherv / reduce_scatter of n floats in all (the cost model's latency and bandwidth fit)
//   {"kind":"copy", "ranks":P, "ns_per_entry":...}
//       memcpy of the model's N floats on every rank at once (the step's packing copies' rate)
//   {"kind":"rule", "rule":..., "ranks":P, "params":N, "gathered":..., "reduced":..., ...}
//       entries each collective call moved in one step (measured by a counting communicator,
//       against the formula N for both), the slowest rank's step / local / communication time
//       (median and range over rounds), and the local-work imbalance max_r / mean_r.
#include <steepest/distributed/mpi.hpp>
#include <steepest/distributed/sharded.hpp>
#include <steepest/steepest.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace st = steepest;
namespace sd = steepest::dist;
using st::Index;

namespace {

double now() { return MPI_Wtime(); }

/// MPI's communicator, timing and counting each collective (seconds, entries).
struct TimedCommunicator {
  sd::MpiCommunicator& mpi;
  double t_reduce = 0, t_gather = 0, t_agree = 0;
  long long gathered = 0, reduced = 0;
  int rank() const { return mpi.rank(); }
  int size() const { return mpi.size(); }
  template <class S>
  void allgatherv(const S* mine, S* all, const std::vector<long long>& counts, const std::vector<long long>& displs) {
    const double t0 = now();
    mpi.allgatherv(mine, all, counts, displs);
    t_gather += now() - t0;
    for (long long c : counts) gathered += c;
  }
  template <class S>
  void reduce_scatter(const S* all, S* mine, const std::vector<long long>& counts) {
    const double t0 = now();
    mpi.reduce_scatter(all, mine, counts);
    t_reduce += now() - t0;
    for (long long c : counts) reduced += c;
  }
  long long min(long long v) {
    const double t0 = now();
    const long long r = mpi.min(v);
    t_agree += now() - t0;
    return r;
  }
  void broadcast(std::string& bytes, int root) { mpi.broadcast(bytes, root); }
  std::vector<std::string> gather(const std::string& mine, int root) { return mpi.gather(mine, root); }
};

struct Model {
  std::vector<std::vector<float>> w, g;
  st::ParamSet<float> params;
  st::Gradients<float> grads;
  Model(Index d, Index layers, Index vocab, int rank) {
    const auto add = [&](const std::string& name, st::Role role, Index m, Index n, int blocks = 1) {
      w.emplace_back(std::size_t(m * n));
      g.emplace_back(std::size_t(m * n));
      // The same weights on every rank (as in a data-parallel job), each rank's own gradient.
      std::mt19937 wrng(unsigned(w.size()) * 7919u), grng(unsigned(w.size()) * 7919u + 1u + unsigned(rank));
      std::normal_distribution<float> nd(0.0f, 0.02f);
      for (float& x : w.back()) x = nd(wrng);
      for (float& x : g.back()) x = nd(grng);
      if (blocks > 1) params.add_blocks(name, role, w.back().data(), m, n, st::Blocks::rows(blocks));
      else if (n == 1) params.add_vector(name, w.back().data(), m);
      else params.add(name, role, w.back().data(), m, n);
      grads.add(g.back().data(), m, n);
    };
    add("wte", st::Role::Embedding, vocab, d);
    for (Index l = 0; l < layers; ++l) {
      const std::string p = "h" + std::to_string(l) + ".";
      add(p + "ln1", st::Role::Vector, d, 1);
      add(p + "qkv", st::Role::Hidden, 3 * d, d, 3);
      add(p + "proj", st::Role::Hidden, d, d);
      add(p + "ln2", st::Role::Vector, d, 1);
      add(p + "fc", st::Role::Hidden, 4 * d, d);
      add(p + "fc_proj", st::Role::Hidden, d, 4 * d);
    }
    add("ln_f", st::Role::Vector, d, 1);
    add("head", st::Role::Output, vocab, d);
  }
};

template <class T>
T median(std::vector<T> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

/// The slowest rank's value.
double slowest(sd::MpiCommunicator& comm, double v) {
  double out = v;
  MPI_Allreduce(&v, &out, 1, MPI_DOUBLE, MPI_MAX, comm.comm());
  return out;
}
double mean_over_ranks(sd::MpiCommunicator& comm, double v) {
  double out = v;
  MPI_Allreduce(&v, &out, 1, MPI_DOUBLE, MPI_SUM, comm.comm());
  return out / comm.size();
}

void bench_collectives(sd::MpiCommunicator& comm, int rounds) {
  const int P = comm.size();
  for (long long n = 1 << 10; n <= (1 << 22); n *= 4) {
    std::vector<long long> counts(static_cast<std::size_t>(P)), displs(static_cast<std::size_t>(P));
    for (int r = 0; r < P; ++r) {
      displs[std::size_t(r)] = r * n / P;
      counts[std::size_t(r)] = (r + 1) * n / P - r * n / P;
    }
    std::vector<float> all(std::size_t(n), 1.0f), mine(std::size_t(counts[std::size_t(comm.rank())]) + 1, 1.0f);
    for (const char* op : {"allgatherv", "reduce_scatter"}) {
      std::vector<double> t;
      const int reps = n >= (1 << 20) ? 5 : 20;
      for (int k = 0; k < rounds * reps + 2; ++k) {
        MPI_Barrier(comm.comm());
        const double t0 = now();
        if (op[0] == 'a') comm.allgatherv(mine.data(), all.data(), counts, displs);
        else comm.reduce_scatter(all.data(), mine.data(), counts);
        const double dt = slowest(comm, now() - t0);
        if (k >= 2) t.push_back(dt);
      }
      std::sort(t.begin(), t.end());
      if (comm.rank() == 0)
        std::printf("{\"kind\":\"collective\",\"op\":\"%s\",\"ranks\":%d,\"entries\":%lld,\"median_us\":%.2f,"
                    "\"min_us\":%.2f,\"max_us\":%.2f}\n",
                    op, P, n, 1e6 * t[t.size() / 2], 1e6 * t.front(), 1e6 * t.back());
    }
  }
}

template <class Opt>
void bench_rule(sd::MpiCommunicator& mpi, const char* name, Opt opt, Index d, Index layers, Index vocab, int steps,
                int rounds) {
  Model m(d, layers, vocab, mpi.rank());
  TimedCommunicator comm{mpi};
  auto sharded = sd::shard(opt, comm);
  auto state = sharded.init(m.params);
  const int P = mpi.size();
  // The packing copies' rate: every rank copies N floats at once (as the step's pack and unpack
  // do, sharing the machine's memory bandwidth), median of 9, in ns per entry.
  {
    const std::size_t N = std::size_t(m.params.num_params());
    std::vector<float> a(N, 1.0f), b(N, 0.0f);
    std::vector<double> t;
    for (int k = 0; k < 11; ++k) {
      MPI_Barrier(mpi.comm());
      const double t0 = now();
      std::memcpy(b.data(), a.data(), sizeof(float) * N);
      const double dt = slowest(mpi, now() - t0);
      if (k >= 2) t.push_back(dt);
      a[k] = b[N - 1 - std::size_t(k)];  // keep the copies observable
    }
    if (mpi.rank() == 0 && std::string(name) == "adamw")
      std::printf("{\"kind\":\"copy\",\"ranks\":%d,\"entries\":%zu,\"ns_per_entry\":%.4f}\n", P, N,
                  1e9 * median(t) / double(N));
  }
  // Owned work per rank, as planned (the imbalance the owner design accepts).
  double my_entries = 0;
  for (const auto& p : state.plans) my_entries += double(p.end(mpi.rank()) - p.begin(mpi.rank())) * double(p.cols);
  for (int k = 0; k < 2; ++k) sharded.step_reduce(m.params, m.grads, state, 1.0 / P);  // warm-up: buffers, plans
  comm.gathered = comm.reduced = 0;
  sharded.step_reduce(m.params, m.grads, state, 1.0 / P);
  const long long gathered = comm.gathered, reduced = comm.reduced;
  std::vector<double> total, local, rs, ag, agree, imbalance;
  for (int r = 0; r < rounds; ++r) {
    double sum_total = 0, sum_local = 0, sum_rs = 0, sum_ag = 0, sum_agree = 0, sum_imb = 0;
    for (int s = 0; s < steps; ++s) {
      comm.t_reduce = comm.t_gather = comm.t_agree = 0;
      MPI_Barrier(mpi.comm());
      const double t0 = now();
      sharded.step_reduce(m.params, m.grads, state, 1.0 / P);
      const double dt = now() - t0;
      const double my_local = dt - comm.t_reduce - comm.t_gather - comm.t_agree;
      const double worst_local = slowest(mpi, my_local);
      sum_total += slowest(mpi, dt);
      sum_local += worst_local;
      sum_rs += slowest(mpi, comm.t_reduce);
      sum_ag += slowest(mpi, comm.t_gather);
      sum_agree += slowest(mpi, comm.t_agree);
      sum_imb += worst_local / std::max(1e-12, mean_over_ranks(mpi, my_local));
    }
    total.push_back(sum_total / steps), local.push_back(sum_local / steps), rs.push_back(sum_rs / steps);
    ag.push_back(sum_ag / steps), agree.push_back(sum_agree / steps), imbalance.push_back(sum_imb / steps);
  }
  const double planned_max = slowest(mpi, my_entries), planned_mean = mean_over_ranks(mpi, my_entries);
  if (mpi.rank() == 0) {
    const auto mm = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return std::make_pair(v.front(), v.back());
    };
    const auto [tmin, tmax] = mm(total);
    std::printf("{\"kind\":\"rule\",\"rule\":\"%s\",\"ranks\":%d,\"params\":%lld,\"gathered\":%lld,\"reduced\":%lld,"
                "\"step_ms\":%.3f,\"step_min_ms\":%.3f,\"step_max_ms\":%.3f,\"local_ms\":%.3f,\"reduce_scatter_ms\":%.3f,"
                "\"allgather_ms\":%.3f,\"agree_ms\":%.4f,\"local_imbalance\":%.3f,\"planned_entries_max_over_mean\":%.3f}\n",
                name, P, (long long)m.params.num_params(), gathered, reduced, 1e3 * median(total), 1e3 * tmin,
                1e3 * tmax, 1e3 * median(local), 1e3 * median(rs), 1e3 * median(ag), 1e3 * median(agree),
                median(imbalance), planned_max / std::max(1.0, planned_mean));
    std::fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  Index d = 256, layers = 4, vocab = 8192;
  int steps = 8, rounds = 5;
  bool collectives = true;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const long long v = std::atoll(argv[i + 1]);
    if (k == "--d") d = v;
    else if (k == "--layers") layers = v;
    else if (k == "--vocab") vocab = v;
    else if (k == "--steps") steps = int(v);
    else if (k == "--rounds") rounds = int(v);
    else if (k == "--collectives") collectives = v != 0;
  }
  int rc = 0;
  try {
    sd::MpiCommunicator mpi(MPI_COMM_WORLD);
    if (collectives) bench_collectives(mpi, rounds);
    st::Hyper hp;
    hp.lr = 1e-3;
    bench_rule(mpi, "adamw", st::adamw(hp), d, layers, vocab, steps, rounds);
    bench_rule(mpi, "lion", st::lion(hp), d, layers, vocab, steps, rounds);
    bench_rule(mpi, "moga_row", st::moga_row(hp), d, layers, vocab, steps, rounds);
    bench_rule(mpi, "moga_row_momentum", st::moga_row_momentum(hp), d, layers, vocab, steps, rounds);
    bench_rule(mpi, "moga_col", st::moga_col(hp), d, layers, vocab, steps, rounds);
    bench_rule(mpi, "muon", st::muon(hp), d, layers, vocab, steps, rounds);
    bench_rule(mpi, "scion", st::scion(hp), d, layers, vocab, steps, rounds);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "steepest_dist_bench: %s\n", e.what());
    rc = 1;
  }
  MPI_Finalize();
  return rc;
}
