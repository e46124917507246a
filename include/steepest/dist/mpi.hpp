// steepest/dist/mpi.hpp -- the MPI communicator of the sharded optimizer (host buffers).
//
//   MPI_Init(&argc, &argv);
//   steepest::dist::MpiCommunicator comm(MPI_COMM_WORLD);
//   auto opt = steepest::dist::shard(st::moga_row(hp), comm);      // dist/sharded.hpp
//
// Optional: include it only in code built against an MPI library (Debian: libopenmpi-dev; CMake:
// find_package(MPI), target MPI::MPI_CXX). Every collective is MPI's own (MPI_Allgatherv,
// MPI_Reduce_scatter, MPI_Allreduce, MPI_Bcast, MPI_Gatherv); the communicator only adapts
// the sharded optimizer's few calls to them and checks their results.
//
// What a communicator provides is in dist/communicator.hpp.
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
/// the communicator alive while it is used).
class MpiCommunicator {
 public:
  using space_type = Host;  // host buffers (MPI here is not assumed to be CUDA-aware)

  explicit MpiCommunicator(MPI_Comm comm = MPI_COMM_WORLD) : comm_(comm) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) throw communication_error("steepest::dist::MpiCommunicator: MPI is not initialized (call MPI_Init first)");
    // Errors are returned to this code and thrown, rather than aborting the job where they happen.
    check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
  }
  int rank() const { return rank_; }
  int size() const { return size_; }
  MPI_Comm comm() const { return comm_; }

  template <class S>
  void allgatherv(const S* mine, S* all, const std::vector<long long>& counts, const std::vector<long long>& displs) {
    const std::vector<int> c = ints(counts, "allgatherv"), d = ints(displs, "allgatherv");
    check(MPI_Allgatherv(mine, c[std::size_t(rank_)], type<S>(), all, c.data(), d.data(), type<S>(), comm_),
          "MPI_Allgatherv");
  }
  template <class S>
  void reduce_scatter(const S* all, S* mine, const std::vector<long long>& counts) {
    const std::vector<int> c = ints(counts, "reduce_scatter");
    check(MPI_Reduce_scatter(all, mine, c.data(), type<S>(), MPI_SUM, comm_), "MPI_Reduce_scatter");
  }
  long long min(long long v) {
    long long out = v;
    check(MPI_Allreduce(&v, &out, 1, MPI_LONG_LONG, MPI_MIN, comm_), "MPI_Allreduce");
    return out;
  }
  void broadcast(std::string& bytes, int root) {
    long long n = static_cast<long long>(bytes.size());
    check(MPI_Bcast(&n, 1, MPI_LONG_LONG, root, comm_), "MPI_Bcast (size)");
    bytes.resize(std::size_t(n));
    // In pieces of at most INT_MAX bytes: MPI counts are int.
    for (long long at = 0; at < n; at += INT_MAX) {
      const int piece = int(std::min<long long>(INT_MAX, n - at));
      check(MPI_Bcast(bytes.data() + at, piece, MPI_BYTE, root, comm_), "MPI_Bcast");
    }
  }
  std::vector<std::string> gather(const std::string& mine, int root) {
    const int n = int_count(static_cast<long long>(mine.size()), "gather");
    std::vector<int> sizes(std::size_t(size_), 0), displs(std::size_t(size_), 0);
    check(MPI_Gather(&n, 1, MPI_INT, sizes.data(), 1, MPI_INT, root, comm_), "MPI_Gather (sizes)");
    std::string all;
    if (rank_ == root) {
      long long total = 0;
      for (int r = 0; r < size_; ++r) displs[std::size_t(r)] = int_count(total, "gather"), total += sizes[std::size_t(r)];
      all.resize(std::size_t(int_count(total, "gather")));
    }
    check(MPI_Gatherv(mine.data(), n, MPI_BYTE, all.data(), sizes.data(), displs.data(), MPI_BYTE, root, comm_),
          "MPI_Gatherv");
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
  void check(int rc, const char* what) const {
    if (rc == MPI_SUCCESS) return;
    char msg[MPI_MAX_ERROR_STRING] = {};
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    throw communication_error(std::string("steepest::dist: ") + what + " failed on rank " + std::to_string(rank_) +
                              ": " + std::string(msg, std::size_t(len)));
  }

  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
};

}  // namespace steepest::dist
