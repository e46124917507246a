// The libtorch adapter (steepest/torch/optimizer.hpp). References: the library's own step on
// copies of the same tensors (bitwise), torch::optim::AdamW (float tolerance), an uninterrupted
// run (bitwise), torch.optim.Muon's documented adjust_lr_fn formulas.
#include <steepest/torch/optimizer.hpp>
// libtorch brings glog, whose CHECK(cond) aborts; doctest's CHECK must be the one used here.
#undef CHECK
#include <doctest/doctest.h>

#include <cmath>
#include <sstream>
#include <string>
#include <vector>

namespace st = steepest;
namespace lt = steepest::libtorch;

namespace {

struct TinyNetImpl : torch::nn::Module {
  torch::nn::Embedding emb{nullptr};
  torch::nn::Linear h{nullptr}, proj{nullptr};
  torch::nn::LayerNorm ln{nullptr};
  torch::nn::Conv1d conv{nullptr};
  explicit TinyNetImpl(int vocab = 11, int d = 8) {
    emb = register_module("emb", torch::nn::Embedding(vocab, d));
    conv = register_module("conv", torch::nn::Conv1d(torch::nn::Conv1dOptions(d, d, 3).padding(1)));
    h = register_module("h", torch::nn::Linear(d, d));
    ln = register_module("ln", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})));
    proj = register_module("proj", torch::nn::Linear(torch::nn::LinearOptions(d, vocab).bias(false)));
  }
  torch::Tensor forward(const torch::Tensor& idx) {
    auto x = emb(idx);                                        // [B, T, d]
    x = x + conv(x.transpose(1, 2)).transpose(1, 2);
    x = x + torch::gelu(h(x));
    return proj(ln(x));
  }
};
TORCH_MODULE(TinyNet);

/// A loss whose gradient reaches every parameter; different data at every step.
torch::Tensor loss_of(TinyNet& net, int step) {
  const auto idx = (torch::arange(24).reshape({3, 8}) * (step + 2) + step) % 11;
  const auto target = (idx * 3 + 1) % 11;
  return torch::nn::functional::cross_entropy(net->forward(idx).reshape({-1, 11}), target.reshape({-1}));
}

/// Copies of every parameter's values (bitwise comparisons).
std::vector<std::vector<float>> values(torch::nn::Module& m) {
  std::vector<std::vector<float>> out;
  for (const auto& p : m.parameters()) {
    const auto c = p.detach().contiguous();
    out.emplace_back(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
  }
  return out;
}

void copy_weights(TinyNet& from, TinyNet& to) {
  torch::NoGradGuard g;
  auto a = from->parameters(), b = to->parameters();
  for (std::size_t i = 0; i < a.size(); ++i) b[i].copy_(a[i]);
}

}  // namespace

TEST_CASE("roles come from module types and names; conv kernels become matrices") {
  torch::manual_seed(1);
  TinyNet net;
  lt::Optimizer opt(*net, st::moga_row());
  std::map<std::string, st::Role> roles;
  for (const auto& p : opt.named_parameters()) roles[p.name] = p.role;
  CHECK(roles.at("emb.weight") == st::Role::Embedding);
  CHECK(roles.at("conv.weight") == st::Role::Hidden);
  CHECK(roles.at("conv.bias") == st::Role::Vector);
  CHECK(roles.at("h.weight") == st::Role::Hidden);
  CHECK(roles.at("h.bias") == st::Role::Vector);
  CHECK(roles.at("ln.weight") == st::Role::Vector);
  CHECK(roles.at("proj.weight") == st::Role::Output);  // out_features == the embedding's vocabulary
  const auto& conv = opt.param_set().at("conv.weight");
  CHECK(conv.rows == 8);
  CHECK(conv.cols == 8 * 3);
  // By name: a Linear called "head" is the output even without an embedding of its width.
  struct Named : torch::nn::Module {
    Named() {
      register_module("body", torch::nn::Linear(4, 4));
      register_module("head", torch::nn::Linear(4, 3));
    }
  } named;
  lt::Optimizer o2(named, st::adamw());
  CHECK(o2.named_parameters()[2].name == "head.weight");
  CHECK(o2.named_parameters()[2].role == st::Role::Output);
  CHECK(o2.named_parameters()[0].role == st::Role::Hidden);
  // Overrides by name, applied last.
  lt::RoleRules rules;
  rules.roles = {{"body.*", st::Role::Embedding}, {"head.weight", st::Role::Hidden}};
  lt::Optimizer o3(named, st::adamw(), rules);
  CHECK(o3.named_parameters()[0].role == st::Role::Embedding);
  CHECK(o3.named_parameters()[1].role == st::Role::Embedding);  // body.bias: a vector made an embedding
  CHECK(o3.named_parameters()[2].role == st::Role::Hidden);
  // A position table as long as the width: only the last Linear can be the vocabulary's head,
  // not every projection back to the width.
  struct WithPositions : torch::nn::Module {
    WithPositions() {
      register_module("tok", torch::nn::Embedding(10, 8));
      register_module("pos", torch::nn::Embedding(8, 8));
      register_module("up", torch::nn::Linear(8, 32));
      register_module("down", torch::nn::Linear(32, 8));
      register_module("unembed", torch::nn::Linear(8, 10));
    }
  } positions;
  lt::Optimizer o4(positions, st::adamw());
  std::map<std::string, st::Role> r4;
  for (const auto& p : o4.named_parameters()) r4[p.name] = p.role;
  CHECK(r4.at("down.weight") == st::Role::Hidden);
  CHECK(r4.at("unembed.weight") == st::Role::Output);
}

TEST_CASE("the adapter's step is the library's step on the same tensors, bit for bit") {
  auto check = [](const char* what, auto make) {
    CAPTURE(what);
    torch::manual_seed(7);
    TinyNet net;
    lt::Optimizer opt(*net, make());
    // The library on copies: the same names, roles, shapes and gradients.
    std::vector<std::vector<float>> w = values(*net);
    st::ParamSet<float> ps;
    const auto named = opt.named_parameters();
    for (std::size_t i = 0; i < named.size(); ++i) {
      const auto& l = opt.param_set()[i];
      if (named[i].role == st::Role::Vector) ps.add_vector(named[i].name, w[i].data(), l.rows * l.cols);
      else ps.add(named[i].name, named[i].role, w[i].data(), l.rows, l.cols);
    }
    auto lib = make();
    auto state = lib.init(ps);
    for (int t = 0; t < 4; ++t) {
      opt.zero_grad();
      loss_of(net, t).backward();
      std::vector<std::vector<float>> g;
      st::Gradients<float> G;
      for (std::size_t i = 0; i < named.size(); ++i) {
        const auto gi = named[i].tensor.grad().contiguous();
        const float* gp = gi.template data_ptr<float>();
        g.emplace_back(gp, gp + gi.numel());
      }
      for (std::size_t i = 0; i < named.size(); ++i) G.add(g[i].data(), ps[i].rows, ps[i].cols);
      opt.step();
      lib.step(ps, G, state);
    }
    CHECK(values(*net) == w);
    CHECK(opt.steepest_state().step == 4);
  };
  st::Hyper hp;
  hp.lr = 0.02;
  hp.weight_decay = 0.1;
  check("MOGA-row", [&] { return st::moga_row(hp); });
  check("Muon + AdamW", [&] { return st::muon(hp); });
  check("Scion", [&] { return st::scion(hp); });
  check("a user chain", [&] {
    using NesterovRows = st::Chain<st::Momentum<st::MomentumKind::Nesterov>, st::Dualize<st::MeanNormalized<st::RowNorm<2>>>,
                                   st::DecoupledStep>;
    return st::Optimizer<NesterovRows>(hp);
  });
}

TEST_CASE("AdamW through the adapter agrees with torch::optim::AdamW") {
  torch::manual_seed(3);
  TinyNet a, b;
  copy_weights(a, b);
  const double lr = 0.01, b1 = 0.9, b2 = 0.99, eps = 1e-8, wd = 0.1;
  torch::optim::AdamW ref(b->parameters(), torch::optim::AdamWOptions(lr).betas({b1, b2}).eps(eps).weight_decay(wd));
  st::Hyper hp;
  hp.lr = lr, hp.beta1 = b1, hp.beta2 = b2, hp.eps = eps, hp.weight_decay = wd;
  lt::Optimizer opt(*a, st::adamw(hp));
  for (int t = 0; t < 10; ++t) {
    opt.zero_grad();
    loss_of(a, t).backward();
    opt.step();
    ref.zero_grad();
    loss_of(b, t).backward();
    ref.step();
  }
  const auto pa = a->parameters(), pb = b->parameters();
  double worst = 0;
  for (std::size_t i = 0; i < pa.size(); ++i)
    worst = std::max(worst, (pa[i] - pb[i]).abs().max().item<double>() / (pb[i].abs().max().item<double>() + 1e-12));
  MESSAGE("largest difference to torch::optim::AdamW after 10 steps, relative to the tensor's max: " << worst);
  CHECK(worst < 2e-5);
}

TEST_CASE("a parameter without a gradient is skipped, as torch::optim::AdamW skips it") {
  // h's weight and the embedding have no gradient at steps 3 and 4 (frozen for two steps): both
  // optimizers leave them, their moments and their step counts alone.
  torch::manual_seed(5);
  TinyNet a, b;
  copy_weights(a, b);
  torch::optim::AdamW ref(b->parameters(), torch::optim::AdamWOptions(0.01).betas({0.9, 0.99}).weight_decay(0.1));
  st::Hyper hp;
  hp.lr = 0.01, hp.beta1 = 0.9, hp.beta2 = 0.99, hp.weight_decay = 0.1;
  lt::Optimizer opt(*a, st::adamw(hp));
  for (int t = 0; t < 8; ++t) {
    opt.zero_grad();
    loss_of(a, t).backward();
    ref.zero_grad();
    loss_of(b, t).backward();
    const bool frozen = t == 3 || t == 4;
    if (frozen)
      for (TinyNet* n : {&a, &b}) {
        (*n)->h->weight.mutable_grad() = torch::Tensor();
        (*n)->emb->weight.mutable_grad() = torch::Tensor();
      }
    const auto before = a->h->weight.detach().clone(), emb_before = a->emb->weight.detach().clone();
    opt.step();
    ref.step();
    CHECK(torch::equal(a->h->weight, before) == frozen);
    CHECK(torch::equal(a->emb->weight, emb_before) == frozen);
  }
  const auto pa = a->parameters(), pb = b->parameters();
  double worst = 0;
  for (std::size_t i = 0; i < pa.size(); ++i)
    worst = std::max(worst, (pa[i] - pb[i]).abs().max().item<double>() / (pb[i].abs().max().item<double>() + 1e-12));
  MESSAGE("with skipped parameters, largest difference to torch::optim::AdamW after 8 steps: " << worst);
  CHECK(worst < 2e-5);
}

TEST_CASE("torch::save -> torch::load -> continue equals an uninterrupted run; a foreign archive is refused") {
  torch::manual_seed(5);
  TinyNet a, b;
  copy_weights(a, b);
  st::Hyper hp;
  hp.lr = 0.02;
  lt::Optimizer oa(*a, st::muon(hp));
  for (int t = 0; t < 3; ++t) {
    oa.zero_grad();
    loss_of(a, t).backward();
    oa.step();
  }
  std::stringstream archive;
  torch::save(oa, archive);
  copy_weights(a, b);
  lt::Optimizer ob(*b, st::muon(hp));
  torch::load(ob, archive);
  CHECK(ob.steepest_state().step == 3);
  for (int t = 3; t < 6; ++t) {
    for (auto* o : {&oa, &ob}) o->zero_grad();
    loss_of(a, t).backward();
    loss_of(b, t).backward();
    oa.step();
    ob.step();
  }
  CHECK(values(*a) == values(*b));
  // An archive of another optimizer: refused, the state unchanged.
  lt::Optimizer oc(*b, st::moga_row(hp));
  oc.zero_grad();
  loss_of(b, 0).backward();
  oc.step();
  std::stringstream again;
  torch::save(oa, again);
  CHECK_THROWS_WITH_AS(torch::load(oc, again), doctest::Contains("saved by optimizer"), st::state_file_error);
  CHECK(oc.steepest_state().step == 1);
  std::stringstream empty;
  {
    torch::serialize::OutputArchive ar;
    ar.write("something_else", torch::ones({1}));
    ar.save_to(empty);
  }
  CHECK_THROWS_WITH_AS(torch::load(oc, empty), doctest::Contains("no \"steepest_state\""), st::state_file_error);
}

TEST_CASE("bad tensors are refused with the parameter's name, and nothing changes") {
  auto refused = [](torch::Tensor t, const char* why) {
    CAPTURE(why);
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(std::vector<torch::Tensor>{torch::zeros({2, 2}, torch::requires_grad()), t});
    CHECK_THROWS_WITH_AS(lt::Optimizer(std::move(groups), st::adamw()), doctest::Contains((std::string("'group0.1' ") + why).c_str()),
                         std::invalid_argument);
  };
  refused(torch::randn({3, 4}).t().requires_grad_(), "is not contiguous");
  refused(torch::randn({3, 4}, torch::kFloat64).requires_grad_(), "is not float32");
  refused(torch::eye(3).to_sparse().requires_grad_(), "is sparse");

  // A parameter whose memory is replaced by a double tensor: the step refuses before any write.
  torch::manual_seed(11);
  TinyNet net;
  lt::Optimizer opt(*net, st::adamw());
  opt.zero_grad();
  loss_of(net, 0).backward();
  opt.step();
  const auto before = values(*net);
  {
    torch::NoGradGuard g;
    net->h->bias.set_data(net->h->bias.to(torch::kFloat64));
  }
  opt.zero_grad();
  loss_of(net, 1).backward();
  CHECK_THROWS_WITH_AS(opt.step(), doctest::Contains("'h.bias' is not float32"), std::invalid_argument);
  CHECK(opt.steepest_state().step == 1);
  {
    torch::NoGradGuard g;
    net->h->bias.set_data(net->h->bias.to(torch::kFloat32));  // new memory, acceptable again
  }
  // A NaN gradient: steepest's non-finite policy refuses the step; nothing changes.
  auto vals = values(*net);
  opt.zero_grad();
  loss_of(net, 1).backward();
  net->h->weight.grad()[0][0] = std::nanf("");
  CHECK_THROWS_AS(opt.step(), st::non_finite_error);
  CHECK(values(*net) == vals);
  CHECK(opt.steepest_state().step == 1);
  // After the re-pointing, steps reach the new memory of h.bias.
  opt.zero_grad();
  loss_of(net, 2).backward();
  opt.step();
  CHECK(opt.steepest_state().step == 2);
  CHECK(values(*net) != vals);
  (void)before;
}

TEST_CASE("param groups: a group's lr is a factor on the optimizer's learning rate (schedulers set it)") {
  // Sign descent moves every entry by exactly lr * factor (no weight decay).
  torch::Tensor a = torch::zeros({2, 3}, torch::requires_grad()), b = torch::zeros({4}, torch::requires_grad());
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<torch::Tensor>{a}, std::make_unique<lt::GroupOptions>(1.0));
  groups.emplace_back(std::vector<torch::Tensor>{b}, std::make_unique<lt::GroupOptions>(0.5, st::Role::Hidden));
  st::Hyper hp;
  hp.lr = 0.1;
  lt::Optimizer opt(std::move(groups), st::sign_descent(hp));
  CHECK(opt.named_parameters()[1].role == st::Role::Hidden);
  a.mutable_grad() = torch::ones({2, 3});
  b.mutable_grad() = -torch::ones({4});
  opt.step();
  CHECK(a.max().item<float>() == doctest::Approx(-0.1f));
  CHECK(b.min().item<float>() == doctest::Approx(0.05f));
  opt.param_groups()[1].options().set_lr(0.25);  // what torch's LR schedulers do
  opt.step();
  CHECK(b.min().item<float>() == doctest::Approx(0.05f + 0.025f));
}

TEST_CASE("torch.optim.Muon's adjust_lr_fn names map to the library's shape factors") {
  // torch.optim.Muon, for a weight [A, B]: "original" scales by max(1, A / B)^0.5,
  // "match_rms_adamw" by 0.2 * max(A, B)^0.5, "spectral_unclamped" by (A / B)^0.5.
  for (auto [A, B] : {std::pair<double, double>{6, 3}, {3, 6}, {4, 4}}) {
    CHECK(st::shape_factor_value(lt::shape_factor_from_torch("original"), A, B) ==
          doctest::Approx(std::sqrt(std::max(1.0, A / B))));
    CHECK(st::shape_factor_value(lt::shape_factor_from_torch("match_rms_adamw"), A, B) ==
          doctest::Approx(0.2 * std::sqrt(std::max(A, B))));
    CHECK(st::shape_factor_value(lt::shape_factor_from_torch("spectral_unclamped"), A, B) ==
          doctest::Approx(std::sqrt(A / B)));
  }
  CHECK_THROWS_WITH_AS(lt::shape_factor_from_torch("unit"), doctest::Contains("'original', 'match_rms_adamw'"),
                       std::invalid_argument);
}
