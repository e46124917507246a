// The sharded optimizer (steepest/distributed/sharded.hpp) over MPI, run by CTest under
// `mpirun -np 1`, `-np 2` and `-np 4`. Reference: the single-process step of the same optimizer
// on the same summed gradient, which every rank computes for itself; every comparison is bitwise.
//
//   test_sharded                            the doctest cases below, on every rank
//   test_sharded --save FILE                3 sharded steps, then a collective save
//   test_sharded --resume FILE              load (on any number of ranks), 3 more steps, and
//                                           compare with 6 uninterrupted single-process steps
#define DOCTEST_CONFIG_IMPLEMENT
#include <steepest/distributed/mpi.hpp>
#include <steepest/distributed/sharded.hpp>
#include <steepest/steepest.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <sys/stat.h>

namespace st = steepest;
namespace sd = steepest::dist;

namespace {

using st::Index;

/// Layers chosen to be awkward: row counts that do not divide by 2 or 4, a one-row matrix and a
/// one-entry vector (ranks that own nothing), a 1-wide matrix, and fused tensors split into
/// row blocks, strided column blocks and interleaved rows.
struct Model {
  std::vector<std::vector<float>> tensors;
  st::ParamSet<float> params;
  Model() = default;
  Model(const Model&) = delete;
  explicit Model(unsigned seed) {
    const std::vector<std::pair<Index, Index>> shapes = {{11, 6}, {7, 5}, {13, 3}, {1, 9}, {6, 4}, {4, 6},
                                                          {6, 3}, {5, 6},  {3, 1}, {1, 1}, {9, 1}};
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 0.5f);
    for (auto [m, n] : shapes) {
      tensors.emplace_back(std::size_t(m * n));
      for (float& x : tensors.back()) x = nd(rng);
    }
    params.add("emb", st::Role::Embedding, tensors[0].data(), 11, 6);
    params.add("h1", st::Role::Hidden, tensors[1].data(), 7, 5);
    params.add("h2", st::Role::Hidden, tensors[2].data(), 13, 3);
    params.add("thin", st::Role::Hidden, tensors[3].data(), 1, 9);
    params.add_blocks("qkv", st::Role::Hidden, tensors[4].data(), 6, 4, st::Blocks::rows(3));
    params.add_blocks("proj", st::Role::Hidden, tensors[5].data(), 4, 6, st::Blocks::cols(2));
    params.add_blocks("gateup", st::Role::Hidden, tensors[6].data(), 6, 3, st::Blocks::interleaved_rows(2));
    params.add("head", st::Role::Output, tensors[7].data(), 5, 6);
    params.add_vector("bias", tensors[8].data(), 3);
    params.add_vector("gain", tensors[9].data(), 1);
    params.add("tall", st::Role::Hidden, tensors[10].data(), 9, 1);
  }
};

/// The summed gradient of step t (the same on every rank), or its multiple-of-1/16 form whose
/// sum over any split is exact in float (for step_reduce).
std::vector<std::vector<float>> gradient(const Model& m, int t, bool exact) {
  std::mt19937 rng(1000u + unsigned(t));
  std::normal_distribution<float> nd;
  std::vector<std::vector<float>> g;
  for (const auto& tns : m.tensors) {
    g.emplace_back(tns.size());
    for (float& x : g.back()) x = exact ? std::round(nd(rng) * 16.0f) / 16.0f : nd(rng);
  }
  return g;
}

st::Gradients<float> view(const Model& m, const std::vector<std::vector<float>>& g) {
  st::Gradients<float> G;
  for (std::size_t i = 0; i < g.size(); ++i) G.add(g[i].data(), m.params.tensors()[i].rows, m.params.tensors()[i].cols);
  return G;
}

bool same(const Model& a, const Model& b) {
  for (std::size_t i = 0; i < a.tensors.size(); ++i)
    if (std::memcmp(a.tensors[i].data(), b.tensors[i].data(), sizeof(float) * a.tensors[i].size()) != 0) return false;
  return true;
}

/// The tensors that differ, with their largest difference (for failure messages).
std::string differences(const Model& a, const Model& b) {
  std::string out;
  for (std::size_t i = 0; i < a.tensors.size(); ++i) {
    double worst = 0;
    for (std::size_t j = 0; j < a.tensors[i].size(); ++j)
      worst = std::max(worst, double(std::abs(a.tensors[i][j] - b.tensors[i][j])));
    if (std::memcmp(a.tensors[i].data(), b.tensors[i].data(), sizeof(float) * a.tensors[i].size()) != 0)
      out += " " + a.params.tensors()[i].name + " (max |diff| " + std::to_string(worst) + ")";
  }
  return out;
}

sd::MpiCommunicator& world() {
  static sd::MpiCommunicator comm(MPI_COMM_WORLD);
  return comm;
}

/// `steps` steps of the sharded optimizer (step, or step_reduce with this rank's part of the
/// gradient) against the single-process optimizer, bitwise after every step.
template <class Make>
void check_against_single(const std::string& what, Make make, bool reduce, int steps = 4) {
  CAPTURE(what);
  CAPTURE(reduce);
  auto& comm = world();
  Model ref(7), mine(7);
  auto single = make();
  auto sstate = single.init(ref.params);
  auto sharded = sd::shard(make(), comm);
  auto state = sharded.init(mine.params);
  for (int t = 0; t < steps; ++t) {
    const auto g = gradient(ref, t, reduce);
    single.step(ref.params, view(ref, g), sstate);
    if (reduce) {
      // This rank's part: rank 0 holds g - (P-1) h, the others h; exact sums in any order.
      auto part = g;
      for (std::size_t i = 0; i < part.size(); ++i)
        for (std::size_t j = 0; j < part[i].size(); ++j) {
          const float h = float((i + j + std::size_t(t)) % 5) - 2.0f;
          part[i][j] = comm.rank() == 0 ? g[i][j] - float(comm.size() - 1) * h : h;
        }
      CHECK(sharded.step_reduce(mine.params, view(mine, part), state));
    } else {
      CHECK(sharded.step(mine.params, view(mine, g), state));
    }
    // Agreed by every rank, so that all stop together on a failure (one rank leaving the
    // collectives early would leave the others waiting).
    const bool here = same(ref, mine), everywhere = comm.min(here ? 1 : 0) == 1;
    CHECK_MESSAGE(here, what << ": step " << t + 1 << " differs on rank " << comm.rank() << " of " << comm.size()
                             << ":" << differences(ref, mine));
    if (!everywhere) return;
  }
  CHECK(state.step() == steps);
}

template <class F>
void for_every_optimizer(F&& f) {
  st::Hyper hp;
  hp.lr = 0.03;
  hp.weight_decay = 0.1;
  using NesterovRows = st::Chain<st::Momentum<st::MomentumKind::Nesterov>, st::Dualize<st::MeanNormalized<st::RowNorm<2>>>,
                                 st::DecoupledStep>;
  f("sgd", [=] { return st::sgd(hp); });
  f("sgd_nesterov", [=] { return st::sgd_nesterov(hp); });
  f("adamw", [=] { return st::adamw(hp); });
  f("adamw_rescaled", [=] { return st::adamw_rescaled(hp); });
  f("sign_descent", [=] { return st::sign_descent(hp); });
  f("lion", [=] { return st::lion(hp); });
  f("moga_row", [=] { return st::moga_row(hp); });
  f("moga_row (Adam first)", [=] { return st::moga_row<st::MogaOrder::AdamThenNormalize>(hp); });
  f("moga_col", [=] { return st::moga_col(hp); });
  f("moga_row_momentum", [=] { return st::moga_row_momentum(hp); });
  f("muon (routed)", [=] { return st::muon(hp); });
  f("normuon (routed)", [=] { return st::normuon(hp); });
  f("adamuon (routed)", [=] { return st::adamuon(hp); });
  f("polargrad (routed)", [=] { return st::polargrad(hp); });
  f("muon_eq (routed)", [=] { return st::muon_eq(hp); });
  f("muon_plus (routed)", [=] { return st::muon_plus(hp); });
  f("cautious_adamw", [=] { return st::cautious_adamw(hp); });
  f("muon_scion", [=] { return st::muon_scion(hp); });
  f("scion", [=] { return st::scion(hp); });
  f("scion_unconstrained", [=] { return st::scion_unconstrained(hp); });
  f("a user chain (Dualize<N>)", [=] { return st::Optimizer<NesterovRows>(hp); });
}

}  // namespace

TEST_CASE("plans: row-local layers are split by rows, whole-matrix ones get balanced owners") {
  auto& comm = world();
  Model m(1);
  const auto plans_of = [&](auto opt) { return sd::shard(opt, comm).init(m.params).plans; };
  for (const auto& p : plans_of(st::moga_row())) {  // rows normalized, vectors elementwise: by rows,
    CAPTURE(p.name);                                 // except strided blocks (their own path: whole)
    CHECK(p.by_rows == (p.name.rfind("proj[", 0) != 0 && p.name.rfind("gateup[", 0) != 0));
  }
  for (const auto& p : plans_of(st::moga_col())) {  // columns normalized: whole; vectors elementwise: rows
    CAPTURE(p.name);
    CHECK(p.by_rows == (p.name == "bias" || p.name == "gain"));
  }
  // Muon: hidden matrices (spectral) have owners, the AdamW route's layers are split by rows.
  for (const auto& p : plans_of(st::muon())) {
    CAPTURE(p.name);
    const bool hidden = p.name != "emb" && p.name != "head" && p.name != "bias" && p.name != "gain";
    CHECK(p.by_rows == !hidden);
    if (p.by_rows) {
      REQUIRE(p.bounds.size() == std::size_t(comm.size()) + 1);
      CHECK(p.bounds.front() == 0);
      CHECK(p.bounds.back() == p.rows);
    } else {
      CHECK(p.owner >= 0);
      CHECK(p.owner < comm.size());
    }
  }
  // Owners are spread: with 2 or more ranks, the spectral layers are not all on one rank.
  std::vector<int> owners;
  for (const auto& p : plans_of(st::muon()))
    if (!p.by_rows) owners.push_back(p.owner);
  std::sort(owners.begin(), owners.end());
  const auto distinct = std::unique(owners.begin(), owners.end()) - owners.begin();
  CHECK(distinct == std::min<std::ptrdiff_t>(comm.size(), 4));
}

TEST_CASE("the sharded step equals the single-process step bitwise, for every named optimizer") {
  for_every_optimizer([](const char* what, auto make) { check_against_single(what, make, false); });
}

TEST_CASE("step_reduce: the ranks' gradients summed by reduce-scatter, then the same step bitwise") {
  for_every_optimizer([](const char* what, auto make) { check_against_single(what, make, true, 3); });
}

namespace {
/// The MPI communicator, counting the entries each collective moves (the formula's check).
struct CountingCommunicator {
  sd::MpiCommunicator& mpi;
  long long gathered = 0, reduced = 0, calls = 0;
  int rank() const { return mpi.rank(); }
  int size() const { return mpi.size(); }
  template <class S>
  void allgatherv(const S* mine, S* all, const std::vector<long long>& counts, const std::vector<long long>& displs) {
    ++calls;
    for (long long c : counts) gathered += c;
    mpi.allgatherv(mine, all, counts, displs);
  }
  template <class S>
  void reduce_scatter(const S* all, S* mine, const std::vector<long long>& counts) {
    ++calls;
    for (long long c : counts) reduced += c;
    mpi.reduce_scatter(all, mine, counts);
  }
  long long min(long long v) { return mpi.min(v); }
  void broadcast(std::string& bytes, int root) { mpi.broadcast(bytes, root); }
  std::vector<std::string> gather(const std::string& mine, int root) { return mpi.gather(mine, root); }
};
}  // namespace

TEST_CASE("communication per step: one all-gather of N entries; step_reduce adds one reduce-scatter of N") {
  CountingCommunicator comm{world()};
  Model m(11);
  const long long N = m.params.num_params();
  auto opt = sd::shard(st::muon(), comm);
  auto state = opt.init(m.params);
  const auto g = gradient(m, 0, false);
  opt.step(m.params, view(m, g), state);
  const long long expect = comm.size() > 1 ? N : 0;  // one rank: nothing to communicate
  CHECK(comm.gathered == expect);
  CHECK(comm.reduced == 0);
  opt.step_reduce(m.params, view(m, g), state);
  CHECK(comm.gathered == 2 * expect);
  CHECK(comm.reduced == N);
  CHECK(comm.calls == (comm.size() > 1 ? 3 : 1));
}

TEST_CASE("a non-finite gradient in any rank's rows is refused by every rank; nothing changes") {
  auto& comm = world();
  for (auto policy : {st::NonFinitePolicy::Error, st::NonFinitePolicy::Skip}) {
    CAPTURE(int(policy));
    st::Hyper hp;
    hp.on_non_finite = policy;
    Model m(3), before(3);
    auto opt = sd::shard(st::muon(hp), comm);
    auto state = opt.init(m.params);
    auto g = gradient(m, 0, false);
    g[2][3 * 12 + 1] = std::nanf("");  // h2's last row: the last rank's rows (or h2's owner)
    if (policy == st::NonFinitePolicy::Error) {
      std::string msg;
      try {
        opt.step(m.params, view(m, g), state);
      } catch (const st::non_finite_error& e) {
        msg = e.what();
      }
      CHECK(msg.find("'h2'") != std::string::npos);
    } else {
      CHECK_FALSE(opt.step(m.params, view(m, g), state));
    }
    CHECK(same(m, before));
    CHECK(state.step() == 0);
  }
}

TEST_CASE("save is collective and writes the single-process file; load takes each rank's share") {
  auto& comm = world();
  st::Hyper hp;
  hp.lr = 0.02;
  Model ref(5), mine(5);
  auto single = st::muon(hp);
  auto sstate = single.init(ref.params);
  auto opt = sd::shard(st::muon(hp), comm);
  auto state = opt.init(mine.params);
  for (int t = 0; t < 3; ++t) {
    const auto g = gradient(ref, t, false);
    single.step(ref.params, view(ref, g), sstate);
    opt.step(mine.params, view(mine, g), state);
  }
  const std::string path = "sharded_" + std::to_string(comm.size()) + ".safetensors";
  opt.save(mine.params, state, path);
  if (comm.rank() == 0) {  // the same bytes as the single-process save of the same state
    std::ifstream a(path, std::ios::binary);
    std::stringstream sa;
    sa << a.rdbuf();
    CHECK(sa.str() == st::save_bytes(single, sstate));
  }
  // Load into a fresh state and continue: still equal to the single-process run.
  auto resumed = opt.init(mine.params);
  opt.load(mine.params, resumed, path);
  CHECK(resumed.step() == 3);
  for (int t = 3; t < 5; ++t) {
    const auto g = gradient(ref, t, false);
    single.step(ref.params, view(ref, g), sstate);
    opt.step(mine.params, view(mine, g), resumed);
  }
  CHECK(same(ref, mine));
  // A file of another optimizer is refused on every rank, and the state is unchanged.
  const std::string other = "sharded_other_" + std::to_string(comm.size()) + ".safetensors";
  if (comm.rank() == 0) {
    auto adam = st::adamw();
    auto as = adam.init(ref.params);
    st::save(adam, as, other);
  }
  bool refused = false;
  try {
    opt.load(mine.params, resumed, other);
  } catch (const st::state_file_error&) {
    refused = true;
  }
  CHECK(refused);
  CHECK(resumed.step() == 5);
  bool missing = false;
  try {
    opt.load(mine.params, resumed, "no_such_file.safetensors");
  } catch (const st::state_file_error&) {
    missing = true;
  }
  CHECK(missing);
}

// Whether a layer splits by rows is what each of its transforms states (checked as this file
// compiles). Full-precision moments read one entry's row only; bf16 state dithers by the flat
// index, which a row range shifts, so its layers stay whole (bitwise equality with one process).
namespace row_separability {
static_assert(sd::row_separable<st::Momentum<st::MomentumKind::Nesterov>>::value);
static_assert(!sd::row_separable<st::Momentum<st::MomentumKind::EMA, st::Bf16State>>::value);
static_assert(sd::row_separable<st::AdamMoments>::value && !sd::row_separable<st::Adam<st::Bf16State>>::value);
static_assert(sd::row_separable<st::LionMoment>::value && sd::row_separable<st::DecoupledStep>::value);
static_assert(sd::row_separable<st::Dualize<st::MeanNormalized<st::RowNormalize>>>::value);
static_assert(!sd::row_separable<st::Dualize<st::ColNormalize>>::value);
static_assert(!sd::row_separable<st::Dualize<st::Spectral>>::value);
struct Unstated {};  // a transform that says nothing keeps its layers whole
static_assert(!sd::row_separable<Unstated>::value);
static_assert(sd::chain_row_separable<st::MogaMomentumChain>::value &&
              !sd::chain_row_separable<st::MogaMomentumChainIn<st::Bf16State>>::value);
}  // namespace row_separability

TEST_CASE("sharded load: a FIFO, /dev/zero and a directory are refused on every rank before a byte is read") {
  auto& comm = world();
  Model mine(5);
  auto opt = sd::shard(st::muon(), comm);
  auto state = opt.init(mine.params);
  const auto before = state.step();
  // No process writes the FIFO: a loader that opened and read it would wait forever (ctest's
  // timeout would end the job); /dev/zero would be read until memory runs out.
  const std::string fifo = "sharded_fifo_" + std::to_string(comm.size());
  if (comm.rank() == 0) {
    std::remove(fifo.c_str());
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  }
  for (const std::string& path : {fifo, std::string("/dev/zero"), std::string(".")}) {
    std::string message;
    try {
      opt.load(mine.params, state, path);
    } catch (const st::state_file_error& e) {
      message = e.what();
    }
    CHECK_MESSAGE(message.find("not a regular file") != std::string::npos, path << ": " << message);
    CHECK(state.step() == before);
  }
  if (comm.rank() == 0) std::remove(fifo.c_str());
}

TEST_CASE("a timeout turns a collective that a rank never joins into an error, not a hang") {
  auto& comm = world();
  if (comm.size() < 2) {
    MESSAGE("skipped at 1 rank: a collective cannot be left unjoined (run at 2 and 4 ranks)");
    return;
  }
  CHECK_THROWS_AS(sd::MpiCommunicator(MPI_COMM_WORLD, -1.0), sd::communication_error);
  MPI_Comm dup;
  REQUIRE(MPI_Comm_dup(MPI_COMM_WORLD, &dup) == MPI_SUCCESS);
  {
    sd::MpiCommunicator timed(dup, 0.2);
    CHECK(timed.min(comm.rank() + 5) == 5);  // joined by every rank: completes as usual
    if (comm.rank() == 0) {
      // Rank 0 asks for a minimum the others do not ask for (yet): without the timeout it waits forever.
      const auto t0 = std::chrono::steady_clock::now();
      CHECK_THROWS_WITH_AS(timed.min(7), doctest::Contains("did not complete within"), sd::communication_error);
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      CHECK(waited >= 0.2);
      CHECK(waited < 5.0);
      // The communicator is done: the abandoned collective may still be in flight.
      CHECK_THROWS_WITH_AS(timed.min(7), doctest::Contains("end the job"), sd::communication_error);
    }
    MPI_Barrier(MPI_COMM_WORLD);  // rank 0 is past its timeout
    if (comm.rank() != 0) {
      // Join the abandoned collective late, as the nonblocking form it was, so nothing is left in
      // flight when the test ends.
      long long in = 100 + comm.rank(), out = 0;
      MPI_Request r;
      REQUIRE(MPI_Iallreduce(&in, &out, 1, MPI_LONG_LONG, MPI_MIN, dup, &r) == MPI_SUCCESS);
      REQUIRE(MPI_Wait(&r, MPI_STATUS_IGNORE) == MPI_SUCCESS);
      CHECK(out == 7);
    }
    MPI_Barrier(MPI_COMM_WORLD);
  }
  MPI_Comm_free(&dup);
}

namespace {

/// --save FILE / --resume FILE: a checkpoint written on one number of ranks and read on another.
int checkpoint_across_ranks(const std::string& mode, const std::string& path) {
  auto& comm = world();
  st::Hyper hp;
  hp.lr = 0.02;
  Model ref(9), mine(9);
  auto single = st::muon(hp);
  auto sstate = single.init(ref.params);
  auto opt = sd::shard(st::muon(hp), comm);
  auto state = opt.init(mine.params);
  for (int t = 0; t < 3; ++t) {
    const auto g = gradient(ref, t, false);
    single.step(ref.params, view(ref, g), sstate);
    if (mode == "--save") opt.step(mine.params, view(mine, g), state);
  }
  if (mode == "--save") {
    opt.save(mine.params, state, path);
    if (comm.rank() == 0) std::printf("saved 3 steps on %d ranks to %s\n", comm.size(), path.c_str());
    return 0;
  }
  // --resume: the weights after 3 steps are the single-process ones (the save run's were equal).
  mine.tensors = ref.tensors;
  opt.load(mine.params, state, path);
  for (int t = 3; t < 6; ++t) {
    const auto g = gradient(ref, t, false);
    single.step(ref.params, view(ref, g), sstate);
    opt.step(mine.params, view(mine, g), state);
  }
  const bool ok = same(ref, mine) && state.step() == 6;
  std::printf("rank %d of %d: resumed from %s, 6 steps %s the single-process run\n", comm.rank(), comm.size(),
              path.c_str(), ok ? "equal (bitwise) to" : "DIFFER from");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rc = 0;
  try {
    if (argc == 3 && (std::string(argv[1]) == "--save" || std::string(argv[1]) == "--resume")) {
      rc = checkpoint_across_ranks(argv[1], argv[2]);
    } else {
      doctest::Context ctx(argc, argv);
      if (world().rank() != 0) ctx.setOption("minimal", true);  // one full report; the others' failures only
      rc = ctx.run();
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: %s\n", world().rank(), e.what());
    rc = 1;
  }
  // Every rank's verdict counts: the job fails if any rank failed.
  const long long worst = -world().min(-(long long)rc);
  MPI_Finalize();
  return int(worst);
}
