// open_userfaultfd(): the mode it gets by privilege, the features it names
// when the kernel lacks them, and the device node as a plain user's way to
// a full-mode userfaultfd.
#include "media/userfaultfd.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <future>
#include <gtest/gtest.h>
#include <string>
#include <vector>

#include "common/mapped_range.h"
#include "media/uffd_compat.h"
#include "plain_user.h"
#include "test_util.h"

namespace rawdax {
namespace {

using ::rawdax::testing::ScratchDir;

constexpr size_t kPage = 4096;

// Root: a full-mode userfaultfd through the syscall needs CAP_SYS_PTRACE
// while vm.unprivileged_userfaultfd=0; labelled `root`.
TEST(UserfaultfdAsRoot, RootGetsFullMode) {
  auto uffd = internal::open_userfaultfd(O_CLOEXEC, 0);
  ASSERT_TRUE(uffd) << uffd.error().message();
  EXPECT_EQ(uffd->mode, UffdMode::kFull);
}

TEST(UserfaultfdPlainUser, GetsUserModeOnly) {
  RAWDAX_AS_PLAIN_USER();
  auto uffd = internal::open_userfaultfd(O_CLOEXEC | O_NONBLOCK, UFFD_FEATURE_PAGEFAULT_FLAG_WP);
  ASSERT_TRUE(uffd) << uffd.error().message();
  EXPECT_EQ(uffd->mode, UffdMode::kUserModeOnly)
      << "a plain user got a full-mode userfaultfd (vm.unprivileged_userfaultfd=1?)";
  EXPECT_NE(uffd->offered & UFFD_FEATURE_PAGEFAULT_FLAG_WP, 0u);
}

// A feature the kernel does not offer is named in the error.
TEST(Userfaultfd, AMissingFeatureIsNamed) {
  constexpr uint64_t kUnknown = 1ull << 62;
  auto uffd = internal::open_userfaultfd(O_CLOEXEC, UFFD_FEATURE_PAGEFAULT_FLAG_WP | kUnknown);
  ASSERT_FALSE(uffd);
  EXPECT_EQ(uffd.error().code(), std::errc::operation_not_supported);
  EXPECT_NE(uffd.error().message().find("0x4000000000000000"), std::string::npos)
      << uffd.error().message();
  EXPECT_EQ(uffd.error().message().find("PAGEFAULT_FLAG_WP"), std::string::npos)
      << "an offered feature was named missing: " << uffd.error().message();
}

// Root: only root may make the device node (mknod needs CAP_MKNOD), and the
// check runs as a plain user given that node; labelled `root`. An
// administrator grants full mode this way without the machine-wide sysctl.
constexpr const char* kNodeEnv = "RAWDAX_TEST_UFFD_NODE";

TEST(UserfaultfdAsRoot, DeviceNodeGivesAPlainUserFullMode) {
  const char* node = std::getenv(kNodeEnv);
  if (node == nullptr) {
    ASSERT_EQ(::geteuid(), 0u) << "needs root to make a device node (ctest label root)";
    struct stat real;
    ASSERT_EQ(::stat(internal::kUserfaultfdDevice, &real), 0) << "this kernel has no /dev/userfaultfd";
    ScratchDir dir(::rawdax::testing::tmpfs_parent());
    std::string path = dir.path() + "/userfaultfd";
    ASSERT_EQ(::mknod(path.c_str(), S_IFCHR | 0600, real.st_rdev), 0) << std::strerror(errno);
    ASSERT_EQ(::chown(path.c_str(), ::rawdax::testing::kPlainUid, ::rawdax::testing::kPlainGid),
              0);
    ASSERT_EQ(::setenv(kNodeEnv, path.c_str(), 1), 0);
    int code = ::rawdax::testing::rerun_as_plain_user();
    ::unsetenv(kNodeEnv);
    ASSERT_EQ(code, 0) << "the run as a plain user failed (above)";
    return;
  }
  ::rawdax::testing::note_plain_user_run();
  ASSERT_NE(::geteuid(), 0u);
  // Root's node (0600) is not ours: user-mode-only.
  auto plain = internal::open_userfaultfd(O_CLOEXEC, 0);
  ASSERT_TRUE(plain) << plain.error().message();
  EXPECT_EQ(plain->mode, UffdMode::kUserModeOnly);

  auto uffd = internal::open_userfaultfd(O_CLOEXEC | O_NONBLOCK,
                               UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_HUGETLBFS_SHMEM,
                               node);
  ASSERT_TRUE(uffd) << uffd.error().message();
  EXPECT_EQ(uffd->mode, UffdMode::kFull);
  // Full for real: a kernel-mode write into a write-protected page is
  // delivered to it, and waits until the page is unprotected.
  internal::UniqueFd memfd(::memfd_create("uffd-node-test", MFD_CLOEXEC));
  ASSERT_EQ(::ftruncate(memfd.get(), kPage), 0);
  void* addr = ::mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_SHARED, memfd.get(), 0);
  ASSERT_NE(addr, MAP_FAILED);
  internal::MappedRange mapping(addr, kPage);
  static_cast<volatile char*>(addr)[0] = 1;
  uffdio_register reg{};
  reg.range = {reinterpret_cast<uint64_t>(addr), kPage};
  reg.mode = UFFDIO_REGISTER_MODE_WP;
  ASSERT_EQ(::ioctl(uffd->fd.get(), UFFDIO_REGISTER, &reg), 0) << std::strerror(errno);
  uffdio_writeprotect wp{};
  wp.range = reg.range;
  wp.mode = UFFDIO_WRITEPROTECT_MODE_WP;
  ASSERT_EQ(::ioctl(uffd->fd.get(), UFFDIO_WRITEPROTECT, &wp), 0) << std::strerror(errno);
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  std::vector<char> bytes(kPage, 'n');
  ASSERT_EQ(::write(fds[1], bytes.data(), kPage), static_cast<ssize_t>(kPage));
  auto reader = std::async(std::launch::async, [&] { return ::read(fds[0], addr, kPage); });
  // Until the fault arrives, or the read returns without waiting (the limit
  // only bounds a failing run).
  bool delivered = false;
  pollfd pfd{uffd->fd.get(), POLLIN, 0};
  for (int i = 0; i < 6000 && !delivered; ++i) {
    if (reader.wait_for(std::chrono::seconds(0)) == std::future_status::ready) break;
    delivered = ::poll(&pfd, 1, 10) == 1;
  }
  EXPECT_TRUE(delivered) << "the kernel-mode fault was not delivered";
  if (delivered) {
    uffd_msg msg{};
    EXPECT_EQ(::read(uffd->fd.get(), &msg, sizeof msg), static_cast<ssize_t>(sizeof msg));
    EXPECT_EQ(msg.event, UFFD_EVENT_PAGEFAULT);
    EXPECT_NE(msg.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP, 0u);
    EXPECT_EQ(reader.wait_for(std::chrono::seconds(0)), std::future_status::timeout)
        << "the read went on while its fault was unanswered";
  }
  wp.mode = 0;  // unprotect, which wakes the reader
  EXPECT_EQ(::ioctl(uffd->fd.get(), UFFDIO_WRITEPROTECT, &wp), 0);
  EXPECT_EQ(reader.get(), static_cast<ssize_t>(kPage));
  EXPECT_EQ(static_cast<char*>(addr)[kPage - 1], 'n');
  ::close(fds[0]);
  ::close(fds[1]);
}

}  // namespace
}  // namespace rawdax
