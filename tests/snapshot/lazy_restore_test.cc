// Lazy restore (docs/snapshot.md "Lazy restore"): the namespace is usable at
// once and reads, writes and mappings see the snapshot's image; the
// background fill completes to the image a plain restore gives; readers and
// writers racing the fill (a TSan stress); refusals with nothing changed;
// and crashes at every persist point of a lazy restore with user writes
// racing it, each followed by a reopen that resumes the fill.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <gtest/gtest.h>
#include <string>
#include <thread>
#include <vector>

#include "child_process.h"
#include "common/crash_point.h"
#include "rawdax/rawdax.h"
#include "test_util.h"

namespace rawdax {
namespace {

using ::rawdax::testing::ScratchDir;
using ::rawdax::testing::ScratchRegion;
using ::rawdax::testing::TestMedia;

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kPage = 4096;

// Page p of the source: its own bytes, except every 7th page, never written
// (a hole the snapshot need not store).
std::vector<std::byte> source_image(uint64_t size, uint8_t tag) {
  std::vector<std::byte> out(size);
  for (uint64_t i = 0; i < size; ++i) {
    const uint64_t page = i / kPage;
    out[i] = page % 7 == 3 ? std::byte{0}
                           : std::byte(static_cast<uint8_t>(tag + page * 13 + i % 251));
  }
  return out;
}

// A chain of two snapshots of a `size`-byte namespace in `dir`: full, then
// an incremental over a changed quarter. Returns the newest file; `image`
// gets the image it describes.
std::string make_chain(const std::string& dir, uint64_t size, std::vector<std::byte>* image) {
  auto region = Region::open("memfd:");
  EXPECT_TRUE(region);
  if (!region) return {};
  EXPECT_TRUE((*region)->create_namespace({.name = "src", .size = size}));
  auto dev = (*region)->open_device("src", {.track_dirty = true});
  EXPECT_TRUE(dev);
  if (!dev) return {};
  *image = source_image(size, 1);
  for (uint64_t p = 0; p < size / kPage; ++p) {
    if (p % 7 == 3) continue;
    EXPECT_TRUE((*dev)->write(p * kPage, std::span(image->data() + p * kPage, kPage)));
  }
  const std::string full = dir + "/full.snap", inc = dir + "/inc.snap";
  EXPECT_TRUE((*dev)->snapshot(full));
  std::vector<std::byte> changed = source_image(size, 77);
  for (uint64_t p = 0; p < size / kPage; p += 4) {
    std::copy_n(changed.begin() + static_cast<ptrdiff_t>(p * kPage), kPage,
                image->begin() + static_cast<ptrdiff_t>(p * kPage));
    EXPECT_TRUE((*dev)->write(p * kPage, std::span(image->data() + p * kPage, kPage)));
  }
  auto snap = (*dev)->snapshot(inc, {.base = full});
  EXPECT_TRUE(snap) << (snap ? "" : snap.error().message());
  return inc;
}

std::vector<std::byte> read_all(Device& dev) {
  std::vector<std::byte> out(dev.size());
  Status st = dev.read(0, out);
  EXPECT_TRUE(st) << (st ? "" : st.error().message());
  return out;
}

// Media that can do it: a lazy restore needs holes (or a region that dies
// with the process). Carved and hugetlbfs regions refuse it (BadInput), and
// so do DAX filesystems (LazyRestoreOnDax).
std::vector<TestMedia> lazy_media() {
  return ::rawdax::testing::media_except(
      ::rawdax::testing::all_media(), {TestMedia::kCarved, TestMedia::kHugetlbfs, TestMedia::kFsdax});
}

class LazyRestoreTest : public ::testing::TestWithParam<TestMedia> {
 protected:
  static constexpr uint64_t kSize = 16 * kMiB;
  void SetUp() override {
    snap_ = make_chain(files_.path(), kSize, &image_);
    ASSERT_FALSE(snap_.empty());
    auto region = Region::open(scratch_.spec(), {.create = true});
    ASSERT_TRUE(region) << region.error().message();
    region_ = std::move(*region);
  }
  ScratchDir files_{::rawdax::testing::tmpfs_parent()};
  ScratchRegion scratch_{GetParam()};
  std::unique_ptr<Region> region_;
  std::string snap_;
  std::vector<std::byte> image_;
};

TEST_P(LazyRestoreTest, UsableAtOnceAndCompletesToThePlainImage) {
  const std::vector<std::byte> original = image_;
  auto info = region_->restore_namespace("lazy", snap_, {.lazy = true});
  ASSERT_TRUE(info) << info.error().message();
  ASSERT_TRUE(info->restore.has_value()) << "a lazy restore returns before the fill is done";
  EXPECT_EQ(info->size, kSize);
  auto dev = region_->open_device("lazy");
  ASSERT_TRUE(dev) << dev.error().message();

  // A page deep in the image, a range across pages, a mapping.
  std::vector<std::byte> page(kPage);
  const uint64_t deep = kSize - 5 * kPage;
  ASSERT_TRUE((*dev)->read(deep, page));
  EXPECT_TRUE(std::equal(page.begin(), page.end(), image_.begin() + deep));
  std::vector<std::byte> span(3 * kPage + 100);
  ASSERT_TRUE((*dev)->read(kSize / 2 + 17, span));
  EXPECT_TRUE(std::equal(span.begin(), span.end(), image_.begin() + kSize / 2 + 17));
  auto map = (*dev)->map(kSize - 64 * kPage, 32 * kPage, Access::ReadWrite);
  ASSERT_TRUE(map) << map.error().message();
  EXPECT_EQ(std::memcmp(map->data(), image_.data() + kSize - 64 * kPage, 32 * kPage), 0);

  // A partial write of a page not filled yet lands on the image's page; so
  // does a store through the mapping; a discard reads zeros afterwards.
  std::vector<std::byte> patch(100, std::byte{0xAB});
  const uint64_t at = kSize - 9 * kPage + 1000;
  ASSERT_TRUE((*dev)->write(at, patch));
  std::copy(patch.begin(), patch.end(), image_.begin() + static_cast<ptrdiff_t>(at));
  map->data()[5] = std::byte{0xCD};
  image_[kSize - 64 * kPage + 5] = std::byte{0xCD};
  const uint64_t discarded = kSize - 20 * kPage;
  ASSERT_TRUE((*dev)->discard(discarded, 2 * kPage));
  std::fill_n(image_.begin() + static_cast<ptrdiff_t>(discarded), 2 * kPage, std::byte{0});

  Status filled = region_->wait_for_restore("lazy");
  ASSERT_TRUE(filled) << filled.error().message();
  auto done = region_->find("lazy");
  ASSERT_TRUE(done);
  EXPECT_FALSE(done->restore.has_value()) << "the marker is dropped once the fill is complete";
  EXPECT_TRUE(read_all(**dev) == image_) << "the lazily restored image differs";

  // A plain restore of the same chain gives the image without our changes.
  ASSERT_TRUE(region_->restore_namespace("plain", snap_));
  auto plain = region_->open_device("plain");
  ASSERT_TRUE(plain);
  EXPECT_TRUE(read_all(**plain) == original) << "a plain restore gives another image";

  // Once filled, a resize and a backing fd are allowed again.
  EXPECT_TRUE((*dev)->resize(kSize + kMiB));
  auto fd = region_->open_backing_fd("lazy", false);
  ASSERT_TRUE(fd) << fd.error().message();
  ::close(*fd);
}

TEST_P(LazyRestoreTest, ClosingTheRegionLeavesAFillTheNextOpenResumes) {
  if (!scratch_.persistent()) {
    // A memfd region is gone with its Region: nothing to resume; the fill
    // just stops with it.
    ASSERT_TRUE(region_->restore_namespace("lazy", snap_, {.lazy = true}));
    region_.reset();
    return;
  }
  ASSERT_TRUE(region_->restore_namespace("lazy", snap_, {.lazy = true}));
  {
    auto dev = region_->open_device("lazy");
    ASSERT_TRUE(dev);
    std::vector<std::byte> page(kPage, std::byte{0x5A});
    ASSERT_TRUE((*dev)->write(kSize - kPage, page));
    std::copy(page.begin(), page.end(), image_.end() - kPage);
  }
  region_.reset();  // stops the background pass wherever it is
  auto region = Region::open(scratch_.spec());
  ASSERT_TRUE(region) << region.error().message();
  ASSERT_TRUE((*region)->wait_for_restore("lazy"));
  auto info = (*region)->find("lazy");
  ASSERT_TRUE(info);
  EXPECT_FALSE(info->restore.has_value());
  auto dev = (*region)->open_device("lazy");
  ASSERT_TRUE(dev);
  EXPECT_TRUE(read_all(**dev) == image_);
}

// Readers, writers and a mapper race the background fill (run under TSan).
// Writers own every 4th page (p % 4 == w) and patch part of it; readers check
// the other pages against the image while the fill goes on.
TEST_P(LazyRestoreTest, StressReadersWritersAndMapsAgainstTheFill) {
  ASSERT_TRUE(region_->restore_namespace("lazy", snap_, {.lazy = true}));
  auto dev = region_->open_device("lazy");
  ASSERT_TRUE(dev);
  const uint64_t pages = kSize / kPage;
  constexpr unsigned kWriters = 2;
  std::atomic<uint64_t> failures{0};
  std::vector<std::thread> threads;
  for (unsigned w = 0; w < kWriters; ++w) {
    threads.emplace_back([&, w] {
      std::vector<std::byte> patch(300, std::byte(static_cast<uint8_t>(0xE0 + w)));
      std::vector<std::byte> back(kPage);
      for (uint64_t p = pages - 4 + w; p < pages; p -= 4 * 7) {
        const uint64_t at = p * kPage + 700;
        if (!(*dev)->write(at, patch) || !(*dev)->read(p * kPage, back)) {
          failures.fetch_add(1);
          continue;
        }
        // The rest of the page is the image's: filled before the write.
        if (std::memcmp(back.data(), image_.data() + p * kPage, 700) != 0 ||
            std::memcmp(back.data() + 700, patch.data(), patch.size()) != 0) {
          failures.fetch_add(1);
        }
        if (p < 4 * 7) break;
      }
    });
  }
  for (unsigned r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      std::vector<std::byte> buf(2 * kPage);
      for (uint64_t p = 2 + r; p + 1 < pages; p += 37) {
        if (p % 4 < kWriters || (p + 1) % 4 < kWriters) continue;
        if (!(*dev)->read(p * kPage, buf) ||
            std::memcmp(buf.data(), image_.data() + p * kPage, buf.size()) != 0) {
          failures.fetch_add(1);
        }
      }
    });
  }
  threads.emplace_back([&] {
    for (uint64_t off = kSize / 3 / kPage * kPage; off + 8 * kPage < kSize; off += 97 * kPage) {
      auto map = (*dev)->map(off, 8 * kPage, Access::ReadOnly);
      if (!map) {
        failures.fetch_add(1);
        continue;
      }
      for (uint64_t p = 0; p < 8; ++p) {
        if ((off / kPage + p) % 4 < kWriters) continue;
        if (std::memcmp(map->data() + p * kPage, image_.data() + off + p * kPage, kPage) != 0) {
          failures.fetch_add(1);
        }
      }
    }
  });
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0u);
  ASSERT_TRUE(region_->wait_for_restore("lazy"));
  // Every writer's patch survived the fill.
  std::vector<std::byte> all = read_all(**dev);
  for (unsigned w = 0; w < kWriters; ++w) {
    for (uint64_t p = pages - 4 + w;; p -= 4 * 7) {
      EXPECT_EQ(all[p * kPage + 700], std::byte(static_cast<uint8_t>(0xE0 + w))) << "page " << p;
      EXPECT_EQ(std::memcmp(all.data() + p * kPage, image_.data() + p * kPage, 700), 0);
      if (p < 4 * 7) break;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Media, LazyRestoreTest, ::testing::ValuesIn(lazy_media()),
                         ::rawdax::testing::param_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(LazyRestoreTest);

// A DAX filesystem (ext4 -o dax; registered where one is given, as in the
// guest) refuses a lazy restore and keeps the namespace as it was.
class LazyRestoreOnDax : public LazyRestoreTest {};

TEST_P(LazyRestoreOnDax, IsRefusedAndChangesNothing) {
  auto lazy = region_->restore_namespace("lazy", snap_, {.lazy = true});
  ASSERT_FALSE(lazy);
  EXPECT_EQ(lazy.error().code(), std::errc::operation_not_supported);
  EXPECT_NE(lazy.error().message().find("DAX filesystem"), std::string::npos)
      << lazy.error().message();
  EXPECT_FALSE(region_->find("lazy")) << "nothing was created";
}

INSTANTIATE_TEST_SUITE_P(
    Media, LazyRestoreOnDax,
    ::testing::ValuesIn(::rawdax::testing::media_except(
        ::rawdax::testing::all_media(), {TestMedia::kTmpfs, TestMedia::kDisk, TestMedia::kMemfd,
                                         TestMedia::kHugetlbfs, TestMedia::kCarved})),
    ::rawdax::testing::param_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(LazyRestoreOnDax);

// ---- Crashes: at every persist point, with user writes racing the fill ----

constexpr const char* kEnvPrefix = "RAWDAX_LAZY_CRASH_";
constexpr uint64_t kCrashSize = 4 * kMiB;
// The pages the child changes once the restore returned.
constexpr uint64_t kPatchedPage = kCrashSize / kPage - 3;    // 100 bytes at 1000
constexpr uint64_t kDiscardedPage = kCrashSize / kPage - 5;  // discarded (not a zero page)
constexpr uint64_t kWrittenPage = kCrashSize / kPage / 2 + 1;  // written whole

int run_lazy_child(const std::string& spec, const std::string& snap, int report) {
  auto region = Region::open(spec);
  if (!region) return 3;
  auto info = (*region)->restore_namespace("dst", snap, {.lazy = true, });
  if (!info) {
    std::fprintf(stderr, "restore: %s\n", info.error().message().c_str());
    return 3;
  }
  auto dev = (*region)->open_device("dst");
  if (!dev) return 3;
  // One byte on `report` after each change returned.
  std::vector<std::byte> patch(100, std::byte{0xAB}), whole(kPage, std::byte{0xCD});
  if (!(*dev)->write(kPatchedPage * kPage + 1000, patch) || ::write(report, "p", 1) != 1) return 4;
  if (!(*dev)->discard(kDiscardedPage * kPage, kPage) || ::write(report, "d", 1) != 1) return 4;
  if (!(*dev)->write(kWrittenPage * kPage, whole) || ::write(report, "w", 1) != 1) return 4;
  Status filled = (*region)->wait_for_restore("dst");
  if (!filled) {
    std::fprintf(stderr, "fill: %s\n", filled.error().message().c_str());
    return 5;
  }
  return 0;
}

[[maybe_unused]] const bool kLazyChildRan = [] {
  const char* spec = std::getenv("RAWDAX_LAZY_CRASH_SPEC");
  if (spec == nullptr) return false;
  const char* snap = std::getenv("RAWDAX_LAZY_CRASH_SNAP");
  const char* report = std::getenv("RAWDAX_LAZY_CRASH_REPORT");
  if (snap == nullptr || report == nullptr) ::_exit(2);
  ::_exit(run_lazy_child(spec, snap, std::atoi(report)));
}();

// Whether the region's metadata marks dst incomplete (read from the file:
// opening the region would resume the fill).
bool marked(const std::string& spec) {
  std::string meta;
  int fd = ::open((spec + "/rawdax.meta").c_str(), O_RDONLY);
  if (fd < 0) return false;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) meta.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return meta.find("\"restore\"") != std::string::npos;
}

// Runs the child crashing at persist point n; its exit code, and in
// `reported` the changes it reported done.
int crash_child(const std::string& spec, const std::string& snap, long n, std::string* reported) {
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) return -1;  // inherited: no O_CLOEXEC
  pid_t pid = ::rawdax::testing::spawn_self(
      {std::string(kEnvPrefix) + "SPEC=" + spec, std::string(kEnvPrefix) + "SNAP=" + snap,
       std::string(kEnvPrefix) + "REPORT=" + std::to_string(pipe_fds[1]),
       "RAWDAX_CRASH_AT=" + std::to_string(n)},
      kEnvPrefix);
  ::close(pipe_fds[1]);
  if (pid <= 0) {
    ::close(pipe_fds[0]);
    return -1;
  }
  const int code = ::rawdax::testing::wait_child(pid);
  std::string out(8, '\0');
  ssize_t got = ::read(pipe_fds[0], out.data(), out.size());
  out.resize(got > 0 ? static_cast<size_t>(got) : 0);
  ::close(pipe_fds[0]);
  if (reported != nullptr) *reported = out;
  return code;
}

// ---- Refusals: nothing changes ----

class LazyRestoreBadInput : public ::testing::Test {
 protected:
  static constexpr uint64_t kSize = 4 * kMiB;
  void SetUp() override {
    snap_ = make_chain(files_.path(), kSize, &image_);
    ASSERT_FALSE(snap_.empty());
  }
  ScratchDir files_{::rawdax::testing::tmpfs_parent()};
  ScratchRegion scratch_{TestMedia::kTmpfs};
  std::string snap_;
  std::vector<std::byte> image_;
};

TEST_F(LazyRestoreBadInput, OpenNamespaceIsRefusedAndKept) {
  auto region = Region::open(scratch_.spec(), {.create = true});
  ASSERT_TRUE(region);
  ASSERT_TRUE((*region)->create_namespace({.name = "dst", .size = kSize}));
  auto dev = (*region)->open_device("dst");
  ASSERT_TRUE(dev);
  std::vector<std::byte> old(kSize, std::byte{0x11});
  ASSERT_TRUE((*dev)->write(0, old));
  const uint64_t generation = (*region)->generation();
  auto info = (*region)->restore_namespace("dst", snap_, {.lazy = true});
  ASSERT_FALSE(info);
  EXPECT_EQ(info.error().code(), std::errc::device_or_resource_busy) << info.error().message();
  EXPECT_EQ((*region)->generation(), generation);
  EXPECT_TRUE(read_all(**dev) == old);
}

// Flips one byte of `path` at `where` (from the end when negative).
void flip(const std::string& path, off_t where) {
  int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  struct stat st;
  ASSERT_EQ(::fstat(fd, &st), 0);
  if (where < 0) where += st.st_size;
  char c = 0;
  ASSERT_EQ(::pread(fd, &c, 1, where), 1);
  c = static_cast<char>(c ^ 0x40);
  ASSERT_EQ(::pwrite(fd, &c, 1, where), 1);
  ::close(fd);
}

TEST_F(LazyRestoreBadInput, ChainThatFailsVerifyIsRefusedBeforeAnything) {
  auto region = Region::open(scratch_.spec(), {.create = true});
  ASSERT_TRUE(region);
  const uint64_t generation = (*region)->generation();
  // A byte of the base's header (its JSON): the chain does not open.
  flip(files_.path() + "/full.snap", 40);
  auto info = (*region)->restore_namespace("dst", snap_, {.lazy = true});
  ASSERT_FALSE(info);
  EXPECT_EQ(info.error().code(), std::errc::illegal_byte_sequence) << info.error().message();
  EXPECT_TRUE((*region)->list().empty()) << "nothing is created";
  EXPECT_EQ((*region)->generation(), generation);
}

// A stored page whose bytes fail their checksum: the lazy restore checks it
// when it fills that page. Reads of it fail, the fill stops there and the
// namespace stays marked incomplete (a plain restore would have refused the
// chain up front).
TEST_F(LazyRestoreBadInput, APageThatFailsItsChecksumFailsItsReadsAndStopsTheFill) {
  auto region = Region::open(scratch_.spec(), {.create = true});
  ASSERT_TRUE(region);
  // The last page: stored by the base only.
  flip(files_.path() + "/full.snap", -static_cast<off_t>(kPage) / 2);
  auto info = (*region)->restore_namespace("dst", snap_, {.lazy = true});
  ASSERT_TRUE(info) << info.error().message();
  auto dev = (*region)->open_device("dst");
  ASSERT_TRUE(dev);
  std::vector<std::byte> page(kPage);
  ASSERT_TRUE((*dev)->read(0, page)) << "the other pages read";
  Status bad = (*dev)->read(kSize - kPage, page);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), std::errc::illegal_byte_sequence) << bad.error().message();
  Status filled = (*region)->wait_for_restore("dst");
  ASSERT_FALSE(filled);
  auto now = (*region)->find("dst");
  ASSERT_TRUE(now);
  ASSERT_TRUE(now->restore.has_value());
  EXPECT_NE(now->restore->error.find("page"), std::string::npos) << now->restore->error;
  auto plain = (*region)->restore_namespace("other", snap_);
  EXPECT_FALSE(plain) << "a plain restore refuses the chain";
  dev->reset();
  EXPECT_TRUE((*region)->destroy_namespace("dst"));
}

TEST_F(LazyRestoreBadInput, MediaWithoutHolesIsRefused) {
  ScratchDir dir(::rawdax::testing::tmpfs_parent());
  auto region = Region::open("file:" + dir.path() + "/region.img",
                             {.create = true, .file_size = 64 * kMiB});
  ASSERT_TRUE(region) << region.error().message();
  auto info = (*region)->restore_namespace("dst", snap_, {.lazy = true});
  ASSERT_FALSE(info);
  EXPECT_EQ(info.error().code(), std::errc::operation_not_supported);
  EXPECT_NE(info.error().message().find("without --lazy"), std::string::npos)
      << info.error().message();
  EXPECT_TRUE((*region)->list().empty());
}

// A marked namespace whose snapshot is gone: its fill cannot resume. Opens
// and backing fds are refused with a way out, the list says why, and a
// plain restore is that way out.
TEST_F(LazyRestoreBadInput, FillThatCannotResumeRefusesOpensUntilRestoredAgain) {
  {
    auto region = Region::open(scratch_.spec(), {.create = true});
    ASSERT_TRUE(region);
  }
  // A child crashing mid-fill leaves the marker (the first crash point
  // that does).
  for (long n = 1; !marked(scratch_.spec()); ++n) {
    ASSERT_LT(n, 64) << "no crash left the namespace marked";
    int code = crash_child(scratch_.spec(), snap_, n, nullptr);
    ASSERT_TRUE(code == internal::kCrashExitCode) << "exit " << code;
  }
  const std::string moved = snap_ + ".moved";
  ASSERT_EQ(::rename(snap_.c_str(), moved.c_str()), 0);
  auto region = Region::open(scratch_.spec());
  ASSERT_TRUE(region) << "the region opens; only the namespace is refused";
  auto info = (*region)->find("dst");
  ASSERT_TRUE(info);
  ASSERT_TRUE(info->restore.has_value()) << "the list shows it incomplete";
  EXPECT_FALSE(info->restore->filling);
  EXPECT_NE(info->restore->error.find(snap_), std::string::npos) << info->restore->error;
  auto dev = (*region)->open_device("dst");
  ASSERT_FALSE(dev);
  EXPECT_NE(dev.error().message().find("restore it again"), std::string::npos)
      << dev.error().message();
  auto fd = (*region)->open_backing_fd("dst", true);
  ASSERT_FALSE(fd);
  EXPECT_EQ(fd.error().code(), std::errc::device_or_resource_busy) << fd.error().message();
  ASSERT_EQ(::rename(moved.c_str(), snap_.c_str()), 0);
  ASSERT_TRUE((*region)->restore_namespace("dst", snap_));
  auto restored = (*region)->open_device("dst");
  ASSERT_TRUE(restored) << restored.error().message();
  EXPECT_TRUE(read_all(**restored) == image_);
  EXPECT_FALSE((*region)->find("dst")->restore.has_value());
}

TEST(LazyRestoreCrash, EveryPersistPointLeavesTheOldStateOrARestartableFill) {
  ScratchDir files(::rawdax::testing::tmpfs_parent());
  std::vector<std::byte> image;
  const std::string snap = make_chain(files.path(), kCrashSize, &image);
  ASSERT_FALSE(snap.empty());
  ScratchRegion scratch(TestMedia::kTmpfs);
  const std::vector<std::byte> old(kCrashSize, std::byte{0x11});
  int mid_fill = 0, old_seen = 0, crashes = 0;
  for (long n = 1;; ++n) {
    ASSERT_LT(n, 64) << "the lazy restore never completed";
    {
      // The old state: namespace dst holding 0x11 everywhere.
      auto region = Region::open(scratch.spec(), {.create = true});
      ASSERT_TRUE(region) << region.error().message();
      (void)(*region)->destroy_namespace("dst");
      ASSERT_TRUE((*region)->create_namespace({.name = "dst", .size = kCrashSize}));
      auto dev = (*region)->open_device("dst");
      ASSERT_TRUE(dev);
      ASSERT_TRUE((*dev)->write(0, old));
    }
    std::string reported;
    const int code = crash_child(scratch.spec(), snap, n, &reported);
    const std::string what = "crash point " + std::to_string(n) + " (reported '" + reported + "')";
    ASSERT_TRUE(code == 0 || code == internal::kCrashExitCode) << what << ": exit " << code;

    if (marked(scratch.spec())) ++mid_fill;
    auto region = Region::open(scratch.spec());
    ASSERT_TRUE(region) << what << ": " << region.error().message();
    Status resumed = (*region)->wait_for_restore("dst");
    ASSERT_TRUE(resumed) << what << ": " << resumed.error().message();
    auto info = (*region)->find("dst");
    ASSERT_TRUE(info);
    EXPECT_FALSE(info->restore.has_value()) << what << ": still incomplete after the resume";
    auto dev = (*region)->open_device("dst");
    ASSERT_TRUE(dev) << what;
    std::vector<std::byte> now = read_all(**dev);
    if (now == old) {
      EXPECT_EQ(reported, "") << what << ": changes after the restore, but the old state";
      ++old_seen;
    } else {
      // The image, plus exactly the changes made: a reported one for sure,
      // an unreported one either wholly or not at all.
      std::vector<std::byte> patched = image, discarded = image, written = image;
      std::fill_n(patched.begin() + kPatchedPage * kPage + 1000, 100, std::byte{0xAB});
      std::fill_n(discarded.begin() + kDiscardedPage * kPage, kPage, std::byte{0});
      std::fill_n(written.begin() + kWrittenPage * kPage, kPage, std::byte{0xCD});
      auto page_is = [&](uint64_t p, const std::vector<std::byte>& v) {
        return std::memcmp(now.data() + p * kPage, v.data() + p * kPage, kPage) == 0;
      };
      auto check = [&](uint64_t p, char tag, const std::vector<std::byte>& changed) {
        const bool done = reported.find(tag) != std::string::npos;
        EXPECT_TRUE(page_is(p, changed) || (!done && page_is(p, image)))
            << what << ": page " << p << " (change '" << tag << "') is half done or lost";
      };
      check(kPatchedPage, 'p', patched);
      check(kDiscardedPage, 'd', discarded);
      check(kWrittenPage, 'w', written);
      for (uint64_t p = 0; p < kCrashSize / kPage; ++p) {
        if (p == kPatchedPage || p == kDiscardedPage || p == kWrittenPage) continue;
        ASSERT_TRUE(page_is(p, image)) << what << ": page " << p << " is not the image's";
      }
    }
    if (code == 0) break;
    ++crashes;
  }
  std::printf("lazy restore: %d crash points, %d mid-fill, %d old state\n", crashes, mid_fill,
              old_seen);
  EXPECT_GT(old_seen, 0) << "no crash point before the object was named";
  EXPECT_GT(mid_fill, 1) << "no crash left a fill to resume";
}

}  // namespace
}  // namespace rawdax
