#include "daemon/process_stops.h"

#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>

namespace rawdax::control {

ProcessStops::~ProcessStops() {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [pid, count] : counts_) ::kill(pid, SIGCONT);
}

bool ProcessStops::all_threads_stopped(pid_t pid) {
  std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return false;
  bool all = true, any = false;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream stat(dir + "/" + e->d_name + "/stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    // "tid (comm) S ...": comm may hold spaces and parentheses, so the state
    // is the field after the last ')'.
    size_t paren = text.rfind(')');
    if (paren == std::string::npos || paren + 2 >= text.size()) continue;  // thread gone
    char state = text[paren + 2];
    any = true;
    // T: stopped; t: traced; Z/X: a thread that exited stores nothing.
    if (state != 'T' && state != 't' && state != 'Z' && state != 'X') all = false;
  }
  ::closedir(d);
  return any && all;
}

Status ProcessStops::stop(pid_t pid, std::chrono::milliseconds limit) {
  if (pid <= 0 || pid == ::getpid()) {
    return Error(std::errc::invalid_argument,
                 "pid " + std::to_string(pid) + " is the daemon's own process; it cannot be stopped");
  }
  std::unique_lock<std::mutex> lock(mu_);
  int& count = counts_[pid];
  if (count == 0 && ::kill(pid, SIGSTOP) != 0) {
    int err = errno;
    counts_.erase(pid);
    return errno_error(err, "stopping pid " + std::to_string(pid));
  }
  ++count;
  lock.unlock();
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!all_threads_stopped(pid)) {
    if (::kill(pid, 0) != 0 && errno == ESRCH) return ok();  // gone: it stores nothing
    if (std::chrono::steady_clock::now() > deadline) {
      resume(pid);
      return Error(std::errc::timed_out,
                   "pid " + std::to_string(pid) + " did not stop within " +
                       std::to_string(limit.count()) + " ms");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return ok();
}

void ProcessStops::resume(pid_t pid) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = counts_.find(pid);
  if (it == counts_.end()) return;
  if (--it->second == 0) {
    ::kill(pid, SIGCONT);
    counts_.erase(it);
  }
}

}  // namespace rawdax::control
