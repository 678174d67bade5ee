// Child processes of a test: this test binary started again (spawn_self),
// and waiting for a child's verdict.
#ifndef RAWDAX_TESTS_CHILD_PROCESS_H_
#define RAWDAX_TESTS_CHILD_PROCESS_H_

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace rawdax::testing {

// Starts this test binary again as a child process, with `env` ("KEY=value")
// added to its environment and every variable starting with `prefix`
// dropped first, and `args` after the program name. A static initializer
// recognizes the variables and runs the child before main() (or, with a
// --gtest_filter in `args`, the child runs those tests). Exec, not a bare
// fork: a forked child of a multi-threaded test may deadlock in the
// allocator or the sanitizers' thread registry, and a Client starts a
// thread. Descriptors without FD_CLOEXEC (pipes, memfds) are inherited. The
// child is killed if the calling thread ends first. -1 on failure.
inline pid_t spawn_self(const std::vector<std::string>& env, const char* prefix,
                        const std::vector<std::string>& args = {}) {
  std::string self(4096, '\0');
  ssize_t n = ::readlink("/proc/self/exe", self.data(), self.size() - 1);
  if (n <= 0) return -1;
  self.resize(static_cast<size_t>(n));
  std::vector<std::string> env_strings = env;
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::string_view(*e).substr(0, std::strlen(prefix)) != prefix) env_strings.emplace_back(*e);
  }
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> arg_strings = args;
  std::vector<char*> argv{self.data()};
  for (auto& a : arg_strings) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlives the test (nor holds ctest's pipe)
    ::execve(self.c_str(), argv.data(), envp.data());
    ::_exit(127);
  }
  return pid;
}

// Waits for a child; its exit code, or 128+signal (-1 if it cannot be waited for).
inline int wait_child(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

}  // namespace rawdax::testing

#endif  // RAWDAX_TESTS_CHILD_PROCESS_H_
