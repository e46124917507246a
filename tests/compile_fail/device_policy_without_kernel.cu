// A user's norm policy with only CPU kernels, used by a compile-time Dualize<N> on device memory:
// must fail with the library's message (not an error from inside a kernel template).
#include <steepest/steepest.hpp>
#include <steepest/cuda/cuda.cuh>

namespace st = steepest;

// The Frobenius norm as a policy: the whole matrix as one l2 vector (CPU kernels only).
struct UserFrobenius {
  static constexpr double p = 2.0, q = 2.0;
  template <class S>
  using Workspace = st::NoWorkspace;
  static std::string name() { return "user frobenius"; }
  static double scale(st::Index, st::Index) { return 1.0; }
  template <class M>
  static double value(const M& W) { return double(W.norm()); }
  template <class M>
  static double dual(const M& G) { return double(G.norm()); }
  template <class M, class O, class Ws>
  static void dualize(const M& G, O&& out, Ws&) {
    const double n = double(G.norm());
    out = G / typename M::Scalar(n > 0 ? n : 1);
  }
  template <class M, class O>
  static void dualize(const M& G, O&& out) {
    st::NoWorkspace ws;
    dualize(G, out, ws);
  }
};

using UserChain = st::Chain<st::Momentum<>, st::Dualize<UserFrobenius>, st::DecoupledStep>;

int main() {
  st::cuda::Context ctx;
  st::ParamSet<float, st::cuda::Device> params(st::cuda::Device{&ctx});
  st::Gradients<float, st::cuda::Device> grads;
  st::Optimizer<UserChain> opt;
  auto state = opt.init(params);
  opt.step(params, grads, state);
  return 0;
}
