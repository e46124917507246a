// steepest._core: the geometries by name, each policy's functions over float and double arrays
// (one translation unit: every policy's direction and norms are instantiated here).
#include "core.hpp"

namespace steepest_python {

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

}  // namespace steepest_python
