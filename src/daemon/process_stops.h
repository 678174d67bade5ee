// ProcessStops: stops client processes (SIGSTOP) for as long as the daemon
// needs their stores held, counted per pid, and continues them (SIGCONT) when
// the last user lets go. A forced freeze uses it on the holders it revokes
// (docs/control.md): a process that is stopped cannot store.
//
// stop() returns only once every thread of the process is in the stopped
// state (read from /proc/PID/task/*/stat): kill() only queues the signal, and
// a thread running on another CPU stores on until it is interrupted.
//
// Thread safety: all methods are thread-safe (one internal mutex, never held
// while calling out to anything but kill() and /proc reads).
#ifndef RAWDAX_DAEMON_PROCESS_STOPS_H_
#define RAWDAX_DAEMON_PROCESS_STOPS_H_

#include <sys/types.h>

#include <chrono>
#include <map>
#include <mutex>

#include "rawdax/result.h"

namespace rawdax::control {

class ProcessStops {
 public:
  ProcessStops() = default;
  ~ProcessStops();  // continues every process still stopped
  ProcessStops(const ProcessStops&) = delete;
  ProcessStops& operator=(const ProcessStops&) = delete;

  // Stops `pid` (or counts one more user when it is stopped already) and
  // waits up to `limit` for all its threads to stop. Errors: EINVAL for the
  // daemon's own pid or pid <= 0, kill()'s errno (ESRCH, EPERM), ETIMEDOUT
  // (the stop is undone). A pid stopped by something else is not detected.
  Status stop(pid_t pid, std::chrono::milliseconds limit);
  // Undoes one stop(); the last one sends SIGCONT. Unknown pids are ignored.
  void resume(pid_t pid);

  // Whether every thread of `pid` is stopped now (false if it is gone).
  static bool all_threads_stopped(pid_t pid);

 private:
  std::mutex mu_;
  std::map<pid_t, int> counts_;  // guarded by mu_
};

}  // namespace rawdax::control

#endif  // RAWDAX_DAEMON_PROCESS_STOPS_H_
