// The rawdax binary, driven as a user would: verbs, JSON, errors, serve.
#include <signal.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>
#include <vector>

#include "common/units.h"
#include "rawdax/rawdax.h"
#include "cli_run.h"
#include "plain_user.h"
#include "test_util.h"

namespace rawdax {
namespace {

using ::rawdax::testing::CliRun;
using ::rawdax::testing::read_text;
using ::rawdax::testing::run_cli;
using ::rawdax::testing::ScratchDir;
using ::rawdax::testing::ScratchRegion;
using ::rawdax::testing::TestMedia;


class CliTest : public ::testing::Test {
 protected:
  CliRun rawdax(const std::string& args) { return run_cli(dir_.path(), args); }
  std::string region() const { return dir_.path() + "/region"; }

  ScratchDir dir_{::rawdax::testing::disk_parent()};
};

// The verbs on a region, on the disk and, when selected, on a carved region
// (whose namespaces are extents of one file: snapshot and restore read and
// fill them at their offsets, a grow happens in place).
class CliRegionTest : public ::testing::TestWithParam<TestMedia> {
 protected:
  CliRun rawdax(const std::string& args) { return run_cli(dir_.path(), args); }
  const std::string& region() const { return region_.spec(); }

  ScratchDir dir_{::rawdax::testing::disk_parent()};  // snapshots, the CLI's directory
  ScratchRegion region_{GetParam()};
};

std::vector<TestMedia> cli_region_media() {
  std::vector<TestMedia> out = {TestMedia::kDisk};
  for (TestMedia m : ::rawdax::testing::media_among({TestMedia::kCarved})) out.push_back(m);
  return out;
}

TEST_P(CliRegionTest, CreateListDestroy) {
  CliRun made = rawdax("create-namespace --region " + region() + " --name vm1 --size 2M");
  ASSERT_EQ(made.exit_code, 0) << made.err;
  auto created = nlohmann::json::parse(made.out);
  EXPECT_EQ(created["name"], "vm1");
  EXPECT_EQ(created["size"], 2u << 20);

  CliRun list = rawdax("list --json --region " + region());
  ASSERT_EQ(list.exit_code, 0) << list.err;
  auto all = nlohmann::json::parse(list.out);
  ASSERT_TRUE(all.is_array());
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0]["uuid"], created["uuid"]);

  CliRun human = rawdax("list --human --region " + region());
  ASSERT_EQ(human.exit_code, 0);
  EXPECT_EQ(nlohmann::json::parse(human.out)[0]["size"], "2.00 MiB");

  CliRun gone = rawdax("destroy-namespace vm1 --region " + region());
  ASSERT_EQ(gone.exit_code, 0) << gone.err;
  EXPECT_EQ(nlohmann::json::parse(rawdax("list --region " + region()).out).size(), 0u);
}

TEST_P(CliRegionTest, ResizeNamespace) {
  ASSERT_EQ(rawdax("create-namespace --region " + region() + " -n r -s 1M").exit_code, 0);
  CliRun grown = rawdax("resize-namespace r --size 3M --region " + region());
  ASSERT_EQ(grown.exit_code, 0) << grown.err;
  EXPECT_EQ(nlohmann::json::parse(grown.out)["size"], 3u << 20);
  EXPECT_EQ(nlohmann::json::parse(rawdax("list --region " + region()).out)[0]["size"], 3u << 20);
  CliRun shrunk = rawdax("resize-namespace r --size 2M --force --region " + region());
  ASSERT_EQ(shrunk.exit_code, 0) << shrunk.err;
  EXPECT_EQ(nlohmann::json::parse(rawdax("list --region " + region()).out)[0]["size"], 2u << 20);
  CliRun bad = rawdax("resize-namespace r --size 0 --region " + region());
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("greater than 0"), std::string::npos) << bad.err;
  CliRun missing = rawdax("resize-namespace nope --size 1M --region " + region());
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.err.find("nope"), std::string::npos);
}

// Without a daemon the fill runs to completion before the verb returns; a
// carved region refuses --lazy with nothing created.
TEST_P(CliRegionTest, LazyRestore) {
  const std::string snap = dir_.path() + "/l.snap";
  std::vector<std::byte> image(2 << 20);
  for (size_t i = 0; i < image.size(); ++i) image[i] = std::byte(static_cast<uint8_t>(i / 4096 + i));
  {
    auto source = Region::open("memfd:");
    ASSERT_TRUE(source);
    ASSERT_TRUE((*source)->create_namespace({.name = "l", .size = image.size()}));
    auto dev = (*source)->open_device("l");
    ASSERT_TRUE(dev);
    ASSERT_TRUE((*dev)->write(0, image));
    ASSERT_TRUE((*dev)->snapshot(snap));
  }
  CliRun restored = rawdax("restore t " + snap + " --lazy --region " + region());
  if (GetParam() == TestMedia::kCarved) {
    EXPECT_NE(restored.exit_code, 0);
    EXPECT_NE(restored.err.find("without --lazy"), std::string::npos) << restored.err;
    EXPECT_EQ(nlohmann::json::parse(rawdax("list --region " + region()).out).size(), 0u);
    return;
  }
  ASSERT_EQ(restored.exit_code, 0) << restored.err;
  auto info = nlohmann::json::parse(restored.out);
  EXPECT_EQ(info["size"], 2u << 20);
  EXPECT_FALSE(info.contains("restore")) << restored.out;
  auto listed = nlohmann::json::parse(rawdax("list --json --region " + region()).out);
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_FALSE(listed[0].contains("restore")) << listed.dump();
  auto region = Region::open(this->region());
  ASSERT_TRUE(region) << region.error().message();
  auto dev = (*region)->open_device("t");
  ASSERT_TRUE(dev);
  std::vector<std::byte> back(image.size());
  ASSERT_TRUE((*dev)->read(0, back));
  EXPECT_TRUE(back == image);
}

TEST_P(CliRegionTest, SnapshotVerifyRestore) {
  ASSERT_EQ(rawdax("create-namespace --region " + region() + " -n s -s 1M").exit_code, 0);
  std::string snap = dir_.path() + "/s.snap";
  CliRun taken = rawdax("snapshot s " + snap + " --json --region " + region());
  ASSERT_EQ(taken.exit_code, 0) << taken.err;
  auto info = nlohmann::json::parse(taken.out);
  EXPECT_EQ(info["pages"], 0u);  // a fresh namespace is all holes
  EXPECT_EQ(info["namespace_size"], 1u << 20);

  CliRun verified = rawdax("verify " + snap + " --json");
  ASSERT_EQ(verified.exit_code, 0) << verified.err;
  EXPECT_EQ(nlohmann::json::parse(verified.out)[0]["id"], info["id"]);

  CliRun restored = rawdax("restore t " + snap + " --region " + region());
  ASSERT_EQ(restored.exit_code, 0) << restored.err;
  EXPECT_EQ(nlohmann::json::parse(restored.out)["size"], 1u << 20);

  std::filesystem::resize_file(snap, 100);
  CliRun bad = rawdax("verify " + snap);
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("truncated"), std::string::npos) << bad.err;
  CliRun refused = rawdax("restore u " + snap + " --region " + region());
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_EQ(nlohmann::json::parse(rawdax("list --region " + region()).out).size(), 2u);

  CliRun no_base = rawdax("snapshot s " + dir_.path() + "/i.snap --base " + snap +
                          " --region " + region());
  EXPECT_NE(no_base.exit_code, 0);
  EXPECT_NE(no_base.err.find("s.snap"), std::string::npos) << no_base.err;
}

// Without a daemon each CLI call is a fresh process with no tracking
// history: the incremental compares pages with its base chain instead.
TEST_P(CliRegionTest, IncrementalSnapshotFromTheCli) {
  ASSERT_EQ(rawdax("create-namespace --region " + region() + " -n s -s 1M").exit_code, 0);
  auto write_page = [&](uint64_t page, uint8_t value) {
    auto r = rawdax::Region::open(region());
    ASSERT_TRUE(r) << r.error().message();
    auto dev = (*r)->open_device("s");
    ASSERT_TRUE(dev);
    std::vector<std::byte> buf(4096, std::byte{value});
    ASSERT_TRUE((*dev)->write(page * 4096, buf));
  };
  write_page(1, 1);
  write_page(7, 7);
  std::string a = dir_.path() + "/a.snap", b = dir_.path() + "/b.snap";
  CliRun full = rawdax("snapshot s " + a + " --json --region " + region());
  ASSERT_EQ(full.exit_code, 0) << full.err;
  EXPECT_EQ(nlohmann::json::parse(full.out)["pages"], 2u);
  write_page(7, 8);
  write_page(9, 9);
  CliRun inc = rawdax("snapshot s " + b + " --base " + a + " --json --region " + region());
  ASSERT_EQ(inc.exit_code, 0) << inc.err;
  auto info = nlohmann::json::parse(inc.out);
  EXPECT_EQ(info["pages"], 2u);
  EXPECT_EQ(info["base_id"], nlohmann::json::parse(full.out)["id"]);
  ASSERT_EQ(rawdax("restore t " + b + " --region " + region()).exit_code, 0);
  auto r = rawdax::Region::open(region());
  ASSERT_TRUE(r);
  std::vector<std::byte> s(1 << 20), t(1 << 20);
  ASSERT_TRUE((*(*r)->open_device("s"))->read(0, s));
  ASSERT_TRUE((*(*r)->open_device("t"))->read(0, t));
  EXPECT_EQ(s, t);
}

TEST_F(CliTest, VmArgsNameTheNamespaceFile) {
  ASSERT_EQ(rawdax("create-namespace --region " + region() + " -n vm -s 64M").exit_code, 0);
  auto ns = nlohmann::json::parse(rawdax("list --json --region " + region()).out)[0];
  CliRun nvdimm = rawdax("vm-args vm --region " + region());
  ASSERT_EQ(nvdimm.exit_code, 0) << nvdimm.err;
  EXPECT_NE(nvdimm.out.find("nvdimm=on"), std::string::npos) << nvdimm.out;
  EXPECT_NE(nvdimm.out.find("share=on,mem-path=" + ns["path"].get<std::string>() +
                            ",size=" + std::to_string(64 << 20)),
            std::string::npos)
      << nvdimm.out;
  EXPECT_NE(nvdimm.out.find("-device nvdimm,memdev="), std::string::npos) << nvdimm.out;
  CliRun virtio = rawdax("vm-args vm --virtio --json --region " + region());
  ASSERT_EQ(virtio.exit_code, 0) << virtio.err;
  auto args = nlohmann::json::parse(virtio.out)["args"];
  EXPECT_EQ(args.back().get<std::string>().rfind("virtio-pmem-pci,memdev=", 0), 0u) << args;
  CliRun missing = rawdax("vm-args nope --region " + region());
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.err.find("nope"), std::string::npos) << missing.err;
}

// The userfaultfd mode this process should get, worked out apart from the
// probe: full for root, or where the sysctl or the device node allows it.
std::string expected_uffd_mode() {
  if (::geteuid() == 0 || read_text("/proc/sys/vm/unprivileged_userfaultfd") == "1\n" ||
      ::access("/dev/userfaultfd", R_OK | W_OK) == 0) {
    return "full";
  }
  return "user-mode-only";
}

// Media, engine, privilege, kernel and page size are told apart.
TEST_F(CliTest, CapabilitiesAsJson) {
  CliRun run = rawdax("list --capabilities --json --region " + region());
  ASSERT_EQ(run.exit_code, 0) << run.err;
  auto caps = nlohmann::json::parse(run.out)[0]["capabilities"];
  std::set<std::string> groups;
  for (const auto& [key, value] : caps.items()) groups.insert(key);
  EXPECT_EQ(groups, (std::set<std::string>{"media", "engine", "privilege", "kernel", "page_size"}));
  for (const char* key : {"kind", "filesystem", "persist", "flush_instruction", "huge_page_size",
                          "alignment", "map_sync", "punch_hole", "uffd_wp_sync", "uffd_wp_async"}) {
    EXPECT_TRUE(caps["media"].contains(key)) << key;
  }
  EXPECT_EQ(caps["media"]["persist"], "msync");
  EXPECT_EQ(caps["engine"], "mprotect");  // the disk refuses sync uffd-wp
  EXPECT_EQ(caps["privilege"]["uffd_mode"], expected_uffd_mode());
  struct utsname names;
  ASSERT_EQ(::uname(&names), 0);
  EXPECT_EQ(caps["kernel"]["release"], names.release);
  for (const char* key : {"uffd_wp_sync", "uffd_wp_async", "uffd_wp_hugetlbfs_shmem",
                          "uffd_wp_unpopulated", "pagemap_scan", "map_sync"}) {
    EXPECT_TRUE(caps["kernel"][key].is_boolean()) << key;
  }
  // What the media accepts, the kernel offers.
  if (caps["media"]["uffd_wp_async"].get<bool>()) {
    EXPECT_TRUE(caps["kernel"]["uffd_wp_async"]);
  }
  EXPECT_TRUE(caps["kernel"]["map_sync"]) << "every kernel since 4.15 knows MAP_SYNC";
  EXPECT_EQ(caps["page_size"], static_cast<uint64_t>(::sysconf(_SC_PAGESIZE)));

  CliRun human = rawdax("list --capabilities --human --region " + region());
  ASSERT_EQ(human.exit_code, 0) << human.err;
  auto shown = nlohmann::json::parse(human.out)[0]["capabilities"];
  EXPECT_EQ(shown["page_size"], internal::format_size(caps["page_size"].get<uint64_t>()));
  EXPECT_EQ(shown["media"]["alignment"], internal::format_size(caps["media"]["alignment"].get<uint64_t>()));
  shown["page_size"] = caps["page_size"];
  shown["media"]["alignment"] = caps["media"]["alignment"];
  shown["media"]["huge_page_size"] = caps["media"]["huge_page_size"];
  EXPECT_EQ(shown, caps) << "--human changes only the sizes";
}

// A plain user gets a user-mode-only userfaultfd, and tmpfs and memfd keep
// the uffd engine with it.
TEST(CliPlainUser, TmpfsAndMemfdKeepTheUffdEngine) {
  RAWDAX_AS_PLAIN_USER();
  ScratchDir dir(::rawdax::testing::tmpfs_parent());
  for (std::string spec : {dir.path() + "/region", std::string("memfd:")}) {
    CliRun run = run_cli(dir.path(), "list --capabilities --region " + spec);
    ASSERT_EQ(run.exit_code, 0) << spec << ": " << run.err;
    auto caps = nlohmann::json::parse(run.out)[0]["capabilities"];
    EXPECT_EQ(caps["privilege"]["uffd_mode"], "user-mode-only")
        << spec << " (vm.unprivileged_userfaultfd=1?)";
    EXPECT_EQ(caps["media"]["uffd_wp_sync"], true) << spec;
    EXPECT_EQ(caps["engine"], "uffd") << spec;
  }
}

TEST_P(CliRegionTest, BadInputGivesOneClearLineAndChangesNothing) {
  ASSERT_EQ(rawdax("create-namespace --region " + region() + " -n keep -s 1M").exit_code, 0);
  struct Case {
    std::string args;
    std::string text;
  } cases[] = {
      {"create-namespace -n a -s 0", "greater than 0"},
      {"create-namespace -n a -s 12Q", "12Q"},
      {"create-namespace -n a -s -5", "-5"},
      {"create-namespace -n a -s 999999T", "do not fit"},
      {"create-namespace -n '' -s 1M", "empty"},
      {"create-namespace -n " + std::string(64, 'x') + " -s 1M", "63"},
      {"create-namespace -n a/b -s 1M", "only"},
      {"create-namespace -n .. -s 1M", "reserved"},
      {"create-namespace -n 'a b' -s 1M", "only"},
      {"create-namespace -n keep -s 1M", "already exists"},
      {"destroy-namespace nothere", "not found"},
  };
  for (const auto& c : cases) {
    CliRun run = rawdax(c.args + " --region " + region());
    EXPECT_NE(run.exit_code, 0) << c.args;
    EXPECT_NE(run.err.find(c.text), std::string::npos) << c.args << ": " << run.err;
    EXPECT_EQ(run.out, "") << c.args;
  }
  CliRun missing = rawdax("create-namespace --region " + region() + " -n only-name");
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.err.find("--size"), std::string::npos) << missing.err;
  auto all = nlohmann::json::parse(rawdax("list --region " + region()).out);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0]["name"], "keep");
}

TEST_F(CliTest, EveryVerbHasHelp) {
  for (const char* verb :
       {"list", "create-namespace", "destroy-namespace", "resize-namespace", "snapshot", "restore",
        "verify", "serve", "bench", "stats"}) {
    CliRun run = rawdax(std::string(verb) + " --help");
    EXPECT_EQ(run.exit_code, 0) << verb;
    EXPECT_NE(run.out.find("--region"), std::string::npos) << verb << ": " << run.out;
  }
  EXPECT_NE(rawdax("no-such-verb").exit_code, 0);
}

TEST_F(CliTest, ServeCreatesDefaultOwnsRegionAndStopsOnSigterm) {
  std::string log = dir_.path() + "/serve.log";
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    std::freopen(log.c_str(), "w", stderr);
    std::string region_arg = region();
    // A free port, so that parallel test runs never collide on 10809.
    execl(RAWDAX_CLI_PATH, "rawdax", "serve", "--region", region_arg.c_str(), "--nbd",
          "127.0.0.1:0", static_cast<char*>(nullptr));
    _exit(127);
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (read_text(log).find("ready") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::string text = read_text(log);
  EXPECT_NE(text.find("namespace default created (256.00 MiB)"), std::string::npos) << text;
  ASSERT_NE(text.find("ready"), std::string::npos) << text;

  // The region is the daemon's: opening it directly is refused, and every
  // verb goes through the control socket instead (restore's error is about
  // the snapshot, not the region's lock).
  auto direct = Region::open(region());
  ASSERT_FALSE(direct);
  EXPECT_NE(direct.error().message().find("in use by pid " + std::to_string(child)),
            std::string::npos)
      << direct.error().message();
  CliRun restore = rawdax("restore vm9 " + dir_.path() + "/none.snap --region " + region());
  EXPECT_NE(restore.exit_code, 0);
  EXPECT_NE(restore.err.find("none.snap: No such file"), std::string::npos) << restore.err;
  CliRun through = rawdax("list --region " + region());
  ASSERT_EQ(through.exit_code, 0) << through.err;
  EXPECT_EQ(nlohmann::json::parse(through.out)[0]["name"], "default");

  auto sent = std::chrono::steady_clock::now();
  ASSERT_EQ(::kill(child, SIGTERM), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_LT(std::chrono::steady_clock::now() - sent, std::chrono::seconds(5));
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_NE(read_text(log).find("SIGTERM"), std::string::npos);

  CliRun list = rawdax("list --region " + region());
  ASSERT_EQ(list.exit_code, 0) << list.err;
  auto all = nlohmann::json::parse(list.out);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0]["name"], "default");
  EXPECT_EQ(all[0]["size"], 256u << 20);
}

TEST_F(CliTest, BenchRunsOneGroup) {
  CliRun run = rawdax("bench --json --only live-ref --rounds 1");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  auto pairs = nlohmann::json::parse(run.out);
  ASSERT_EQ(pairs.size(), 2u);
  EXPECT_NE(pairs[0]["name"].get<std::string>().find("live ref"), std::string::npos);
  EXPECT_NE(rawdax("bench --only nothing").exit_code, 0);
}

TEST_F(CliTest, BenchPrintsRatiosAsJson) {
  CliRun run = rawdax("bench --json --size 4M --teardown-size 16M --freeze-size 8M --rounds 1");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  auto pairs = nlohmann::json::parse(run.out);
  // Every group reports: core, live ref, teardown, and per engine freeze,
  // first write and sync (2M-page freezes only where shmem THP is on).
  for (const char* group : {"mapping stores+loads", "block 4K random", "block 1M sequential",
                            "live ref get+put, uncontended", "live ref get+put, 2 threads",
                            "remove()", "freeze+thaw, mprotect", "first write per page",
                            "sync() of 1024"}) {
    bool found = false;
    for (const auto& p : pairs) found |= p["name"].get<std::string>().find(group) == 0;
    EXPECT_TRUE(found) << "no pair for " << group;
  }
  for (const auto& p : pairs) {
    EXPECT_GT(p["anchor_ns"].get<double>(), 0.0);
    EXPECT_GT(p["rawdax_ns"].get<double>(), 0.0);
    EXPECT_DOUBLE_EQ(p["ratio"].get<double>(),
                     p["anchor_ns"].get<double>() / p["rawdax_ns"].get<double>());
  }
}

INSTANTIATE_TEST_SUITE_P(Media, CliRegionTest, ::testing::ValuesIn(cli_region_media()),
                         ::rawdax::testing::param_name);

}  // namespace
}  // namespace rawdax
