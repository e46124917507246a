// tests/frobenius_norm.hpp -- a norm policy written outside the library, as a user would: the
// Frobenius norm (self-dual). The contract tests check it like a built-in policy; the CUDA
// compile-fail test uses it as a policy that has no CUDA kernel.
#pragma once

#include <steepest/steepest.hpp>

#include <string>

struct FrobeniusNorm {
  static constexpr double p = 2.0, q = 2.0;
  template <class S>
  using Workspace = steepest::NoWorkspace;
  static std::string name() { return "frobenius"; }
  static double scale(steepest::Index, steepest::Index) { return 1.0; }
  template <class M>
  static double value(const M& W) { return double(W.norm()); }
  template <class M>
  static double dual(const M& G) { return double(G.norm()); }
  template <class M, class O, class Ws>
  static void dualize(const M& G, const O& out, Ws&) {
    const auto n = G.norm();
    steepest::writable(out) = n > 0 ? (G / n).eval() : (G * 0).eval();
  }
  template <class M, class O>
  static void dualize(const M& G, const O& out) {
    steepest::NoWorkspace ws;
    dualize(G, out, ws);
  }
};
