// The sharded optimizer on device memory over NCCL (distributed/nccl.cuh), with one rank on one GPU
// (NCCL refuses two ranks on one device; the multi-rank plans, collectives and checkpoints are
// the MPI tests' in tests/dist, which share every line of distributed/sharded.hpp but the space's row
// copies and finite check). Reference: the single-process step of the same optimizer on the
// same device, bitwise; the communicator's calls against what each must leave in memory.
// Without a CUDA device the binary prints why and exits with 77, which CTest reports as skipped.
#include <steepest/steepest.hpp>
#include <steepest/distributed/nccl.cuh>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace st = steepest;
namespace sc = steepest::cuda;
namespace sd = steepest::dist;
using st::Index;

static int failures = 0, checks = 0;
#define EXPECT(cond, ...)                                           \
  do {                                                              \
    ++checks;                                                       \
    if (!(cond)) {                                                  \
      ++failures;                                                   \
      std::printf("FAIL %s:%d: %s -- ", __FILE__, __LINE__, #cond); \
      std::printf(__VA_ARGS__);                                     \
      std::printf("\n");                                            \
    }                                                               \
  } while (0)

namespace {

std::vector<float> host(const float* d, std::size_t n) {
  std::vector<float> h(n);
  sc::check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  if (n) sc::check(cudaMemcpy(h.data(), d, sizeof(float) * n, cudaMemcpyDeviceToHost), "cudaMemcpy");
  return h;
}

/// One device buffer per tensor, the parameter set over them (plain, strided and vector layers).
struct Model {
  const std::vector<std::pair<Index, Index>> shapes = {{11, 6}, {7, 5}, {6, 4}, {4, 6}, {5, 6}, {3, 1}, {1, 1}};
  std::vector<float*> t;
  st::ParamSet<float, sc::Device> params;
  Model(const Model&) = delete;
  Model(sc::Context& ctx, unsigned seed) : params(sc::Device{&ctx}) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 0.5f);
    for (auto [m, n] : shapes) {
      std::vector<float> h(std::size_t(m * n));
      for (float& x : h) x = nd(rng);
      float* d = nullptr;
      sc::check(cudaMalloc(&d, sizeof(float) * h.size()), "cudaMalloc");
      sc::check(cudaMemcpy(d, h.data(), sizeof(float) * h.size(), cudaMemcpyHostToDevice), "cudaMemcpy");
      t.push_back(d);
    }
    params.add("emb", st::Role::Embedding, t[0], 11, 6);
    params.add("h1", st::Role::Hidden, t[1], 7, 5);
    params.add_blocks("qkv", st::Role::Hidden, t[2], 6, 4, st::Blocks::rows(3));
    params.add_blocks("proj", st::Role::Hidden, t[3], 4, 6, st::Blocks::cols(2));
    params.add("head", st::Role::Output, t[4], 5, 6);
    params.add_vector("bias", t[5], 3);
    params.add_vector("gain", t[6], 1);
  }
  ~Model() {
    for (float* d : t) cudaFree(d);
  }
  std::vector<std::vector<float>> weights() const {
    std::vector<std::vector<float>> w;
    for (std::size_t i = 0; i < t.size(); ++i) w.push_back(host(t[i], std::size_t(shapes[i].first * shapes[i].second)));
    return w;
  }
};

/// Step t's gradient on the device (one buffer per tensor), optionally times `factor`.
struct Grad {
  std::vector<float*> t;
  st::Gradients<float, sc::Device> g;
  Grad(const Model& m, int step, float factor = 1.0f, int poison_tensor = -1) {
    std::mt19937 rng(1000u + unsigned(step));
    std::normal_distribution<float> nd;
    for (std::size_t i = 0; i < m.shapes.size(); ++i) {
      const auto [r, c] = m.shapes[i];
      std::vector<float> h(std::size_t(r * c));
      for (float& x : h) x = std::round(nd(rng) * 16.0f) / 16.0f * factor;  // exact under the mean's scaling
      if (int(i) == poison_tensor) h.back() = std::nanf("");
      float* d = nullptr;
      sc::check(cudaMalloc(&d, sizeof(float) * h.size()), "cudaMalloc");
      sc::check(cudaMemcpy(d, h.data(), sizeof(float) * h.size(), cudaMemcpyHostToDevice), "cudaMemcpy");
      t.push_back(d);
      g.add(d, r, c);
    }
  }
  Grad(const Grad&) = delete;
  ~Grad() {
    for (float* d : t) cudaFree(d);
  }
};

template <class Make>
void check_against_single(const char* what, Make make, sc::Context& ctx, ncclComm_t nc) {
  sd::NcclCommunicator comm(nc, ctx);
  Model ref(ctx, 7), mine(ctx, 7);
  auto single = make();
  auto sstate = single.init(ref.params);
  auto sharded = sd::shard(make(), comm);
  auto state = sharded.init(mine.params);
  for (int t = 0; t < 3; ++t) {
    Grad g(ref, t), twice(ref, t, 2.0f);
    single.step(ref.params, g.g, sstate);
    // Even steps take the summed gradient; odd ones reduce twice the gradient and halve it
    // (one rank: the reduce-scatter is NCCL's reduce to itself, then the scale kernel).
    const bool ok = t % 2 == 0 ? sharded.step(mine.params, g.g, state) : sharded.step_reduce(mine.params, twice.g, state, 0.5);
    EXPECT(ok, "%s: step %d refused", what, t);
    EXPECT(ref.weights() == mine.weights(), "%s: step %d differs from the single-process device step", what, t);
  }
  // save writes the single-process file; load into a fresh state and go on: still equal.
  const std::string path = std::string("nccl_sharded_") + std::to_string(checks) + ".safetensors";
  sharded.save(mine.params, state, path);
  std::ifstream in(path, std::ios::binary);
  std::stringstream bytes;
  bytes << in.rdbuf();
  EXPECT(bytes.str() == st::save_bytes(single, sstate), "%s: the sharded file differs from the single-process save", what);
  auto resumed = sharded.init(mine.params);
  sharded.load(mine.params, resumed, path);
  EXPECT(resumed.step() == 3, "%s: resumed at step %lld", what, resumed.step());
  Grad g(ref, 3);
  single.step(ref.params, g.g, sstate);
  sharded.step(mine.params, g.g, resumed);
  EXPECT(ref.weights() == mine.weights(), "%s: the resumed step differs", what);
  std::remove(path.c_str());
}

void check_refusal(sc::Context& ctx, ncclComm_t nc) {
  sd::NcclCommunicator comm(nc, ctx);
  for (auto policy : {st::NonFinitePolicy::Error, st::NonFinitePolicy::Skip}) {
    st::Hyper hp;
    hp.on_non_finite = policy;
    Model m(ctx, 3);
    const auto before = m.weights();
    auto opt = sd::shard(st::muon(hp), comm);
    auto state = opt.init(m.params);
    Grad g(m, 0, 1.0f, /*poison: qkv, a strided tensor's last entry*/ 2);
    std::string msg;
    bool stepped = true;
    try {
      stepped = opt.step(m.params, g.g, state);
    } catch (const st::non_finite_error& e) {
      msg = e.what();
    }
    if (policy == st::NonFinitePolicy::Error) EXPECT(msg.find("'qkv'") != std::string::npos, "message: %s", msg.c_str());
    else EXPECT(!stepped, "a NaN gradient was not skipped");
    EXPECT(m.weights() == before && state.step() == 0, "a refused step changed the model or the state");
  }
}

/// The communicator's calls against their definitions (distributed/communicator.hpp), on one rank.
void check_calls(sc::Context& ctx, ncclComm_t nc) {
  sd::NcclCommunicator comm(nc, ctx);
  EXPECT(comm.rank() == 0 && comm.size() == 1, "rank %d of %d", comm.rank(), comm.size());
  std::vector<float> a = {1, 2, 3, 4, 5};
  float *src = nullptr, *dst = nullptr;
  sc::check(cudaMalloc(&src, sizeof(float) * 8), "cudaMalloc");
  sc::check(cudaMalloc(&dst, sizeof(float) * 8), "cudaMalloc");
  sc::check(cudaMemcpy(src, a.data(), sizeof(float) * 5, cudaMemcpyHostToDevice), "cudaMemcpy");
  sc::check(cudaMemset(dst, 0, sizeof(float) * 8), "cudaMemset");
  comm.allgatherv(src, dst + 2, std::vector<long long>{5}, std::vector<long long>{0});
  auto got = host(dst, 8);
  EXPECT((got == std::vector<float>{0, 0, 1, 2, 3, 4, 5, 0}), "allgatherv placed %g %g %g", got[2], got[3], got[6]);
  comm.reduce_scatter(src, dst, std::vector<long long>{5});
  got = host(dst, 5);
  EXPECT((got == std::vector<float>{1, 2, 3, 4, 5}), "reduce_scatter kept %g .. %g", got[0], got[4]);
  EXPECT(comm.min(-42) == -42, "min");
  std::string b = "checkpoint bytes";
  comm.broadcast(b, 0);
  EXPECT(b == "checkpoint bytes", "broadcast: %s", b.c_str());
  const auto all = comm.gather("rank zero", 0);
  EXPECT(all.size() == 1 && all[0] == "rank zero", "gather");
  cudaFree(src), cudaFree(dst);
}

}  // namespace

int main() {
  if (sc::device_count() == 0) {
    std::printf("steepest NCCL sharded tests: no CUDA device visible; compiled and linked, not run -- skipped\n");
    return 77;
  }
  int nccl_version = 0;
  ncclGetVersion(&nccl_version);
  std::printf("NCCL %d, one rank on device 0\n", nccl_version);
  ncclComm_t nc = nullptr;
  int dev = 0;
  sd::detail::nccl_check(ncclCommInitAll(&nc, 1, &dev), "ncclCommInitAll", 0);
  {
    sc::Context ctx;
    st::Hyper hp;
    hp.lr = 0.03;
    hp.weight_decay = 0.1;
    check_calls(ctx, nc);
    // Two optimizers cover every code path of the device shard (row copies, the scale kernel,
    // the rows' finite check, staging): MOGA-row (every layer fused, by rows) and Muon routed
    // with AdamW (spectral owners, strided blocks, elementwise vectors). Every other optimizer's
    // device step is test_cuda's; each more here would only add compile time to CI.
    check_against_single("moga_row", [=] { return st::moga_row(hp); }, ctx, nc);
    check_against_single("muon (routed)", [=] { return st::muon(hp); }, ctx, nc);
    check_refusal(ctx, nc);
  }
  ncclCommDestroy(nc);
  std::printf("NCCL sharded checks: %d, failures %d\n", checks, failures);
  return failures ? 1 : 0;
}
