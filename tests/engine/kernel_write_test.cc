// What a kernel-mode write into a write-protected page of a mapping gets:
// the kernel's copy_to_user() for read(2) from a pipe into the mapping. One
// test per row of the table in docs/engine.md ("Kernel-mode writes"), per
// engine, userfaultfd mode and state (frozen, or a page protected for dirty
// tracking). Each fails if its row's behaviour changes.
//
// Full-mode userfaultfd needs privilege (CAP_SYS_PTRACE while
// vm.unprivileged_userfaultfd=0): those rows are the *AsRoot suites, labelled
// `root`. The user-mode-only rows run as a plain user: in a child that drops
// to nobody when the suite runs as root (plain_user.h).
#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <future>
#include <optional>
#include <ostream>
#include <gtest/gtest.h>
#include <thread>
#include <vector>

#include "plain_user.h"
#include "rawdax/rawdax.h"
#include "test_util.h"

namespace rawdax {
namespace {

using namespace std::chrono_literals;
using ::rawdax::testing::eventually;
using ::rawdax::testing::ScratchRegion;
using ::rawdax::testing::TestMedia;

constexpr uint64_t kSize = 1 << 20;
constexpr uint64_t kPage = 4096;
constexpr uint64_t kTarget = 8 * kPage;  // the page the kernel writes into
constexpr char kFill = 'k';

// A pipe holding one page of kFill; read(2) from it into a mapping makes the
// kernel store into the mapping on the reader's behalf.
class FilledPipe {
 public:
  FilledPipe() {
    EXPECT_EQ(::pipe2(fds_, O_CLOEXEC), 0);
    std::vector<char> page(kPage, kFill);
    EXPECT_EQ(::write(fds_[1], page.data(), page.size()), static_cast<ssize_t>(kPage));
  }
  ~FilledPipe() {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  // One read(2) of a page into `dst`: the bytes read, or -errno.
  ssize_t read_into(std::byte* dst) {
    ssize_t n = ::read(fds_[0], dst, kPage);
    return n < 0 ? -errno : n;
  }
  // Bytes still in the pipe: a failed read consumed nothing.
  int pending() const {
    int n = -1;
    ::ioctl(fds_[0], FIONREAD, &n);
    return n;
  }

 private:
  int fds_[2] = {-1, -1};
};

bool page_is(const std::byte* p, char c) {
  for (uint64_t i = 0; i < kPage; ++i) {
    if (p[i] != std::byte(c)) return false;
  }
  return true;
}

struct Case {
  TestMedia media;
  EngineChoice engine;
};

std::string case_text(const Case& c, const char* separator) {
  return std::string(::rawdax::testing::media_name(c.media)) + separator +
         (c.engine == EngineChoice::kUffd ? "uffd" : "mprotect");
}
std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  return case_text(info.param, "_");
}
void PrintTo(const Case& c, std::ostream* os) { *os << case_text(c, ", "); }

class KernelWrite : public ::testing::TestWithParam<Case> {
 protected:
  // Opens a 1 MiB namespace on the engine asked for and maps all of it.
  void open(bool track_dirty) {
    scratch_ = std::make_unique<ScratchRegion>(GetParam().media);
    auto region = Region::open(scratch_->spec(), {.create = true});
    ASSERT_TRUE(region) << region.error().message();
    region_ = std::move(*region);
    ASSERT_TRUE(region_->create_namespace({.name = "k", .size = kSize}));
    auto dev = region_->open_device("k", {.track_dirty = track_dirty,
                                          .engine = GetParam().engine});
    ASSERT_TRUE(dev) << dev.error().message();
    dev_ = std::move(*dev);
    auto m = dev_->map(0, kSize, Access::ReadWrite);
    ASSERT_TRUE(m) << m.error().message();
    map_ = std::move(*m);
  }
  UffdMode uffd_mode() const { return region_->capabilities().uffd_mode; }
  std::byte* target() { return map_->data() + kTarget; }
  // The target page as the block face sees it.
  bool target_is(char c) {
    std::vector<std::byte> page(kPage);
    EXPECT_TRUE(dev_->read(kTarget, page));
    return page_is(page.data(), c);
  }
  // read(2) into the target from another thread, so that a read that waits
  // for the thaw can be seen waiting (and released).
  std::future<ssize_t> start_read() {
    return std::async(std::launch::async, [this] { return pipe_.read_into(target()); });
  }

  std::unique_ptr<ScratchRegion> scratch_;
  std::unique_ptr<Region> region_;
  std::unique_ptr<Device> dev_;
  std::optional<Mapping> map_;
  FilledPipe pipe_;
};

// --- uffd engine, full userfaultfd ------------------------------------------

// Root: a full-mode userfaultfd needs CAP_SYS_PTRACE here
// (vm.unprivileged_userfaultfd=0); labelled `root`.
class KernelWriteAsRoot : public KernelWrite {};

// Frozen: the handler receives the kernel's fault and leaves it parked; the
// read(2) sleeps in the kernel and completes after thaw.
TEST_P(KernelWriteAsRoot, FullUffdFrozenWaitsUntilThaw) {
  open(/*track_dirty=*/false);
  ASSERT_EQ(uffd_mode(), UffdMode::kFull) << "needs privilege for a full-mode userfaultfd";
  auto frozen = dev_->freeze();
  ASSERT_TRUE(frozen) << frozen.error().message();
  const uint64_t faults = dev_->stats().write_faults;
  auto reader = start_read();
  ASSERT_TRUE(eventually([&] { return dev_->stats().write_faults > faults; }))
      << "the handler never saw the kernel's write";
  EXPECT_EQ(reader.wait_for(0s), std::future_status::timeout)
      << "the kernel-mode write went on through the freeze";
  EXPECT_TRUE(target_is(0));
  frozen->thaw();
  EXPECT_EQ(reader.get(), static_cast<ssize_t>(kPage));
  EXPECT_TRUE(target_is(kFill));
}

// Tracking, not frozen: a fresh mapping is born protected; the handler marks
// the page dirty and lets the kernel's write land.
TEST_P(KernelWriteAsRoot, FullUffdTrackedPageLandsAndCountsDirty) {
  open(/*track_dirty=*/true);
  ASSERT_EQ(uffd_mode(), UffdMode::kFull) << "needs privilege for a full-mode userfaultfd";
  ASSERT_EQ(dev_->stats().dirty_pages, 0u);
  EXPECT_EQ(pipe_.read_into(target()), static_cast<ssize_t>(kPage));
  EXPECT_TRUE(target_is(kFill));
  EXPECT_EQ(dev_->stats().dirty_pages, 1u);
}

INSTANTIATE_TEST_SUITE_P(Media, KernelWriteAsRoot,
                         ::testing::Values(Case{TestMedia::kTmpfs, EngineChoice::kUffd},
                                           Case{TestMedia::kMemfd, EngineChoice::kUffd},
                                           Case{TestMedia::kCarved, EngineChoice::kUffd}),
                         case_name);

// --- uffd engine, user-mode-only userfaultfd (a plain user) ------------------

class KernelWritePlainUser : public KernelWrite {};

// Frozen: the kernel does not deliver a kernel-mode fault to a user-mode-only
// userfaultfd; read(2) fails with EFAULT at once, writes nothing and leaves
// the pipe's bytes in it. User-mode stores still park.
TEST_P(KernelWritePlainUser, UserModeOnlyUffdFrozenFailsWithEfault) {
  RAWDAX_AS_PLAIN_USER();
  open(/*track_dirty=*/false);
  ASSERT_EQ(uffd_mode(), UffdMode::kUserModeOnly)
      << "a plain user got a full-mode userfaultfd (vm.unprivileged_userfaultfd=1?)";
  ASSERT_EQ(dev_->engine(), ProtectionEngine::kUffd);
  auto frozen = dev_->freeze();
  ASSERT_TRUE(frozen) << frozen.error().message();
  const uint64_t faults = dev_->stats().write_faults;
  auto reader = start_read();
  if (reader.wait_for(60s) != std::future_status::ready) {
    frozen->thaw();
    FAIL() << "the kernel-mode write waited for the thaw";
  }
  EXPECT_EQ(reader.get(), -EFAULT);
  EXPECT_EQ(pipe_.pending(), static_cast<int>(kPage));
  EXPECT_EQ(dev_->stats().write_faults, faults) << "the handler saw a kernel-mode fault";
  EXPECT_TRUE(target_is(0));

  std::atomic<bool> stored{false};
  std::thread store([&] {
    *reinterpret_cast<volatile char*>(target()) = 's';
    stored.store(true);
  });
  EXPECT_TRUE(eventually([&] { return dev_->stats().write_faults > faults; }))
      << "the user-mode store did not reach the handler";
  EXPECT_FALSE(stored.load()) << "a user-mode store went on through the freeze";
  frozen->thaw();
  store.join();
  EXPECT_EQ(map_->data()[kTarget], std::byte{'s'});
}

// Tracking, not frozen: the page is protected until its first store, and the
// kernel's write into it fails with EFAULT although nothing is frozen. A
// user-mode store unprotects it; then read(2) into it works.
TEST_P(KernelWritePlainUser, UserModeOnlyUffdTrackedPageFailsWithEfault) {
  RAWDAX_AS_PLAIN_USER();
  open(/*track_dirty=*/true);
  ASSERT_EQ(uffd_mode(), UffdMode::kUserModeOnly)
      << "a plain user got a full-mode userfaultfd (vm.unprivileged_userfaultfd=1?)";
  ASSERT_EQ(dev_->engine(), ProtectionEngine::kUffd);
  EXPECT_EQ(pipe_.read_into(target()), -EFAULT);
  EXPECT_EQ(pipe_.pending(), static_cast<int>(kPage));
  EXPECT_EQ(dev_->stats().dirty_pages, 0u);
  *reinterpret_cast<volatile char*>(target()) = 's';
  EXPECT_EQ(dev_->stats().dirty_pages, 1u);
  EXPECT_EQ(pipe_.read_into(target()), static_cast<ssize_t>(kPage));
  EXPECT_TRUE(target_is(kFill));
}

INSTANTIATE_TEST_SUITE_P(Media, KernelWritePlainUser,
                         ::testing::Values(Case{TestMedia::kTmpfs, EngineChoice::kUffd},
                                           Case{TestMedia::kMemfd, EngineChoice::kUffd},
                                           Case{TestMedia::kCarved, EngineChoice::kUffd}),
                         case_name);

// --- mprotect engine, whoever runs it ----------------------------------------

class KernelWriteMprotect : public KernelWrite {};

// Frozen: the mapping is read-only; the kernel's write fails with EFAULT (no
// SIGSEGV: the handler that parks stores never runs).
TEST_P(KernelWriteMprotect, FrozenFailsWithEfault) {
  open(/*track_dirty=*/false);
  ASSERT_EQ(dev_->engine(), ProtectionEngine::kMprotect);
  auto frozen = dev_->freeze();
  ASSERT_TRUE(frozen) << frozen.error().message();
  auto reader = start_read();
  if (reader.wait_for(60s) != std::future_status::ready) {
    frozen->thaw();
    FAIL() << "the kernel-mode write waited for the thaw";
  }
  EXPECT_EQ(reader.get(), -EFAULT);
  EXPECT_EQ(pipe_.pending(), static_cast<int>(kPage));
  EXPECT_TRUE(target_is(0));
  frozen->thaw();
  EXPECT_EQ(pipe_.read_into(target()), static_cast<ssize_t>(kPage));
  EXPECT_TRUE(target_is(kFill));
}

// Tracking, not frozen: async write-protect lets the kernel resolve the
// fault itself, for a kernel-mode write too (in either userfaultfd mode);
// the next sync finds exactly that page written.
TEST_P(KernelWriteMprotect, TrackedPageLandsAndCountsDirty) {
  open(/*track_dirty=*/true);
  ASSERT_EQ(dev_->engine(), ProtectionEngine::kMprotect);
  ASSERT_TRUE(dev_->sync());
  const uint64_t synced = dev_->stats().synced_pages;
  EXPECT_EQ(pipe_.read_into(target()), static_cast<ssize_t>(kPage));
  EXPECT_TRUE(target_is(kFill));
  ASSERT_TRUE(dev_->sync());
  EXPECT_EQ(dev_->stats().synced_pages - synced, 1u);
}

INSTANTIATE_TEST_SUITE_P(Media, KernelWriteMprotect,
                         ::testing::Values(Case{TestMedia::kTmpfs, EngineChoice::kMprotect},
                                           Case{TestMedia::kDisk, EngineChoice::kMprotect},
                                           Case{TestMedia::kMemfd, EngineChoice::kMprotect},
                                           Case{TestMedia::kCarved, EngineChoice::kMprotect}),
                         case_name);

}  // namespace
}  // namespace rawdax
