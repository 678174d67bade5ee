#include "plain_user.h"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/prctl.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "child_process.h"

namespace rawdax::testing {
namespace {

constexpr const char* kEnv = "RAWDAX_TEST_PLAIN_USER";

// In the child, before main() and before any thread: give up root for good.
[[maybe_unused]] const bool kDropped = [] {
  if (std::getenv(kEnv) == nullptr || ::geteuid() != 0) return false;
  if (::setgroups(0, nullptr) != 0 || ::setresgid(kPlainGid, kPlainGid, kPlainGid) != 0 ||
      ::setresuid(kPlainUid, kPlainUid, kPlainUid) != 0) {
    std::perror("dropping to the plain user");
    ::_exit(3);
  }
  // A change of uid makes the process non-dumpable, and a non-dumpable
  // process's /proc/self files belong to root: it could not open its own
  // /proc/self/pagemap (the write tracker's). A plain user's own process is
  // dumpable, so this child should be too.
  ::prctl(PR_SET_DUMPABLE, 1);
  // The uid change also cleared spawn_self's parent-death signal.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  return true;
}();

}  // namespace

int rerun_as_plain_user() {
  const ::testing::TestInfo* test = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string filter =
      std::string("--gtest_filter=") + test->test_suite_name() + "." + test->name();
  // The child writes one byte here when the body starts: a filter matching
  // nothing would otherwise pass as an empty run.
  int ran[2];
  if (::pipe(ran) != 0) return -1;
  ::fcntl(ran[0], F_SETFD, FD_CLOEXEC);
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t child = spawn_self({std::string(kEnv) + "=" + std::to_string(ran[1])}, kEnv, {filter});
  ::close(ran[1]);
  int code = child < 0 ? -1 : wait_child(child);
  char byte = 0;
  bool started = ::read(ran[0], &byte, 1) == 1;
  ::close(ran[0]);
  if (code == 0 && !started) {
    std::fprintf(stderr, "the plain-user run matched no test: %s\n", filter.c_str());
    return 1;
  }
  return code;
}

void note_plain_user_run() {
  const char* fd = std::getenv(kEnv);
  if (fd == nullptr) return;
  char byte = 1;
  (void)!::write(std::atoi(fd), &byte, 1);
}

}  // namespace rawdax::testing
