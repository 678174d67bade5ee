// Real memory poison, injected by the kernel: madvise(MADV_HWPOISON) runs
// memory_failure() on one page of a namespace, as a machine check on pmem
// or CXL memory does; afterwards every access to the page raises SIGBUS
// BUS_MCEERR_AR. The block face fails that one request with EIO and lists
// the page; the rest of the namespace, another namespace and the process
// go on; a user's Mapping still gets its SIGBUS; a snapshot fails and
// leaves no file; a whole-page write clears the page.
//
// Needs CONFIG_MEMORY_FAILURE (our hosts lack it; the guest kernel of
// tests/guest has it) and CAP_SYS_ADMIN for MADV_HWPOISON: the suite is
// registered only where both hold (root in the guest), on tmpfs when it is
// selected. Not on fsdax or devdax: there (6.1) MADV_HWPOISON unmaps the
// page and marks it, but the next fault maps the same pfn again and the
// load succeeds, since software-injected poison never reaches the pmem
// driver's bad-block list that a DAX fault consults (docs/media.md). The
// poisoned page stays poisoned for the life of the kernel, which in the
// guest ends with the boot.
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>
#include <gtest/gtest.h>
#include <random>
#include <vector>

#include "fault_catcher.h"
#include "rawdax/rawdax.h"
#include "test_util.h"

#ifndef MADV_HWPOISON
#define MADV_HWPOISON 100
#endif

namespace rawdax {
namespace {

using ::rawdax::testing::ScratchDir;
using ::rawdax::testing::ScratchRegion;
using ::rawdax::testing::TestMedia;

using ::rawdax::testing::pattern;

// Where MADV_HWPOISON can work: a kernel with memory failure handling (its
// sysctl exists only then) and a caller with CAP_SYS_ADMIN (root here).
std::vector<TestMedia> hwpoison_media() {
  if (::geteuid() != 0 || !std::filesystem::exists("/proc/sys/vm/memory_failure_recovery")) {
    return {};
  }
  return ::rawdax::testing::media_among({TestMedia::kTmpfs});
}

class HwPoisonAsRoot : public ::testing::TestWithParam<TestMedia> {
 protected:
  void SetUp() override {
    auto region = Region::open(scratch_.spec(), {.create = true});
    ASSERT_TRUE(region) << region.error().message();
    region_ = std::move(*region);
    page_ = region_->capabilities().alignment;
    size_ = 16 * page_;
    for (const char* name : {"p", "q"}) {
      ASSERT_TRUE(region_->create_namespace({.name = name, .size = size_}));
    }
    auto p = region_->open_device("p");
    ASSERT_TRUE(p) << p.error().message();
    p_ = std::move(*p);
    auto q = region_->open_device("q");
    ASSERT_TRUE(q) << q.error().message();
    q_ = std::move(*q);
    ASSERT_TRUE(p_->write(0, pattern(size_, 1)));
    ASSERT_TRUE(q_->write(0, pattern(size_, 2)));
  }

  ScratchRegion scratch_{GetParam()};
  ScratchDir out_{::rawdax::testing::tmpfs_parent()};
  std::unique_ptr<Region> region_;
  std::unique_ptr<Device> p_, q_;
  uint64_t page_ = 0, size_ = 0;
};

TEST_P(HwPoisonAsRoot, PoisonedPageFailsOneRequestAndClearsWhenRewritten) {
  const uint64_t bad = 5 * page_;
  auto mapped = p_->map(bad, page_, Access::ReadWrite);
  ASSERT_TRUE(mapped) << mapped.error().message();
  std::optional<Mapping> m = std::move(*mapped);
  ASSERT_EQ(::madvise(m->data(), page_, MADV_HWPOISON), 0)
      << "MADV_HWPOISON: " << std::strerror(errno);

  // The block face: EIO for the request that meets the page, naming it.
  std::vector<std::byte> out(page_);
  Status st = p_->read(bad + 10, std::span(out).first(100));
  ASSERT_FALSE(st) << "a read of a hwpoisoned page succeeded";
  EXPECT_EQ(st.error().code(), std::errc::io_error);
  EXPECT_NE(st.error().message().find("namespace p"), std::string::npos) << st.error().message();
  EXPECT_NE(st.error().message().find("offset " + std::to_string(bad) + " length " +
                                      std::to_string(page_) + " is now in the bad-block list"),
            std::string::npos)
      << st.error().message();
  EXPECT_NE(st.error().message().find("BUS_MCEERR_AR"), std::string::npos)
      << st.error().message();
  const std::vector<BadRange> listed = {{bad, page_}};
  EXPECT_EQ(p_->info().badblocks, listed);

  // Everything else goes on: the rest of p, all of q.
  auto want_p = pattern(size_, 1);
  ASSERT_TRUE(p_->read(0, out));
  EXPECT_TRUE(std::equal(out.begin(), out.end(), want_p.begin()));
  std::vector<std::byte> all_q(size_);
  ASSERT_TRUE(q_->read(0, all_q));
  EXPECT_EQ(all_q, pattern(size_, 2));

  // A user's load through its own Mapping still raises SIGBUS, in its thread.
  EXPECT_EQ(::rawdax::testing::run_catching_faults([&] {
              volatile std::byte b = *reinterpret_cast<volatile std::byte*>(m->data());
              (void)b;
            }),
            SIGBUS);

  // A snapshot fails naming the namespace and offset, and leaves no file.
  const std::string path = out_.path() + "/p.snap";
  auto snap = p_->snapshot(path);
  ASSERT_FALSE(snap) << "a snapshot over a poisoned page succeeded";
  EXPECT_NE(snap.error().message().find("namespace p"), std::string::npos)
      << snap.error().message();
  EXPECT_NE(snap.error().message().find("offset " + std::to_string(bad)), std::string::npos)
      << snap.error().message();
  EXPECT_TRUE(std::filesystem::is_empty(out_.path()));

  // Rewriting the whole page gives it fresh memory and clears the list.
  m.reset();  // the user is done with its mapping
  auto fresh = pattern(page_, 3);
  Status w = p_->write(bad, fresh);
  ASSERT_TRUE(w) << w.error().message();
  EXPECT_TRUE(p_->info().badblocks.empty());
  ASSERT_TRUE(p_->read(bad, out));
  EXPECT_EQ(out, fresh);
}

INSTANTIATE_TEST_SUITE_P(Media, HwPoisonAsRoot, ::testing::ValuesIn(hwpoison_media()),
                         ::rawdax::testing::param_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(HwPoisonAsRoot);

}  // namespace
}  // namespace rawdax
