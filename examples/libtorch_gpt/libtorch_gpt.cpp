// libtorch_gpt -- a small GPT written with torch::nn, trained on the fortunes corpus (bytes) with
// steepest's optimizers through the libtorch adapter (steepest/torch/optimizer.hpp): AdamW,
// MOGA-row and Muon + AdamW, the same model, data and steps, validation loss at the end.
//
//   libtorch_gpt [--steps 300] [--layers 2] [--width 64] [--threads 2] [--device cpu|cuda] [--corpus FILE]...
//
// Built from this file by the host compiler it runs on the CPU. Built from libtorch_gpt.cu (this
// file with STEEPEST_GPT_CUDA, compiled by nvcc against a CUDA build of torch) the same program
// runs on CUDA when torch sees a device (--device cpu forces the CPU): the model, the batches and
// the optimizer state on the GPU, every optimizer step on torch's current stream through
// steepest::libtorch::CudaOptimizer.
#ifdef STEEPEST_GPT_CUDA
#include <steepest/torch/cuda.cuh>
#else
#include <steepest/torch/optimizer.hpp>
#endif

#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "../width_transfer/corpus.hpp"

namespace st = steepest;
namespace lt = steepest::libtorch;

namespace {

struct Config {
  int steps = 300, layers = 2, width = 64, heads = 4, context = 64, batch = 16, threads = 2;
  std::vector<std::string> corpus;
  torch::Device device = torch::kCPU;
};

/// Causal self-attention: one fused QKV projection, softmax with a causal mask, an output projection.
struct AttentionImpl : torch::nn::Module {
  torch::nn::Linear qkv{nullptr}, out{nullptr};
  int heads;
  AttentionImpl(int d, int h) : heads(h) {
    qkv = register_module("qkv", torch::nn::Linear(torch::nn::LinearOptions(d, 3 * d).bias(false)));
    out = register_module("out", torch::nn::Linear(torch::nn::LinearOptions(d, d).bias(false)));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const auto B = x.size(0), T = x.size(1), D = x.size(2);
    auto parts = qkv(x).view({B, T, 3, heads, D / heads}).permute({2, 0, 3, 1, 4});  // [3, B, H, T, d]
    auto att = torch::matmul(parts[0], parts[1].transpose(-2, -1)) / std::sqrt(double(D / heads));
    const auto mask = torch::ones({T, T}, x.options().dtype(torch::kBool)).triu(1);
    att = torch::softmax(att.masked_fill(mask, -1e9), -1);
    return out(torch::matmul(att, parts[2]).transpose(1, 2).reshape({B, T, D}));
  }
};
TORCH_MODULE(Attention);

struct BlockImpl : torch::nn::Module {
  torch::nn::LayerNorm ln1{nullptr}, ln2{nullptr};
  Attention attn{nullptr};
  torch::nn::Linear up{nullptr}, down{nullptr};
  BlockImpl(int d, int h) {
    ln1 = register_module("ln1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})));
    attn = register_module("attn", Attention(d, h));
    ln2 = register_module("ln2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})));
    up = register_module("up", torch::nn::Linear(d, 4 * d));
    down = register_module("down", torch::nn::Linear(4 * d, d));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = x + attn(ln1(x));
    return x + down(torch::gelu(up(ln2(x))));
  }
};
TORCH_MODULE(Block);

struct GPTImpl : torch::nn::Module {
  torch::nn::Embedding tok{nullptr}, pos{nullptr};
  torch::nn::ModuleList blocks;
  torch::nn::LayerNorm ln{nullptr};
  torch::nn::Linear head{nullptr};
  GPTImpl(int vocab, const Config& c) {
    tok = register_module("tok", torch::nn::Embedding(vocab, c.width));
    pos = register_module("pos", torch::nn::Embedding(c.context, c.width));
    blocks = register_module("blocks", torch::nn::ModuleList());
    for (int i = 0; i < c.layers; ++i) blocks->push_back(Block(c.width, c.heads));
    ln = register_module("ln", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.width})));
    head = register_module("head", torch::nn::Linear(torch::nn::LinearOptions(c.width, vocab).bias(false)));
  }
  torch::Tensor forward(const torch::Tensor& idx) {
    auto x = tok(idx) + pos(torch::arange(idx.size(1), idx.options()));
    for (const auto& b : *blocks) x = b->as<Block>()->forward(x);
    return head(ln(x));
  }
};
TORCH_MODULE(GPT);

/// `batch` windows of context + 1 tokens at positions drawn by `rng`.
torch::Tensor windows(const std::vector<std::uint8_t>& data, const Config& c, std::mt19937_64& rng) {
  std::uniform_int_distribution<std::size_t> at(0, data.size() - std::size_t(c.context) - 2);
  auto t = torch::empty({c.batch, c.context + 1}, torch::kLong);
  auto a = t.accessor<std::int64_t, 2>();
  for (int b = 0; b < c.batch; ++b) {
    const std::size_t s = at(rng);
    for (int i = 0; i <= c.context; ++i) a[b][i] = data[s + std::size_t(i)];
  }
  return t.to(c.device);
}

torch::Tensor loss_on(GPT& model, const torch::Tensor& w, int vocab) {
  const auto x = w.narrow(1, 0, w.size(1) - 1), y = w.narrow(1, 1, w.size(1) - 1);
  return torch::nn::functional::cross_entropy(model(x).reshape({-1, vocab}), y.reshape({-1}));
}

template <class Adapter>
double train_with(const char* name, GPT& model, Adapter&& opt, const width_transfer::Corpus& corpus, const Config& c) {
  const int vocab = corpus.vocab();
  std::mt19937_64 rng(1);  // the same batches for every optimizer
  const auto t0 = std::chrono::steady_clock::now();
  double smoothed = 0;
  for (int step = 1; step <= c.steps; ++step) {
    opt.zero_grad();
    const auto loss = loss_on(model, windows(corpus.train, c, rng), vocab);
    loss.backward();
    opt.step();
    const double l = loss.item<double>();
    smoothed = step == 1 ? l : 0.9 * smoothed + 0.1 * l;
    if (step % 10 == 0 || step == c.steps) {  // progress: a bar, the step, the smoothed loss
      const int filled = int(30.0 * step / c.steps);
      std::printf("\r%-10s [%s%s] %4d/%d  loss %.3f", name, std::string(std::size_t(filled), '=').c_str(),
                  std::string(std::size_t(30 - filled), ' ').c_str(), step, c.steps, smoothed);
      std::fflush(stdout);
    }
  }
  // Validation: 8 fixed batches of held-out text.
  torch::NoGradGuard no_grad;
  std::mt19937_64 vrng(2);
  double val = 0;
  for (int i = 0; i < 8; ++i) val += loss_on(model, windows(corpus.val, c, vrng), vocab).item<double>() / 8;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("  | validation %.3f  (%.1f s, %.1f ms/step)\n", val, secs, 1e3 * secs / c.steps);
  return val;
}

template <class Opt>
double train(const char* name, Opt inner, const width_transfer::Corpus& corpus, const Config& c) {
  torch::manual_seed(0);  // the same initial weights for every optimizer
  GPT model(corpus.vocab(), c);
  model->to(c.device);
#ifdef STEEPEST_GPT_CUDA
  if (c.device.is_cuda()) return train_with(name, model, lt::make_cuda_optimizer(*model, std::move(inner)), corpus, c);
#endif
  return train_with(name, model, lt::make_optimizer(*model, std::move(inner)), corpus, c);
}

}  // namespace

int main(int argc, char** argv) {
  Config c;
#ifdef STEEPEST_GPT_CUDA
  if (torch::cuda::is_available()) c.device = torch::kCUDA;
#endif
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto val = [&] {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "libtorch_gpt: %s needs a value\n", a.c_str());
        std::exit(64);
      }
      return std::string(argv[++i]);
    };
    if (a == "--steps") c.steps = std::stoi(val());
    else if (a == "--layers") c.layers = std::stoi(val());
    else if (a == "--width") c.width = std::stoi(val());
    else if (a == "--threads") c.threads = std::stoi(val());
    else if (a == "--corpus") c.corpus.push_back(val());
    else if (a == "--device") {
      const std::string d = val();
      if (d == "cpu") c.device = torch::kCPU;
#ifdef STEEPEST_GPT_CUDA
      else if (d == "cuda" && torch::cuda::is_available()) c.device = torch::kCUDA;
#endif
      else {
        std::fprintf(stderr, "libtorch_gpt: --device %s is not available in this build (cpu%s)\n", d.c_str(),
#ifdef STEEPEST_GPT_CUDA
                     torch::cuda::is_available() ? ", cuda" : "; torch sees no CUDA device"
#else
                     "; CUDA: build libtorch_gpt.cu against a CUDA torch"
#endif
        );
        return 64;
      }
    } else {
      std::fprintf(stderr,
                   "usage: libtorch_gpt [--steps N] [--layers L] [--width D] [--threads T] [--device cpu|cuda] "
                   "[--corpus FILE]...\n");
      return 64;
    }
  }
  torch::set_num_threads(c.threads);
  const auto corpus = width_transfer::load_corpus(c.corpus.empty() ? width_transfer::default_corpus_files() : c.corpus);
  std::printf("libtorch_gpt: %d layers, width %d, context %d, batch %d, %d steps on %s; corpus %zu train bytes, vocabulary %d\n",
              c.layers, c.width, c.context, c.batch, c.steps, c.device.str().c_str(), corpus.train.size(), corpus.vocab());
  st::Hyper adam;
  adam.lr = 3e-3, adam.beta2 = 0.95, adam.weight_decay = 0.1;
  st::Hyper moga = adam;
  moga.lr = 3e-2;  // row-normalized updates are width-aware: n^{-1/2} per entry
  st::Hyper muon;
  muon.lr = 0.02, muon.beta1 = 0.95, muon.weight_decay = 0.1;
  const double a = train("AdamW", st::adamw(adam), corpus, c);
  const double m = train("MOGA-row", st::moga_row(moga), corpus, c);
  const double u = train("Muon+AdamW", st::muon(muon, adam), corpus, c);
  std::printf("validation loss (nats/byte): AdamW %.3f, MOGA-row %.3f, Muon+AdamW %.3f\n", a, m, u);
  return std::isfinite(a) && std::isfinite(m) && std::isfinite(u) ? 0 : 1;
}
