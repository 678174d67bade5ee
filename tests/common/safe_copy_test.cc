// SafeCopy: a real kernel SIGBUS inside a guarded copy is recovered and
// reported; every other SIGBUS still reaches whoever had it before.
#include "common/safe_copy.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <thread>
#include <vector>

#include "common/unique_fd.h"
#include "fault_catcher.h"

namespace rawdax::internal {
namespace {

const size_t kPage = static_cast<size_t>(::sysconf(_SC_PAGESIZE));

// Two pages of a memfd, shared-mapped, filled; cut() truncates the memfd to
// its first page, as someone else truncating a namespace's backing file
// does: the second page then raises SIGBUS (BUS_ADRERR) on every access.
class CutFile {
 public:
  CutFile() {
    fd_.reset(::memfd_create("safe-copy-test", MFD_CLOEXEC));
    EXPECT_TRUE(fd_.valid());
    EXPECT_EQ(::ftruncate(fd_.get(), static_cast<off_t>(2 * kPage)), 0);
    void* at = ::mmap(nullptr, 2 * kPage, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
    EXPECT_NE(at, MAP_FAILED);
    data_ = static_cast<std::byte*>(at);
    std::memset(data_, 0x5a, 2 * kPage);
  }
  ~CutFile() { ::munmap(data_, 2 * kPage); }
  void cut() { ASSERT_EQ(::ftruncate(fd_.get(), static_cast<off_t>(kPage)), 0); }
  std::byte* data() const { return data_; }

 private:
  internal::UniqueFd fd_;
  std::byte* data_ = nullptr;
};

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAsan = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kAsan = true;
#else
constexpr bool kAsan = false;
#endif
#else
constexpr bool kAsan = false;
#endif

// Runs fn in a forked child; whether a SIGBUS ended it the way it ends a
// process without rawdax: killed by the signal, or, under ASan (whose own
// SIGBUS handler is the action ours chains to), reported and exited non-zero.
template <typename Fn>
bool child_dies_of_sigbus(Fn fn) {
  pid_t pid = ::fork();
  if (pid == 0) {
    fn();
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (WIFSIGNALED(status)) return WTERMSIG(status) == SIGBUS;
  return kAsan && WIFEXITED(status) && WEXITSTATUS(status) != 0;
}

TEST(SafeCopyTest, CopyFromACutOffPageReportsTheFaultAndTheProcessGoesOn) {
  CutFile file;
  file.cut();
  std::vector<std::byte> out(2 * kPage);
  const uint64_t before = internal::SafeCopy::recovered();
  auto fault = internal::SafeCopy::copy_from(out.data(), file.data(), 2 * kPage);
  ASSERT_TRUE(fault.has_value()) << "the copy of a page past EOF did not fault";
  EXPECT_EQ(fault->code, BUS_ADRERR);
  // Somewhere in the cut-off page (memcpy variants copy in different orders).
  EXPECT_EQ(fault->addr / kPage * kPage, reinterpret_cast<uintptr_t>(file.data()) + kPage);
  EXPECT_FALSE(fault->poison());
  EXPECT_NE(fault->describe().find("BUS_ADRERR"), std::string::npos);
  EXPECT_EQ(internal::SafeCopy::recovered(), before + 1);
  // The good page still copies, and again after the recovery.
  for (int i = 0; i < 3; ++i) {
    EXPECT_FALSE(internal::SafeCopy::copy_from(out.data(), file.data(), kPage).has_value());
    EXPECT_EQ(out[kPage - 1], std::byte{0x5a});
  }
}

TEST(SafeCopyTest, CopyToAndFillFaultOnTheGuardedDestination) {
  CutFile file;
  file.cut();
  std::vector<std::byte> in(2 * kPage, std::byte{1});
  auto to = internal::SafeCopy::copy_to(file.data(), in.data(), 2 * kPage);
  ASSERT_TRUE(to.has_value());
  EXPECT_EQ(to->addr / kPage * kPage, reinterpret_cast<uintptr_t>(file.data()) + kPage);
  auto fill = internal::SafeCopy::fill(file.data() + kPage / 2, 0, kPage);
  ASSERT_TRUE(fill.has_value());
  EXPECT_EQ(fill->addr / kPage * kPage, reinterpret_cast<uintptr_t>(file.data()) + kPage);
  // The good page takes guarded stores as before.
  EXPECT_FALSE(internal::SafeCopy::copy_to(file.data(), in.data(), kPage).has_value());
  EXPECT_EQ(file.data()[kPage - 1], std::byte{1});
}

TEST(SafeCopyTest, ThreadsRecoverIndependently) {
  CutFile file;
  file.cut();
  std::vector<std::thread> threads;
  std::atomic<int> faults{0}, clean{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::vector<std::byte> out(2 * kPage);
      for (int i = 0; i < 200; ++i) {
        // Odd threads copy the good page only: never faulted by the others.
        const size_t n = (t % 2 == 0) ? 2 * kPage : kPage;
        auto fault = internal::SafeCopy::copy_from(out.data(), file.data(), n);
        (fault ? faults : clean).fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(faults.load(), 400);
  EXPECT_EQ(clean.load(), 400);
}

// The guard covers namespace memory only: a plain load of a bad page, and a
// guarded copy whose *other* side is bad, are not recovered; the process
// dies of SIGBUS as it would without rawdax (a user's revoked Mapping).
TEST(SafeCopyTest, FaultsOutsideTheGuardStillRaiseSigbus) {
  ASSERT_TRUE(internal::SafeCopy::install());
  CutFile file;
  file.cut();
  std::byte* bad = file.data() + kPage;
  EXPECT_TRUE(child_dies_of_sigbus([&] {
    volatile std::byte b = *static_cast<volatile std::byte*>(bad);
    (void)b;
  }));
  EXPECT_TRUE(child_dies_of_sigbus([&] {
    std::vector<std::byte> good(kPage);
    // Guarded source is fine; the destination is the bad page.
    (void)internal::SafeCopy::copy_from(bad, good.data(), kPage);
  }));
  // A SIGBUS sent by kill() is no access fault: it is not swallowed either.
  EXPECT_TRUE(child_dies_of_sigbus([] { ::raise(SIGBUS); }));
}

// A handler installed after ours (here the tests' catcher) sees its own
// faults, and passes the guarded copies' faults back to us.
TEST(SafeCopyTest, CoexistsWithAHandlerInstalledAfterIt) {
  ASSERT_TRUE(internal::SafeCopy::install());
  ::rawdax::testing::install_fault_handlers();
  CutFile file;
  file.cut();
  std::byte* bad = file.data() + kPage;
  EXPECT_EQ(::rawdax::testing::run_catching_faults([&] {
              volatile std::byte b = *static_cast<volatile std::byte*>(bad);
              (void)b;
            }),
            SIGBUS);
  std::vector<std::byte> out(kPage);
  auto fault = internal::SafeCopy::copy_from(out.data(), bad, kPage);
  ASSERT_TRUE(fault.has_value());
  EXPECT_EQ(fault->addr / kPage * kPage, reinterpret_cast<uintptr_t>(bad));
}

TEST(SafeCopyTest, ZeroLengthAndGoodMemoryCopyPlainly) {
  std::vector<std::byte> a(100, std::byte{7}), b(100);
  EXPECT_FALSE(internal::SafeCopy::copy_from(b.data(), a.data(), 0).has_value());
  EXPECT_FALSE(internal::SafeCopy::copy_from(b.data(), a.data(), a.size()).has_value());
  EXPECT_EQ(a, b);
  EXPECT_FALSE(internal::SafeCopy::fill(b.data(), 3, b.size()).has_value());
  EXPECT_EQ(b[99], std::byte{3});
}

}  // namespace
}  // namespace rawdax::internal
