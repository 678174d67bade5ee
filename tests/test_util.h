// Helpers shared by the tests: the media selected for this run, scratch
// regions on each media kind, polling, reading a file whole.
#ifndef RAWDAX_TESTS_TEST_UTIL_H_
#define RAWDAX_TESTS_TEST_UTIL_H_

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace rawdax::testing {

// n bytes that only `seed` gives (so a wrong or stale copy shows).
inline std::vector<std::byte> pattern(size_t n, uint32_t seed) {
  std::vector<std::byte> out(n);
  std::mt19937 rng(seed);
  for (auto& b : out) b = static_cast<std::byte>(rng());
  return out;
}

// Polls until pred() holds or `limit` passes; returns pred(). Only bounds the
// test's runtime: no assertion depends on how fast anything is.
template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = std::chrono::milliseconds(10000)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return pred();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// The whole of a file ("" when it cannot be read).
inline std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// `size` bytes of the file at `path` from `offset` (a carved region's
// device, read around rawdax); a short or failed read fails the test.
inline std::vector<std::byte> read_file_range(const std::string& path, uint64_t offset,
                                              uint64_t size) {
  std::vector<std::byte> out(size);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  EXPECT_GE(fd, 0) << path;
  EXPECT_EQ(::pread(fd, out.data(), size, static_cast<off_t>(offset)),
            static_cast<ssize_t>(size))
      << path;
  ::close(fd);
  return out;
}

// The media the device, region, engine and snapshot suites run on. kCarved
// is a carved region: one preallocated file on tmpfs ("file:DIR/region.img")
// whose namespaces are extents of it, so every fd offset, mapping, hole and
// sendfile of a namespace is its extent's offset plus its own.
enum class TestMedia { kTmpfs, kDisk, kMemfd, kHugetlbfs, kFsdax, kCarved };

inline const char* media_name(TestMedia media) {
  switch (media) {
    case TestMedia::kTmpfs: return "tmpfs";
    case TestMedia::kDisk: return "disk";
    case TestMedia::kMemfd: return "memfd";
    case TestMedia::kHugetlbfs: return "hugetlbfs";
    case TestMedia::kFsdax: return "fsdax";
    case TestMedia::kCarved: return "carved";
  }
  return "?";
}

// Ends the test binary before any test runs: a media list that cannot be
// honoured is an error, never a reason to test less.
[[noreturn]] inline void media_selection_error(const std::string& why) {
  std::fprintf(stderr, "rawdax tests: %s\n", why.c_str());
  std::exit(2);
}

// The environment variable naming the directory a media's regions go in;
// null for the media that need none.
inline const char* media_dir_variable(TestMedia media) {
  switch (media) {
    case TestMedia::kHugetlbfs: return "RAWDAX_TEST_HUGETLBFS";
    case TestMedia::kFsdax: return "RAWDAX_TEST_FSDAX";
    case TestMedia::kTmpfs:
    case TestMedia::kDisk:
    case TestMedia::kMemfd:
    case TestMedia::kCarved: break;
  }
  return nullptr;
}

// The directory media_dir_variable(media) names, which must exist (and, for
// hugetlbfs, be on a hugetlbfs mount).
inline std::string media_dir_from_env(TestMedia media) {
  const char* var = media_dir_variable(media);
  const char* dir = std::getenv(var);
  if (dir == nullptr || *dir == '\0') {
    media_selection_error(std::string("RAWDAX_TEST_MEDIA selects ") + media_name(media) +
                          ", but " + var + " (the directory its regions go in) is unset");
  }
  struct statfs fs;
  if (::statfs(dir, &fs) != 0 || !std::filesystem::is_directory(dir)) {
    media_selection_error(std::string(var) + "=" + dir + " is not a directory");
  }
  constexpr unsigned long kHugetlbfsMagic = 0x958458f6;  // linux/magic.h
  if (media == TestMedia::kHugetlbfs && static_cast<unsigned long>(fs.f_type) != kHugetlbfsMagic) {
    media_selection_error(std::string(var) + "=" + dir + " is not on a hugetlbfs mount");
  }
  return dir;
}

// The media selected by RAWDAX_TEST_MEDIA: comma-separated names from
// media_name(), "tmpfs,disk,memfd,carved" when unset. hugetlbfs regions go under
// $RAWDAX_TEST_HUGETLBFS and fsdax ones under $RAWDAX_TEST_FSDAX. An
// unknown or repeated name, an empty list, or a selected media without its
// directory ends the binary with a message (media_selection_error).
inline const std::vector<TestMedia>& all_media() {
  static const std::vector<TestMedia> selected = [] {
    const char* env = std::getenv("RAWDAX_TEST_MEDIA");
    std::string list = env != nullptr ? env : "tmpfs,disk,memfd,carved";
    std::vector<TestMedia> out;
    std::stringstream in(list);
    for (std::string name; std::getline(in, name, ',');) {
      name.erase(0, name.find_first_not_of(' '));
      name.erase(name.find_last_not_of(' ') + 1);
      bool known = false;
      for (TestMedia media : {TestMedia::kTmpfs, TestMedia::kDisk, TestMedia::kMemfd,
                              TestMedia::kHugetlbfs, TestMedia::kFsdax, TestMedia::kCarved}) {
        if (name != media_name(media)) continue;
        known = true;
        if (std::find(out.begin(), out.end(), media) != out.end()) {
          media_selection_error("RAWDAX_TEST_MEDIA=" + list + " names " + name + " twice");
        }
        if (media_dir_variable(media) != nullptr) media_dir_from_env(media);
        out.push_back(media);
      }
      if (!known) {
        media_selection_error("RAWDAX_TEST_MEDIA=" + list + ": unknown media '" + name +
                              "' (known: tmpfs, disk, memfd, hugetlbfs, fsdax, carved)");
      }
    }
    if (out.empty()) media_selection_error("RAWDAX_TEST_MEDIA is set but names no media");
    return out;
  }();
  return selected;
}

// The selected media minus `excluded`. A suite that cannot run on some
// media is registered with this list, never skipped there; every caller
// says why, and docs/media.md ("Tests on each media") lists them all.
inline std::vector<TestMedia> media_except(std::vector<TestMedia> media,
                                           std::initializer_list<TestMedia> excluded) {
  std::erase_if(media, [&](TestMedia m) {
    return std::find(excluded.begin(), excluded.end(), m) != excluded.end();
  });
  return media;
}

// The selected media among `wanted`: for a suite about one media.
inline std::vector<TestMedia> media_among(std::initializer_list<TestMedia> wanted) {
  std::vector<TestMedia> out;
  for (TestMedia m : all_media()) {
    if (std::find(wanted.begin(), wanted.end(), m) != wanted.end()) out.push_back(m);
  }
  return out;
}

// Media whose regions persist across Region objects (they have files).
inline std::vector<TestMedia> file_media() {
  return media_except(all_media(), {TestMedia::kMemfd});
}

// Media whose regions are directories: rawdax.meta, rawdax.lock and one
// file per namespace under ns/. Suites about that layout (orphan files,
// corrupt rawdax.meta, directory crash consistency, per-namespace files)
// run on these; a carved region has one file and a label area instead.
inline std::vector<TestMedia> directory_media() {
  return media_except(file_media(), {TestMedia::kCarved});
}

// For suites that always ran on tmpfs whatever the selection (the NBD
// server, rawdax serve): tmpfs, and carved too when it is selected, so that
// their I/O paths (sendfile, holes, zeroing) also run at an extent's offset.
inline std::vector<TestMedia> tmpfs_and_carved() {
  std::vector<TestMedia> out = {TestMedia::kTmpfs};
  for (TestMedia m : media_among({TestMedia::kCarved})) out.push_back(m);
  return out;
}

// A fresh, empty directory that is removed with everything in it.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& parent) {
    static std::atomic<int> counter{0};
    path_ = parent + "/rawdax-test-" + std::to_string(::getpid()) + "-" +
            std::to_string(counter.fetch_add(1));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline std::string tmpfs_parent() { return "/dev/shm"; }
// A directory on a disk filesystem: $RAWDAX_TEST_DISK_DIR when set (in a
// guest, where the build tree is read-only), else the build tree's (ext4 on
// our machines).
inline std::string disk_parent() {
  const char* env = std::getenv("RAWDAX_TEST_DISK_DIR");
  std::string dir = env != nullptr && env[0] != '\0' ? env : RAWDAX_TEST_DISK_DIR;
  std::filesystem::create_directories(dir);
  return dir;
}

// Where the regions of a directory media go (and the file of a carved one).
inline std::string media_parent(TestMedia media) {
  switch (media) {
    case TestMedia::kTmpfs:
    case TestMedia::kCarved: return tmpfs_parent();  // the carved file's directory
    case TestMedia::kDisk: return disk_parent();
    case TestMedia::kHugetlbfs:
    case TestMedia::kFsdax: return media_dir_from_env(media);
    case TestMedia::kMemfd: break;
  }
  media_selection_error(std::string(media_name(media)) + " regions have no directory");
}

// Where a region of `media` lives for one test: owns the scratch directory.
class ScratchRegion {
 public:
  explicit ScratchRegion(TestMedia media) : media_(media) {
    if (media == TestMedia::kMemfd) {
      spec_ = "memfd:";
    } else if (media == TestMedia::kCarved) {
      // Region::open with create makes the file (sparse on tmpfs).
      dir_ = std::make_unique<ScratchDir>(media_parent(media));
      spec_ = "file:" + dir_->path() + "/region.img";
    } else {
      dir_ = std::make_unique<ScratchDir>(media_parent(media));
      spec_ = dir_->path() + "/region";
    }
  }
  const std::string& spec() const { return spec_; }
  bool persistent() const { return media_ != TestMedia::kMemfd; }
  TestMedia media() const { return media_; }

 private:
  TestMedia media_;
  std::unique_ptr<ScratchDir> dir_;
  std::string spec_;
};

inline std::string param_name(const ::testing::TestParamInfo<TestMedia>& info) {
  return media_name(info.param);
}

// Parameter lists for INSTANTIATE_TEST_SUITE_P over the selected media. A
// suite instantiated with a list that may be empty (file media when only
// memfd is selected, a media_except() or media_among() list) also needs
// GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST.
#define RAWDAX_ALL_MEDIA ::testing::ValuesIn(::rawdax::testing::all_media())
#define RAWDAX_FILE_MEDIA ::testing::ValuesIn(::rawdax::testing::file_media())
#define RAWDAX_DIRECTORY_MEDIA ::testing::ValuesIn(::rawdax::testing::directory_media())
#define RAWDAX_TMPFS_AND_CARVED ::testing::ValuesIn(::rawdax::testing::tmpfs_and_carved())

}  // namespace rawdax::testing

#endif  // RAWDAX_TESTS_TEST_UTIL_H_
