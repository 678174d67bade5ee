// Running a test as a plain (non-root) user, whoever runs the suite.
//
// RAWDAX_AS_PLAIN_USER() first thing in a test body: when the suite runs as
// root, the test is run again in a child process (this binary re-executed
// with its --gtest_filter) that drops to nobody (uid and gid 65534) before
// main(), and the test passes when that run passes; the rest of the body is
// left to the child. When the suite runs as a plain user, the body simply
// runs: the process is unprivileged already. So such a test is registered
// and checked in both runs, and never skipped.
//
// What the child may use: tmpfs (/dev/shm) and memfd regions, pipes. The
// disk scratch directory belongs to whoever made it (root, then), so the
// child cannot create files there.
#ifndef RAWDAX_TESTS_PLAIN_USER_H_
#define RAWDAX_TESTS_PLAIN_USER_H_

#include <sys/types.h>
#include <unistd.h>

#include <gtest/gtest.h>

namespace rawdax::testing {

inline constexpr uid_t kPlainUid = 65534;  // nobody
inline constexpr gid_t kPlainGid = 65534;  // nogroup

// As root: runs the current test again as a plain user in a child process,
// whose output joins ours. Its exit code: 0 when the test passed there; 1
// as well when the test did not run there at all (a filter that missed).
int rerun_as_plain_user();

// In such a child: tells the parent the test body started (no-op elsewhere).
void note_plain_user_run();

}  // namespace rawdax::testing

#define RAWDAX_AS_PLAIN_USER()                                                      \
  do {                                                                              \
    if (::geteuid() == 0) {                                                         \
      ASSERT_EQ(::rawdax::testing::rerun_as_plain_user(), 0)                        \
          << "the run as uid " << ::rawdax::testing::kPlainUid << " failed (above)"; \
      return;                                                                       \
    }                                                                               \
    ::rawdax::testing::note_plain_user_run();                                       \
  } while (0)

#endif  // RAWDAX_TESTS_PLAIN_USER_H_
