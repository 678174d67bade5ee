// DAX filesystems and RegionOptions.require_dax.
//
// FsdaxTest runs in a directory on a filesystem mounted -o dax, named by
// RAWDAX_TEST_FSDAX (or RAWDAX_GUEST_FSDAX, which tests/guest/run sets), and
// is not registered when neither names one. RequireDaxDisk runs on the
// guest's ext4 without DAX (RAWDAX_GUEST_DISK). RequireDax runs everywhere,
// on tmpfs.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <vector>

#include "cli_run.h"
#include "rawdax/rawdax.h"
#include "test_util.h"

namespace rawdax {
namespace {

std::string env_dir(std::initializer_list<const char*> names) {
  for (const char* name : names) {
    const char* value = std::getenv(name);
    if (value != nullptr && value[0] != '\0') return value;
  }
  return "";
}

// The VmFlags of the mapping that starts at `addr` in /proc/self/smaps.
std::vector<std::string> vm_flags(const void* addr) {
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool ours = false;
  while (std::getline(smaps, line)) {
    unsigned long start = 0, end = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &start, &end) == 2 && line.find(' ') != 0 &&
        line.find('-') < line.find(' ')) {
      ours = start == reinterpret_cast<uintptr_t>(addr);
      continue;
    }
    if (ours && line.rfind("VmFlags:", 0) == 0) {
      std::istringstream words(line.substr(8));
      std::vector<std::string> flags;
      for (std::string w; words >> w;) flags.push_back(w);
      return flags;
    }
  }
  return {};
}

bool has_flag(const std::vector<std::string>& flags, const std::string& flag) {
  return std::find(flags.begin(), flags.end(), flag) != flags.end();
}

// A directory region under `parent`, on a filesystem without DAX: refused
// with require_dax (region API and CLI), by name, and nothing is created.
void expect_require_dax_refused(const std::string& parent, const std::string& filesystem) {
  testing::ScratchDir scratch(parent);
  const std::string missing = scratch.path() + "/a/b/region";
  auto refused = Region::open(missing, {.create = true, .require_dax = true});
  ASSERT_FALSE(refused) << missing << " opened with require_dax on " << filesystem;
  const std::string msg = refused.error().message();
  EXPECT_EQ(refused.error().code(), std::errc::operation_not_supported) << msg;
  for (const std::string& part : {missing, filesystem, std::string("DAX")}) {
    EXPECT_NE(msg.find(part), std::string::npos) << "'" << part << "' missing in: " << msg;
  }
  EXPECT_FALSE(std::filesystem::exists(scratch.path() + "/a")) << "a refused open made directories";

  const std::string existing = scratch.path() + "/empty";
  std::filesystem::create_directory(existing);
  ASSERT_FALSE(Region::open(existing, {.create = true, .require_dax = true}));
  EXPECT_TRUE(std::filesystem::is_empty(existing)) << "a refused open left files";

  auto cli = testing::run_cli(scratch.path(), "create-namespace --region " + missing +
                                                  " --require-dax --name n --size 4M");
  EXPECT_EQ(cli.exit_code, 1) << cli;
  EXPECT_NE(cli.err.find(missing), std::string::npos) << cli;
  EXPECT_NE(cli.err.find(filesystem), std::string::npos) << cli;
  EXPECT_FALSE(std::filesystem::exists(scratch.path() + "/a")) << "the CLI made directories";

  // Without the requirement the same directory is an ordinary region.
  auto plain = Region::open(missing, {.create = true});
  ASSERT_TRUE(plain) << plain.error().message();
  EXPECT_FALSE((*plain)->capabilities().map_sync);
}

TEST(RequireDax, RefusedOnTmpfsChangingNothing) {
  expect_require_dax_refused(testing::tmpfs_parent(), "tmpfs");
}

TEST(RequireDax, RefusedOnMemfd) {
  auto refused = Region::open("memfd:", {.require_dax = true});
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("memfd"), std::string::npos);
  EXPECT_TRUE(Region::open("memfd:"));
}

class DirTest : public ::testing::Test {
 public:
  explicit DirTest(std::function<void()> body) : body_(std::move(body)) {}
  void TestBody() override { body_(); }

 private:
  std::function<void()> body_;
};

void register_in(const char* suite, const char* name, const std::string& dir,
                 std::function<void()> body) {
  ::testing::RegisterTest(suite, name, nullptr, dir.c_str(), __FILE__, __LINE__,
                          [body]() -> ::testing::Test* { return new DirTest(body); });
}

// On fsdax: DAX capabilities, MAP_SYNC mappings, persist() by cache flush.
void fsdax_capabilities_and_map_sync(const std::string& parent) {
  testing::ScratchDir scratch(parent);
  auto region = Region::open(scratch.path() + "/region", {.create = true, .require_dax = true});
  ASSERT_TRUE(region) << region.error().message();
  const Capabilities& caps = (*region)->capabilities();
  EXPECT_EQ(caps.kind, MediaKind::kDirectory);
  EXPECT_TRUE(caps.map_sync);
  EXPECT_EQ(caps.persist, PersistMethod::kCacheFlush);
  EXPECT_EQ(caps.engine, ProtectionEngine::kMprotect);
  ASSERT_TRUE((*region)->create_namespace({.name = "ns", .size = 8 << 20}));
  auto dev = (*region)->open_device("ns");
  ASSERT_TRUE(dev) << dev.error().message();
  auto m = (*dev)->map(0, 4 << 20, Access::ReadWrite);
  ASSERT_TRUE(m) << m.error().message();
  auto flags = vm_flags(m->data());
  ASSERT_FALSE(flags.empty()) << "no smaps entry starts at the mapping";
  EXPECT_TRUE(has_flag(flags, "sf")) << "the mapping lacks MAP_SYNC (VmFlags 'sf')";
  std::vector<std::byte> bytes(1 << 20);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::byte>(i * 7 + 3);
  std::memcpy(m->data() + 4096, bytes.data(), bytes.size());
  ASSERT_TRUE(m->persist(m->data() + 4096, bytes.size()));
  std::vector<std::byte> back(bytes.size());
  ASSERT_TRUE((*dev)->read(4096, back));
  EXPECT_EQ(back, bytes);

  // The same check on tmpfs finds no MAP_SYNC: it can tell them apart.
  testing::ScratchDir shm(testing::tmpfs_parent());
  auto volatile_region = Region::open(shm.path() + "/region", {.create = true});
  ASSERT_TRUE(volatile_region);
  ASSERT_TRUE((*volatile_region)->create_namespace({.name = "ns", .size = 4 << 20}));
  auto vdev = (*volatile_region)->open_device("ns");
  ASSERT_TRUE(vdev);
  auto vm = (*vdev)->map(0, 4 << 20, Access::ReadWrite);
  ASSERT_TRUE(vm);
  auto vflags = vm_flags(vm->data());
  ASSERT_FALSE(vflags.empty());
  EXPECT_FALSE(has_flag(vflags, "sf"));

  // The CLI reports the same.
  auto cli = testing::run_cli(scratch.path(), "list --region " + scratch.path() +
                                                  "/cli --require-dax --capabilities --json");
  EXPECT_EQ(cli.exit_code, 0) << cli;
  EXPECT_NE(cli.out.find("cache-flush"), std::string::npos) << cli;
}

bool register_media_tests() {
  const std::string fsdax = env_dir({"RAWDAX_TEST_FSDAX", "RAWDAX_GUEST_FSDAX"});
  if (!fsdax.empty()) {
    register_in("FsdaxTest", "CapabilitiesMapSyncAndPersist", fsdax,
                [fsdax] { fsdax_capabilities_and_map_sync(fsdax); });
  }
  const std::string disk = env_dir({"RAWDAX_GUEST_DISK"});
  if (!disk.empty()) {
    register_in("RequireDaxDisk", "RefusedOnExt4WithoutDaxChangingNothing", disk,
                [disk] { expect_require_dax_refused(disk, "ext4"); });
  }
  return true;
}

[[maybe_unused]] const bool registered = register_media_tests();

}  // namespace
}  // namespace rawdax
