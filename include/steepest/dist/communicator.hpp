// steepest/dist/communicator.hpp -- what the sharded optimizer (dist/sharded.hpp) asks of a
// communicator, and the error its implementations throw.
//
// A communicator is a type with (every call collective unless marked local):
//   using space_type = Host;  // or cuda::Device: where its buffers live (Host when absent)
//   int rank() const; int size() const;                                   (local)
//   template <class S> void allgatherv(const S* mine, S* all, counts, displs);
//       all[displs[r] .. + counts[r]) = rank r's `mine` (counts[rank()] entries)
//   template <class S> void reduce_scatter(const S* all, S* mine, counts);
//       mine = the sum over ranks of their all[d(rank()) .. + counts[rank()]), d = prefix sums
//   long long min(long long v);                                            the minimum over ranks
//   void broadcast(std::string& bytes, int root);                          root's bytes everywhere
//   std::vector<std::string> gather(const std::string& mine, int root);    every rank's, at root
// where counts and displs are std::vector<long long> of size() entries, the same on every rank,
// and S is float or double. The two implementations wrap existing engines' own collectives:
//   MpiCommunicator   (dist/mpi.hpp)    host buffers, MPI_Allgatherv / MPI_Reduce_scatter / ...
//   NcclCommunicator  (dist/nccl.cuh)   device buffers, NCCL on the optimizer's CUDA stream
// A communicator for the test of a formula (counting what each call moves) wraps one of them.
// Both take an optional timeout (seconds) after which a collective that has not completed, as
// when a rank died, throws communication_error instead of waiting forever (dist/mpi.hpp).
#pragma once

#include <stdexcept>
#include <type_traits>

namespace steepest {
struct Host;  // optim/space.hpp
}

namespace steepest::dist {

/// Thrown when a collective fails, or a message is too large for the engine's counts.
class communication_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <class C, class = void>
struct comm_space {
  using type = Host;
};
template <class C>
struct comm_space<C, std::void_t<typename C::space_type>> {
  using type = typename C::space_type;
};
}  // namespace detail

/// The memory space a communicator's buffers live in (its `space_type`, Host when it has none).
template <class Comm>
using comm_space_t = typename detail::comm_space<Comm>::type;

}  // namespace steepest::dist
