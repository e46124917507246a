// steepest._core's shared part: the hyper-parameters as Python sets them, the geometries by
// name, and Core, one named optimizer over one list of parameters (CoreOf<Opt, Space>) in CPU
// memory or, in a build with CUDA, on one GPU. Nothing here names nanobind or Python, so the CUDA
// translation units (cuda_*.cu, compiled by nvcc) share it with the host ones; core.cpp binds
// it. The module is split into translation units (core.cpp, make_*.cpp, geometries.cpp,
// cuda_*.cu) that a parallel build compiles at once: each optimizer family's instantiations are
// its own file.
#pragma once

#include <steepest/steepest.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <tuple>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace st = steepest;

namespace steepest_python {

/// A gradient's dtype is neither float32 nor bfloat16, or one step mixes the two (Python:
/// TypeError).
struct dtype_error : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

/// A gradient as the step reads it: its first element, or null for a tensor skipped this step,
/// and its dtype (bfloat16, else float32). step_refs refuses a step that mixes the two.
struct GradRef {
  const void* data = nullptr;
  bool bf16 = false;
};

/// A tensor as a matrix: rows = the first dimension, cols = the product of the others (a conv
/// kernel [out, in, kh, kw] is the matrix out x (in kh kw); a 1-D tensor n x 1, a 0-D one 1 x 1).
struct Shape {
  st::Index rows = 1, cols = 1;
};
template <class A>
Shape shape_of(const A& a) {
  Shape s;
  if (a.ndim() == 0) return s;
  s.rows = st::Index(a.shape(0));
  for (std::size_t d = 1; d < a.ndim(); ++d) s.cols *= st::Index(a.shape(d));
  return s;
}

/// The value named `name` in `table`, or an error listing the names (`what` says what it is).
template <class T, std::size_t N>
T by_name(const std::string& name, const std::pair<const char*, T> (&table)[N], const char* what) {
  std::string names;
  for (const auto& [n, v] : table) {
    if (name == n) return v;
    names += (names.empty() ? "" : ", ") + std::string(n);
  }
  throw std::invalid_argument("unknown " + std::string(what) + " '" + name + "' (" + names + ")");
}

/// A parameter as the core takes it: its first element (CPU or device memory, float32,
/// contiguous: checked by the caller) and its shape as a matrix.
struct ParamRef {
  float* data = nullptr;
  Shape shape;
};

/// The matrix a tensor of role `role` is stepped as: a vector's entries are one column.
inline Shape layer_shape(Shape s, st::Role role) {
  if (role == st::Role::Vector) s = {s.rows * s.cols, 1};
  return s;
}

inline st::Role role_of(const std::string& r) {
  static constexpr std::pair<const char*, st::Role> table[] = {
      {"hidden", st::Role::Hidden}, {"embedding", st::Role::Embedding}, {"output", st::Role::Output},
      {"vector", st::Role::Vector}};
  return by_name(r, table, "role");
}

/// The hyper-parameters a Python caller sets, as numbers (the shape factor as its name).
struct PyHyper {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  std::string shape_factor = "none";
  std::string on_non_finite = "error";
  st::Hyper get() const {
    static constexpr std::pair<const char*, st::ShapeFactor> shapes[] = {
        {"muon", st::ShapeFactor::MuonMax1}, {"match_adamw", st::ShapeFactor::MatchAdamW},
        {"spectral_mup", st::ShapeFactor::SpectralMuP}, {"none", st::ShapeFactor::None}};
    static constexpr std::pair<const char*, st::NonFinitePolicy> policies[] = {
        {"error", st::NonFinitePolicy::Error}, {"skip", st::NonFinitePolicy::Skip},
        {"unchecked", st::NonFinitePolicy::Unchecked}};
    st::Hyper h;
    h.lr = lr, h.beta1 = beta1, h.beta2 = beta2, h.eps = eps, h.weight_decay = weight_decay;
    h.shape_factor = by_name(shape_factor, shapes, "shape factor");
    h.on_non_finite = by_name(on_non_finite, policies, "on_non_finite");
    return h;
  }
};

/// Sets the coefficients a step reads (not lr: the step's factor carries the schedule).
inline void set_coefficients(st::Hyper& h, const PyHyper& p) {
  h.beta1 = p.beta1, h.beta2 = p.beta2, h.eps = p.eps, h.weight_decay = p.weight_decay;
}

// ---- the geometries on their own: D(G), ||W|| and ||G||_* of one array ----------------------

template <class S>
using RowMap = Eigen::Map<st::RowMatrix<S>>;

/// One policy's functions over arrays, for float and double.
struct GeometryFns {
  st::Geometry handle;  ///< the run-time handle a layer's geometry override takes
  std::string (*name)();
  void (*dualize_f)(const float*, float*, st::Index, st::Index);
  void (*dualize_d)(const double*, double*, st::Index, st::Index);
  double (*value_f)(const float*, st::Index, st::Index);
  double (*value_d)(const double*, st::Index, st::Index);
  double (*dual_f)(const float*, st::Index, st::Index);
  double (*dual_d)(const double*, st::Index, st::Index);
};

/// The geometry called `name` (mean-normalized when `mean`, or when the name starts with
/// "mean_"): the policies of docs/GEOMETRY.md (geometries.cpp).
GeometryFns geometry_fns(std::string name, bool mean);

/// One optimizer over one list of parameters (type-erased over the optimizer's type and the
/// memory space of its tensors).
class Core {
 public:
  virtual ~Core() = default;
  /// The parameters at new addresses (a tensor whose storage moved), with their shapes as
  /// matrices; every shape is checked against the optimizer's before any address changes.
  virtual void rebind(const std::vector<ParamRef>& params) = 0;
  /// One step on gradients already checked (shape: the parameter's; layout: dense and
  /// contiguous; memory: the parameters'; dtype: float32 or bfloat16), at the parameters'
  /// addresses. `lr_factor` multiplies every layer's learning rate (the schedule's factor);
  /// `hp` and `adamw_hp` replace the coefficients; a null gradient leaves its tensor, and its
  /// state and step count, as they are. One step takes one gradient dtype: a mix is refused
  /// before anything is stepped. False when skipped (on_non_finite = "skip").
  virtual bool step_refs(const std::vector<GradRef>& grads, double lr_factor, const PyHyper& hp,
                         const PyHyper& adamw_hp) = 0;
  /// Steps taken.
  virtual long long steps() const = 0;
  /// Tensors stepped; tensor i's shape as the optimizer steps it, its name, and where its
  /// values are (the address the next step writes).
  virtual std::size_t size() const = 0;
  virtual Shape shape(std::size_t i) const = 0;
  virtual const std::string& tensor_name(std::size_t i) const = 0;
  virtual std::uintptr_t address(std::size_t i) const = 0;
  /// The CUDA device the tensors and the state are on; -1 for CPU memory.
  virtual int device() const = 0;
  /// The stream (a cudaStream_t) the next steps are enqueued on: torch's current stream. The
  /// first step after a change waits for the work enqueued on the previous one. CPU: ignored.
  virtual void use_stream(std::uintptr_t stream) = 0;
  /// Seconds the last step spent in the library's step itself (what the crossing from Python
  /// adds is a step's time less this; on a GPU, the time to enqueue it).
  virtual double last_step_seconds() const = 0;
  /// The chain(s) the optimizer runs.
  virtual std::string name() const = 0;
  /// The state to / from a checkpoint in the library's safetensors layout (a file, or its
  /// bytes). Loading copies into the state's buffers, so views of them stay valid.
  virtual void save(const std::string& path) = 0;
  virtual void load(const std::string& path) = 0;
  virtual std::string save_bytes() = 0;
  virtual void load_bytes(std::string_view file) = 0;
  /// Tensor i's own step count (steps less those it had no gradient), and its state buffers:
  /// (key, address, rows, columns), float32, in device() memory, alive as long as this object.
  virtual std::pair<long long, std::vector<std::tuple<std::string, std::uintptr_t, std::size_t, std::size_t>>>
  layer_state(std::size_t i) = 0;
  /// Each layer's operator norm in its geometry: (name, geometry, value).
  virtual std::vector<std::tuple<std::string, std::string, double>> operator_norms() const = 0;
};

/// What a Core is made from: the tensors' names, roles, geometry overrides ("" for none) and
/// parameters; for device memory, the CUDA device and the stream to start on.
struct MakeArgs {
  const std::vector<std::string>& names;
  const std::vector<std::string>& roles;
  const std::vector<std::string>& geometries;
  const std::vector<ParamRef>& params;
  int device = -1;
  std::uintptr_t stream = 0;
};

/// How a Core reaches its memory space: `space()` for its ParamSet, `enter()` for the scope of
/// a call that touches the memory, `copy` between two of its buffers. Where<st::Host> needs
/// nothing; Where<st::cuda::Device> (cuda_where.cuh) holds the device and a cuda::Context.
template <class Space>
class Where;
template <>
class Where<st::Host> {
 public:
  explicit Where(const MakeArgs&) {}
  st::Host space() const { return {}; }
  int device() const { return -1; }
  void use_stream(std::uintptr_t) {}
  struct Entered {};
  Entered enter() const { return {}; }
  static void copy(float* to, const float* from, std::size_t n) { std::copy(from, from + n, to); }
};

/// Whether an optimizer applies its layers' geometries (a chain with a transform stating
/// applies_geometry, in any route): only then does a geometry override change its steps.
template <class C>
struct chain_applies_geometry : std::false_type {};
template <class... Ts>
struct chain_applies_geometry<st::Chain<Ts...>> : std::bool_constant<(st::detail::applies_geometry_v<Ts> || ...)> {};
template <class Opt>
struct applies_geometry : chain_applies_geometry<typename Opt::chain> {};
template <class... Os>
struct applies_geometry<st::Routed<Os...>> : std::bool_constant<(applies_geometry<Os>::value || ...)> {};

template <class Opt, class Space = st::Host>
class CoreOf final : public Core {
 public:
  explicit CoreOf(Opt opt, const MakeArgs& a) : where_(a), opt_(std::move(opt)), set_(where_.space()) {
    const std::size_t n = a.params.size();
    if (a.names.size() != n || a.roles.size() != n || a.geometries.size() != n)
      throw std::invalid_argument("steepest: names, roles, geometries and parameters differ in number");
    for (std::size_t i = 0; i < n; ++i) {
      const st::Role role = role_of(a.roles[i]);
      const Shape s = layer_shape(a.params[i].shape, role);
      set_.add(a.names[i], role, a.params[i].data, s.rows, s.cols);
      if (a.geometries[i].empty()) continue;
      if (!applies_geometry<Opt>::value)
        throw std::invalid_argument("steepest: '" + a.names[i] + "' is given geometry '" + a.geometries[i] + "', but " +
                                    opt_.name() + " applies no geometry (choose a kind that does: sign_descent, "
                                    "muon_scion, scion, scion_unconstrained, the Muon family)");
      set_[set_.size() - 1].geometry = geometry_fns(a.geometries[i], false).handle;
    }
    [[maybe_unused]] const auto on = where_.enter();
    state_ = opt_.init(set_);
  }

  void rebind(const std::vector<ParamRef>& params) override {
    if (params.size() != set_.size())
      throw std::invalid_argument("steepest: " + std::to_string(params.size()) + " parameters for " +
                                  std::to_string(set_.size()));
    for (std::size_t i = 0; i < set_.size(); ++i) {  // all checked before any address changes
      const Shape s = layer_shape(params[i].shape, set_[i].role);
      if (s.rows != set_[i].rows || s.cols != set_[i].cols)
        throw st::shape_error("parameter '" + set_[i].name + "': its shape changed since the optimizer was made");
    }
    for (std::size_t i = 0; i < set_.size(); ++i) set_[i].data = params[i].data;
  }
  bool step_refs(const std::vector<GradRef>& grads, double lr_factor, const PyHyper& hp,
                 const PyHyper& adamw_hp) override {
    if (grads.size() != set_.size())
      throw std::invalid_argument("steepest: the step got " + std::to_string(grads.size()) + " gradients for " +
                                  std::to_string(set_.size()) + " parameters");
    bool any32 = false, any16 = false;
    for (const GradRef& g : grads)
      if (g.data) (g.bf16 ? any16 : any32) = true;
    if (any32 && any16)
      throw dtype_error("steepest: a step takes float32 or bfloat16 gradients, not both (cast them to one dtype)");
    configure(opt_, lr_factor, hp, adamw_hp);
    [[maybe_unused]] const auto on = where_.enter();
    return any16 ? step_as<Eigen::bfloat16>(grads) : step_as<float>(grads);
  }
  long long steps() const override { return state_.step; }
  std::size_t size() const override { return set_.size(); }
  Shape shape(std::size_t i) const override { return {set_[i].rows, set_[i].cols}; }
  const std::string& tensor_name(std::size_t i) const override { return set_[i].name; }
  std::uintptr_t address(std::size_t i) const override { return std::uintptr_t(set_[i].data); }
  int device() const override { return where_.device(); }
  void use_stream(std::uintptr_t stream) override { where_.use_stream(stream); }
  double last_step_seconds() const override { return last_step_seconds_; }
  std::string name() const override { return opt_.name(); }
  void save(const std::string& path) override {
    [[maybe_unused]] const auto on = where_.enter();
    st::save(opt_, state_, path);
  }
  void load(const std::string& path) override {
    [[maybe_unused]] const auto on = where_.enter();
    auto fresh = opt_.init(set_);
    st::load(opt_, fresh, path);
    adopt(fresh);
  }
  std::string save_bytes() override {
    [[maybe_unused]] const auto on = where_.enter();
    return st::save_bytes(opt_, state_);
  }
  void load_bytes(std::string_view file) override {
    [[maybe_unused]] const auto on = where_.enter();
    auto fresh = opt_.init(set_);
    st::load_bytes(opt_, fresh, file, "state_dict");
    adopt(fresh);
  }
  std::pair<long long, std::vector<std::tuple<std::string, std::uintptr_t, std::size_t, std::size_t>>>
  layer_state(std::size_t i) override {
    if (i >= set_.size()) throw std::out_of_range("steepest: no such tensor");
    std::vector<std::tuple<std::string, std::uintptr_t, std::size_t, std::size_t>> out;
    std::size_t k = 0;
    long long own = 0;
    const auto counts = state_.skip_counts();
    state_.for_each_layer([&](const st::LayerRecord&, const std::string&, auto&& visit) {
      if (k == i) {
        own = state_.step - *counts[k];
        visit([&](const std::string& key, auto& b, st::Domain) {
          static_assert(std::is_same_v<std::decay_t<decltype(*b.data())>, float>, "float32 state only");
          out.emplace_back(key, std::uintptr_t(b.data()), std::size_t(b.rows()), std::size_t(b.cols()));
        });
      }
      ++k;
    });
    return {own, std::move(out)};
  }
  std::vector<std::tuple<std::string, std::string, double>> operator_norms() const override {
    [[maybe_unused]] const auto on = where_.enter();
    std::vector<std::tuple<std::string, std::string, double>> out;
    for (const auto& n : opt_.operator_norms(set_)) out.emplace_back(n.name, n.geometry, n.value);
    return out;
  }

 private:
  template <class C>
  static void configure(st::Optimizer<C>& o, double lr_factor, const PyHyper& hp, const PyHyper&) {
    o.lr_factor = lr_factor;
    set_coefficients(o.hp, hp);
  }
  template <class... Os>
  static void configure(st::Routed<Os...>& o, double lr_factor, const PyHyper& hp, const PyHyper& adamw_hp) {
    o.lr_factor = lr_factor;
    std::size_t i = 0;
    std::apply([&](auto&... r) { ((set_coefficients(r.opt.hp, i++ == 0 ? hp : adamw_hp)), ...); }, o.routes);
  }

  template <class G>
  bool step_as(const std::vector<GradRef>& grads) {
    st::Gradients<G, Space> g;
    g.reserve(grads.size());
    for (std::size_t i = 0; i < grads.size(); ++i) {
      const auto& l = set_[i];
      if (!grads[i].data) {  // (by position: the set and the list are in one order by construction)
        g.skip();
        continue;
      }
      g.add(static_cast<const G*>(grads[i].data), l.rows, l.cols);
    }
    const auto t0 = std::chrono::steady_clock::now();
    const bool taken = opt_.step(set_, g, state_);
    last_step_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return taken;
  }

  /// A loaded state's values into this one's buffers (same layout: made by the same init), so
  /// that views of the buffers handed out by layer_state stay valid.
  template <class State>
  void adopt(State& fresh) {
    std::vector<std::pair<float*, std::size_t>> to;
    state_.for_each_layer([&](const st::LayerRecord&, const std::string&, auto&& visit) {
      visit([&](const std::string&, auto& b, st::Domain) { to.emplace_back(b.data(), std::size_t(b.size())); });
    });
    std::size_t k = 0;
    fresh.for_each_layer([&](const st::LayerRecord&, const std::string&, auto&& visit) {
      visit([&](const std::string&, auto& b, st::Domain) {
        Where<Space>::copy(to[k].first, b.data(), to[k].second);
        ++k;
      });
    });
    state_.set_step(fresh.step);
    const auto from = fresh.skip_counts(), into = state_.skip_counts();
    for (std::size_t j = 0; j < into.size(); ++j) *into[j] = *from[j];
  }

  Where<Space> where_;  // first: the set's space points into it
  Opt opt_;
  double last_step_seconds_ = 0;
  st::ParamSet<float, Space> set_;
  typename Opt::template State<float, Space> state_;
};

/// The named optimizers of one family by name (kinds.hpp; instantiated in make_*.cpp for CPU
/// memory and in cuda_*.cu for a GPU's): null when `kind` is not one of the family's.
template <class Space>
std::unique_ptr<Core> make_elementwise(const std::string& kind, const st::Hyper& hp, const st::Hyper& ah, const MakeArgs& a);
template <class Space>
std::unique_ptr<Core> make_muon(const std::string& kind, const st::Hyper& hp, const st::Hyper& ah, const MakeArgs& a);
template <class Space>
std::unique_ptr<Core> make_scion(const std::string& kind, const st::Hyper& hp, const st::Hyper& ah, const MakeArgs& a);

/// The named optimizer `kind` in CPU memory, or on the GPU `a.device` (in a build with CUDA:
/// make_on_device, cuda_where.cuh; else an error).
std::unique_ptr<Core> make_on_host(const std::string& kind, const st::Hyper& hp, const st::Hyper& ah, const MakeArgs& a);
std::unique_ptr<Core> make_on_device(const std::string& kind, const st::Hyper& hp, const st::Hyper& ah, const MakeArgs& a);

}  // namespace steepest_python
