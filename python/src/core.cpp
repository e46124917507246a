// steepest._core -- the library's optimizers over arrays that cross from Python without a copy.
//
// A `Core` is one named optimizer (st::adamw, st::muon, ...) bound to one list of parameters.
// Parameters and gradients arrive as float32 CPU arrays through nanobind's ndarray, which takes
// DLPack capsules and the array interfaces: torch tensors and numpy arrays are viewed in place,
// whatever torch version made them (nothing here links torch). The parameter set keeps the
// parameters' pointers; each step re-reads them (a tensor whose storage moved is followed) and
// checks shapes and names before anything is written.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/vector.h>

#include <steepest/steepest.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace nb = nanobind;
namespace st = steepest;

namespace {

/// A float32 array in CPU memory, C-contiguous: a view, never a copy.
using Array = nb::ndarray<float, nb::device::cpu, nb::c_contig>;
/// A gradient: float32 or bfloat16 (checked at the step), CPU, C-contiguous, viewed; None for
/// a tensor that has none this step (it is skipped).
using Grad = nb::ndarray<nb::device::cpu, nb::c_contig>;
using MaybeGrad = std::optional<Grad>;
/// A gradient as the step reads it: its first element, or null for a tensor skipped this step.
/// Every gradient of one step has one dtype (bf16: bfloat16, else float32).
struct GradRef {
  const void* data = nullptr;
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

/// The matrix a tensor of role `role` is stepped as: a vector's entries are one column.
Shape layer_shape(const Array& a, st::Role role) {
  Shape s = shape_of(a);
  if (role == st::Role::Vector) s = {s.rows * s.cols, 1};
  return s;
}

st::Role role_of(const std::string& r) {
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
void set_coefficients(st::Hyper& h, const PyHyper& p) {
  h.beta1 = p.beta1, h.beta2 = p.beta2, h.eps = p.eps, h.weight_decay = p.weight_decay;
}

// ---- the geometries on their own: D(G), ||W|| and ||G||_* of one array ----------------------

/// A matrix of scalar S in CPU memory, C-contiguous (rows = the first dimension).
template <class S>
using Matrix = nb::ndarray<S, nb::device::cpu, nb::c_contig>;
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
template <class N>
GeometryFns fns() {
  return {st::geometry<N>(), &N::name,
          [](const float* g, float* d, st::Index m, st::Index n) {
            st::workspace_t<N, float> ws;
            N::dualize(RowMap<float>(const_cast<float*>(g), m, n), RowMap<float>(d, m, n), ws);
          },
          [](const double* g, double* d, st::Index m, st::Index n) {
            st::workspace_t<N, double> ws;
            N::dualize(RowMap<double>(const_cast<double*>(g), m, n), RowMap<double>(d, m, n), ws);
          },
          [](const float* w, st::Index m, st::Index n) { return double(N::value(RowMap<float>(const_cast<float*>(w), m, n))); },
          [](const double* w, st::Index m, st::Index n) { return double(N::value(RowMap<double>(const_cast<double*>(w), m, n))); },
          [](const float* g, st::Index m, st::Index n) { return double(N::dual(RowMap<float>(const_cast<float*>(g), m, n))); },
          [](const double* g, st::Index m, st::Index n) { return double(N::dual(RowMap<double>(const_cast<double*>(g), m, n))); }};
}

/// The geometry called `name` (mean-normalized when `mean`, or when the name starts with
/// "mean_"): the policies of docs/GEOMETRY.md.
GeometryFns geometry_fns(std::string name, bool mean) {
  if (name.rfind("mean_", 0) == 0) name = name.substr(5), mean = true;
  using T = std::pair<GeometryFns, GeometryFns>;  // plain, mean-normalized
  auto both = [](auto policy) {
    using N = decltype(policy);
    return T{fns<N>(), fns<st::MeanNormalized<N>>()};
  };
  static const std::pair<const char*, T> table[] = {
      {"sign", both(st::SignNorm{})},           {"row", both(st::RowNormalize{})},
      {"col", both(st::ColNormalize{})},        {"inf_inf", both(st::InfInfNorm{})},
      {"one_one", both(st::OneOneNorm{})},      {"spectral", both(st::Spectral{})},
      {"spectral_polar_express", both(st::SpectralPolarExpress{})},
      {"spectral_exact", both(st::SpectralExact{})},
      {"vector_sign", both(st::VectorSign{})},  {"vector_l2", both(st::VectorNorm<2>{})}};
  const T t = by_name(name, table, "geometry");
  return mean ? t.second : t.first;
}

/// One optimizer over one list of parameters (type-erased over the optimizer's type).
class Core {
 public:
  virtual ~Core() = default;
  /// One step: `lr_factor` multiplies every layer's learning rate (the schedule's factor);
  /// `hp` and `adamw_hp` replace the coefficients; a None gradient leaves its tensor, and its
  /// state and step count, as they are. `params` None: the parameters are where the last step
  /// (or construction) found them, which the caller vouches for (it re-sends them when a
  /// tensor's storage moved); the views' checks then cost nothing. False when skipped
  /// (on_non_finite = "skip").
  virtual bool step(const std::optional<std::vector<Array>>& params, const std::vector<MaybeGrad>& grads, double lr_factor,
                    const PyHyper& hp, const PyHyper& adamw_hp) = 0;
  /// The same step on gradients already checked (shape: the parameter's; layout: dense and
  /// contiguous; dtype: float32, or bfloat16 for all when `bf16`), at the parameters' addresses.
  virtual bool step_refs(const std::vector<GradRef>& grads, bool bf16, double lr_factor, const PyHyper& hp,
                         const PyHyper& adamw_hp) = 0;
  /// Steps taken.
  virtual long long steps() const = 0;
  /// Tensors stepped, and where tensor i's values are (the address the next step writes).
  virtual std::size_t size() const = 0;
  virtual std::uintptr_t address(std::size_t i) const = 0;
  /// Seconds the last step spent in the library's step itself (what the crossing from Python
  /// adds is a step's time less this).
  virtual double last_step_seconds() const = 0;
  /// The chain(s) the optimizer runs.
  virtual std::string name() const = 0;
  /// The state to / from a checkpoint in the library's safetensors layout (a file, or its
  /// bytes). Loading copies into the state's buffers, so views of them stay valid.
  virtual void save(const std::string& path) = 0;
  virtual void load(const std::string& path) = 0;
  virtual nb::bytes save_bytes() = 0;
  virtual void load_bytes(std::string_view file) = 0;
  /// Tensor i's own step count (steps less those it had no gradient), and its state buffers:
  /// (key, address, rows, columns), float32, alive as long as this object.
  virtual std::pair<long long, std::vector<std::tuple<std::string, std::uintptr_t, std::size_t, std::size_t>>>
  layer_state(std::size_t i) = 0;
  /// Each layer's operator norm in its geometry: (name, geometry, value).
  virtual std::vector<std::tuple<std::string, std::string, double>> operator_norms() const = 0;
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

template <class Opt>
class CoreOf final : public Core {
 public:
  CoreOf(Opt opt, const std::vector<std::string>& names, const std::vector<std::string>& roles,
         const std::vector<std::string>& geometries, const std::vector<Array>& params)
      : opt_(std::move(opt)) {
    if (names.size() != params.size() || roles.size() != params.size() || geometries.size() != params.size())
      throw std::invalid_argument("steepest: names, roles, geometries and parameters differ in number");
    for (std::size_t i = 0; i < params.size(); ++i) {
      const st::Role role = role_of(roles[i]);
      const Shape s = layer_shape(params[i], role);
      set_.add(names[i], role, const_cast<float*>(params[i].data()), s.rows, s.cols);
      if (geometries[i].empty()) continue;
      if (!applies_geometry<Opt>::value)
        throw std::invalid_argument("steepest: '" + names[i] + "' is given geometry '" + geometries[i] + "', but " +
                                    opt_.name() + " applies no geometry (choose a kind that does: sign_descent, "
                                    "muon_scion, scion, scion_unconstrained, the Muon family)");
      set_[set_.size() - 1].geometry = geometry_fns(geometries[i], false).handle;
    }
    state_ = opt_.init(set_);
  }

  bool step(const std::optional<std::vector<Array>>& params, const std::vector<MaybeGrad>& grads, double lr_factor,
            const PyHyper& hp, const PyHyper& adamw_hp) override {
    if ((params && params->size() != set_.size()) || grads.size() != set_.size())
      throw std::invalid_argument("steepest: the step got " + std::to_string(params ? params->size() : set_.size()) +
                                  " parameters and " + std::to_string(grads.size()) + " gradients for " +
                                  std::to_string(set_.size()));
    if (params) {  // all checked before any pointer is taken
      for (std::size_t i = 0; i < set_.size(); ++i) {
        const Shape ps = layer_shape((*params)[i], set_[i].role);
        if (ps.rows != set_[i].rows || ps.cols != set_[i].cols)
          throw st::shape_error("parameter '" + set_[i].name + "': its shape changed since the optimizer was made");
      }
      for (std::size_t i = 0; i < set_.size(); ++i) set_[i].data = const_cast<float*>((*params)[i].data());
    }
    // One gradient type per step: float32, or bfloat16 (widened exactly as it is read).
    const nb::dlpack::dtype f32 = nb::dtype<float>(), bf16{std::uint8_t(nb::dlpack::dtype_code::Bfloat), 16, 1};
    std::size_t n32 = 0, n16 = 0;
    for (std::size_t i = 0; i < grads.size(); ++i) {
      if (!grads[i]) continue;
      const nb::dlpack::dtype d = grads[i]->dtype();
      if (d == f32) ++n32;
      else if (d == bf16) ++n16;
      else throw nb::type_error(("steepest: the gradient of '" + set_[i].name + "' is neither float32 nor bfloat16").c_str());
    }
    if (n32 && n16)
      throw nb::type_error("steepest: a step takes float32 or bfloat16 gradients, not both (cast them to one dtype)");
    std::vector<GradRef> refs(grads.size());
    for (std::size_t i = 0; i < grads.size(); ++i) {
      if (!grads[i]) continue;
      const Shape gs = shape_of(*grads[i]);
      if (gs.rows * gs.cols != set_[i].rows * set_[i].cols)
        throw st::shape_error("parameter '" + set_[i].name + "': its gradient has another shape");
      refs[i].data = grads[i]->data();
    }
    return step_refs(refs, n16 > 0, lr_factor, hp, adamw_hp);
  }
  bool step_refs(const std::vector<GradRef>& grads, bool bf16, double lr_factor, const PyHyper& hp,
                 const PyHyper& adamw_hp) override {
    configure(opt_, lr_factor, hp, adamw_hp);
    return bf16 ? step_as<Eigen::bfloat16>(grads) : step_as<float>(grads);
  }
  long long steps() const override { return state_.step; }
  std::size_t size() const override { return set_.size(); }
  std::uintptr_t address(std::size_t i) const override { return std::uintptr_t(set_[i].data); }
  double last_step_seconds() const override { return last_step_seconds_; }
  std::string name() const override { return opt_.name(); }
  void save(const std::string& path) override { st::save(opt_, state_, path); }
  void load(const std::string& path) override {
    auto fresh = opt_.init(set_);
    st::load(opt_, fresh, path);
    adopt(fresh);
  }
  nb::bytes save_bytes() override {
    const std::string b = st::save_bytes(opt_, state_);
    return nb::bytes(b.data(), b.size());
  }
  void load_bytes(std::string_view file) override {
    auto fresh = opt_.init(set_);
    st::load_bytes(opt_, fresh, file, "state_dict");
    adopt(fresh);
  }
  std::pair<long long, std::vector<std::tuple<std::string, std::uintptr_t, std::size_t, std::size_t>>>
  layer_state(std::size_t i) override {
    if (i >= set_.size()) throw nb::index_error("steepest: no such tensor");
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
    st::Gradients<G> g;
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
        std::copy(b.data(), b.data() + to[k].second, to[k].first);
        ++k;
      });
    });
    state_.set_step(fresh.step);
    const auto from = fresh.skip_counts(), into = state_.skip_counts();
    for (std::size_t j = 0; j < into.size(); ++j) *into[j] = *from[j];
  }

  Opt opt_;
  double last_step_seconds_ = 0;
  st::ParamSet<float> set_;
  typename Opt::template State<float> state_;
};

template <class Opt>
std::unique_ptr<Core> make_core(Opt opt, const std::vector<std::string>& names, const std::vector<std::string>& roles,
                                const std::vector<std::string>& geometries, const std::vector<Array>& params) {
  return std::make_unique<CoreOf<Opt>>(std::move(opt), names, roles, geometries, params);
}

/// The named optimizers by name, as the C++ functions of the same names make them.
std::unique_ptr<Core> make(const std::string& kind, const PyHyper& p, const PyHyper& a,
                           const std::vector<std::string>& names, const std::vector<std::string>& roles,
                           const std::vector<Array>& params, std::vector<std::string> geometries) {
  const st::Hyper hp = p.get(), ah = a.get();
  if (geometries.empty()) geometries.resize(params.size());  // none overridden
  const auto& n = names;
  const auto& r = roles;
  const auto& g = geometries;
  const auto& x = params;
  if (kind == "sgd") return make_core(st::sgd(hp), n, r, g, x);
  if (kind == "sgd_nesterov") return make_core(st::sgd_nesterov(hp), n, r, g, x);
  if (kind == "adamw") return make_core(st::adamw(hp), n, r, g, x);
  if (kind == "adamw_rescaled") return make_core(st::adamw_rescaled(hp), n, r, g, x);
  if (kind == "sign_descent") return make_core(st::sign_descent(hp), n, r, g, x);
  if (kind == "lion") return make_core(st::lion(hp), n, r, g, x);
  if (kind == "moga_row") return make_core(st::moga_row(hp), n, r, g, x);
  if (kind == "moga_col") return make_core(st::moga_col(hp), n, r, g, x);
  if (kind == "moga_row_momentum") return make_core(st::moga_row_momentum(hp), n, r, g, x);
  if (kind == "cautious_adamw") return make_core(st::cautious_adamw(hp), n, r, g, x);
  if (kind == "muon") return make_core(st::muon(hp, ah, hp.shape_factor), n, r, g, x);
  if (kind == "normuon") return make_core(st::normuon(hp, ah), n, r, g, x);
  if (kind == "adamuon") return make_core(st::adamuon(hp, ah), n, r, g, x);
  if (kind == "polargrad") return make_core(st::polargrad(hp, ah), n, r, g, x);
  if (kind == "muon_eq") return make_core(st::muon_eq(hp, ah, hp.shape_factor), n, r, g, x);
  if (kind == "muon_plus") return make_core(st::muon_plus(hp, ah, hp.shape_factor), n, r, g, x);
  if (kind == "muon_scion") return make_core(st::muon_scion(hp, hp.shape_factor), n, r, g, x);
  if (kind == "scion") return make_core(st::scion(hp), n, r, g, x);
  if (kind == "scion_unconstrained") return make_core(st::scion_unconstrained(hp), n, r, g, x);
  throw std::invalid_argument("unknown optimizer '" + kind + "'");
}

template <class S>
void dualize_into(const Matrix<const S>& g, const Matrix<S>& d, const std::string& geometry, bool mean) {
  const Shape s = shape_of(g);
  if (d.size() != g.size()) throw st::shape_error("dualize: the output has another size than G");
  const GeometryFns f = geometry_fns(geometry, mean);
  if (s.rows * s.cols == 0) return;
  if constexpr (std::is_same_v<S, float>) f.dualize_f(g.data(), d.data(), s.rows, s.cols);
  else f.dualize_d(g.data(), d.data(), s.rows, s.cols);
}
template <class S>
double norm_of(const Matrix<const S>& w, const std::string& geometry, bool mean, bool dual) {
  const Shape s = shape_of(w);
  const GeometryFns f = geometry_fns(geometry, mean);
  if (s.rows * s.cols == 0) return 0.0;
  if constexpr (std::is_same_v<S, float>) return (dual ? f.dual_f : f.value_f)(w.data(), s.rows, s.cols);
  else return (dual ? f.dual_d : f.value_d)(w.data(), s.rows, s.cols);
}

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "steepest's optimizers over float32 CPU arrays (torch tensors, numpy arrays), without copies";
  nb::class_<PyHyper>(m, "Hyper")
      .def(nb::init<>())
      .def_rw("lr", &PyHyper::lr)
      .def_rw("beta1", &PyHyper::beta1)
      .def_rw("beta2", &PyHyper::beta2)
      .def_rw("eps", &PyHyper::eps)
      .def_rw("weight_decay", &PyHyper::weight_decay)
      .def_rw("shape_factor", &PyHyper::shape_factor)
      .def_rw("on_non_finite", &PyHyper::on_non_finite);
  nb::class_<Core>(m, "Core")
      .def("step", &Core::step, nb::arg("params").noconvert().none(), nb::arg("grads").noconvert(), nb::arg("lr_factor"),
           nb::arg("hp"), nb::arg("adamw_hp"))
      .def(
          "step_tensors",
          [](Core& c, const nb::list& params, const nb::handle& float32, const nb::handle& bfloat16, double lr_factor,
             const PyHyper& hp, const PyHyper& adamw_hp) -> nb::object {
            // The per-tensor work of a torch step in one C++ loop, through torch's own methods
            // called without argument tuples (vectorcall) on interned names: each parameter's
            // address against the one the core holds (None back, nothing done, when one moved:
            // the caller then steps through step() with the parameters), and each .grad's
            // dtype (the objects torch.float32 / torch.bfloat16), contiguity and address. torch
            // itself keeps a .grad the parameter's shape, device and dtype (or grad_dtype), so
            // these are all that is left to check. Anything else (a sparse gradient, another
            // dtype, a non-contiguous one) raises before anything is stepped, and the caller
            // names the tensor.
            static PyObject* const s_data_ptr = PyUnicode_InternFromString("data_ptr");
            static PyObject* const s_grad = PyUnicode_InternFromString("grad");
            static PyObject* const s_dtype = PyUnicode_InternFromString("dtype");
            static PyObject* const s_is_contiguous = PyUnicode_InternFromString("is_contiguous");
            auto call = [](PyObject* self, PyObject* name) {
              PyObject* args[1] = {self};
              PyObject* r = PyObject_VectorcallMethod(name, args, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, nullptr);
              if (!r) throw nb::python_error();
              return nb::steal(r);
            };
            auto address = [&](PyObject* t) {
              const nb::object r = call(t, s_data_ptr);
              const std::uintptr_t a = std::uintptr_t(PyLong_AsVoidPtr(r.ptr()));
              if (a == 0 && PyErr_Occurred()) throw nb::python_error();
              return a;
            };
            const std::size_t n = params.size();
            if (n != c.size())
              throw std::invalid_argument("steepest: the step got " + std::to_string(n) + " parameters for " +
                                          std::to_string(c.size()));
            std::vector<GradRef> grads(n);
            std::size_t n16 = 0, n32 = 0;
            for (std::size_t i = 0; i < n; ++i) {
              // (a reference of our own: a tensor subclass's methods may run Python that edits the list)
              if (Py_ssize_t(i) >= PyList_GET_SIZE(params.ptr())) throw std::invalid_argument("steepest: the parameter list changed");
              const nb::object p = nb::borrow(PyList_GET_ITEM(params.ptr(), Py_ssize_t(i)));
              if (address(p.ptr()) != c.address(i)) return nb::none();
              const nb::object g = nb::steal(PyObject_GetAttr(p.ptr(), s_grad));
              if (!g.is_valid()) throw nb::python_error();
              if (g.is_none()) continue;
              const nb::object dtype = nb::steal(PyObject_GetAttr(g.ptr(), s_dtype));
              if (!dtype.is_valid()) throw nb::python_error();
              if (dtype.is(float32)) ++n32;
              else if (dtype.is(bfloat16)) ++n16;
              else throw nb::type_error("steepest: a gradient is neither float32 nor bfloat16");
              if (!call(g.ptr(), s_is_contiguous).is(Py_True))
                throw nb::type_error("steepest: a gradient is not contiguous");
              grads[i].data = reinterpret_cast<const void*>(address(g.ptr()));
            }
            if (n32 && n16)
              throw nb::type_error("steepest: a step takes float32 or bfloat16 gradients, not both (cast them to one dtype)");
            return nb::bool_(c.step_refs(grads, n16 > 0, lr_factor, hp, adamw_hp));
          },
          nb::arg("params"), nb::arg("float32"), nb::arg("bfloat16"), nb::arg("lr_factor"), nb::arg("hp"),
          nb::arg("adamw_hp"),
          "step() over torch parameters read here (torch's float32 and bfloat16 dtype objects given): True/False as "
          "step(), None when a parameter's storage moved")
      .def_prop_ro("steps", &Core::steps)
      .def_prop_ro("last_step_seconds", &Core::last_step_seconds)
      .def_prop_ro("name", &Core::name)
      .def("save", &Core::save)
      .def("load", &Core::load)
      .def("save_bytes", &Core::save_bytes)
      .def(
          "load_bytes",
          [](Core& c, nb::ndarray<const std::uint8_t, nb::ndim<1>, nb::c_contig, nb::device::cpu> file) {
            c.load_bytes(std::string_view(reinterpret_cast<const char*>(file.data()), file.shape(0)));
          },
          nb::arg("file"), "Loads a checkpoint from its bytes (bytes, or a 1-D uint8 array)")
      .def(
          "layer_state",
          [](nb::handle self, std::size_t i) {
            // Views of the buffers, kept alive by (and as long as) this Core.
            auto [own, bufs] = nb::cast<Core&>(self).layer_state(i);
            nb::list views;
            for (const auto& [key, at, rows, cols] : bufs) {
              const std::size_t shape[2] = {rows, cols};
              views.append(nb::make_tuple(key, nb::ndarray<float, nb::c_contig>(reinterpret_cast<float*>(at), 2, shape, self)));
            }
            return nb::make_tuple(own, views);
          },
          nb::arg("i"), "(own step count, [(key, float32 view of the buffer)]) of tensor i")
      .def("operator_norms", &Core::operator_norms);
  // noconvert: an array of another dtype or layout is refused, never silently copied (a copied
  // parameter would be stepped while the caller's stays as it was).
  m.def("make", &make, nb::arg("kind"), nb::arg("hp"), nb::arg("adamw_hp"), nb::arg("names"), nb::arg("roles"),
        nb::arg("params").noconvert(), nb::arg("geometries") = std::vector<std::string>{},
        "The named optimizer `kind` over `params` (float32 CPU arrays, viewed in place); a non-empty "
        "geometries[i] (\"row\", \"mean_spectral\", ...) overrides tensor i's geometry.");
  // The geometries on one array (float32 or float64, CPU, C-contiguous; a tensor of more than
  // two dimensions is the matrix first dimension x the rest, as the optimizers step it).
  m.def("dualize", &dualize_into<float>, nb::arg("g").noconvert(), nb::arg("out").noconvert(), nb::arg("geometry"),
        nb::arg("mean"));
  m.def("dualize", &dualize_into<double>, nb::arg("g").noconvert(), nb::arg("out").noconvert(), nb::arg("geometry"),
        nb::arg("mean"), "out <- D(g), the geometry's steepest direction (its scale s(m, n) included when mean)");
  m.def("norm", &norm_of<float>, nb::arg("w").noconvert(), nb::arg("geometry"), nb::arg("mean"), nb::arg("dual"));
  m.def("norm", &norm_of<double>, nb::arg("w").noconvert(), nb::arg("geometry"), nb::arg("mean"), nb::arg("dual"),
        "||w|| in the geometry, or its dual norm ||w||_* when dual");
  // The process's Newton-Schulz engine planner (polar/planner.hpp), which Muon's default engine
  // consults: its choices, and the settings a run that must repeat bit for bit uses.
  nb::class_<st::PolarPlanner>(m, "PolarPlanner")
      .def(
          "plans",
          [](const st::PolarPlanner& p) {
            nb::list out;
            for (const auto& plan : p.plans()) {
              nb::list candidates;
              for (const auto& [name, secs, dist, ok] : plan.candidates)
                candidates.append(nb::make_tuple(name, secs, dist, ok));
              nb::dict d;
              d["shape"] = nb::make_tuple(plan.k, plan.l);
              d["threads"] = plan.threads;
              d["schedule"] = plan.schedule;
              d["steps"] = plan.steps;
              d["engine"] = plan.engine;
              d["how"] = plan.how;
              d["candidates"] = candidates;
              d["text"] = plan.describe();
              out.append(d);
            }
            return out;
          },
          "Every choice made: dicts with shape (k, l), threads, engine, how, candidates "
          "[(name, seconds, distance, accepted)] and text")
      .def(
          "set_mode",
          [](st::PolarPlanner& p, const std::string& mode) {
            if (mode != "measure" && mode != "estimate")
              throw std::invalid_argument("steepest: the planner's mode is 'measure' or 'estimate', not '" + mode + "'");
            p.set_mode(mode == "measure" ? st::PlanMode::Measure : st::PlanMode::Estimate);
          },
          nb::arg("mode"), "'measure' (time each engine once per shape) or 'estimate' (fewest flops)")
      .def("force", &st::PolarPlanner::force, nb::arg("engine"),
           "Always use the engine of this name ('eigen', 'gram-restart3', ...); '' plans again")
      .def("set_tolerance", &st::PolarPlanner::set_tolerance, nb::arg("distance"))
      .def("clear", &st::PolarPlanner::clear, "Forget every choice")
      .def("save", &st::PolarPlanner::save, nb::arg("path"), "Write the measured and estimated choices")
      .def("load", &st::PolarPlanner::load, nb::arg("path"), "Replace the choices by a file's")
      .def("set_file", &st::PolarPlanner::set_file, nb::arg("path"),
           "Load `path` when it exists and rewrite it after each new choice (as STEEPEST_POLAR_PLAN)")
      .def_static("cpu_model", &st::PolarPlanner::cpu_model);
  m.def("polar_planner", &st::polar_planner, nb::rv_policy::reference, "The process's Newton-Schulz engine planner");
  m.def("geometry_name", [](const std::string& g, bool mean) { return geometry_fns(g, mean).name(); },
        nb::arg("geometry"), nb::arg("mean"), "The policy's name, as optimizers report it");
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const st::shape_error& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const st::non_finite_error& e) {
      PyErr_SetString(PyExc_FloatingPointError, e.what());
    }
  });
}
