// What is particular to hugetlbfs regions: whole huge pages allocated at
// create, the huge page each of rawdax.meta and rawdax.lock costs, the
// free-pages check, exact sizes, discard keeping the pages, 2 MiB dirty
// tracking and snapshot pages, and the CLI on such a region. Registered only
// when RAWDAX_TEST_MEDIA selects hugetlbfs (tests/media/hugetlbfs_suite.sh);
// the shared suites run there too. The pool is read here from sysfs, apart
// from the library's own reading of it.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <vector>

#include "cli_run.h"
#include "media/files.h"
#include "rawdax/rawdax.h"
#include "test_util.h"

namespace rawdax {
namespace {

using ::rawdax::testing::CliRun;
using ::rawdax::testing::ScratchDir;
using ::rawdax::testing::ScratchRegion;
using ::rawdax::testing::TestMedia;

uint64_t read_count(const std::string& path) {
  std::string text = ::rawdax::testing::read_text(path);
  EXPECT_FALSE(text.empty()) << path;
  return text.empty() ? 0 : std::stoull(text);
}

// Free huge pages of `page` bytes that no mapping has reserved.
uint64_t free_pages(uint64_t page) {
  std::string dir = "/sys/kernel/mm/hugepages/hugepages-" + std::to_string(page / 1024) + "kB/";
  return read_count(dir + "free_hugepages") - read_count(dir + "resv_hugepages");
}

std::vector<std::byte> pattern(size_t n, uint8_t seed) {
  std::vector<std::byte> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<std::byte>((i * 131 + seed) & 0xff);
  return out;
}

class HugetlbfsTest : public ::testing::TestWithParam<TestMedia> {
 protected:
  void SetUp() override {
    auto region = Region::open(scratch_.spec(), {.create = true});
    ASSERT_TRUE(region) << region.error().message();
    region_ = std::move(*region);
    ASSERT_TRUE(region_->capabilities().hugetlb);
    page_ = region_->capabilities().huge_page_size;
    ASSERT_GE(page_, uint64_t{2} << 20);
  }
  uint64_t allocated_bytes(const std::string& path) {
    struct stat st;
    EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
    return static_cast<uint64_t>(st.st_blocks) * 512;
  }
  // The region's files, for "nothing changed" checks.
  std::vector<std::string> backing_files() {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(scratch_.spec() + "/ns")) {
      out.push_back(e.path().filename().string());
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  ScratchRegion scratch_{GetParam()};
  ScratchDir files_{::rawdax::testing::disk_parent()};
  std::unique_ptr<Region> region_;
  uint64_t page_ = 0;
};

TEST_P(HugetlbfsTest, SizesRoundUpToWholeHugePagesAllocatedAtCreate) {
  const uint64_t before = free_pages(page_);
  auto one = region_->create_namespace({.name = "one", .size = 1});
  ASSERT_TRUE(one) << one.error().message();
  EXPECT_EQ(one->size, page_);
  auto two = region_->create_namespace({.name = "two", .size = page_ + 1});
  ASSERT_TRUE(two) << two.error().message();
  EXPECT_EQ(two->size, 2 * page_);
  for (const NamespaceInfo& ns : {*one, *two}) {
    EXPECT_EQ(std::filesystem::file_size(ns.path), ns.size) << ns.name;
    EXPECT_EQ(allocated_bytes(ns.path), ns.size) << ns.name << ": not every page allocated";
  }
  // Three pages for the namespaces; each metadata update swaps one page for another.
  EXPECT_EQ(before - free_pages(page_), 3u);
  ASSERT_TRUE(region_->destroy_namespace("one"));
  ASSERT_TRUE(region_->destroy_namespace("two"));
  EXPECT_EQ(free_pages(page_), before);
}

TEST_P(HugetlbfsTest, MetadataAndLockAreOneHugePageEach) {
  ASSERT_TRUE(region_->create_namespace({.name = "keep", .size = page_}));
  const std::string dir = scratch_.spec();
  for (const char* name : {"rawdax.meta", "rawdax.lock"}) {
    EXPECT_EQ(std::filesystem::file_size(dir + "/" + name), page_) << name;
    EXPECT_EQ(allocated_bytes(dir + "/" + name), page_) << name;
  }
  // The pid, its newline, then NULs to the end of the page.
  std::string lock = ::rawdax::testing::read_text(dir + "/rawdax.lock");
  std::string pid = std::to_string(::getpid()) + "\n";
  ASSERT_EQ(lock.size(), page_);
  EXPECT_EQ(lock.substr(0, pid.size()), pid);
  EXPECT_EQ(lock.find_first_not_of('\0', pid.size()), std::string::npos);
  // The metadata's header gives its length; NULs follow it.
  std::string meta = ::rawdax::testing::read_text(dir + "/rawdax.meta");
  ASSERT_EQ(meta.size(), page_);
  size_t eol = meta.find('\n');
  ASSERT_NE(eol, std::string::npos);
  size_t length = std::stoull(meta.substr(meta.rfind(' ', eol) + 1, eol));
  EXPECT_NE(meta[eol + length - 1], '\0');
  EXPECT_EQ(meta.find_first_not_of('\0', eol + 1 + length), std::string::npos);
  // Both read back: a second opener is told the pid, and a reopen finds "keep".
  auto second = Region::open(dir);
  ASSERT_FALSE(second);
  EXPECT_NE(second.error().message().find("in use by pid " + std::to_string(::getpid()) + " "),
            std::string::npos)
      << second.error().message();
  region_.reset();
  auto again = Region::open(dir);
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_TRUE((*again)->find("keep"));
}

// The check is exact: everything free but the page kept for the metadata
// update fits, one page more does not. A namespace that took every free page
// takes stores on all of them (no fault needs a page: no SIGBUS), and the
// region still opens with the pool empty.
TEST_P(HugetlbfsTest, TooFewFreeHugePagesIsRefusedAndChangesNothing) {
  const uint64_t start = free_pages(page_);
  ASSERT_GE(start, 4u) << "the pool needs a few free huge pages";
  const uint64_t gen = region_->generation();
  const uint64_t too_many = start * page_;  // one page more than may be used
  auto refused = region_->create_namespace({.name = "big", .size = too_many});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), std::errc::no_space_on_device);
  for (const std::string& part :
       {std::string("namespace big: ") + std::to_string(too_many) + " bytes",
        std::string("hugetlbfs ") + scratch_.spec(),
        std::string("has ") + std::to_string((start - 1) * page_) + " ", std::string("free")}) {
    EXPECT_NE(refused.error().message().find(part), std::string::npos)
        << "'" << part << "' not in: " << refused.error().message();
  }
  EXPECT_EQ(region_->generation(), gen);
  EXPECT_TRUE(region_->list().empty());
  EXPECT_TRUE(backing_files().empty());
  EXPECT_EQ(free_pages(page_), start);

  const uint64_t all = (start - 1) * page_;
  auto made = region_->create_namespace({.name = "all", .size = all});
  ASSERT_TRUE(made) << made.error().message();
  EXPECT_EQ(free_pages(page_), 1u);
  {
    auto dev = region_->open_device("all");
    ASSERT_TRUE(dev) << dev.error().message();
    auto m = (*dev)->map(0, all, Access::ReadWrite);
    ASSERT_TRUE(m) << m.error().message();
    for (uint64_t off = 0; off < all; off += page_) {
      std::memset(m->data() + off, static_cast<int>(off / page_ + 1), page_);
    }
    ASSERT_TRUE((*dev)->write(all - 10, pattern(10, 7)));
    EXPECT_EQ(free_pages(page_), 1u);  // the stores took no page

    const uint64_t gen_full = region_->generation();
    auto more = region_->create_namespace({.name = "more", .size = 1});
    ASSERT_FALSE(more);
    EXPECT_EQ(more.error().code(), std::errc::no_space_on_device);
    EXPECT_NE(more.error().message().find(std::to_string(page_) + " bytes"), std::string::npos)
        << more.error().message();
    EXPECT_NE(more.error().message().find("has 0 (0 B) free"), std::string::npos)
        << more.error().message();
    auto grow = (*dev)->resize(all + page_);
    ASSERT_FALSE(grow);
    EXPECT_EQ(grow.error().code(), std::errc::no_space_on_device);
    EXPECT_NE(grow.error().message().find("namespace all: " + std::to_string(page_) + " bytes"),
              std::string::npos)
        << grow.error().message();
    EXPECT_EQ((*dev)->size(), all);
    EXPECT_EQ(region_->generation(), gen_full);
    EXPECT_EQ(region_->list().size(), 1u);
    EXPECT_EQ(free_pages(page_), 1u);
  }
  // Reopening probes the media with the pool empty (a page outside the
  // region takes the last one; the lock's own page is freed and taken back).
  region_.reset();
  const std::string filler = scratch_.spec() + "/../filler";
  auto taken = internal::create_sized_file(filler, page_, /*allocate=*/true);
  ASSERT_TRUE(taken) << taken.error().message();
  EXPECT_EQ(free_pages(page_), 0u);
  auto again = Region::open(scratch_.spec());
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_TRUE((*again)->capabilities().uffd_wp_sync) << "the probe needed a free page";
  EXPECT_EQ((*again)->list().size(), 1u);
  EXPECT_EQ(free_pages(page_), 0u);
  taken->reset();
  ASSERT_EQ(::unlink(filler.c_str()), 0);
  auto dev = (*again)->open_device("all");
  ASSERT_TRUE(dev) << dev.error().message();
  std::byte b{};
  ASSERT_TRUE((*dev)->read(all - page_, std::span(&b, 1)));
  EXPECT_EQ(b, static_cast<std::byte>(all / page_));
  dev->reset();
  ASSERT_TRUE((*again)->destroy_namespace("all"));
  EXPECT_EQ(free_pages(page_), start);
}

TEST_P(HugetlbfsTest, RestoreNeedsFreePagesToo) {
  ASSERT_TRUE(region_->create_namespace({.name = "src", .size = 2 * page_}));
  auto dev = region_->open_device("src");
  ASSERT_TRUE(dev);
  ASSERT_TRUE((*dev)->write(page_ - 3, pattern(6, 1)));
  auto snap = (*dev)->snapshot(files_.path() + "/src.snap");
  ASSERT_TRUE(snap) << snap.error().message();
  EXPECT_EQ(snap->page_size, page_);
  EXPECT_EQ(snap->pages, 2u);
  // Fill the pool but for the metadata page and one: the copy needs two.
  const uint64_t free = free_pages(page_);
  ASSERT_GE(free, 3u);
  ASSERT_TRUE(region_->create_namespace({.name = "filler", .size = (free - 2) * page_}));
  const uint64_t gen = region_->generation();
  auto refused = region_->restore_namespace("copy", files_.path() + "/src.snap");
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), std::errc::no_space_on_device);
  EXPECT_NE(refused.error().message().find("namespace copy: " + std::to_string(2 * page_)),
            std::string::npos)
      << refused.error().message();
  EXPECT_EQ(region_->generation(), gen);
  EXPECT_FALSE(region_->find("copy"));
  EXPECT_EQ(backing_files().size(), 2u);
  ASSERT_TRUE(region_->destroy_namespace("filler"));
  auto restored = region_->restore_namespace("copy", files_.path() + "/src.snap");
  ASSERT_TRUE(restored) << restored.error().message();
  auto copy = region_->open_device("copy");
  ASSERT_TRUE(copy);
  std::vector<std::byte> got(6);
  ASSERT_TRUE((*copy)->read(page_ - 3, got));
  EXPECT_EQ(got, pattern(6, 1));
}

TEST_P(HugetlbfsTest, MisalignedSizesAndOffsetsAreRefused) {
  ASSERT_TRUE(region_->create_namespace({.name = "r", .size = 2 * page_}));
  auto dev = region_->open_device("r");
  ASSERT_TRUE(dev);
  const uint64_t gen = region_->generation();
  const std::string alignment = "hugetlbfs alignment " + std::to_string(page_);
  for (uint64_t size : {page_ + 4096, 3 * page_ - 1}) {
    auto resized = (*dev)->resize(size);
    ASSERT_FALSE(resized) << size;
    EXPECT_EQ(resized.error().code(), std::errc::invalid_argument);
    EXPECT_NE(resized.error().message().find("namespace r: resize to size " +
                                             std::to_string(size) + " is not a multiple of the " +
                                             alignment),
              std::string::npos)
        << resized.error().message();
  }
  EXPECT_EQ((*dev)->size(), 2 * page_);
  EXPECT_EQ(region_->generation(), gen);
  auto map = (*dev)->map(4096, 4096, Access::ReadWrite);
  ASSERT_FALSE(map);
  EXPECT_EQ(map.error().code(), std::errc::invalid_argument);
  EXPECT_NE(map.error().message().find("namespace r: map offset 4096 is not a multiple of the " +
                                       alignment),
            std::string::npos)
      << map.error().message();
  EXPECT_EQ((*dev)->stats().maps, 0u);
  // Sizes on the huge page resize fine, both ways.
  ASSERT_TRUE((*dev)->resize(3 * page_));
  ASSERT_TRUE((*dev)->resize(page_));
  EXPECT_EQ(region_->find("r")->size, page_);
}

// Snapshots of 4 KiB pages (tmpfs here) restore into hugetlbfs when their
// size is whole huge pages, and are refused, with nothing created, when not.
TEST_P(HugetlbfsTest, SmallPageSnapshotsRestoreOnlyAtWholeHugePages) {
  ScratchRegion tmpfs(TestMedia::kTmpfs);
  auto small = Region::open(tmpfs.spec(), {.create = true});
  ASSERT_TRUE(small);
  ASSERT_TRUE((*small)->create_namespace({.name = "even", .size = 2 * page_}));
  const uint64_t odd = page_ + 16 * 4096;
  ASSERT_TRUE((*small)->create_namespace({.name = "odd", .size = odd}));
  const auto data = pattern(3 * 4096 + 5, 3);
  for (const char* name : {"even", "odd"}) {
    auto dev = (*small)->open_device(name);
    ASSERT_TRUE(dev);
    ASSERT_TRUE((*dev)->write(page_ - 4096, data));
    ASSERT_TRUE((*dev)->snapshot(files_.path() + "/" + name + ".snap"));
  }
  const uint64_t gen = region_->generation();
  auto refused = region_->restore_namespace("odd", files_.path() + "/odd.snap");
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), std::errc::invalid_argument);
  EXPECT_NE(refused.error().message().find("snapshot namespace size " + std::to_string(odd) +
                                           " is not a multiple of the hugetlbfs alignment"),
            std::string::npos)
      << refused.error().message();
  EXPECT_EQ(region_->generation(), gen);
  EXPECT_TRUE(backing_files().empty());

  auto restored = region_->restore_namespace("even", files_.path() + "/even.snap");
  ASSERT_TRUE(restored) << restored.error().message();
  EXPECT_EQ(restored->size, 2 * page_);
  auto dev = region_->open_device("even");
  ASSERT_TRUE(dev);
  std::vector<std::byte> got(data.size() + 2);
  ASSERT_TRUE((*dev)->read(page_ - 4097, got));
  EXPECT_EQ(got.front(), std::byte{0});
  EXPECT_EQ(got.back(), std::byte{0});
  EXPECT_TRUE(std::equal(data.begin(), data.end(), got.begin() + 1));
}

// Discard and write-zeroes zero in place: the namespace keeps its pages, so
// no later store can find the pool empty. The namespace is one data run.
TEST_P(HugetlbfsTest, DiscardKeepsTheHugePages) {
  const uint64_t size = 4 * page_;
  auto info = region_->create_namespace({.name = "d", .size = size});
  ASSERT_TRUE(info);
  auto dev = region_->open_device("d");
  ASSERT_TRUE(dev);
  ASSERT_TRUE((*dev)->write(0, pattern(size, 5)));
  const uint64_t free = free_pages(page_);
  ASSERT_TRUE((*dev)->discard(page_, 2 * page_));
  ASSERT_TRUE((*dev)->write_zeroes(size - page_ - 100, 200));  // across a page boundary
  EXPECT_EQ(free_pages(page_), free);
  EXPECT_EQ(allocated_bytes(info->path), size);
  std::vector<std::byte> got(size);
  ASSERT_TRUE((*dev)->read(0, got));
  auto want = pattern(size, 5);
  std::fill(want.begin() + page_, want.begin() + 3 * page_, std::byte{0});
  std::fill(want.begin() + size - page_ - 100, want.begin() + size - page_ + 100, std::byte{0});
  EXPECT_TRUE(got == want);
  EXPECT_EQ(std::filesystem::file_size(info->path), size) << "the view grew the file";
  auto runs = (*dev)->extents(0, size);
  ASSERT_TRUE(runs) << runs.error().message();
  ASSERT_EQ(runs->size(), 1u);
  EXPECT_FALSE((*runs)[0].hole);
  EXPECT_EQ((*runs)[0].length, size);
}

// An allocation the pool cannot hold (the pool shrank after the check) fails
// with ENOSPC, keeps the file's size and gives back what it got.
TEST_P(HugetlbfsTest, AllocationBeyondThePoolFailsAndGivesThePagesBack) {
  const std::string path = scratch_.spec() + "/../beyond";
  auto fd = internal::create_sized_file(path, page_, /*allocate=*/true);
  ASSERT_TRUE(fd) << fd.error().message();
  const uint64_t free = free_pages(page_);
  Status grown = internal::size_file(fd->get(), (free + 2) * page_, /*allocate=*/true, path);
  ASSERT_FALSE(grown);
  EXPECT_EQ(grown.error().code(), std::errc::no_space_on_device);
  EXPECT_NE(grown.error().message().find(path), std::string::npos) << grown.error().message();
  EXPECT_EQ(std::filesystem::file_size(path), page_);
  EXPECT_EQ(free_pages(page_), free);
  fd->reset();
  ::unlink(path.c_str());
  // create_sized_file leaves no file behind when it cannot allocate.
  auto refused = internal::create_sized_file(path, (free + 2) * page_, /*allocate=*/true);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), std::errc::no_space_on_device);
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_EQ(free_pages(page_), free + 1);
}

// With no free huge page at all, what must write a file through a mapping
// (a new region's lock, a metadata update) fails with ENOSPC, not SIGBUS,
// and takes no page.
TEST_P(HugetlbfsTest, AnEmptyPoolFailsFileWritesCleanly) {
  const std::string filler = scratch_.spec() + "/../filler";
  auto taken = internal::create_sized_file(filler, free_pages(page_) * page_, /*allocate=*/true);
  ASSERT_TRUE(taken) << taken.error().message();
  ASSERT_EQ(free_pages(page_), 0u);
  const std::string fresh = scratch_.spec() + "/../fresh";
  auto refused = Region::open(fresh, {.create = true});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), std::errc::no_space_on_device);
  EXPECT_NE(refused.error().message().find(fresh + "/rawdax.lock"), std::string::npos)
      << refused.error().message();
  const std::string meta = scratch_.spec() + "/rawdax.meta";
  const std::string before = ::rawdax::testing::read_text(meta);
  Status replaced = internal::replace_file_atomically(meta, "anything");
  ASSERT_FALSE(replaced);
  EXPECT_EQ(replaced.error().code(), std::errc::no_space_on_device);
  EXPECT_EQ(::rawdax::testing::read_text(meta), before);
  EXPECT_FALSE(std::filesystem::exists(meta + ".tmp." + std::to_string(::getpid())));
  taken->reset();
  ASSERT_EQ(::unlink(filler.c_str()), 0);
}

// The kernel behaviour docs/media.md relies on: a shared mapping reserves
// its pages at mmap (ENOMEM when the pool is short), the reservation belongs
// to the file until it is truncated, and a writable mapping past the end of
// the file extends it.
TEST_P(HugetlbfsTest, KernelReservesSharedMappingsAtMmapAndGrowsFilesToThem) {
  const std::string path = scratch_.spec() + "/../reserve";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(page_)), 0);
  const uint64_t free = free_pages(page_);
  void* too_much = ::mmap(nullptr, (free + 1) * page_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  EXPECT_EQ(too_much, MAP_FAILED);
  EXPECT_EQ(errno, ENOMEM);
  void* two = ::mmap(nullptr, 2 * page_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(two, MAP_FAILED) << std::strerror(errno);
  EXPECT_EQ(std::filesystem::file_size(path), 2 * page_);
  EXPECT_EQ(free_pages(page_), free - 2);
  ::munmap(two, 2 * page_);
  EXPECT_EQ(free_pages(page_), free - 2) << "the reservation went with the mapping";
  ASSERT_EQ(::ftruncate(fd, 0), 0);
  EXPECT_EQ(free_pages(page_), free);
  ::close(fd);
  ::unlink(path.c_str());
}

// A shrink zeroes the cut at once and gives its pages back when the last
// Device of the namespace closes (the file is trimmed then).
TEST_P(HugetlbfsTest, ShrinkGivesThePagesBackWhenTheDeviceCloses) {
  ASSERT_TRUE(region_->create_namespace({.name = "s", .size = 4 * page_}));
  auto dev = region_->open_device("s");
  ASSERT_TRUE(dev);
  ASSERT_TRUE((*dev)->write(0, pattern(4 * page_, 9)));
  const uint64_t free = free_pages(page_);
  ASSERT_TRUE((*dev)->resize(page_));
  EXPECT_EQ(free_pages(page_), free);
  dev->reset();
  EXPECT_EQ(free_pages(page_), free + 3);
  EXPECT_EQ(std::filesystem::file_size(region_->find("s")->path), page_);
}

// Freeze, dirty tracking, sync and snapshots count huge pages.
TEST_P(HugetlbfsTest, TrackingAndSnapshotsAreHugePageGranular) {
  const uint64_t size = 4 * page_;
  ASSERT_TRUE(region_->create_namespace({.name = "t", .size = size}));
  auto dev = region_->open_device("t", {.track_dirty = true});
  ASSERT_TRUE(dev) << dev.error().message();
  EXPECT_EQ((*dev)->engine(), ProtectionEngine::kUffd);
  auto m = (*dev)->map(0, size, Access::ReadWrite);
  ASSERT_TRUE(m);
  ASSERT_TRUE((*dev)->sync());
  const uint64_t synced = (*dev)->stats().synced_pages;
  m->data()[page_ + 1] = std::byte{1};
  m->data()[2 * page_ - 1] = std::byte{2};  // the same huge page
  ASSERT_TRUE((*dev)->write(3 * page_ + 4096, pattern(4096, 1)));
  EXPECT_EQ((*dev)->stats().dirty_pages, 2u);
  ASSERT_TRUE((*dev)->sync());
  EXPECT_EQ((*dev)->stats().synced_pages - synced, 2u);
  {
    auto frozen = (*dev)->freeze();
    ASSERT_TRUE(frozen) << frozen.error().message();
  }
  auto snap = (*dev)->snapshot(files_.path() + "/t.snap");
  ASSERT_TRUE(snap) << snap.error().message();
  EXPECT_EQ(snap->page_size, page_);
  EXPECT_EQ(snap->pages, 2u);
  EXPECT_EQ(snap->bytes_written, 2 * page_);
  m->data()[0] = std::byte{3};
  auto inc = (*dev)->snapshot(files_.path() + "/t2.snap", {.base = files_.path() + "/t.snap"});
  ASSERT_TRUE(inc) << inc.error().message();
  EXPECT_EQ(inc->pages, 1u);
}

INSTANTIATE_TEST_SUITE_P(Hugetlbfs, HugetlbfsTest,
                         ::testing::ValuesIn(::rawdax::testing::media_among({TestMedia::kHugetlbfs})),
                         ::rawdax::testing::param_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(HugetlbfsTest);

// The rawdax binary on a hugetlbfs region: every namespace verb, and the
// bad input particular to it.
class HugetlbfsCliTest : public HugetlbfsTest {
 protected:
  void SetUp() override {
    HugetlbfsTest::SetUp();
    region_.reset();  // the CLI opens it
  }
  CliRun rawdax(const std::string& args) {
    return ::rawdax::testing::run_cli(files_.path(), args + " --region " + scratch_.spec());
  }
  nlohmann::json listed() {
    CliRun list = rawdax("list");
    EXPECT_EQ(list.exit_code, 0) << list;
    return nlohmann::json::parse(list.out);
  }
};

TEST_P(HugetlbfsCliTest, EveryNamespaceVerb) {
  const uint64_t start = free_pages(page_);
  CliRun created = rawdax("create-namespace --name a --size 3M");
  ASSERT_EQ(created.exit_code, 0) << created;
  const uint64_t three_mib = 3 << 20;
  EXPECT_EQ(nlohmann::json::parse(created.out)["size"], (three_mib + page_ - 1) / page_ * page_)
      << "3M rounds up to whole huge pages";
  EXPECT_EQ(listed().size(), 1u);
  CliRun caps = rawdax("list --capabilities");
  ASSERT_EQ(caps.exit_code, 0) << caps;
  auto c = nlohmann::json::parse(caps.out)[0]["capabilities"];
  EXPECT_EQ(c["media"]["filesystem"], "hugetlbfs");
  EXPECT_EQ(c["page_size"], page_);
  EXPECT_EQ(c["media"]["alignment"], page_);
  EXPECT_EQ(c["media"]["hugetlb"], true);

  CliRun grown = rawdax("resize-namespace a --size " + std::to_string(4 * page_));
  ASSERT_EQ(grown.exit_code, 0) << grown;
  EXPECT_EQ(nlohmann::json::parse(grown.out)["size"], 4 * page_);
  {
    auto region = Region::open(scratch_.spec());
    ASSERT_TRUE(region) << region.error().message();
    auto dev = (*region)->open_device("a");
    ASSERT_TRUE(dev);
    ASSERT_TRUE((*dev)->write(3 * page_ + 5, pattern(100, 4)));
  }
  const std::string snap = files_.path() + "/a.snap";
  CliRun snapped = rawdax("snapshot a " + snap);
  ASSERT_EQ(snapped.exit_code, 0) << snapped;
  CliRun verified = ::rawdax::testing::run_cli(files_.path(), "verify " + snap);
  ASSERT_EQ(verified.exit_code, 0) << verified;
  CliRun restored = rawdax("restore b " + snap);
  ASSERT_EQ(restored.exit_code, 0) << restored;
  EXPECT_EQ(nlohmann::json::parse(restored.out)["size"], 4 * page_);
  EXPECT_EQ(listed().size(), 2u);
  {
    auto region = Region::open(scratch_.spec());
    ASSERT_TRUE(region);
    auto dev = (*region)->open_device("b");
    ASSERT_TRUE(dev);
    std::vector<std::byte> got(100);
    ASSERT_TRUE((*dev)->read(3 * page_ + 5, got));
    EXPECT_EQ(got, pattern(100, 4));
  }
  CliRun shrunk = rawdax("resize-namespace b --size " + std::to_string(page_));
  ASSERT_EQ(shrunk.exit_code, 0) << shrunk;
  for (const char* name : {"a", "b"}) {
    CliRun destroyed = rawdax(std::string("destroy-namespace ") + name);
    ASSERT_EQ(destroyed.exit_code, 0) << destroyed;
  }
  EXPECT_TRUE(listed().empty());
  EXPECT_EQ(free_pages(page_), start);
}

TEST_P(HugetlbfsCliTest, TooFewPagesAndMisalignedSizesFailAndChangeNothing) {
  CliRun made = rawdax("create-namespace --name keep --size " + std::to_string(page_));
  ASSERT_EQ(made.exit_code, 0) << made;
  const auto before = listed();
  const uint64_t free = free_pages(page_);
  struct Case {
    std::string args, text;
  } cases[] = {
      {"create-namespace --name big --size " + std::to_string((free + 1) * page_),
       "namespace big: " + std::to_string((free + 1) * page_) + " bytes"},
      {"resize-namespace keep --size " + std::to_string((free + 2) * page_),
       "namespace keep: " + std::to_string((free + 1) * page_) + " bytes"},
      {"resize-namespace keep --size 3M",
       "namespace keep: resize to size 3145728 is not a multiple of the hugetlbfs alignment " +
           std::to_string(page_)},
  };
  for (const auto& c : cases) {
    CliRun run = rawdax(c.args);
    EXPECT_NE(run.exit_code, 0) << c.args;
    EXPECT_TRUE(run.out.empty()) << c.args << ": " << run.out;
    EXPECT_NE(run.err.find(c.text), std::string::npos) << c.args << ": " << run.err;
    EXPECT_EQ(std::count(run.err.begin(), run.err.end(), '\n'), 1) << run.err;
    EXPECT_EQ(listed(), before) << c.args;
    EXPECT_EQ(free_pages(page_), free) << c.args;
  }
}

INSTANTIATE_TEST_SUITE_P(Hugetlbfs, HugetlbfsCliTest,
                         ::testing::ValuesIn(::rawdax::testing::media_among({TestMedia::kHugetlbfs})),
                         ::rawdax::testing::param_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(HugetlbfsCliTest);

}  // namespace
}  // namespace rawdax
