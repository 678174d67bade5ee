// Helpers shared by the tests: scratch regions on each media kind, polling,
// reading a file whole.
#ifndef RAWDAX_TESTS_TEST_UTIL_H_
#define RAWDAX_TESTS_TEST_UTIL_H_

#include <sys/vfs.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

namespace rawdax::testing {

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

// The media every device/region test runs on.
enum class TestMedia { kTmpfs, kDisk, kMemfd };

inline const char* media_name(TestMedia media) {
  switch (media) {
    case TestMedia::kTmpfs: return "tmpfs";
    case TestMedia::kDisk: return "disk";
    case TestMedia::kMemfd: return "memfd";
  }
  return "?";
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

// Where a region of `media` lives for one test: owns the scratch directory.
class ScratchRegion {
 public:
  explicit ScratchRegion(TestMedia media) : media_(media) {
    if (media == TestMedia::kMemfd) {
      spec_ = "memfd:";
    } else {
      dir_ = std::make_unique<ScratchDir>(media == TestMedia::kTmpfs ? tmpfs_parent()
                                                                     : disk_parent());
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

// Media whose regions persist across Region objects (they have files).
#define RAWDAX_FILE_MEDIA \
  ::testing::Values(::rawdax::testing::TestMedia::kTmpfs, ::rawdax::testing::TestMedia::kDisk)

#define RAWDAX_ALL_MEDIA \
  ::testing::Values(::rawdax::testing::TestMedia::kTmpfs, \
                    ::rawdax::testing::TestMedia::kDisk, ::rawdax::testing::TestMedia::kMemfd)

}  // namespace rawdax::testing

#endif  // RAWDAX_TESTS_TEST_UTIL_H_
