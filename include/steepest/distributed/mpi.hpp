// steepest/distributed/mpi.hpp -- the MPI communicator of the sharded optimizer (host buffers).
//
//   MPI_Init(&argc, &argv);
//   steepest::dist::MpiCommunicator comm(MPI_COMM_WORLD);
//   auto opt = steepest::dist::shard(st::moga_row(hp), comm);      // distributed/sharded.hpp
//
// Optional: include it only in code built against an MPI library (Debian: libopenmpi-dev; CMake:
// find_package(MPI), target MPI::MPI_CXX). Every collective is MPI's own (MPI_Allgatherv,
// MPI_Reduce_scatter, MPI_Allreduce, MPI_Bcast, MPI_Gatherv); the communicator only adapts
// the sharded optimizer's few calls to them and checks their results.
//
// What a communicator provides is in distributed/communicator.hpp.
//
// When a rank dies: under mpirun (Open MPI) the job is aborted as soon as the launcher notices,
// about a second later, whatever the others are doing. Where the job is kept alive instead
// (abort-on-failure off, another launcher, a rank that stalls without dying), the other ranks
// wait in their next collective forever. A timeout turns that wait into an error:
// MpiCommunicator(comm, timeout_seconds) runs each collective as MPI's nonblocking form and, if it
// has not completed after that long, throws communication_error. The collective may still be in
// flight, so the communicator refuses every later call and the job should end (MPI_Abort). The
// default (0) waits as long as it takes, through the blocking calls.
#pragma once

// Only MPI's C interface is used; its deprecated C++ bindings are left out (they warn).
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "communicator.hpp"

namespace steepest::dist {

/// The communicator over an MPI communicator (not owned: the caller keeps MPI initialized and
/// the communicator alive while it is used). `timeout_seconds` > 0: a collective that has not
/// completed after that long throws (see the file comment); 0 waits.
class MpiCommunicator {
 public:
  using space_type = Host;  ///< host buffers (MPI here is not assumed to be CUDA-aware)

  /// Ranks of `comm`; a collective that takes longer than timeout_seconds (0: no limit) throws communication_error.
  explicit MpiCommunicator(MPI_Comm comm = MPI_COMM_WORLD, double timeout_seconds = 0.0)
      : comm_(comm), timeout_(detail::checked_timeout(timeout_seconds, "MpiCommunicator")) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) throw communication_error("steepest::dist::MpiCommunicator: MPI is not initialized (call MPI_Init first)");
    // Errors are returned to this code and thrown, rather than aborting the job where they happen.
    check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
  }
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;
  /// A collective abandoned by a timeout is released here if it has completed since.
  ~MpiCommunicator() {
    if (pending_ != MPI_REQUEST_NULL) {
      int done = 0;
      MPI_Test(&pending_, &done, MPI_STATUS_IGNORE);
    }
  }
  /// This process's rank.
  int rank() const { return rank_; }
  /// Ranks in the communicator.
  int size() const { return size_; }
  /// The MPI communicator.
  MPI_Comm comm() const { return comm_; }
  /// The collective timeout (0: none).
  double timeout_seconds() const { return timeout_; }

  /// all = the ranks' `mine` concatenated (rank r's counts[r] entries at displs[r]).
  template <class S>
  void allgatherv(const S* mine, S* all, const std::vector<long long>& counts, const std::vector<long long>& displs) {
    const std::vector<int> c = ints(counts, "allgatherv"), d = ints(displs, "allgatherv");
    const int n = c[std::size_t(rank_)];
    run("MPI_Allgatherv", [&] { return MPI_Allgatherv(mine, n, type<S>(), all, c.data(), d.data(), type<S>(), comm_); },
        [&](MPI_Request* r) { return MPI_Iallgatherv(mine, n, type<S>(), all, c.data(), d.data(), type<S>(), comm_, r); });
  }
  /// mine = rank r's part (counts[r] entries) of the sum over ranks of `all`.
  template <class S>
  void reduce_scatter(const S* all, S* mine, const std::vector<long long>& counts) {
    const std::vector<int> c = ints(counts, "reduce_scatter");
    run("MPI_Reduce_scatter", [&] { return MPI_Reduce_scatter(all, mine, c.data(), type<S>(), MPI_SUM, comm_); },
        [&](MPI_Request* r) { return MPI_Ireduce_scatter(all, mine, c.data(), type<S>(), MPI_SUM, comm_, r); });
  }
  /// The smallest v over ranks.
  long long min(long long v) {
    // Through members, which outlive a collective that a timeout abandons.
    scalar_in_ = v, scalar_out_ = v;
    run("MPI_Allreduce", [&] { return MPI_Allreduce(&scalar_in_, &scalar_out_, 1, MPI_LONG_LONG, MPI_MIN, comm_); },
        [&](MPI_Request* r) { return MPI_Iallreduce(&scalar_in_, &scalar_out_, 1, MPI_LONG_LONG, MPI_MIN, comm_, r); });
    return scalar_out_;
  }
  /// `bytes` of rank `root`, on every rank.
  void broadcast(std::string& bytes, int root) {
    scalar_out_ = static_cast<long long>(bytes.size());
    run("MPI_Bcast (size)", [&] { return MPI_Bcast(&scalar_out_, 1, MPI_LONG_LONG, root, comm_); },
        [&](MPI_Request* r) { return MPI_Ibcast(&scalar_out_, 1, MPI_LONG_LONG, root, comm_, r); });
    const long long n = scalar_out_;
    bytes.resize(std::size_t(n));
    // In pieces of at most INT_MAX bytes: MPI counts are int.
    for (long long at = 0; at < n; at += INT_MAX) {
      const int piece = int(std::min<long long>(INT_MAX, n - at));
      char* p = bytes.data() + at;
      run("MPI_Bcast", [&] { return MPI_Bcast(p, piece, MPI_BYTE, root, comm_); },
          [&](MPI_Request* r) { return MPI_Ibcast(p, piece, MPI_BYTE, root, comm_, r); });
    }
  }
  /// Every rank's `mine` on rank `root` (empty elsewhere).
  std::vector<std::string> gather(const std::string& mine, int root) {
    const int n = int_count(static_cast<long long>(mine.size()), "gather");
    std::vector<int> sizes(std::size_t(size_), 0), displs(std::size_t(size_), 0);
    scalar_int_ = n;
    run("MPI_Gather (sizes)", [&] { return MPI_Gather(&scalar_int_, 1, MPI_INT, sizes.data(), 1, MPI_INT, root, comm_); },
        [&](MPI_Request* r) { return MPI_Igather(&scalar_int_, 1, MPI_INT, sizes.data(), 1, MPI_INT, root, comm_, r); });
    std::string all;
    if (rank_ == root) {
      long long total = 0;
      for (int r = 0; r < size_; ++r) displs[std::size_t(r)] = int_count(total, "gather"), total += sizes[std::size_t(r)];
      all.resize(std::size_t(int_count(total, "gather")));
    }
    run("MPI_Gatherv",
        [&] { return MPI_Gatherv(mine.data(), n, MPI_BYTE, all.data(), sizes.data(), displs.data(), MPI_BYTE, root, comm_); },
        [&](MPI_Request* r) {
          return MPI_Igatherv(mine.data(), n, MPI_BYTE, all.data(), sizes.data(), displs.data(), MPI_BYTE, root, comm_, r);
        });
    std::vector<std::string> out;
    if (rank_ == root)
      for (int r = 0; r < size_; ++r) out.push_back(all.substr(std::size_t(displs[std::size_t(r)]), std::size_t(sizes[std::size_t(r)])));
    return out;
  }

 private:
  template <class S>
  static MPI_Datatype type() {
    static_assert(std::is_same_v<S, float> || std::is_same_v<S, double>,
                  "steepest::dist::MpiCommunicator: float or double buffers");
    return std::is_same_v<S, float> ? MPI_FLOAT : MPI_DOUBLE;
  }
  static int int_count(long long v, const char* what) {
    if (v < 0 || v > INT_MAX)
      throw communication_error(std::string("steepest::dist::MpiCommunicator::") + what + ": " + std::to_string(v) +
                                " entries exceed MPI's int counts; shard across more ranks");
    return int(v);
  }
  static std::vector<int> ints(const std::vector<long long>& v, const char* what) {
    std::vector<int> out;
    for (long long x : v) out.push_back(int_count(x, what));
    return out;
  }
  /// One collective: `blocking()` without a timeout; otherwise `start(&request)` (its
  /// nonblocking form) and a wait of at most timeout_ seconds.
  template <class Blocking, class Start>
  void run(const char* what, Blocking&& blocking, Start&& start) {
    if (abandoned_)
      throw communication_error(std::string("steepest::dist: ") + what + " on rank " + std::to_string(rank_) +
                                ": an earlier collective timed out and may still be in flight; end the job (MPI_Abort)");
    if (timeout_ <= 0.0) return check(blocking(), what);
    MPI_Request req = MPI_REQUEST_NULL;
    check(start(&req), what);
    const bool completed = detail::wait_until_done(timeout_, [&] {
      int done = 0;
      check(MPI_Test(&req, &done, MPI_STATUS_IGNORE), what);
      return done != 0;
    });
    if (completed) return;
    pending_ = req;
    abandoned_ = true;
    throw detail::timed_out(what, timeout_, rank_, size_);
  }
  void check(int rc, const char* what) const {
    if (rc == MPI_SUCCESS) return;
    char msg[MPI_MAX_ERROR_STRING] = {};
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    throw communication_error(std::string("steepest::dist: ") + what + " failed on rank " + std::to_string(rank_) +
                              ": " + std::string(msg, std::size_t(len)));
  }

  MPI_Comm comm_;
  double timeout_ = 0.0;
  int rank_ = 0, size_ = 1;
  long long scalar_in_ = 0, scalar_out_ = 0;  // min's and broadcast's scalars (see min)
  int scalar_int_ = 0;                        // gather's size
  bool abandoned_ = false;
  MPI_Request pending_ = MPI_REQUEST_NULL;    // the collective a timeout abandoned
};

}  // namespace steepest::dist
