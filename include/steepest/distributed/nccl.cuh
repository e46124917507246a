// steepest/distributed/nccl.cuh -- the NCCL communicator of the sharded optimizer (device buffers), and
// the sharded optimizer's device-memory operations. Compile with nvcc; link NCCL (the CUDA
// toolkit's libnccl; CMake: the target steepest::nccl, or -lnccl).
//
//   // one process per GPU; the unique id travels by any bootstrap (here MPI):
//   ncclUniqueId id; if (rank == 0) ncclGetUniqueId(&id);
//   MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
//   cudaSetDevice(local_rank);
//   ncclComm_t nc; ncclCommInitRank(&nc, ranks, id, rank);
//   st::cuda::Context ctx;                                    // the optimizer's stream
//   st::dist::NcclCommunicator comm(nc, ctx);
//   st::ParamSet<float, st::cuda::Device> params(st::cuda::Device{&ctx});
//   auto opt = st::dist::shard(st::moga_row(), comm);          // distributed/sharded.hpp
//   auto state = opt.init(params);
//   opt.step_reduce(params, grads, state, 1.0 / ranks);        // device gradients, device weights
//
// Every collective is NCCL's own, enqueued on the context's current stream (it follows
// Context::set_stream), so a step's kernels and its collectives are ordered without host
// synchronization. NCCL's all-gather and reduce-scatter take equal counts per rank, and a shard
// of rows is rarely equal, so the uneven forms are NCCL's grouped collectives: allgatherv is one
// ncclBroadcast per rank (rooted at the rank whose rows it carries) and reduce_scatter one
// ncclReduce per rank (rooted at the rank that keeps the sum), each list inside one
// ncclGroupStart/End, which NCCL runs as one fused operation. The bytes on the wire are those of
// the equal-count collectives. min() is an ncclAllReduce of one int64; the checkpoint calls
// (broadcast, gather) stage bytes through device memory (ncclSend / ncclRecv to the root).
//
// The communicator does not own the ncclComm_t: the caller creates it (ncclCommInitRank, or
// ncclCommInitAll in one process) and destroys it after the last use.
//
// When a rank dies, the others' collectives never complete, and their next wait for the stream
// (min, broadcast, gather: the finite check and the checkpoint calls) would last forever. With
// NcclCommunicator(comm, ctx, timeout_seconds) that wait polls the stream and NCCL's async error
// instead, and after that long aborts the communicator (ncclCommAbort, which releases kernels
// stuck in a collective) and throws communication_error. The ncclComm_t is then gone (do not
// destroy it again), every later call throws, and the job should end. 0 (default) waits.
// Not yet run on a GPU (none was lent); it compiles in CI.
#pragma once

#include <nccl.h>

#include <climits>
#include <cstdint>
#include <string>
#include <vector>

#include "../cuda/cuda.cuh"
#include "communicator.hpp"
#include "sharded.hpp"

namespace steepest::dist {

namespace detail {
inline void nccl_check(ncclResult_t r, const char* what, int rank) {
  if (r == ncclSuccess) return;
  throw communication_error(std::string("steepest::dist: ") + what + " failed on rank " + std::to_string(rank) + ": " +
                            ncclGetErrorString(r));
}

/// p[i * stride + c] *= s for the rows x cols block at p (step_reduce's mean of the summed rows).
template <class S>
__global__ void scale_rows(S* p, Index stride, Index rows, Index cols, S s) {
  const Index n = rows * cols;
  for (Index k = Index(blockIdx.x) * blockDim.x + threadIdx.x; k < n; k += Index(gridDim.x) * blockDim.x) {
    const Index i = k / cols, c = k - i * cols;
    p[i * stride + c] *= s;
  }
}
}  // namespace detail

/// The communicator over an NCCL communicator (not owned), on the stream of `ctx`.
class NcclCommunicator {
 public:
  using space_type = cuda::Device;  ///< device buffers

  /// Ranks of `comm`, on ctx's stream; a collective that takes longer than timeout_seconds (0: no limit) aborts the communicator and throws communication_error.
  NcclCommunicator(ncclComm_t comm, cuda::Context& ctx, double timeout_seconds = 0.0)
      : comm_(comm), ctx_(&ctx), timeout_(detail::checked_timeout(timeout_seconds, "NcclCommunicator")) {
    if (comm == nullptr) throw communication_error("steepest::dist::NcclCommunicator: null ncclComm_t");
    detail::nccl_check(ncclCommUserRank(comm_, &rank_), "ncclCommUserRank", -1);
    detail::nccl_check(ncclCommCount(comm_, &size_), "ncclCommCount", rank_);
  }
  /// This process's rank.
  int rank() const { return rank_; }
  /// Ranks in the communicator.
  int size() const { return size_; }
  /// The NCCL communicator.
  ncclComm_t comm() const { return comm_; }
  /// The stream collectives are enqueued on.
  cudaStream_t stream() const { return ctx_->stream(); }

  /// all = the ranks' `mine` concatenated (rank r's counts[r] entries at displs[r]).
  template <class S>
  void allgatherv(const S* mine, S* all, const std::vector<long long>& counts, const std::vector<long long>& displs) {
    group([&] {
      for (int r = 0; r < size_; ++r) {
        const std::size_t n = std::size_t(counts[std::size_t(r)]);
        if (n == 0) continue;  // every rank skips the same roots (counts are the same everywhere)
        S* at = all + displs[std::size_t(r)];
        detail::nccl_check(ncclBroadcast(r == rank_ ? static_cast<const void*>(mine) : at, at, n, type<S>(), r, comm_,
                                         stream()),
                           "ncclBroadcast (allgatherv)", rank_);
      }
    });
  }
  /// mine = rank r's part (counts[r] entries) of the sum over ranks of `all`.
  template <class S>
  void reduce_scatter(const S* all, S* mine, const std::vector<long long>& counts) {
    group([&] {
      std::size_t at = 0;
      for (int r = 0; r < size_; ++r) {
        const std::size_t n = std::size_t(counts[std::size_t(r)]);
        // Only the root writes its receive buffer; the others pass theirs (valid device memory).
        if (n) detail::nccl_check(ncclReduce(all + at, mine, n, type<S>(), ncclSum, r, comm_, stream()),
                                  "ncclReduce (reduce_scatter)", rank_);
        at += n;
      }
    });
  }
  /// The smallest v over ranks.
  long long min(long long v) {
    long long* d = scratch_i64_.reserve(1);
    cuda::check(cudaMemcpyAsync(d, &v, sizeof v, cudaMemcpyHostToDevice, stream()), "cudaMemcpyAsync (min)");
    detail::nccl_check(ncclAllReduce(d, d, 1, ncclInt64, ncclMin, comm_, stream()), "ncclAllReduce (min)", rank_);
    long long out = v;
    cuda::check(cudaMemcpyAsync(&out, d, sizeof out, cudaMemcpyDeviceToHost, stream()), "cudaMemcpyAsync (min)");
    sync("cudaStreamSynchronize (min)");
    return out;
  }
  /// `bytes` of rank `root`, on every rank.
  void broadcast(std::string& bytes, int root) {
    long long n = (long long)bytes.size();
    long long* d = scratch_i64_.reserve(1);
    cuda::check(cudaMemcpyAsync(d, &n, sizeof n, cudaMemcpyHostToDevice, stream()), "cudaMemcpyAsync (broadcast)");
    detail::nccl_check(ncclBroadcast(d, d, 1, ncclInt64, root, comm_, stream()), "ncclBroadcast (size)", rank_);
    cuda::check(cudaMemcpyAsync(&n, d, sizeof n, cudaMemcpyDeviceToHost, stream()), "cudaMemcpyAsync (broadcast)");
    sync("cudaStreamSynchronize (broadcast)");
    bytes.resize(std::size_t(n));
    if (n == 0) return;
    char* b = scratch_bytes_.reserve(std::size_t(n));
    cuda::check(cudaMemcpyAsync(b, bytes.data(), std::size_t(n), cudaMemcpyHostToDevice, stream()),
                "cudaMemcpyAsync (broadcast)");
    detail::nccl_check(ncclBroadcast(b, b, std::size_t(n), ncclInt8, root, comm_, stream()), "ncclBroadcast", rank_);
    cuda::check(cudaMemcpyAsync(bytes.data(), b, std::size_t(n), cudaMemcpyDeviceToHost, stream()),
                "cudaMemcpyAsync (broadcast)");
    sync("cudaStreamSynchronize (broadcast)");
  }
  /// Every rank's `mine` on rank `root` (empty elsewhere).
  std::vector<std::string> gather(const std::string& mine, int root) {
    // Every rank's size, by an all-gather of one int64 each.
    long long* sizes_d = scratch_i64_.reserve(std::size_t(size_) + 1);
    const long long n = (long long)mine.size();
    cuda::check(cudaMemcpyAsync(sizes_d + size_, &n, sizeof n, cudaMemcpyHostToDevice, stream()),
                "cudaMemcpyAsync (gather)");
    detail::nccl_check(ncclAllGather(sizes_d + size_, sizes_d, 1, ncclInt64, comm_, stream()), "ncclAllGather (gather)",
                       rank_);
    std::vector<long long> sizes(static_cast<std::size_t>(size_));
    cuda::check(cudaMemcpyAsync(sizes.data(), sizes_d, sizeof(long long) * std::size_t(size_), cudaMemcpyDeviceToHost,
                                stream()),
                "cudaMemcpyAsync (gather)");
    sync("cudaStreamSynchronize (gather)");
    std::vector<long long> at(std::size_t(size_) + 1, 0);
    for (int r = 0; r < size_; ++r) at[std::size_t(r) + 1] = at[std::size_t(r)] + sizes[std::size_t(r)];
    char* b = scratch_bytes_.reserve(std::size_t(std::max<long long>(rank_ == root ? at.back() : n, 1)));
    if (rank_ == root) {
      if (n) cuda::check(cudaMemcpyAsync(b + at[std::size_t(root)], mine.data(), std::size_t(n), cudaMemcpyHostToDevice,
                                         stream()),
                         "cudaMemcpyAsync (gather)");
    } else if (n) {
      cuda::check(cudaMemcpyAsync(b, mine.data(), std::size_t(n), cudaMemcpyHostToDevice, stream()),
                  "cudaMemcpyAsync (gather)");
    }
    group([&] {
      if (rank_ == root) {
        for (int r = 0; r < size_; ++r)
          if (r != root && sizes[std::size_t(r)])
            detail::nccl_check(ncclRecv(b + at[std::size_t(r)], std::size_t(sizes[std::size_t(r)]), ncclInt8, r, comm_,
                                        stream()),
                               "ncclRecv (gather)", rank_);
      } else if (n) {
        detail::nccl_check(ncclSend(b, std::size_t(n), ncclInt8, root, comm_, stream()), "ncclSend (gather)", rank_);
      }
    });
    std::vector<std::string> out;
    if (rank_ == root) {
      std::string all(std::size_t(at.back()), '\0');
      if (!all.empty())
        cuda::check(cudaMemcpyAsync(all.data(), b, all.size(), cudaMemcpyDeviceToHost, stream()),
                    "cudaMemcpyAsync (gather)");
      sync("cudaStreamSynchronize (gather)");
      for (int r = 0; r < size_; ++r)
        out.push_back(all.substr(std::size_t(at[std::size_t(r)]), std::size_t(sizes[std::size_t(r)])));
    } else {
      sync("cudaStreamSynchronize (gather)");
    }
    return out;
  }

 private:
  template <class S>
  static ncclDataType_t type() {
    static_assert(std::is_same_v<S, float> || std::is_same_v<S, double>,
                  "steepest::dist::NcclCommunicator: float or double buffers");
    return std::is_same_v<S, float> ? ncclFloat32 : ncclFloat64;
  }
  /// Waits for the stream: as long as it takes, or at most timeout_ (see the file comment).
  void sync(const char* what) {
    if (aborted_)
      throw communication_error(std::string("steepest::dist: ") + what + " on rank " + std::to_string(rank_) +
                                ": the communicator was aborted after a timeout; end the job");
    if (timeout_ <= 0.0) return cuda::check(cudaStreamSynchronize(stream()), what);
    const bool completed = detail::wait_until_done(timeout_, [&] {
      const cudaError_t e = cudaStreamQuery(stream());
      if (e == cudaSuccess) return true;
      if (e != cudaErrorNotReady) cuda::check(e, what);
      ncclResult_t async = ncclSuccess;
      detail::nccl_check(ncclCommGetAsyncError(comm_, &async), "ncclCommGetAsyncError", rank_);
      if (async != ncclSuccess && async != ncclInProgress) detail::nccl_check(async, what, rank_);
      return false;
    });
    if (completed) return;
    ncclCommAbort(comm_);  // releases kernels stuck in a collective; the ncclComm_t is gone
    aborted_ = true;
    throw communication_error(std::string(detail::timed_out(what, timeout_, rank_, size_).what()) +
                              "; the ncclComm_t was aborted");
  }
  /// Runs f's NCCL calls as one group (ended even when one of them throws).
  template <class F>
  void group(F&& f) {
    detail::nccl_check(ncclGroupStart(), "ncclGroupStart", rank_);
    try {
      f();
    } catch (...) {
      ncclGroupEnd();
      throw;
    }
    detail::nccl_check(ncclGroupEnd(), "ncclGroupEnd", rank_);
  }

  ncclComm_t comm_;
  cuda::Context* ctx_;
  double timeout_ = 0.0;
  bool aborted_ = false;
  int rank_ = 0, size_ = 1;
  cuda::Buffer<long long> scratch_i64_;
  cuda::Buffer<char> scratch_bytes_;
};

/// Device memory for the sharded optimizer: row copies are cudaMemcpy2DAsync on the parameter
/// set's stream (the collectives' stream too); checkpoint staging synchronizes the device, as
/// the single-process save and load do (cuda/space.cuh).
template <>
struct ShardSpace<cuda::Device> {
  /// A device packing buffer that grows once.
  template <class S>
  struct Flat {
    /// The allocation.
    cuda::Buffer<S> b;
    /// At least n entries.
    S* reserve(std::size_t n) { return b.reserve(n); }
  };
  /// dst = scale * src, rows x cols with row strides, on the context's stream.
  template <class S>
  static void copy_rows(const cuda::Device& d, S* dst, Index dst_stride, const S* src, Index src_stride, Index rows,
                        Index cols, S scale = S(1)) {
    if (rows <= 0 || cols <= 0) return;
    const cudaStream_t stream = cuda::detail::context_of(d).stream();
    cuda::check(cudaMemcpy2DAsync(dst, sizeof(S) * std::size_t(dst_stride), src, sizeof(S) * std::size_t(src_stride),
                                  sizeof(S) * std::size_t(cols), std::size_t(rows), cudaMemcpyDeviceToDevice, stream),
                "cudaMemcpy2DAsync (sharded rows)");
    if (scale != S(1)) {
      const Index n = rows * cols;
      const unsigned blocks = unsigned(std::min<Index>((n + 255) / 256, 4096));
      detail::scale_rows<S><<<blocks, 256, 0, stream>>>(dst, dst_stride, rows, cols, scale);
      cuda::check_launch("scale_rows (step_reduce)");
    }
  }
  /// dst = src, count entries (device to device).
  template <class S>
  static void copy(S* dst, const S* src, std::size_t count) {
    if (count == 0) return;
    cuda::check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (sharded state)");
    cuda::check(cudaMemcpy(dst, src, sizeof(S) * count, cudaMemcpyDeviceToDevice), "cudaMemcpy (sharded state)");
    cuda::check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (sharded state)");
  }
  /// Device to host.
  template <class S>
  static void to_host(const S* src, std::size_t count, void* dst) {
    if (count == 0) return;
    cuda::check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (saving sharded state)");
    cuda::check(cudaMemcpy(dst, src, sizeof(S) * count, cudaMemcpyDeviceToHost), "cudaMemcpy (saving sharded state)");
  }
  /// Host to device.
  template <class S>
  static void from_host(S* dst, std::size_t count, const void* src) {
    if (count == 0) return;
    cuda::check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (loading sharded state)");
    cuda::check(cudaMemcpy(dst, src, sizeof(S) * count, cudaMemcpyHostToDevice), "cudaMemcpy (loading sharded state)");
    cuda::check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (loading sharded state)");
  }
  /// The lowest tensor with a bad entry in this rank's rows: the device's one-pass multi-tensor
  /// check over the rows alone (a contiguous layer as one range, a strided one row by row).
  template <class S>
  static std::size_t first_bad(const ParamSet<S, cuda::Device>& share, const Gradients<S, cuda::Device>& grads) {
    Gradients<S, cuda::Device> rows;
    std::vector<std::size_t> tensor_of;  // nondecreasing: layers follow their tensors' order
    for (const auto& l : share) {
      if (l.rows * l.cols == 0) continue;
      const S* g = grads.data(l.tensor) + l.offset;
      if (l.contiguous()) {
        rows.add(g, l.rows, l.cols);
        tensor_of.push_back(l.tensor);
      } else {
        for (Index i = 0; i < l.rows; ++i) rows.add(g + i * l.stride, 1, l.cols), tensor_of.push_back(l.tensor);
      }
    }
    if (rows.size() == 0) return grads.size();
    const std::size_t k = cuda::Device::first_non_finite(share, rows);
    return k == rows.size() ? grads.size() : tensor_of[k];
  }
};

}  // namespace steepest::dist
