// steepest/distributed/communicator.hpp -- what the sharded optimizer (distributed/sharded.hpp) asks of a
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
//   MpiCommunicator   (distributed/mpi.hpp)    host buffers, MPI_Allgatherv / MPI_Reduce_scatter / ...
//   NcclCommunicator  (distributed/nccl.cuh)   device buffers, NCCL on the optimizer's CUDA stream
// A communicator for the test of a formula (counting what each call moves) wraps one of them.
// Both take an optional timeout (seconds) after which a collective that has not completed, as
// when a rank died, throws communication_error instead of waiting forever (distributed/mpi.hpp).
#pragma once

#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
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
/// A communicator's timeout argument: seconds >= 0 (0: no timeout), else communication_error.
inline double checked_timeout(double seconds, const char* who) {
  if (!(seconds >= 0.0))
    throw communication_error(std::string("steepest::dist::") + who + ": timeout_seconds must be >= 0 (0: no timeout)");
  return seconds;
}
/// Calls done() until it returns true (then true) or `seconds` have passed (then false): with
/// yields for the first millisecond (a collective usually completes in microseconds), then
/// every 100 us.
template <class Done>
bool wait_until_done(double seconds, Done&& done) {
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  const auto deadline = t0 + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(seconds));
  for (;;) {
    if (done()) return true;
    const auto now = clock::now();
    if (now >= deadline) return false;
    if (now - t0 < std::chrono::milliseconds(1)) std::this_thread::yield();
    else std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}
/// What a collective that wait_until_done gave up on throws.
inline communication_error timed_out(const char* what, double seconds, int rank, int size) {
  return communication_error(std::string("steepest::dist: ") + what + " did not complete within " +
                             std::to_string(seconds) + " s on rank " + std::to_string(rank) + " of " +
                             std::to_string(size) + " (a rank died or stopped calling collectives)");
}

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
