// Crash-point sweep over the updates of a carved (file:) region: create,
// destroy, grow, shrink, and restore (new and over an existing namespace).
// Each operation runs in a child process with RAWDAX_CRASH_AT=N for N = 1,
// 2, ... until it completes; after every crash the region must reopen to
// exactly the old layout or the new one, with the surviving namespaces'
// bytes intact, a new namespace absent or holding exactly its content, and
// no extent leaked.
#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "child_process.h"
#include "common/crash_point.h"
#include "rawdax/rawdax.h"
#include "test_util.h"

namespace rawdax {
namespace {

using ::rawdax::testing::ScratchDir;
namespace fs = std::filesystem;

constexpr uint64_t kKiB = 1024, kMiB = 1024 * kKiB;
constexpr uint64_t kRegionBytes = 64 * kMiB;
constexpr uint64_t kSnapshotBytes = 1536 * kKiB;
constexpr const char* kEnvPrefix = "RAWDAX_CARVED_CRASH_";

// Bytes that differ by namespace and by position, so that a shifted or
// swapped extent cannot pass for the right one.
std::vector<std::byte> pattern(char tag, uint64_t size) {
  std::vector<std::byte> out(size);
  for (uint64_t i = 0; i < size; ++i) {
    out[i] = std::byte(static_cast<uint8_t>(tag * 31 + (i / 4096) * 7 + i % 251));
  }
  return out;
}

// ---- The child: one operation on the region, then exit ----

int run_operation(const std::string& op, const std::string& spec, const std::string& snapshot) {
  auto region = Region::open(spec);
  if (!region) {
    std::fprintf(stderr, "open: %s\n", region.error().message().c_str());
    return 3;
  }
  Status done = ok();
  if (op == "create") {
    auto info = (*region)->create_namespace({.name = "new", .size = 1 * kMiB});
    if (!info) done = info.error();
  } else if (op == "destroy") {
    done = (*region)->destroy_namespace("a");
  } else if (op == "grow" || op == "shrink") {
    auto dev = (*region)->open_device(op == "grow" ? "a" : "c");
    done = dev ? (*dev)->resize(op == "grow" ? 2 * kMiB : 512 * kKiB) : Status(dev.error());
  } else if (op == "restore-new" || op == "restore-replace") {
    auto info = op == "restore-new" ? (*region)->restore_namespace("r", snapshot)
                                    : (*region)->restore_namespace("c", snapshot, {.force = true});
    if (!info) done = info.error();
  } else {
    std::fprintf(stderr, "unknown operation %s\n", op.c_str());
    return 2;
  }
  if (!done) {
    std::fprintf(stderr, "%s: %s\n", op.c_str(), done.error().message().c_str());
    return 3;
  }
  return 0;
}

// Runs the operation named by RAWDAX_CARVED_CRASH_OP before main(), and exits.
[[maybe_unused]] const bool kChildRan = [] {
  const char* op = std::getenv("RAWDAX_CARVED_CRASH_OP");
  if (op == nullptr) return false;
  const char* spec = std::getenv("RAWDAX_CARVED_CRASH_SPEC");
  const char* snapshot = std::getenv("RAWDAX_CARVED_CRASH_SNAPSHOT");
  const char* log = std::getenv("RAWDAX_CARVED_CRASH_LOG");
  if (spec == nullptr || snapshot == nullptr || log == nullptr) ::_exit(2);
  int fd = ::open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || ::dup2(fd, STDERR_FILENO) < 0) ::_exit(2);
  ::_exit(run_operation(op, spec, snapshot));
}();

// ---- The parent ----

struct Extent {
  uint64_t offset = 0, size = 0;
  bool operator==(const Extent&) const = default;
};
using Layout = std::map<std::string, Extent>;

std::string describe(const Layout& layout) {
  std::string out;
  for (const auto& [name, e] : layout) {
    out += name + "@" + std::to_string(e.offset) + "+" + std::to_string(e.size) + " ";
  }
  return out.empty() ? "(none)" : out;
}

class CarvedCrashTest : public ::testing::Test {
 protected:
  std::string image() const { return dir_.path() + "/region.img"; }
  std::string spec() const { return "file:" + image(); }
  std::string snapshot() const { return dir_.path() + "/source.snap"; }
  std::string log() const { return dir_.path() + "/child.log"; }

  void SetUp() override {
    // The snapshot restored below: a namespace of another size than any in
    // the region, with its own pattern.
    auto source = Region::open("memfd:");
    ASSERT_TRUE(source) << source.error().message();
    ASSERT_TRUE((*source)->create_namespace({.name = "s", .size = kSnapshotBytes}));
    auto dev = (*source)->open_device("s");
    ASSERT_TRUE(dev);
    ASSERT_TRUE((*dev)->write(0, pattern('s', kSnapshotBytes)));
    auto snap = (*dev)->snapshot(snapshot());
    ASSERT_TRUE(snap) << snap.error().message();
  }

  // A fresh region: a (1 MiB) | hole (2 MiB, stale bytes) | c (1 MiB) | free.
  // The hole held b, destroyed; its bytes are overwritten with garbage as a
  // crash between a destroy's label update and its release would leave
  // them, so that a namespace placed there must be zeroed to read right.
  void prepare() {
    fs::remove(image());
    auto r = Region::open(spec(), {.create = true, .file_size = kRegionBytes});
    ASSERT_TRUE(r) << r.error().message();
    const std::vector<std::pair<std::string, uint64_t>> made = {
        {"a", 1 * kMiB}, {"b", 2 * kMiB}, {"c", 1 * kMiB}};
    for (const auto& [name, size] : made) {
      auto info = (*r)->create_namespace({.name = name, .size = size});
      ASSERT_TRUE(info) << info.error().message();
      auto dev = (*r)->open_device(name);
      ASSERT_TRUE(dev);
      ASSERT_TRUE((*dev)->write(0, pattern(name[0], size)));
    }
    label_area_ = (*r)->space().label_area_size;
    ASSERT_TRUE((*r)->destroy_namespace("b"));
    std::vector<std::byte> garbage(2 * kMiB, std::byte{0xee});
    int fd = ::open(image().c_str(), O_WRONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, garbage.data(), garbage.size(), off_t(label_area_ + kMiB)),
              ssize_t(garbage.size()));
    ::close(fd);
    // The layout this test's expectations are written against.
    ASSERT_EQ(layout_of(**r),
              (Layout{{"a", {label_area_, kMiB}}, {"c", {label_area_ + 3 * kMiB, kMiB}}}));
  }

  static Layout layout_of(const Region& region) {
    Layout out;
    for (const auto& ns : region.list()) out[ns.name] = {ns.offset, ns.size};
    return out;
  }

  std::vector<std::byte> read_file(uint64_t offset, uint64_t size) const {
    return ::rawdax::testing::read_file_range(image(), offset, size);
  }

  std::string child_log() const {
    std::ifstream in(log());
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  // What one state of the region must be: its layout, and each namespace's
  // bytes.
  struct State {
    Layout layout;
    std::map<std::string, std::vector<std::byte>> contents;
  };

  // Which of `old_state` and `new_state` the region is in: 0 or 1; -1 (with
  // a failure) for neither.
  int which_state(const State& old_state, const State& new_state, const std::string& when) {
    auto r = Region::open(spec());
    EXPECT_TRUE(r) << when << ": " << r.error().message();
    if (!r) return -1;
    RegionSpace space = (*r)->space();
    // A crash never tears a write here: the newest index must be whole.
    EXPECT_TRUE(space.recovered_from.empty()) << when << ": " << space.recovered_from;
    Layout layout = layout_of(**r);
    int found = layout == old_state.layout ? 0 : layout == new_state.layout ? 1 : -1;
    if (found < 0) {
      ADD_FAILURE() << when << ": layout " << describe(layout) << " is neither the old "
                    << describe(old_state.layout) << " nor the new " << describe(new_state.layout);
      return -1;
    }
    const State& state = found == 0 ? old_state : new_state;
    uint64_t used = 0;
    for (const auto& [name, e] : layout) {
      used += e.size;
      // Read from the file itself, where the extent lies.
      EXPECT_TRUE(read_file(e.offset, e.size) == state.contents.at(name))
          << when << ": namespace " << name << " does not hold its bytes ("
          << (found == 0 ? "old" : "new") << " state)";
    }
    EXPECT_EQ(space.free, space.device_size - space.label_area_size - used)
        << when << ": free space does not add up: an extent leaked";
    // Nor is anything left beside the region's file.
    for (const auto& entry : fs::directory_iterator(dir_.path())) {
      const std::string name = entry.path().filename().string();
      EXPECT_TRUE(name == "region.img" || name == "source.snap" || name == "child.log")
          << when << ": stray file " << name;
    }
    return found;
  }

  // Runs `op` crashing at 1, 2, ... until it completes; checks each outcome.
  void sweep(const std::string& op, const State& old_state, const State& new_state) {
    int crashes = 0, old_seen = 0, new_seen = 0;
    std::vector<std::string> points;
    for (long n = 1;; ++n) {
      ASSERT_LT(n, 64) << op << " never completed";
      prepare();
      if (HasFatalFailure()) return;
      pid_t pid = ::rawdax::testing::spawn_self(
          {std::string(kEnvPrefix) + "OP=" + op, std::string(kEnvPrefix) + "SPEC=" + spec(),
           std::string(kEnvPrefix) + "SNAPSHOT=" + snapshot(),
           std::string(kEnvPrefix) + "LOG=" + log(), "RAWDAX_CRASH_AT=" + std::to_string(n)},
          kEnvPrefix);
      ASSERT_GT(pid, 0);
      int code = ::rawdax::testing::wait_child(pid);
      const std::string what = op + ", crash point " + std::to_string(n);
      if (code == 0) {
        EXPECT_EQ(which_state(old_state, new_state, op + " completed"), 1)
            << "a completed " << op << " left the old state";
        break;
      }
      ASSERT_EQ(code, internal::kCrashExitCode) << what << " failed otherwise: " << child_log();
      ++crashes;
      // "rawdax: crash injected at persist point N (what)": keep "(what)".
      std::string err = child_log();
      err = err.substr(0, err.find('\n'));
      points.push_back(err.substr(err.find('(') == std::string::npos ? 0 : err.find('(')));
      int state = which_state(old_state, new_state, what + " " + points.back());
      old_seen += state == 0;
      new_seen += state == 1;
      if (HasFailure()) return;
    }
    std::string names;
    for (const auto& p : points) names += " " + p;
    std::printf("%s: %d crash points:%s\n", op.c_str(), crashes, names.c_str());
    // The sweep reached the operation's persist points, on both sides of the
    // one that switches the state.
    EXPECT_GT(crashes, 0) << op;
    EXPECT_GT(old_seen, 0) << op;
    EXPECT_GT(new_seen, 0) << op;
  }

  State base() const {
    return {{{"a", {label_area_, kMiB}}, {"c", {label_area_ + 3 * kMiB, kMiB}}},
            {{"a", pattern('a', kMiB)}, {"c", pattern('c', kMiB)}}};
  }

  ScratchDir dir_{::rawdax::testing::tmpfs_parent()};
  uint64_t label_area_ = 0;
};

std::vector<std::byte> concat(std::vector<std::byte> a, const std::vector<std::byte>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST_F(CarvedCrashTest, Create) {
  prepare();
  ASSERT_FALSE(HasFatalFailure());
  State old_state = base(), new_state = base();
  // Best fit: the 2 MiB hole, not the free tail.
  new_state.layout["new"] = {label_area_ + kMiB, kMiB};
  new_state.contents["new"] = std::vector<std::byte>(kMiB, std::byte{0});
  sweep("create", old_state, new_state);
}

TEST_F(CarvedCrashTest, Destroy) {
  prepare();
  ASSERT_FALSE(HasFatalFailure());
  State old_state = base(), new_state = base();
  new_state.layout.erase("a");
  new_state.contents.erase("a");
  sweep("destroy", old_state, new_state);
}

TEST_F(CarvedCrashTest, Grow) {
  prepare();
  ASSERT_FALSE(HasFatalFailure());
  State old_state = base(), new_state = base();
  // In place, over the hole's stale bytes, which must read as zeros.
  new_state.layout["a"].size = 2 * kMiB;
  new_state.contents["a"] = concat(pattern('a', kMiB), std::vector<std::byte>(kMiB, std::byte{0}));
  sweep("grow", old_state, new_state);
}

TEST_F(CarvedCrashTest, Shrink) {
  prepare();
  ASSERT_FALSE(HasFatalFailure());
  State old_state = base(), new_state = base();
  new_state.layout["c"].size = 512 * kKiB;
  new_state.contents["c"] = pattern('c', 512 * kKiB);
  sweep("shrink", old_state, new_state);
}

TEST_F(CarvedCrashTest, RestoreIntoNewNamespace) {
  prepare();
  ASSERT_FALSE(HasFatalFailure());
  State old_state = base(), new_state = base();
  new_state.layout["r"] = {label_area_ + kMiB, kSnapshotBytes};
  new_state.contents["r"] = pattern('s', kSnapshotBytes);
  sweep("restore-new", old_state, new_state);
}

TEST_F(CarvedCrashTest, RestoreOverExistingNamespace) {
  prepare();
  ASSERT_FALSE(HasFatalFailure());
  State old_state = base(), new_state = base();
  // A new extent (best fit: the hole), named in the same update that drops
  // the old one.
  new_state.layout["c"] = {label_area_ + kMiB, kSnapshotBytes};
  new_state.contents["c"] = pattern('s', kSnapshotBytes);
  sweep("restore-replace", old_state, new_state);
}

}  // namespace
}  // namespace rawdax
