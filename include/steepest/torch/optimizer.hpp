// steepest/torch/optimizer.hpp -- any steepest optimizer as a torch::optim::Optimizer (libtorch).
//
// Optional: include it only in code that uses libtorch (it includes <torch/torch.h>).
//
//   auto opt = steepest::libtorch::Optimizer(model, st::muon(hp));   // roles from module types
//   ...
//   opt.zero_grad(); loss.backward(); opt.step();
//   torch::save(opt, "opt.pt"); torch::load(opt, "opt.pt");
//
// What it is: a real torch::optim::Optimizer subclass holding a steepest optimizer (plain or
// routed: MOGA-row, Muon + AdamW, Scion, a user chain) and its state. The parameters are not
// copied: the steepest ParamSet points at each tensor's memory (data_ptr), the gradients are read
// where autograd left them, and the step writes the weights in place (their autograd version
// counters are bumped, as torch's own in-place updates do).
//
// Roles (what geometry a tensor gets in a role-based optimizer):
//   - from a module (Optimizer(model, opt)): an Embedding's weight is Role::Embedding; the
//     model's last Linear when its out_features equals an Embedding's vocabulary (only the last:
//     a position table as long as the width must not make every width-out projection a head),
//     or a Linear whose weight's name matches one of
//     RoleRules::output_names ("*head.weight", ...), is Role::Output; other tensors with 2 or more
//     dimensions are Role::Hidden (a conv kernel [out, in, kh, kw] is stepped as the matrix
//     out x (in kh kw)); 1-D and 0-D tensors are Role::Vector;
//     RoleRules::roles overrides any of these by name;
//   - from param groups (Optimizer(groups, opt)): by dimension, or GroupOptions::role for every
//     tensor of the group.
// Param groups: GroupOptions::lr is a factor on the steepest optimizer's learning rates for the
// group's tensors (1 by default). torch's schedulers change it through set_lr, so a StepLR with
// gamma 0.1 turns 1 into 0.1.
//
// What it refuses (std::invalid_argument naming the parameter, before anything changes):
// a parameter that is not a contiguous, dense, float32, CPU tensor, at construction and at every
// step (a parameter whose memory was replaced, e.g. by set_data, is re-pointed if it is still
// acceptable). A parameter without a gradient in a step is skipped, as torch's optimizers skip
// it: its weights and moments stay as they are, no weight decay applies, and its own step count
// (bias corrections) does not advance (Gradients::skip). Non-finite gradients
// follow the steepest optimizer's NonFinitePolicy (Error: steepest::non_finite_error, nothing
// changes).
//
// CUDA tensors: Optimizer<Opt, steepest::cuda::Device> (alias CudaOptimizer<Opt>), from
// <steepest/torch/cuda.cuh> in a translation unit compiled by nvcc against a CUDA build of torch.
// The same class, the same roles and checkpoints; the parameters must all be float32 CUDA tensors
// on one device, and every step is enqueued on torch's current stream of that device (no host
// synchronization, except the 4-byte read of the non-finite check with NonFinitePolicy Error or
// Skip). The Space parameter selects where tensors must live: Host (the default) takes CPU
// tensors only, cuda::Device CUDA tensors only.
//
// torch::save / torch::load store the steepest checkpoint (optim/state_io.hpp: the same bytes
// st::save writes) in the archive under "steepest_state"; load refuses an archive from another
// optimizer or model exactly as st::load refuses a file, and then changes nothing.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../steepest.hpp"

namespace steepest::libtorch {

/// A param group's options: `lr` multiplies the steepest optimizer's learning rates for the
/// group's tensors; `role`, when set, is the role of every tensor of the group.
struct GroupOptions : public ::torch::optim::OptimizerCloneableOptions<GroupOptions> {
  /// A group whose lr is lr_factor times the optimizer's, of role role_ (inferred when empty).
  explicit GroupOptions(double lr_factor = 1.0, std::optional<Role> role_ = std::nullopt)
      : lr(lr_factor), role(role_) {}
  /// The group's learning-rate factor.
  double lr = 1.0;
  /// The group's role, when given.
  std::optional<Role> role;
  /// The learning-rate factor (what torch's schedulers change).
  double get_lr() const override { return lr; }
  /// Sets the learning-rate factor.
  void set_lr(const double v) override { lr = v; }
};

/// How roles are read from a module (see the file comment).
struct RoleRules {
  /// Globs on the full parameter name that make a tensor the output head.
  std::vector<std::string> output_names = {"*head.weight", "*lm_head.weight", "*output.weight",
                                           "*classifier.weight"};
  /// The model's last Linear (in module order), when its out_features equals an Embedding's
  /// num_embeddings, is the output head.
  bool vocab_projection_is_output = true;
  /// Overrides, applied last: every parameter whose full name matches the glob gets the role
  /// (e.g. {"blocks.*.attn.qkv.weight", Role::Hidden}, {"*.pos.weight", Role::Vector}).
  std::vector<std::pair<std::string, Role>> roles;
};

/// One parameter as the adapter sees it.
struct NamedParameter {
  /// The parameter's name.
  std::string name;
  /// The tensor.
  ::torch::Tensor tensor;
  /// Its role.
  Role role;
};

/// Every trainable parameter of `model` with the role its module type and name give it.
inline std::vector<NamedParameter> infer_roles(::torch::nn::Module& model, const RoleRules& rules = {}) {
  std::vector<NamedParameter> out;
  std::vector<std::pair<std::string, std::int64_t>> linear_weights;  // name, out_features
  std::vector<std::int64_t> vocabularies;
  std::vector<std::string> embedding_weights;
  auto visit = [&](const std::string& prefix, ::torch::nn::Module& m) {
    if (const auto* e = m.as<::torch::nn::Embedding>()) {
      vocabularies.push_back(e->options.num_embeddings());
      embedding_weights.push_back(prefix + "weight");
    } else if (const auto* l = m.as<::torch::nn::Linear>()) {
      linear_weights.emplace_back(prefix + "weight", l->options.out_features());
    }
  };
  visit("", model);  // the model itself (named_modules would need it in a shared_ptr)
  for (const auto& item : model.named_modules("", /*include_self=*/false)) visit(item.key() + ".", *item.value());
  auto contains = [](const auto& v, const auto& x) { return std::find(v.begin(), v.end(), x) != v.end(); };
  for (const auto& p : model.named_parameters(/*recurse=*/true)) {
    if (!p.value().requires_grad()) continue;
    const std::string& name = p.key();
    Role role = p.value().dim() >= 2 ? Role::Hidden : Role::Vector;
    if (contains(embedding_weights, name)) role = Role::Embedding;
    if (rules.vocab_projection_is_output && !linear_weights.empty() && linear_weights.back().first == name &&
        contains(vocabularies, linear_weights.back().second))
      role = Role::Output;
    for (const auto& glob : rules.output_names)
      if (role == Role::Hidden && detail::glob_match(glob.c_str(), name.c_str())) role = Role::Output;
    for (const auto& [glob, r] : rules.roles)
      if (detail::glob_match(glob.c_str(), name.c_str())) role = r;
    out.push_back({name, p.value(), role});
  }
  return out;
}

/// torch.optim.Muon's `adjust_lr_fn` names as the library's shape factors: "original" is
/// sqrt(max(1, rows / cols)) (ShapeFactor::MuonMax1), "match_rms_adamw" is 0.2 sqrt(max(rows,
/// cols)) (ShapeFactor::MatchAdamW), "spectral_unclamped" (torch 2.10+) is sqrt(rows / cols)
/// (ShapeFactor::SpectralMuP). All read a weight [out, in] as rows = out, as the library does.
inline ShapeFactor shape_factor_from_torch(std::string_view adjust_lr_fn) {
  if (adjust_lr_fn == "original") return ShapeFactor::MuonMax1;
  if (adjust_lr_fn == "match_rms_adamw") return ShapeFactor::MatchAdamW;
  if (adjust_lr_fn == "spectral_unclamped") return ShapeFactor::SpectralMuP;
  throw std::invalid_argument("steepest::libtorch: adjust_lr_fn '" + std::string(adjust_lr_fn) +
                              "' is not one of torch.optim.Muon's: 'original', 'match_rms_adamw', "
                              "'spectral_unclamped'");
}

/// Where an adapter's tensors live and how a step reaches them. A TensorSpace<Space> has
///   static const char* where;                          // "on the CPU", for messages
///   bool accepts(const torch::Device&) const;           // a parameter's / gradient's device
///   void bind(const torch::Tensor& first);              // at construction: the tensors' device
///   Space space();                                      // the ParamSet's memory space
///   auto enter();                                       // before a step: a guard object (device, stream)
/// This header defines the host one; <steepest/torch/cuda.cuh> the CUDA one.
template <class Space>
struct TensorSpace;

/// CPU tensors.
template <>
struct TensorSpace<Host> {
  /// Where the tensors must be, for messages.
  static constexpr const char* where = "on the CPU";
  /// A CPU tensor.
  bool accepts(const ::torch::Device& d) const { return d.is_cpu(); }
  /// Nothing to bind on the CPU.
  void bind(const ::torch::Tensor&) {}
  /// The host space.
  Host space() const { return {}; }
  /// Nothing to enter on the CPU.
  int enter() const { return 0; }
};

/// A steepest optimizer `Opt` (Optimizer<Chain> or Routed<...>) as a torch::optim::Optimizer,
/// stepping tensors in memory space `Space` (Host: CPU tensors; cuda::Device: CUDA tensors, see
/// <steepest/torch/cuda.cuh>).
template <class Opt, class Space = Host>
class Optimizer : public ::torch::optim::Optimizer {
 public:
  /// The steepest state behind this torch optimizer.
  using State = typename Opt::template State<float, Space>;

  /// Every trainable parameter of `model`, roles from module types and names (infer_roles).
  Optimizer(::torch::nn::Module& model, Opt opt, const RoleRules& rules = {})
      : Optimizer(infer_roles(model, rules), std::move(opt)) {}

  /// Named parameters with their roles, in one param group.
  Optimizer(std::vector<NamedParameter> params, Opt opt)
      : ::torch::optim::Optimizer({::torch::optim::OptimizerParamGroup(tensors_of(params))},
                                  std::make_unique<GroupOptions>()),
        opt_(std::move(opt)) {
    for (auto& p : params) entries_.push_back({std::move(p), 0});
    build();
  }

  /// Param groups; each group's GroupOptions (if any) gives its learning-rate factor and role.
  /// Tensors are named "group<g>.<i>" in messages and checkpoints.
  Optimizer(std::vector<::torch::optim::OptimizerParamGroup> groups, Opt opt)
      : ::torch::optim::Optimizer(groups, std::make_unique<GroupOptions>()), opt_(std::move(opt)) {
    for (std::size_t g = 0; g < param_groups_.size(); ++g) {
      const auto* o = dynamic_cast<const GroupOptions*>(
          groups[g].has_options() ? &groups[g].options() : &param_groups_[g].options());
      if (!o) throw std::invalid_argument("steepest::libtorch: param group " + std::to_string(g) +
                                          " has options that are not steepest::libtorch::GroupOptions");
      // torch >= 2.10 starts every group from the defaults and merges in only the fields of its
      // own optimizers' options, so a group's GroupOptions would arrive as the defaults: set the
      // group's own again (torch 1.13 copied them; this is the same result there).
      param_groups_[g].set_options(std::make_unique<GroupOptions>(*o));
      o = static_cast<const GroupOptions*>(&param_groups_[g].options());
      const auto& ps = param_groups_[g].params();
      for (std::size_t i = 0; i < ps.size(); ++i) {
        const Role role = o->role ? *o->role : (ps[i].dim() >= 2 ? Role::Hidden : Role::Vector);
        entries_.push_back({{"group" + std::to_string(g) + "." + std::to_string(i), ps[i], role}, g});
      }
    }
    build();
  }

  /// Steps every parameter; with a closure, evaluates it first (grad mode on) and returns its loss.
  ::torch::Tensor step(LossClosure closure = nullptr) override {
    ::torch::Tensor loss;
    if (closure) {
      ::torch::AutoGradMode grad_on(true);
      loss = closure();
    }
    ::torch::NoGradGuard no_grad;
    [[maybe_unused]] const auto entered = tensors_.enter();  // the device and its current stream
    bool moved = false;
    for (const auto& e : entries_) {
      check_tensor(e.name, e.tensor);
      moved = moved || e.tensor.template data_ptr<float>() != params_[e.layer].data;
    }
    if (moved) build_param_set();  // a parameter's memory was replaced: point at the new one
    std::vector<::torch::Tensor> keep;  // contiguous copies of non-contiguous gradients live here
    keep.reserve(entries_.size());
    Gradients<float, Space> grads;
    for (const auto& e : entries_) {
      ::torch::Tensor g = e.tensor.grad();
      if (!g.defined()) {
        grads.skip();
        continue;
      }
      if (g.is_sparse() || g.scalar_type() != ::torch::kFloat32 || g.device() != e.tensor.device() ||
          g.sizes() != e.tensor.sizes())
        throw std::invalid_argument("steepest::libtorch: parameter '" + e.name +
                                    "': its gradient is not a dense float32 tensor of its shape on its device");
      g = g.contiguous();  // on the current stream: the step that reads it is enqueued after
      keep.push_back(g);
      grads.add(keep.back().template data_ptr<float>(), params_[e.layer].rows, params_[e.layer].cols);
    }
    for (const auto& e : entries_) params_[e.layer].lr_scale = param_groups_[e.group].options().get_lr();
    opt_.step(params_, grads, state_);
    for (const auto& e : entries_)
      if (e.tensor.grad().defined()) ::torch::autograd::impl::bump_version(e.tensor);
    return loss;
  }

  /// The steepest checkpoint of the state, under "steepest_state" (see the file comment).
  void save(::torch::serialize::OutputArchive& archive) const override {
    std::string bytes = steepest::save_bytes(opt_, state_);
    archive.write("steepest_state",
                  ::torch::from_blob(bytes.data(), {std::int64_t(bytes.size())}, ::torch::kUInt8).clone());
  }
  /// Replaces the state with the archive's; refuses (steepest::state_file_error) and changes
  /// nothing if the archive holds no steepest state or one of another optimizer or model.
  void load(::torch::serialize::InputArchive& archive) override {
    ::torch::Tensor t;
    if (!archive.try_read("steepest_state", t))
      throw state_file_error("torch archive: no \"steepest_state\" (saved by another optimizer?)");
    t = t.contiguous();
    if (t.scalar_type() != ::torch::kUInt8 || t.dim() != 1)
      throw state_file_error("torch archive: \"steepest_state\" is not a byte tensor");
    steepest::load_bytes(opt_, state_,
                         std::string_view(reinterpret_cast<const char*>(t.template data_ptr<std::uint8_t>()), std::size_t(t.numel())),
                         "torch archive");
  }

  /// The steepest optimizer (its hyper-parameters, roles), its state, and the parameter set.
  Opt& steepest_optimizer() { return opt_; }
  /// The steepest state (checkpoints: st::save).
  State& steepest_state() { return state_; }
  /// The parameter set it steps.
  const ParamSet<float, Space>& param_set() const { return params_; }
  /// Where the tensors live (for cuda::Device: the device and its cuda::Context).
  TensorSpace<Space>& tensor_space() { return tensors_; }
  /// The parameters with their names and roles, in step order.
  std::vector<NamedParameter> named_parameters() const {
    std::vector<NamedParameter> out;
    for (const auto& e : entries_) out.push_back(e);
    return out;
  }

 private:
  struct Entry : NamedParameter {
    std::size_t group = 0;
    std::size_t layer = 0;
  };
  Opt opt_;
  std::vector<Entry> entries_;
  TensorSpace<Space> tensors_;
  ParamSet<float, Space> params_;
  mutable State state_;  // save() is const in torch's interface; the steepest save visits the state

  static std::vector<::torch::Tensor> tensors_of(const std::vector<NamedParameter>& ps) {
    std::vector<::torch::Tensor> t;
    for (const auto& p : ps) t.push_back(p.tensor);
    return t;
  }
  void check_tensor(const std::string& name, const ::torch::Tensor& t) const {
    auto refuse = [&](const std::string& why) {
      throw std::invalid_argument("steepest::libtorch: parameter '" + name + "' " + why);
    };
    if (t.is_sparse()) refuse("is sparse; only dense tensors are supported");
    if (!tensors_.accepts(t.device()))
      refuse("is on " + t.device().str() + "; this adapter steps tensors " + TensorSpace<Space>::where +
             (is_host_v<Space> ? " (CUDA tensors: steepest::libtorch::CudaOptimizer, <steepest/torch/cuda.cuh>)" : ""));
    if (t.scalar_type() != ::torch::kFloat32) refuse("is not float32");
    if (!t.is_contiguous()) refuse("is not contiguous (the update is written in place; make the parameter contiguous)");
  }
  /// rows x cols of a tensor stepped as a matrix: [d] -> d x 1, [out, ...] -> out x rest, [] -> 1 x 1.
  static std::pair<Index, Index> matrix_shape(const ::torch::Tensor& t) {
    if (t.dim() == 0) return {1, 1};
    const Index rows = t.size(0);
    return {rows, rows == 0 ? 0 : Index(t.numel()) / rows};
  }
  void build_param_set() {
    ParamSet<float, Space> ps(tensors_.space());
    for (auto& e : entries_) {
      const auto [rows, cols] = matrix_shape(e.tensor);
      auto& l = e.role == Role::Vector ? ps.add_vector(e.name, e.tensor.template data_ptr<float>(), rows * cols)
                                       : ps.add(e.name, e.role, e.tensor.template data_ptr<float>(), rows, cols);
      (void)l;
      e.layer = ps.size() - 1;
    }
    params_ = std::move(ps);
  }
  void build() {
    if (!entries_.empty()) tensors_.bind(entries_.front().tensor);
    for (const auto& e : entries_) check_tensor(e.name, e.tensor);
    [[maybe_unused]] const auto entered = tensors_.enter();
    build_param_set();
    state_ = opt_.init(params_);
  }
};

/// The adapter for `model`'s trainable parameters (deduces Opt): libtorch::make_optimizer(model, st::muon(hp)).
template <class Opt>
Optimizer<Opt> make_optimizer(::torch::nn::Module& model, Opt opt, const RoleRules& rules = {}) {
  return Optimizer<Opt>(model, std::move(opt), rules);
}

}  // namespace steepest::libtorch
