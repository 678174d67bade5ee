// Crash consistency: a child creates and destroys namespaces in a loop and is
// killed with SIGKILL at a random moment; the region must always reopen with
// whole metadata (old or new) and no leaked backing files (a carved region:
// whole labels naming disjoint extents, and no extent lost to free space).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <gtest/gtest.h>
#include <random>
#include <set>
#include <thread>

#include "rawdax/rawdax.h"
#include "test_util.h"

namespace rawdax {
namespace {

using ::rawdax::testing::ScratchRegion;
using ::rawdax::testing::TestMedia;

[[noreturn]] void churn(const std::string& spec, int seed) {
  auto region = Region::open(spec, {.create = true});
  if (!region) _exit(3);
  for (int i = 0;; ++i) {
    std::string name = "ns" + std::to_string((seed * 7 + i) % 5);
    if ((*region)->find(name)) {
      (void)(*region)->destroy_namespace(name);
    } else {
      (void)(*region)->create_namespace({.name = name, .size = uint64_t(1 + i % 3) << 20});
    }
  }
}

// A carved region: the labels name disjoint extents inside the data area,
// and the free space is exactly what they leave (no extent leaked or lost).
void check_carved_region(Region& region, int round) {
  const RegionSpace space = region.space();
  ASSERT_TRUE(space.carved) << "round " << round;
  auto list = region.list();
  std::sort(list.begin(), list.end(),
            [](const NamespaceInfo& a, const NamespaceInfo& b) { return a.offset < b.offset; });
  uint64_t used = 0, end_of_previous = space.label_area_size;
  for (const auto& ns : list) {
    EXPECT_GE(ns.offset, end_of_previous) << "round " << round << ": " << ns.name << " overlaps";
    EXPECT_LE(ns.offset + ns.size, space.device_size) << "round " << round << ": " << ns.name;
    end_of_previous = ns.offset + ns.size;
    used += ns.size;
  }
  EXPECT_EQ(space.free + used, space.device_size - space.label_area_size) << "round " << round;
}

void check_region(const std::string& spec, int round) {
  auto region = Region::open(spec);
  ASSERT_TRUE(region) << "round " << round << ": " << region.error().message();
  if ((*region)->space().carved) {
    check_carved_region(**region, round);
    return;
  }
  std::set<std::string> named;
  for (const auto& ns : (*region)->list()) {
    ASSERT_TRUE(std::filesystem::exists(ns.path)) << "round " << round << ": " << ns.name;
    EXPECT_GE(std::filesystem::file_size(ns.path), ns.size) << "round " << round;
    named.insert(std::filesystem::path(ns.path).filename().string());
  }
  for (const auto& entry : std::filesystem::directory_iterator(spec + "/ns")) {
    EXPECT_TRUE(named.count(entry.path().filename().string()))
        << "round " << round << ": leaked " << entry.path();
  }
  for (const auto& entry : std::filesystem::directory_iterator(spec)) {
    std::string name = entry.path().filename().string();
    EXPECT_TRUE(name == "ns" || name == "rawdax.meta" || name == "rawdax.lock")
        << "round " << round << ": stray " << name;
  }
}

void kill_loop(TestMedia media, int rounds) {
  ScratchRegion scratch(media);
  const std::string& spec = scratch.spec();
  // The region exists before the first kill: its first creation is not what we test.
  ASSERT_TRUE(Region::open(spec, {.create = true}));
  std::mt19937 rng(12345);
  int killed_mid_work = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (int round = 0; round < rounds && std::chrono::steady_clock::now() < deadline; ++round) {
    pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) churn(spec, round);
    std::this_thread::sleep_for(std::chrono::microseconds(2000 + rng() % 20000));
    ::kill(child, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFSIGNALED(status)) << "round " << round << ": child exited " << status;
    ++killed_mid_work;
    check_region(spec, round);
    if (::testing::Test::HasFailure()) return;
  }
  EXPECT_GE(killed_mid_work, 20);
}

class CrashConsistency : public ::testing::TestWithParam<TestMedia> {};

TEST_P(CrashConsistency, KillDuringCreateAndDestroy) {
  kill_loop(GetParam(), 60);
}

INSTANTIATE_TEST_SUITE_P(FileMedia, CrashConsistency, RAWDAX_FILE_MEDIA, testing::param_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(CrashConsistency);

}  // namespace
}  // namespace rawdax
