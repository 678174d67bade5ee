// `rawdax serve` as a child process, for the tests that judge the daemon from
// outside: its log, its resident memory and its open descriptors
// (/proc/PID/status and /proc/PID/fd), NBD on a unix socket so parallel
// tests never share a port.
#ifndef RAWDAX_TESTS_SERVE_CHILD_H_
#define RAWDAX_TESTS_SERVE_CHILD_H_

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

namespace rawdax::testing {

// Lines of a `rawdax serve` log that report the daemon's own failures: the
// message after "rawdax serve: " starts with "error: " (docs/hardening.md).
inline std::vector<std::string> serve_error_lines(const std::string& log) {
  std::vector<std::string> out;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);) {
    if (line.find(" rawdax serve: error: ") != std::string::npos) out.push_back(line);
  }
  return out;
}

class ServeChild {
 public:
  // Starts `rawdax serve --region REGION --nbd unix:NBD_SOCKET` plus `extra`
  // arguments, logging to LOG; waits up to 20 s for "ready".
  ServeChild(const std::string& region, const std::string& nbd_socket, const std::string& log,
             std::vector<std::string> extra = {})
      : nbd_socket_(nbd_socket), log_(log) {
    std::vector<std::string> args = {RAWDAX_CLI_PATH, "serve", "--region", region,
                                     "--nbd", "unix:" + nbd_socket};
    args.insert(args.end(), extra.begin(), extra.end());
    const size_t logged_before = read_text(log).size();
    // Built before fork: the child of a threaded process only execs.
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
      ::dup2(fd, 2);
      int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
      ::dup2(null, 0);
      ::dup2(null, 1);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < deadline) {
      // Only this daemon's lines: a log may hold an earlier daemon's.
      if (read_text(log).find("ready: serving", logged_before) != std::string::npos) {
        ready_ = true;
        break;
      }
      int status;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  ~ServeChild() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  ServeChild(const ServeChild&) = delete;
  ServeChild& operator=(const ServeChild&) = delete;

  bool ready() const { return ready_; }
  pid_t pid() const { return pid_; }
  const std::string& nbd_socket() const { return nbd_socket_; }
  std::string log() const { return read_text(log_); }

  // VmRSS in KiB (0 if the process is gone).
  uint64_t rss_kib() const {
    std::istringstream in(read_text("/proc/" + std::to_string(pid_) + "/status"));
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6));
    }
    return 0;
  }
  // Open descriptors.
  size_t fd_count() const {
    std::error_code ec;
    size_t n = 0;
    for (auto it = std::filesystem::directory_iterator("/proc/" + std::to_string(pid_) + "/fd", ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
      ++n;
    }
    return n;
  }
  // Threads (connections each have one).
  size_t threads() const {
    std::istringstream in(read_text("/proc/" + std::to_string(pid_) + "/status"));
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("Threads:", 0) == 0) return std::stoull(line.substr(8));
    }
    return 0;
  }

  // `sig` (SIGTERM by default) and wait; the exit code (128+signal if it
  // died by one, -1 if it hung 15 s).
  int stop(int sig = SIGTERM) {
    if (pid_ <= 0) return -1;
    ::kill(pid_, sig);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    int status = 0;
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        pid_ = -1;
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    pid_ = -1;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
  }

 private:
  std::string nbd_socket_;
  std::string log_;
  pid_t pid_ = -1;
  bool ready_ = false;
};

}  // namespace rawdax::testing

#endif  // RAWDAX_TESTS_SERVE_CHILD_H_
