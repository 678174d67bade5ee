// Region-level behaviour through the public Region API, on every media.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>

#include "common/units.h"
#include "rawdax/rawdax.h"
#include "test_util.h"

namespace rawdax {
namespace {

using ::rawdax::testing::ScratchRegion;
using ::rawdax::testing::TestMedia;

class RegionTest : public ::testing::TestWithParam<TestMedia> {
 protected:
  RegionTest() : scratch_(GetParam()) {}
  std::unique_ptr<Region> open() {
    auto region = Region::open(scratch_.spec(), {.create = true});
    EXPECT_TRUE(region) << region.error().message();
    return region ? std::move(*region) : nullptr;
  }
  ScratchRegion scratch_;
};

// Region behaviour that needs files: reopening, locking, a missing region.
using FileRegionTest = RegionTest;
// Region behaviour of the directory layout: orphan files under ns/, a
// corrupt rawdax.meta. A carved region has neither (one file, a label area).
using DirectoryRegionTest = RegionTest;

TEST_P(RegionTest, CreateListFindDestroy) {
  auto region = open();
  ASSERT_TRUE(region);
  EXPECT_TRUE(region->list().empty());
  uint64_t gen0 = region->generation();
  // An aligned size is kept as asked: 1 MiB, or one page where pages are larger.
  const uint64_t aligned = std::max<uint64_t>(1 << 20, region->capabilities().alignment);
  auto info = region->create_namespace({.name = "vm1", .size = aligned});
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_EQ(info->size, aligned);
  EXPECT_EQ(info->mode, "raw");
  EXPECT_EQ(region->generation(), gen0 + 1);
  // An odd size is rounded up to the alignment, except on a carved region,
  // where an extent is exactly what was asked for and anything else is
  // refused, changing nothing.
  if (GetParam() == TestMedia::kCarved) {
    auto odd = region->create_namespace({.name = "vm2", .size = 5000});
    ASSERT_FALSE(odd);
    EXPECT_EQ(odd.error().code(), std::errc::invalid_argument);
    EXPECT_NE(odd.error().message().find("size 5000 is not a multiple"), std::string::npos)
        << odd.error().message();
    EXPECT_EQ(region->generation(), gen0 + 1);
    ASSERT_TRUE(region->create_namespace(
        {.name = "vm2", .size = *internal::round_up(5000, region->capabilities().alignment)}));
  } else {
    ASSERT_TRUE(region->create_namespace({.name = "vm2", .size = 5000}));
  }
  auto list = region->list();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[1].size % region->capabilities().alignment, 0u);
  EXPECT_GE(list[1].size, 5000u);
  EXPECT_NE(list[0].uuid, list[1].uuid);
  ASSERT_TRUE(region->find("vm2"));
  ASSERT_TRUE(region->destroy_namespace("vm2"));
  EXPECT_FALSE(region->find("vm2"));
  EXPECT_EQ(region->find("vm2").error().code(), std::errc::no_such_file_or_directory);
  EXPECT_EQ(region->list().size(), 1u);
  auto again = region->destroy_namespace("vm2");
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), std::errc::no_such_file_or_directory);
}

TEST_P(RegionTest, BadInputChangesNothing) {
  auto region = open();
  ASSERT_TRUE(region);
  ASSERT_TRUE(region->create_namespace({.name = "vm1", .size = 1 << 20}));
  uint64_t gen = region->generation();
  struct Case {
    NamespaceSpec spec;
    std::errc code;
    std::string text;
  } cases[] = {
      {{"vm1", 1 << 20}, std::errc::file_exists, "already exists"},
      {{"", 1 << 20}, std::errc::invalid_argument, "empty"},
      {{std::string(64, 'x'), 1 << 20}, std::errc::invalid_argument, "63"},
      {{"a/b", 1 << 20}, std::errc::invalid_argument, "a/b"},
      {{"..", 1 << 20}, std::errc::invalid_argument, "reserved"},
      {{"zero", 0}, std::errc::invalid_argument, "greater than 0"},
      {{"huge", UINT64_MAX}, std::errc::value_too_large, "too large"},
      {{"big", uint64_t{1} << 60}, std::errc::no_space_on_device, "free"},
  };
  for (const auto& c : cases) {
    auto r = region->create_namespace(c.spec);
    ASSERT_FALSE(r) << c.spec.name;
    EXPECT_EQ(r.error().code(), std::make_error_code(c.code)) << r.error().message();
    EXPECT_NE(r.error().message().find(c.text), std::string::npos) << r.error().message();
  }
  EXPECT_EQ(region->generation(), gen);
  EXPECT_EQ(region->list().size(), 1u);
}

TEST_P(RegionTest, NoSpaceErrorNamesSizeAndFreeSpace) {
  auto region = open();
  ASSERT_TRUE(region);
  auto r = region->create_namespace({.name = "big", .size = uint64_t{1} << 60});
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find(std::to_string(uint64_t{1} << 60)), std::string::npos);
  EXPECT_NE(r.error().message().find("free"), std::string::npos);
  EXPECT_NE(r.error().message().find("big"), std::string::npos);
}

TEST_P(FileRegionTest, SurvivesReopen) {
  std::string uuid;
  uint64_t size = 0;
  {
    auto region = open();
    ASSERT_TRUE(region);
    size = 3 * std::max<uint64_t>(1 << 20, region->capabilities().alignment);
    auto info = region->create_namespace({.name = "keep", .size = size});
    ASSERT_TRUE(info);
    uuid = info->uuid;
  }
  auto region = open();
  ASSERT_TRUE(region);
  auto info = region->find("keep");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->uuid, uuid);
  EXPECT_EQ(info->size, size);
}

TEST_P(FileRegionTest, SecondOpenerIsRefusedWithThePid) {
  auto first = open();
  ASSERT_TRUE(first);
  auto second = Region::open(scratch_.spec());
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code(), std::errc::device_or_resource_busy);
  EXPECT_NE(second.error().message().find("pid " + std::to_string(::getpid())),
            std::string::npos)
      << second.error().message();
  first.reset();
  EXPECT_TRUE(Region::open(scratch_.spec()));
}

TEST_P(DirectoryRegionTest, OrphansAreCleanedOnOpen) {
  {
    auto region = open();
    ASSERT_TRUE(region);
    ASSERT_TRUE(region->create_namespace({.name = "live", .size = 1 << 20}));
  }
  std::string dir = scratch_.spec();
  // (On hugetlbfs, which has no write(2), the files stay empty: still orphans.)
  std::ofstream(dir + "/ns/0b7c1b55-0000-4000-8000-000000000000") << "orphan";
  std::ofstream(dir + "/rawdax.meta.tmp.12345") << "half";
  ASSERT_TRUE(std::filesystem::exists(dir + "/ns/0b7c1b55-0000-4000-8000-000000000000"));
  ASSERT_TRUE(std::filesystem::exists(dir + "/rawdax.meta.tmp.12345"));
  auto region = open();
  ASSERT_TRUE(region);
  EXPECT_FALSE(std::filesystem::exists(dir + "/ns/0b7c1b55-0000-4000-8000-000000000000"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/rawdax.meta.tmp.12345"));
  auto live = region->find("live");
  ASSERT_TRUE(live);
  EXPECT_TRUE(std::filesystem::exists(live->path));
}

TEST_P(DirectoryRegionTest, CorruptMetadataIsRefusedClearly) {
  {
    auto region = open();
    ASSERT_TRUE(region);
    ASSERT_TRUE(region->create_namespace({.name = "vm1", .size = 1 << 20}));
  }
  // Through a mapping: hugetlbfs has no write(2).
  std::string meta = scratch_.spec() + "/rawdax.meta";
  int fd = ::open(meta.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  size_t len = std::filesystem::file_size(meta);
  ASSERT_GT(len, 60u);
  void* addr = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  ASSERT_NE(addr, MAP_FAILED);
  static_cast<char*>(addr)[60] ^= 1;
  ::munmap(addr, len);
  auto region = Region::open(scratch_.spec());
  ASSERT_FALSE(region);
  EXPECT_NE(region.error().message().find("corrupt region metadata"), std::string::npos);
}

TEST_P(FileRegionTest, MissingRegionWithoutCreateIsAnError) {
  auto region = Region::open(scratch_.spec());
  ASSERT_FALSE(region);
  EXPECT_EQ(region.error().code(), std::errc::no_such_file_or_directory);
  EXPECT_NE(region.error().message().find(scratch_.spec()), std::string::npos);
}

TEST_P(RegionTest, CapabilitiesFollowTheMedia) {
  auto region = open();
  ASSERT_TRUE(region);
  const Capabilities& caps = region->capabilities();
  const auto base_page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  EXPECT_EQ(caps.engine == ProtectionEngine::kUffd, caps.uffd_wp_sync);
  EXPECT_EQ(caps.hugetlb, GetParam() == TestMedia::kHugetlbfs);
  EXPECT_EQ(region->space().carved, GetParam() == TestMedia::kCarved);
  if (GetParam() == TestMedia::kHugetlbfs) {
    // A mapping of a hugetlbfs file is made of huge pages only.
    EXPECT_GE(caps.huge_page_size, uint64_t{2} << 20);
    EXPECT_EQ(caps.page_size, caps.huge_page_size);
    EXPECT_EQ(caps.alignment, caps.huge_page_size);
  } else {
    EXPECT_EQ(caps.page_size, base_page);
    EXPECT_EQ(caps.alignment, base_page);
  }
  switch (GetParam()) {
    case TestMedia::kTmpfs:
      EXPECT_EQ(caps.filesystem, "tmpfs");
      EXPECT_EQ(caps.persist, PersistMethod::kNone);
      break;
    case TestMedia::kMemfd:
      EXPECT_EQ(caps.kind, MediaKind::kMemfd);
      EXPECT_EQ(caps.persist, PersistMethod::kNone);
      break;
    case TestMedia::kDisk:
      EXPECT_EQ(caps.kind, MediaKind::kDirectory);
      EXPECT_NE(caps.filesystem, "tmpfs");
      EXPECT_EQ(caps.persist, caps.map_sync ? PersistMethod::kCacheFlush : PersistMethod::kMsync);
      break;
    case TestMedia::kHugetlbfs:
      EXPECT_EQ(caps.filesystem, "hugetlbfs");
      EXPECT_EQ(caps.persist, PersistMethod::kNone);
      EXPECT_TRUE(caps.uffd_wp_sync);  // the kernel's hugetlbfs uffd-wp (5.19+)
      break;
    case TestMedia::kFsdax:
      EXPECT_EQ(caps.kind, MediaKind::kDirectory);
      EXPECT_TRUE(caps.map_sync);
      EXPECT_EQ(caps.persist, PersistMethod::kCacheFlush);
      break;
    case TestMedia::kCarved:  // one file on tmpfs
      EXPECT_EQ(caps.kind, MediaKind::kFile);
      EXPECT_EQ(caps.filesystem, "tmpfs");
      EXPECT_EQ(caps.persist, PersistMethod::kNone);
      break;
  }
}

INSTANTIATE_TEST_SUITE_P(AllMedia, RegionTest, RAWDAX_ALL_MEDIA, testing::param_name);
INSTANTIATE_TEST_SUITE_P(FileMedia, FileRegionTest, RAWDAX_FILE_MEDIA, testing::param_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(FileRegionTest);
INSTANTIATE_TEST_SUITE_P(DirectoryMedia, DirectoryRegionTest, RAWDAX_DIRECTORY_MEDIA,
                         testing::param_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(DirectoryRegionTest);

TEST(DevdaxRegion, MissingDeviceIsAClearError) {
  auto region = Region::open("devdax:/dev/dax-does-not-exist.0");
  ASSERT_FALSE(region);
  EXPECT_NE(region.error().message().find("/dev/dax-does-not-exist.0"), std::string::npos);
  auto not_char = Region::open("devdax:/dev/shm");
  ASSERT_FALSE(not_char);
  EXPECT_NE(not_char.error().message().find("not a character device"), std::string::npos);
}

}  // namespace
}  // namespace rawdax
