// steepest/distributed/sharded.hpp -- the optimizer step sharded over the ranks of a data-parallel job
// (ZeRO-1): each rank keeps the state of its share of the parameters and computes its share of
// the update; afterwards every rank has all the new weights.
//
//   MPI_Init(&argc, &argv);
//   steepest::dist::MpiCommunicator comm;                      // distributed/mpi.hpp
//   auto opt = steepest::dist::shard(st::moga_row(hp), comm);  // any optimizer or routing table
//   auto state = opt.init(params);        // params: the whole model, on every rank
//   opt.step(params, summed, state);      // the gradient already summed over ranks, or:
//   opt.step_reduce(params, mine, state); // this rank's gradient; reduce-scattered (summed) first
//   opt.save("opt.safetensors", state);   // collective: one file, the single-process format
//
// What each layer's share is comes from its geometry and chain (its *plan*, the same on every
// rank, from the shapes alone):
//   Rows   the chain's work on an entry needs only the entry's row: elementwise rules (AdamW,
//          Lion, SGD), sign descent and row normalization (MOGA-row), whose width-aware scale
//          depends on the row length only. Rank r takes rows [r m / P, (r+1) m / P): gradients
//          are reduce-scattered by rows, nothing else is communicated.
//   Owner  the direction needs the whole matrix (spectral: Muon, Scion's hidden layers; column
//          normalization; whole-vector RMS) or the chain has a transform not known to be
//          row-separable (row_separable below): one rank, the owner, steps the whole layer.
//          Owners are balanced by cost (m n min(m, n) for a polar factor, m n otherwise),
//          largest first, each to the least-loaded rank.
// Each rank runs the ordinary step (the same kernels, on the same memory: its rows are a view
// of the model's tensor) over its share, then one all-gather completes the weights. So a sharded
// step equals the single-process step bit for bit, given the same summed gradient
// (tests/distributed/test_sharded.cpp checks it for every named optimizer at 1, 2 and 4 ranks). A rank
// may own nothing (more ranks than rows); it still takes part in the collectives.
//
// Non-finite gradients: every rank checks the rows it reads, and the ranks agree (one 8-byte
// all-reduce) on the first bad tensor, so all of them throw the same non_finite_error (or skip,
// per the optimizer's NonFinitePolicy) and nothing changes anywhere.
//
// Checkpoints: save gathers every rank's share to rank 0, which writes the single-process file
// (optim/state_io.hpp); load reads it on rank 0, broadcasts it, and every rank keeps its share.
// So a state saved on 4 ranks loads on 2, on 1, or into an unsharded optimizer, and back. Rank 0
// holds the whole state while saving and every rank while loading (transiently).
//
// Communication per step, for N parameters of S bytes: step() all-gathers N S bytes in all
// (each rank sends its share, receives the rest); step_reduce() adds a reduce-scatter of N S.
//
// Memory spaces: the parameters, gradients and state live where the communicator's buffers do
// (distributed/communicator.hpp): host memory with MpiCommunicator, CUDA device memory with
// NcclCommunicator (distributed/nccl.cuh, which adds the device's row copies and finite check). The
// plans, the collectives and the checkpoint format are the same for both.
#pragma once

#include <algorithm>
#include <cstring>
#include <limits>
#include <map>
#include <numeric>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../optim/optimizers.hpp"
#include "../optim/routing.hpp"
#include "../optim/state_io.hpp"
#include "communicator.hpp"

namespace steepest::dist {

/// Whether transform T's layers may be split by rows: what T states (its `row_separable`
/// member, optim/transforms.hpp), false when it states nothing. Specializing this trait for a
/// transform one cannot edit still works.
template <class T, class = void>
struct row_separable : std::false_type {};
template <class T>
struct row_separable<T, std::void_t<decltype(T::row_separable)>> : std::bool_constant<T::row_separable> {};

template <class C>
struct chain_row_separable : std::false_type {};
template <class... Ts>
struct chain_row_separable<Chain<Ts...>> : std::bool_constant<(row_separable<Ts>::value && ...)> {};

/// How one layer is shared out (see the file comment).
struct LayerPlan {
  /// Split by rows across ranks (else stepped whole by `owner`).
  bool by_rows = false;
  int owner = 0;              ///< Owner plans: the rank that steps the layer
  std::vector<Index> bounds;  ///< Rows plans: rank r steps rows [bounds[r], bounds[r + 1])
  Index rows = 0;  ///< The layer's rows.
  Index cols = 0;  ///< The layer's columns.
  /// The layer's name.
  std::string name;
  /// First row rank r steps.
  Index begin(int r) const { return by_rows ? bounds[std::size_t(r)] : 0; }
  /// One past the last row rank r steps.
  Index end(int r) const { return by_rows ? bounds[std::size_t(r) + 1] : (r == owner ? rows : 0); }
};

namespace detail {

/// Calls f(chain type tag, geometry, fuse) for layer l's route (fuse: the route may use the
/// one-pass kernels).
template <class Opt, class S, class F>
void with_chain(const Opt& opt, const Layer<S>& l, F&& f) {
  opt.with_route(opt.route_of(l), [&](const auto& o) {
    f(static_cast<typename std::decay_t<decltype(o)>::chain*>(nullptr), o.geometry_of(l), opt.fuse && o.fuse);
  });
}

/// The plans of every layer of `params` over `ranks` ranks (deterministic: the same on every rank).
template <class Opt, class S, class Space>
std::vector<LayerPlan> make_plans(const Opt& opt, const ParamSet<S, Space>& params, int ranks) {
  std::vector<LayerPlan> plans(params.size());
  std::vector<std::pair<double, std::size_t>> owned;  // (cost, layer)
  for (std::size_t k = 0; k < params.size(); ++k) {
    const Layer<S>& l = params[k];
    LayerPlan& p = plans[k];
    p.rows = l.rows, p.cols = l.cols, p.name = l.name;
    bool rows = false, spectral = false;
    with_chain(opt, l, [&](auto* chain, Geometry g, bool fuse) {
      using C = std::remove_pointer_t<decltype(chain)>;
      spectral = g.spectral();
      const FusedForm f = g.fused();
      // Split layers must take the one-pass kernels, as the whole layer does: their arithmetic
      // per entry does not depend on where a row starts. The transform-by-transform path runs
      // Eigen expressions whose SIMD packets start at the block's first entry, so a split moves
      // entries between packet and scalar code (FMA or not): equal to a few ulp, not bitwise.
      rows = chain_row_separable<C>::value && !spectral && fuse && l.stride == l.cols &&
             C::template can_fuse<S>(g) &&
             (f == FusedForm::Identity || f == FusedForm::Sign || f == FusedForm::Row2);
      for (int r = 0; rows && r < ranks; ++r) {  // the width-aware scale must not see the shard's height
        const Index mr = (Index(r) + 1) * l.rows / ranks - Index(r) * l.rows / ranks;
        if (mr > 0 && g.scale(mr, l.cols) != g.scale(l.rows, l.cols)) rows = false;
      }
    });
    if (rows) {
      p.by_rows = true;
      for (int r = 0; r <= ranks; ++r) p.bounds.push_back(Index(r) * l.rows / ranks);
    } else {
      const double m = double(l.rows), n = double(l.cols);
      owned.push_back({spectral ? m * n * std::min(m, n) : m * n, k});
    }
  }
  // Largest first, each to the least-loaded rank (ties: the lower layer, the lower rank).
  std::stable_sort(owned.begin(), owned.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<double> load(std::size_t(ranks), 0.0);
  for (const auto& [cost, k] : owned) {
    const int r = int(std::min_element(load.begin(), load.end()) - load.begin());
    plans[k].owner = r;
    load[std::size_t(r)] += cost;
  }
  return plans;
}

/// A rank's part of one layer: rows [begin, end) of layer `layer`.
struct Piece {
  std::size_t layer;
  Index begin, end;
};

/// Rank r's pieces, non-empty, in layer order.
inline std::vector<Piece> pieces_of(const std::vector<LayerPlan>& plans, int r) {
  std::vector<Piece> out;
  for (std::size_t k = 0; k < plans.size(); ++k)
    if (plans[k].end(r) > plans[k].begin(r)) out.push_back({k, plans[k].begin(r), plans[k].end(r)});
  return out;
}

inline long long entries_of(const std::vector<LayerPlan>& plans, const std::vector<Piece>& pieces) {
  long long n = 0;
  for (const Piece& p : pieces) n += (long long)(p.end - p.begin) * plans[p.layer].cols;
  return n;
}

}  // namespace detail

/// What the sharded optimizer does with memory of space `Space`: row copies between layers and
/// packed buffers, whole-buffer copies, staging to and from the host for checkpoints, and the
/// finite check of a rank's rows. Host is here; cuda::Device is in distributed/nccl.cuh.
template <class Space>
struct ShardSpace {
  static_assert(sizeof(Space) == 0,
                "steepest::dist: no sharding support for this memory space (host memory is built in; "
                "include <steepest/distributed/nccl.cuh> for cuda::Device)");
};

/// Host memory: packing buffers are vectors, copies are memcpy.
template <>
struct ShardSpace<Host> {
  /// A flat buffer that only grows (the packing buffers).
  template <class S>
  struct Flat {
    /// The storage.
    std::vector<S> v;
    /// At least n entries.
    S* reserve(std::size_t n) {
      if (v.size() < n) v.resize(n);
      return v.data();
    }
  };
  /// dst row i = scale * src row i, for `rows` rows of `cols` entries (row strides in entries).
  template <class S>
  static void copy_rows(const Host&, S* dst, Index dst_stride, const S* src, Index src_stride, Index rows, Index cols,
                        S scale = S(1)) {
    if (rows <= 0 || cols <= 0) return;
    if (scale == S(1) && dst_stride == cols && src_stride == cols) {  // whole rows back to back: one copy
      std::memcpy(dst, src, sizeof(S) * std::size_t(rows * cols));
      return;
    }
    for (Index i = 0; i < rows; ++i) {
      S* d = dst + i * dst_stride;
      const S* r = src + i * src_stride;
      if (scale == S(1)) std::memcpy(d, r, sizeof(S) * std::size_t(cols));
      else for (Index c = 0; c < cols; ++c) d[c] = r[c] * scale;
    }
  }
  /// dst = src, count entries.
  template <class S>
  static void copy(S* dst, const S* src, std::size_t count) {
    if (count) std::memcpy(dst, src, sizeof(S) * count);
  }
  /// To host memory (a copy here).
  template <class S>
  static void to_host(const S* src, std::size_t count, void* dst) {
    if (count) std::memcpy(dst, src, sizeof(S) * count);
  }
  /// From host memory (a copy here).
  template <class S>
  static void from_host(S* dst, std::size_t count, const void* src) {
    if (count) std::memcpy(dst, src, sizeof(S) * count);
  }
  /// The lowest tensor index with a non-finite (or over-limit) entry in the rows `share` steps,
  /// or grads.size(): one read of each of this rank's rows.
  template <class S>
  static std::size_t first_bad(const ParamSet<S, Host>& share, const Gradients<S, Host>& grads) {
    std::size_t bad = grads.size();
    for (const auto& l : share) {
      const S* g = grads.data(l.tensor) + l.offset;
      bool ok = true;
      if (l.contiguous()) ok = simd::all_finite<gradient_limit_exponent<S>>(g, l.rows * l.cols);
      else
        for (Index i = 0; i < l.rows && ok; ++i) ok = simd::all_finite<gradient_limit_exponent<S>>(g + i * l.stride, l.cols);
      if (!ok) bad = std::min(bad, l.tensor);
    }
    return bad;
  }
};

namespace detail {

/// Copies the rows of `pieces` from `params`' layers into `out`, one after another.
template <class S, class Space>
S* pack(const ParamSet<S, Space>& params, const std::vector<Piece>& pieces, S* out) {
  for (const Piece& p : pieces) {
    const Layer<S>& l = params[p.layer];
    const Index rows = p.end - p.begin;
    ShardSpace<Space>::copy_rows(params.space(), out, l.cols, l.data + p.begin * l.stride, l.stride, rows, l.cols);
    out += rows * l.cols;
  }
  return out;
}
/// The same from a gradient (laid out as its tensor; the layer's offset and stride apply).
template <class S, class Space>
S* pack(const ParamSet<S, Space>& params, const Gradients<S, Space>& grads, const std::vector<Piece>& pieces, S* out) {
  for (const Piece& p : pieces) {
    const Layer<S>& l = params[p.layer];
    const Index rows = p.end - p.begin;
    ShardSpace<Space>::copy_rows(params.space(), out, l.cols, grads.data(l.tensor) + l.offset + p.begin * l.stride,
                                 l.stride, rows, l.cols);
    out += rows * l.cols;
  }
  return out;
}
/// The inverse of pack, into `params`' layers (or, with `tensors`, into per-tensor buffers laid
/// out as the tensors, times `scale`).
template <class S, class Space>
const S* unpack(ParamSet<S, Space>& params, const std::vector<Piece>& pieces, const S* in) {
  for (const Piece& p : pieces) {
    const Layer<S>& l = params[p.layer];
    const Index rows = p.end - p.begin;
    ShardSpace<Space>::copy_rows(params.space(), l.data + p.begin * l.stride, l.stride, in, l.cols, rows, l.cols);
    in += rows * l.cols;
  }
  return in;
}
template <class S, class Space, class Tensors>
const S* unpack(const ParamSet<S, Space>& params, Tensors& tensors, const std::vector<Piece>& pieces, const S* in,
                S scale) {
  for (const Piece& p : pieces) {
    const Layer<S>& l = params[p.layer];
    const Index rows = p.end - p.begin;
    S* t = tensors[l.tensor].data() + l.offset + p.begin * l.stride;
    ShardSpace<Space>::copy_rows(params.space(), t, l.stride, in, l.cols, rows, l.cols, scale);
    in += rows * l.cols;
  }
  return in;
}

/// A state's buffers in visit order, with their layer's name and key.
template <class S>
struct BufferRef {
  std::string layer, key;
  S* data;
  Index rows, cols;
};
template <class S, class St>
std::vector<BufferRef<S>> buffers_of(St& st) {
  std::vector<BufferRef<S>> out;
  st.for_each_layer([&](const LayerRecord& rec, const std::string&, auto&& visit) {
    visit([&](const std::string& key, auto& b, Domain) {
      static_assert(std::is_same_v<steepest::detail::buffer_scalar_t<std::decay_t<decltype(b)>>, S>,
                    "steepest::dist: sharded steps keep state in the parameters' precision "
                    "(FullPrecision); bf16 state (Bf16State) rounds by each entry's index in its "
                    "whole layer, which a row shard does not have");
      out.push_back({rec.name, key, b.data(), b.rows(), b.cols()});
    });
  });
  return out;
}

/// Copies between a rank's share of a buffer and the whole layer's buffer. A buffer with one
/// row per layer row (a moment: m x n, a per-row factor: m x 1) is cut by rows; any other (a
/// per-layer scalar) is the same on every rank that holds rows of the layer.
template <class Space, class S>
void copy_share(const BufferRef<S>& part, const BufferRef<S>& whole, Index first_row, Index layer_rows,
                Index part_rows, bool to_whole) {
  const bool by_rows = whole.rows == layer_rows && part.rows == part_rows && part.cols == whole.cols;
  if (!by_rows && (part.rows != whole.rows || part.cols != whole.cols))
    throw std::logic_error("steepest::dist: buffer '" + part.key + "' of layer '" + part.layer + "' is " +
                           shape_string(part.rows, part.cols) + " on a rank and " + shape_string(whole.rows, whole.cols) +
                           " whole: neither a row share nor the same");
  S* w = whole.data + (by_rows ? first_row * whole.cols : 0);
  const std::size_t n = std::size_t(part.rows * part.cols);
  if (to_whole) ShardSpace<Space>::copy(w, part.data, n);
  else ShardSpace<Space>::copy(part.data, w, n);
}

inline std::string non_finite_message(const std::string& name, int limit_exponent) {
  return "parameter '" + name + "': gradient has NaN or Inf entries, or entries of magnitude >= 2^" +
         std::to_string(limit_exponent) + "; step refused, nothing changed";
}

}  // namespace detail

/// The state of one rank: its share of the optimizer state, the parameter set it steps (views of
/// its rows of the model's tensors) and the plans. Built by Sharded::init.
template <class S, class Space, class LocalState>
struct ShardedState {
  LocalState local;                  ///< the optimizer's own state for this rank's layers / rows
  ParamSet<S, Space> params;         ///< this rank's layers (row views into the model's memory)
  std::vector<LayerPlan> plans;      ///< every layer's plan (the same on every rank)
  std::vector<const S*> bound;       ///< the model's layer pointers `params` views
  std::vector<std::vector<detail::Piece>> pieces;  ///< every rank's pieces
  std::vector<long long> counts;  ///< entries per rank, and their offsets
  std::vector<long long> displs;  ///< entries per rank, and their offsets
  typename ShardSpace<Space>::template Flat<S> send;  ///< packing buffers (grow once)
  typename ShardSpace<Space>::template Flat<S> recv;  ///< packing buffers (grow once)
  std::vector<buffer_t<S, Space>> summed;          ///< step_reduce's summed gradients (this rank's rows)
  /// Steps taken.
  long long step() const { return local.step; }
};

/// The sharded form of optimizer `Opt` (plain or routed) over communicator `Comm` (see the file
/// comment and distributed/mpi.hpp for what a communicator provides).
template <class Opt, class Comm>
class Sharded {
 public:
  /// Where the parameters, gradients and state live: the communicator's buffers' space.
  using space_type = comm_space_t<Comm>;
  /// The state of a sharded step: this rank's state and its exchange buffers.
  template <class S>
  using State = ShardedState<S, space_type, typename Opt::template State<S, space_type>>;
  /// The parameter set type.
  template <class S>
  using Params = ParamSet<S, space_type>;
  /// The gradient set type.
  template <class S>
  using Grads = Gradients<S, space_type>;

  /// Steps with `opt`, each rank its share, exchanging through `comm`.
  Sharded(Opt opt, Comm& comm) : opt_(std::move(opt)), local_opt_(opt_), comm_(&comm) {
    // The ranks agree on non-finite gradients before anyone steps (see the file comment).
    local_opt_.non_finite_policy() = NonFinitePolicy::Unchecked;
  }

  /// The optimizer.
  const Opt& optimizer() const { return opt_; }
  /// The communicator.
  Comm& communicator() { return *comm_; }

  /// This rank's state for `params` (the whole model, the same shapes on every rank).
  template <class S>
  State<S> init(const Params<S>& params) const {
    State<S> st;
    st.plans = detail::make_plans(opt_, params, comm_->size());
    for (int r = 0; r < comm_->size(); ++r) {
      st.pieces.push_back(detail::pieces_of(st.plans, r));
      st.displs.push_back(st.counts.empty() ? 0 : st.displs.back() + st.counts.back());
      st.counts.push_back(detail::entries_of(st.plans, st.pieces.back()));
    }
    bind(params, st);
    st.local = init_share(params, st.params, st.pieces[std::size_t(comm_->rank())]);
    return st;
  }

  /// A sharded step takes a gradient for every tensor: the ranks' skip counts would have to
  /// agree per shard, which nothing checks yet.
  template <class S>
  static void refuse_skipped(const Params<S>& params, const Grads<S>& grads) {
    for (std::size_t i = 0; i < grads.size(); ++i)
      if (grads.skipped(i))
        throw std::invalid_argument("sharded step: tensor '" + params.tensors()[i].name +
                                    "' has no gradient (Gradients::skip); a sharded optimizer steps every "
                                    "tensor: give it a zero gradient or leave it out of the parameter set");
  }

  /// One step with the gradient already summed (or averaged) over the ranks: the same `grads` on
  /// every rank (this rank reads only its rows). Returns false when skipped (NonFinitePolicy::
  /// Skip); every rank then returns false. Afterwards every rank has all the new weights.
  template <class S>
  bool step(Params<S>& params, const Grads<S>& grads, State<S>& st) const {
    steepest::detail::check_step_inputs(params, grads, st.plans.size());
    refuse_skipped(params, grads);
    bind(params, st);
    // The first tensor with a non-finite entry in anyone's rows, agreed by all ranks.
    const NonFinitePolicy policy = opt_.non_finite_policy();
    long long bad = (long long)grads.size();
    if (policy != NonFinitePolicy::Unchecked) bad = comm_->min((long long)ShardSpace<space_type>::first_bad(st.params, grads));
    if (policy != NonFinitePolicy::Unchecked && bad < (long long)grads.size()) {
      if (policy == NonFinitePolicy::Skip) return false;
      throw non_finite_error(detail::non_finite_message(params.tensors()[std::size_t(bad)].name, gradient_limit_exponent<S>));
    }
    local_opt_.step(st.params, grads, st.local);
    gather_weights(params, st);
    return true;
  }

  /// One step from this rank's own gradient: the ranks' gradients are summed (times `scale`,
  /// e.g. 1 / ranks for the mean) by one reduce-scatter, each rank receiving its rows, then as
  /// step(). Same return value.
  template <class S>
  bool step_reduce(Params<S>& params, const Grads<S>& grads, State<S>& st, double scale = 1.0) const {
    steepest::detail::check_step_inputs(params, grads, st.plans.size());
    refuse_skipped(params, grads);
    bind(params, st);
    const int me = comm_->rank();
    const long long total = st.displs.back() + st.counts.back();
    S* send = st.send.reserve(std::size_t(std::max<long long>(total, 1)));
    S* recv = st.recv.reserve(std::size_t(std::max<long long>(total, 1)));
    S* out = send;
    for (const auto& pieces : st.pieces) out = detail::pack(params, grads, pieces, out);
    comm_->reduce_scatter(send, recv, st.counts);
    if (st.summed.size() != params.tensors().size()) {
      st.summed.clear();
      for (const auto& t : params.tensors()) st.summed.push_back(buffer_t<S, space_type>::Zero(t.rows, t.cols));
    }
    detail::unpack(params, st.summed, st.pieces[std::size_t(me)], recv, static_cast<S>(scale));
    Grads<S> summed;
    for (const auto& t : st.summed) summed.add(t.data(), t.rows(), t.cols());
    return step(params, summed, st);
  }

  /// Writes the whole state to `path` (rank 0 writes; collective): the single-process format,
  /// loadable on any number of ranks or without sharding. Throws on every rank if the write fails.
  template <class S>
  void save(const Params<S>& params, State<S>& st, const std::string& path) const {
    std::string blob;
    for (const auto& b : detail::buffers_of<S>(st.local)) {
      const std::size_t at = blob.size(), n = std::size_t(b.rows * b.cols);
      blob.resize(at + sizeof(S) * n);
      ShardSpace<space_type>::to_host(b.data, n, blob.data() + at);
    }
    const std::vector<std::string> blobs = comm_->gather(blob, 0);
    std::string error;
    if (comm_->rank() == 0) {
      try {
        auto whole = opt_.init(params);
        fill_whole(params, st, blobs, whole);
        steepest::save(opt_, whole, path);
      } catch (const std::exception& e) {
        error = e.what();
      }
    }
    comm_->broadcast(error, 0);
    if (!error.empty()) throw state_file_error("sharded save (rank 0): " + error);
  }

  /// Replaces this rank's state with its share of the state in `path` (collective). Rank 0 loads
  /// the file with st::load, every check included (a FIFO, a device or an oversized header is
  /// refused before it is read), and broadcasts its verdict; only a state that passed is sent on,
  /// as a checkpoint in memory, which the other ranks load. Refuses on every rank, changing
  /// nothing, as st::load refuses.
  template <class S>
  void load(const Params<S>& params, State<S>& st, const std::string& path) const {
    auto whole = opt_.init(params);
    std::string bytes, error;
    if (comm_->rank() == 0) {
      try {
        steepest::load(opt_, whole, path);
        bytes = steepest::save_bytes(opt_, whole);
      } catch (const std::exception& e) {
        error = e.what();
      }
    }
    comm_->broadcast(error, 0);
    if (!error.empty()) throw state_file_error("sharded load (rank 0): " + error);
    comm_->broadcast(bytes, 0);
    if (comm_->rank() != 0) steepest::load_bytes(opt_, whole, bytes, path);
    take_share(params, st, whole);
  }
  /// This rank's share of an unsharded state of the same optimizer and model (every rank
  /// holds `whole`, e.g. from opt.init(params) and st::load).
  template <class S>
  void load_from(const Params<S>& params, State<S>& st, typename Opt::template State<S, space_type>& whole) const {
    take_share(params, st, whole);
  }

 private:
  Opt opt_;
  Opt local_opt_;  // opt_ without its own non-finite check (the ranks agree first)
  Comm* comm_;

  /// Points st.params at this rank's rows of `params` (again if the model's memory moved).
  template <class S>
  void bind(const Params<S>& params, State<S>& st) const {
    if (params.size() != st.plans.size())
      throw shape_error("sharded step: " + std::to_string(params.size()) + " layers, but the state was made for " +
                        std::to_string(st.plans.size()));
    bool same = st.bound.size() == params.size();
    for (std::size_t k = 0; k < params.size(); ++k) {
      const LayerPlan& p = st.plans[k];
      if (params[k].name != p.name || params[k].rows != p.rows || params[k].cols != p.cols)
        throw shape_error("parameter '" + params[k].name + "' (" + shape_string(params[k].rows, params[k].cols) +
                          "): the sharded state was made for '" + p.name + "' " + shape_string(p.rows, p.cols));
      same = same && st.bound[k] == params[k].data;
    }
    if (same) return;
    std::vector<typename Params<S>::RowSelection> keep;
    for (const auto& p : st.pieces[std::size_t(comm_->rank())]) keep.push_back({p.layer, p.begin, p.end});
    st.params = params.select_rows(keep);
    st.bound.clear();
    for (const auto& l : params) st.bound.push_back(l.data);
  }

  /// The optimizer's state for rank pieces `pieces` (a routed optimizer routes each piece as
  /// its whole layer).
  template <class S>
  typename Opt::template State<S, space_type> init_share(const Params<S>& params, const Params<S>& share,
                                                        const std::vector<detail::Piece>& pieces) const {
    std::vector<std::size_t> routes;
    for (const auto& p : pieces) routes.push_back(opt_.route_of(params[p.layer]));
    return local_opt_.init_routed(share, routes);
  }

  /// Rank 0: the whole state from every rank's blob (each rank's buffers in its visit order).
  template <class S, class Whole>
  void fill_whole(const Params<S>& params, State<S>& st, const std::vector<std::string>& blobs, Whole& whole) const {
    auto wb = detail::buffers_of<S>(whole);
    for (int r = 0; r < comm_->size(); ++r) {
      const auto& pieces = st.pieces[std::size_t(r)];
      std::vector<typename Params<S>::RowSelection> keep;
      for (const auto& p : pieces) keep.push_back({p.layer, p.begin, p.end});
      const Params<S> share = params.select_rows(keep);
      auto part = init_share(params, share, pieces);  // rank r's layout
      auto pb = detail::buffers_of<S>(part);
      std::size_t bytes = 0;
      for (const auto& b : pb) bytes += sizeof(S) * std::size_t(b.rows * b.cols);
      if (bytes != blobs[std::size_t(r)].size())
        throw std::logic_error("rank " + std::to_string(r) + " sent " + std::to_string(blobs[std::size_t(r)].size()) +
                               " bytes of state, its share has " + std::to_string(bytes));
      const char* in = blobs[std::size_t(r)].data();
      for (auto& b : pb) {
        const std::size_t n = std::size_t(b.rows * b.cols);
        ShardSpace<space_type>::from_host(b.data, n, in);
        in += sizeof(S) * n;
      }
      transfer(st.plans, pieces, pb, wb, true);
    }
    whole.set_step(st.local.step);
  }

  /// This rank's share of `whole` into st.local (nothing is written before all shapes agree).
  template <class S, class Whole>
  void take_share(const Params<S>& params, State<S>& st, Whole& whole) const {
    for (const long long* k : whole.skip_counts())
      if (*k != 0)
        throw std::invalid_argument("sharded load: the checkpoint has layers that skipped steps (Gradients::skip), "
                                    "which a sharded optimizer does not track; load it unsharded");
    auto wb = detail::buffers_of<S>(whole);
    const auto& mine = st.pieces[std::size_t(comm_->rank())];
    auto fresh = init_share(params, st.params, mine);
    auto pb = detail::buffers_of<S>(fresh);
    transfer(st.plans, mine, pb, wb, false);
    fresh.set_step(whole.step);
    st.local = std::move(fresh);
  }

  /// Pairs a share's buffers with the whole state's (by layer name and key) and copies.
  template <class S>
  static void transfer(const std::vector<LayerPlan>& plans, const std::vector<detail::Piece>& pieces,
                       std::vector<detail::BufferRef<S>>& part, std::vector<detail::BufferRef<S>>& whole,
                       bool to_whole) {
    std::map<std::pair<std::string, std::string>, std::size_t> at;
    for (std::size_t i = 0; i < whole.size(); ++i) at[{whole[i].layer, whole[i].key}] = i;
    std::map<std::string, const detail::Piece*> piece_of;
    for (const auto& p : pieces) piece_of[plans[p.layer].name] = &p;
    for (const auto& b : part) {
      const auto w = at.find({b.layer, b.key});
      const auto p = piece_of.find(b.layer);
      if (w == at.end() || p == piece_of.end())
        throw std::logic_error("steepest::dist: no whole buffer '" + b.key + "' of layer '" + b.layer + "'");
      const detail::Piece& piece = *p->second;
      detail::copy_share<space_type>(b, whole[w->second], piece.begin, plans[piece.layer].rows, piece.end - piece.begin, to_whole);
    }
  }

  /// All-gathers every rank's new rows into `params` (nothing to send with one rank).
  template <class S>
  void gather_weights(Params<S>& params, State<S>& st) const {
    const int ranks = comm_->size(), me = comm_->rank();
    if (ranks == 1) return;
    const long long total = st.displs.back() + st.counts.back();
    S* send = st.send.reserve(std::size_t(std::max<long long>(st.counts[std::size_t(me)], 1)));
    S* recv = st.recv.reserve(std::size_t(std::max<long long>(total, 1)));
    detail::pack(params, st.pieces[std::size_t(me)], send);
    comm_->allgatherv(send, recv, st.counts, st.displs);
    for (int r = 0; r < ranks; ++r)
      if (r != me) detail::unpack(params, st.pieces[std::size_t(r)], recv + st.displs[std::size_t(r)]);
  }
};

/// The sharded form of `opt` over `comm` (deduces both types).
template <class Opt, class Comm>
Sharded<Opt, Comm> shard(Opt opt, Comm& comm) {
  return Sharded<Opt, Comm>(std::move(opt), comm);
}

}  // namespace steepest::dist
