// steepest/optim/routing.hpp -- a model's optimizer as a table of routes: each layer to a chain.
//
//   auto opt = st::routed(st::route(st::roles({st::Role::Hidden}), muon_part),   // first match wins
//                         st::route(st::name_glob("*.bias"), sgd_part),
//                         st::route(st::everything(), st::adamw(adam_hp)));
//   auto state = opt.init(params);      // each route's own state for the layers it took
//   opt.step(params, grads, state);     // one check of everything, then every route's layers
//
// Like optax's multi_transform or PyTorch's parameter groups: each route is a whole Optimizer
// (its chain, hyper-parameters, role geometries and state), and a layer goes to the first route
// whose selector takes it: by role, by a name pattern, or by any predicate. A layer that no route
// takes is an error at init (end with `everything()` to catch the rest). The step is all-or-
// nothing across routes: shapes and finiteness of every gradient are checked before any layer
// is written, and the step counter is one for the whole model.
#pragma once

#include <algorithm>
#include <functional>
#include <initializer_list>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "optimizer.hpp"

namespace steepest {

/// What a route's selector sees of a layer.
struct LayerInfo {
  /// The layer's name.
  const std::string& name;
  /// Its role.
  Role role;
  Index rows;  ///< Rows.
  Index cols;  ///< Columns.
};

/// Which layers a route takes: a predicate with a description (used in names and messages).
struct Selector {
  /// What it selects, for messages ("roles {hidden}").
  std::string what;
  /// Whether it takes a layer.
  std::function<bool(const LayerInfo&)> takes;
};

/// Layers whose role is one of `rs`.
inline Selector roles(std::initializer_list<Role> rs) {
  std::vector<Role> v(rs);
  std::string what = "role=";
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (i) what += '|';
    what += role_name(v[i]);  // appended piece by piece: `"|" + std::string(...)` trips GCC 12's -Wrestrict in C++20
  }
  return {what, [v](const LayerInfo& l) {
            for (Role r : v)
              if (l.role == r) return true;
            return false;
          }};
}

namespace detail {
// Whole-string glob match: '*' any run of characters (also none), '?' any one character.
inline bool glob_match(const char* p, const char* s) {
  const char* star = nullptr;
  const char* mark = nullptr;
  while (*s) {
    if (*p == '?' || (*p != '*' && *p == *s)) {
      ++p, ++s;
    } else if (*p == '*') {
      star = p++, mark = s;
    } else if (star) {
      p = star + 1, s = ++mark;
    } else {
      return false;
    }
  }
  while (*p == '*') ++p;
  return *p == '\0';
}

/// Calls f(std::get<i>(t)) for a run-time index i (route indices are run-time values).
template <class Tuple, class F>
void apply_at(Tuple& t, std::size_t i, F&& f) {
  std::size_t k = 0;
  std::apply([&](auto&... x) { ((k++ == i ? (f(x), 0) : 0), ...); }, t);
}
}  // namespace detail

/// Layers whose whole name matches the glob `pattern` ('*' any run, '?' one character), e.g.
/// "blocks.*.attn.qkv[*]" or "*.bias".
inline Selector name_glob(std::string pattern) {
  return {"name=" + pattern,
          [pattern](const LayerInfo& l) { return detail::glob_match(pattern.c_str(), l.name.c_str()); }};
}

/// Layers for which `pred(LayerInfo)` is true; `what` describes them in names and messages.
inline Selector where(std::string what, std::function<bool(const LayerInfo&)> pred) {
  return {std::move(what), std::move(pred)};
}

/// Every layer: the last route's selector, for "the rest".
inline Selector everything() {
  return {"*", [](const LayerInfo&) { return true; }};
}

/// A route: the layers `select` takes, stepped by `opt`.
template <class Opt>
struct Route {
  /// Which layers.
  Selector select;
  /// Their optimizer.
  Opt opt;
};

/// A route: the layers `select` takes are stepped by `opt` (an Optimizer<Chain>).
template <class Opt>
Route<Opt> route(Selector select, Opt opt) {
  return {std::move(select), std::move(opt)};
}

/// State of a routed optimizer: the step counter, which route each layer took, and each route's
/// own optimizer state for its layers.
template <class S, class Space, class... Opts>
struct RoutedState {
  /// The parameters' scalar type.
  using scalar_type = S;
  /// Their memory space.
  using space_type = Space;
  /// Steps taken (one counter for every route).
  long long step = 0;
  std::vector<std::size_t> route;  ///< route of each layer of the parameter set
  std::vector<std::size_t> local;  ///< its position in that route's state
  /// Each route's state.
  std::tuple<typename Opts::template State<S, Space>...> parts;

  /// Route I's state.
  template <std::size_t I>
  auto& part() { return std::get<I>(parts); }

  /// Bytes of state buffers over every route.
  std::size_t state_bytes() {
    std::size_t b = 0;
    std::apply([&](auto&... p) { ((b += p.state_bytes()), ...); }, parts);
    return b;
  }
  /// f(record, chain_name, visit) for each layer in parameter-set order (see OptimizerState).
  template <class F>
  void for_each_layer(F&& f) {
    for (std::size_t k = 0; k < route.size(); ++k)
      detail::apply_at(parts, route[k], [&](auto& p) {
        const std::size_t j = local[k];
        using P = std::decay_t<decltype(p)>;
        f(p.records[j], P::chain_type::name(), [&, j](auto&& g) { P::chain_type::visit_named(p.layers[j], g); });
      });
  }
  /// Sets the step counter of every route (checkpoint loading).
  void set_step(long long t) {
    step = t;
    std::apply([&](auto&... p) { ((p.step = t), ...); }, parts);
  }
  /// Each layer's skipped-step count (OptimizerState::skipped), in for_each_layer's order.
  std::vector<long long*> skip_counts() {
    std::vector<long long*> out;
    for (std::size_t k = 0; k < route.size(); ++k)
      detail::apply_at(parts, route[k], [&](auto& p) { out.push_back(&p.skipped[local[k]]); });
    return out;
  }
};

/// An optimizer made of routes (see the file comment). Opts are Optimizer<Chain> types.
template <class... Opts>
class Routed {
  static_assert(sizeof...(Opts) > 0, "steepest::routed needs at least one route");

 public:
  /// Its state for parameters of scalar S in memory space Space.
  template <class S, class Space = Host>
  using State = RoutedState<S, Space, Opts...>;

  /// The routes, in order: a layer goes to the first that takes it.
  std::tuple<Route<Opts>...> routes;
  /// What a step does on a non-finite gradient, for the whole model (taken from the first
  /// route's hyper-parameters at construction).
  NonFinitePolicy on_non_finite;
  /// Use the fused one-pass kernels where a route's chain allows (and the route's own `fuse`).
  bool fuse = true;
  /// Multiplies every route's learning rate (a schedule's factor), on top of each route's hp.lr
  /// and its own lr_factor.
  double lr_factor = 1.0;

  /// Routes in order of precedence.
  explicit Routed(Route<Opts>... r)
      : routes(std::move(r)...), on_non_finite(std::get<0>(routes).opt.hp.on_non_finite) {}

  /// What a step does with a non-finite gradient (one policy for every route).
  NonFinitePolicy& non_finite_policy() { return on_non_finite; }
  /// What a step does with a non-finite gradient.
  NonFinitePolicy non_finite_policy() const { return on_non_finite; }
  /// Routes.
  static constexpr std::size_t route_count = sizeof...(Opts);
  /// f(route i's optimizer), for a run-time route index i (route_of's).
  template <class F>
  void with_route(std::size_t i, F&& f) const {
    detail::apply_at(routes, i, [&](const auto& r) { f(r.opt); });
  }

  /// Route I's optimizer (its hp, roles, fuse flag).
  template <std::size_t I>
  auto& optimizer() { return std::get<I>(routes).opt; }
  /// Route I's optimizer.
  template <std::size_t I>
  const auto& optimizer() const { return std::get<I>(routes).opt; }

  /// The routes' names.
  std::string name() const {
    std::string s = "routed(";
    std::size_t i = 0;
    const auto add = [&](const auto& r) {
      if (i++) s += "; ";
      s += r.select.what;
      s += ": ";
      s += r.opt.name();
    };
    std::apply([&](const auto&... r) { (add(r), ...); }, routes);
    return s + ")";
  }

  /// The index of the route that takes layer l; throws when none does.
  template <class S>
  std::size_t route_of(const Layer<S>& l) const {
    const LayerInfo info{l.name, l.role, l.rows, l.cols};
    constexpr std::size_t none = sizeof...(Opts);
    std::size_t found = none, i = 0;
    const auto consider = [&](const auto& r) {
      if (found == none && r.select.takes(info)) found = i;
      ++i;
    };
    std::apply([&](const auto&... r) { (consider(r), ...); }, routes);
    if (found == none)
      throw std::invalid_argument("routed optimizer: no route takes parameter '" + l.name + "' (" +
                                  role_name(l.role) + ", " + shape_string(l.rows, l.cols) +
                                  "); end the routes with st::everything() to catch the rest");
    return found;
  }
  /// The layer's geometry, from its route's optimizer.
  template <class S>
  Geometry geometry_of(const Layer<S>& l) const {
    Geometry g;
    detail::apply_at(routes, route_of(l), [&](const auto& r) { g = r.opt.geometry_of(l); });
    return g;
  }
  /// The layer's radius, from its route's optimizer.
  template <class S>
  double radius_of(const Layer<S>& l) const {
    double v = 1.0;
    detail::apply_at(routes, route_of(l), [&](const auto& r) { v = r.opt.radius_of(l); });
    return v;
  }

  /// State for `params`: every layer routed (throws naming a layer no route takes).
  template <class S, class Space>
  State<S, Space> init(const ParamSet<S, Space>& params) const {
    std::vector<std::size_t> chosen;
    for (const auto& l : params) chosen.push_back(route_of(l));
    return init_routed(params, chosen);
  }
  /// A state with layer k taken by route `routes[k]` instead of route_of's choice: a rank of a
  /// sharded optimizer steps row blocks of layers and routes each as its whole layer (a
  /// selector may look at the shape).
  template <class S, class Space>
  State<S, Space> init_routed(const ParamSet<S, Space>& params, const std::vector<std::size_t>& route_index) const {
    if (route_index.size() != params.size() ||
        std::any_of(route_index.begin(), route_index.end(), [](std::size_t r) { return r >= sizeof...(Opts); }))
      throw std::invalid_argument("routed optimizer: init_routed needs one valid route index per layer");
    State<S, Space> st;
    std::vector<std::vector<std::size_t>> taken(sizeof...(Opts));
    for (std::size_t k = 0; k < params.size(); ++k) {
      const std::size_t r = route_index[k];
      st.route.push_back(r);
      st.local.push_back(taken[r].size());
      taken[r].push_back(k);
    }
    init_parts(params, taken, st, std::index_sequence_for<Opts...>{});
    return st;
  }

  /// Steps every layer by its route. Returns true when taken, false when skipped
  /// (NonFinitePolicy::Skip); nothing is written unless every check passes. `grads` holds S,
  /// or bf16 for float parameters on the host (params.hpp).
  template <class S, class Space, class G>
  bool step(ParamSet<S, Space>& params, const Gradients<G, Space>& grads, State<S, Space>& st) const {
    detail::check_step_inputs(params, grads, st.route.size());
    check_parts(params, st, std::index_sequence_for<Opts...>{});
    if (!detail::gradients_finite(params, grads, on_non_finite)) return false;
    const long long t = st.step + 1;
    run_parts(params, grads, st, t, std::index_sequence_for<Opts...>{});
    st.step = t;
    return true;
  }

  /// Each layer's operator norm in its route's geometry for it, output heads first.
  template <class S, class Space>
  std::vector<LayerNorm> operator_norms(const ParamSet<S, Space>& params) const {
    return detail::operator_norms(params, *this);
  }

 private:
  template <class S, class Space, std::size_t... I>
  void init_parts(const ParamSet<S, Space>& params, const std::vector<std::vector<std::size_t>>& taken,
                  State<S, Space>& st, std::index_sequence<I...>) const {
    ((std::get<I>(st.parts) = std::get<I>(routes).opt.init_layers(params, taken[I])), ...);
  }
  template <class S, class Space, std::size_t... I>
  void check_parts(const ParamSet<S, Space>& params, const State<S, Space>& st, std::index_sequence<I...>) const {
    (std::get<I>(routes).opt.check_state(params, std::get<I>(st.parts)), ...);
  }
  template <class S, class Space, class G, std::size_t... I>
  void run_parts(ParamSet<S, Space>& params, const Gradients<G, Space>& grads, State<S, Space>& st, long long t,
                 std::index_sequence<I...>) const {
    ((std::get<I>(routes).opt.run(params, grads, std::get<I>(st.parts), t, fuse && std::get<I>(routes).opt.fuse,
                                  lr_factor * std::get<I>(routes).opt.lr_factor)),
     ...);
  }
};

/// The routed optimizer of `routes...` (first matching route wins).
template <class... Opts>
Routed<Opts...> routed(Route<Opts>... routes) {
  return Routed<Opts...>(std::move(routes)...);
}

}  // namespace steepest
