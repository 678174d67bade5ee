// Conflicting commands at once through the control socket: destroy while a
// snapshot runs, resize while frozen, freeze racing a forced destroy, and a
// second daemon on a region one already serves. Every command gets a clear
// answer (no hang), nothing is left half done, and the daemon keeps serving.
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <gtest/gtest.h>
#include <string>
#include <thread>

#include "daemon/control_test_util.h"
#include "export/nbd_fixture.h"
#include "export/nbd_wire.h"
#include "serve_child.h"

namespace rawdax {
namespace {

using ::rawdax::testing::DaemonFixture;
using ::rawdax::testing::error_class;
using ::rawdax::testing::json;
using ::rawdax::testing::RawConnection;
using ::rawdax::testing::ScratchDir;
using ::rawdax::testing::ServeChild;
using ::rawdax::testing::TestMedia;

std::string desc(const json& reply) {
  return reply.is_object() && reply.contains("error") ? reply["error"].value("desc", "") : "";
}

// Entries of `dir` (names only).
std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    out.push_back(e.path().filename().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

TEST(ControlConflict, DestroyWhileASnapshotRuns) {
  const uint64_t size = 128ull << 20;
  DaemonFixture daemon(TestMedia::kTmpfs, size);
  {
    auto dev = daemon.region().open_device("vm1");
    ASSERT_TRUE(dev);
    std::vector<std::byte> data(1 << 20, std::byte{3});
    for (uint64_t off = 0; off < size; off += data.size()) ASSERT_TRUE((*dev)->write(off, data));
  }
  ScratchDir out(::rawdax::testing::tmpfs_parent());
  const std::string file = out.path() + "/vm1.snap";
  RawConnection snapshotter(daemon.socket_path());
  RawConnection destroyer(daemon.socket_path());
  auto snap = std::async(std::launch::async, [&] {
    return snapshotter.execute("snapshot", {{"name", "vm1"}, {"file", file}});
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  json destroyed = destroyer.execute("destroy-namespace", {{"name", "vm1"}});
  ASSERT_EQ(snap.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  json taken = snap.get();
  ASSERT_TRUE(destroyed.contains("return")) << destroyed;
  if (taken.contains("return")) {
    // The copy finished first: the file is whole.
    EXPECT_TRUE(verify_snapshot(file)) << taken;
  } else {
    EXPECT_NE(desc(taken).find("vm1"), std::string::npos) << taken;
    EXPECT_FALSE(std::filesystem::exists(file));
  }
  // Nothing half written is left beside it, the namespace is gone, and the
  // daemon answers.
  for (const auto& name : entries(out.path())) EXPECT_EQ(name, "vm1.snap");
  RawConnection after(daemon.socket_path());
  json list = after.execute("query-namespaces");
  ASSERT_TRUE(list.contains("return")) << list;
  EXPECT_TRUE(list["return"].empty()) << list;
  EXPECT_EQ(error_class(after.execute("snapshot", {{"name", "vm1"}, {"file", file + "2"}})),
            "DeviceNotFound");
}

TEST(ControlConflict, ResizeWhileFrozenIsBusyAndOthersAreServed) {
  DaemonFixture daemon(TestMedia::kTmpfs, 4 << 20);
  RawConnection freezer(daemon.socket_path());
  RawConnection resizer(daemon.socket_path());
  ASSERT_TRUE(freezer.execute("freeze", {{"name", "vm1"}}).contains("return"));
  for (uint64_t size : {8u << 20, 2u << 20}) {
    json r = resizer.execute("resize-namespace", {{"name", "vm1"}, {"size", size}, {"force", true}});
    EXPECT_EQ(error_class(r), "DeviceBusy") << r;
    EXPECT_NE(desc(r).find("namespace vm1: cannot resize to " + std::to_string(size) +
                           " while the namespace is frozen"),
              std::string::npos)
        << r;
  }
  json list = resizer.execute("query-namespaces");
  ASSERT_TRUE(list.contains("return")) << list;
  EXPECT_EQ(list["return"][0]["size"], 4u << 20);
  ASSERT_TRUE(freezer.execute("thaw", {{"name", "vm1"}}).contains("return"));
  json grown = resizer.execute("resize-namespace", {{"name", "vm1"}, {"size", 8u << 20}});
  ASSERT_TRUE(grown.contains("return")) << grown;
  EXPECT_EQ(grown["return"]["size"], 8u << 20);
}

TEST(ControlConflict, FreezeRacingAForcedDestroyAnswersBoth) {
  DaemonFixture daemon(TestMedia::kTmpfs);
  RawConnection freezer(daemon.socket_path());
  RawConnection destroyer(daemon.socket_path());
  for (int i = 0; i < 20; ++i) {
    std::string name = "ns" + std::to_string(i);
    ASSERT_TRUE(destroyer.execute("create-namespace", {{"name", name}, {"size", 1 << 20}})
                    .contains("return"));
    auto frozen = std::async(std::launch::async, [&] {
      return freezer.execute("freeze", {{"name", name}, {"timeout", 5}});
    });
    json destroyed = destroyer.execute("destroy-namespace", {{"name", name}, {"force", true}});
    ASSERT_EQ(frozen.wait_for(std::chrono::seconds(10)), std::future_status::ready) << name;
    json f = frozen.get();
    EXPECT_TRUE(destroyed.contains("return")) << destroyed;
    if (!f.contains("return")) {
      // Too late: the error names the namespace.
      EXPECT_NE(desc(f).find(name), std::string::npos) << f;
    }
    // A freeze that won is thawed harmlessly, or its namespace is reported gone.
    json t = freezer.execute("thaw", {{"name", name}});
    EXPECT_TRUE(t.contains("return") || error_class(t) == "DeviceNotFound" ||
                error_class(t) == "GenericError")
        << t;
  }
  json list = freezer.execute("query-namespaces");
  ASSERT_TRUE(list.contains("return")) << list;
  ASSERT_EQ(list["return"].size(), 1u) << list;
  EXPECT_EQ(list["return"][0]["name"], "vm1");
}

TEST(ControlConflict, ASecondDaemonOnTheRegionFailsAndTheFirstServesOn) {
  ScratchDir dir(::rawdax::testing::tmpfs_parent());
  const std::string region = dir.path() + "/region";
  ServeChild first(region, dir.path() + "/nbd1.sock", dir.path() + "/first.log",
                   {"--default-size", "4M"});
  ASSERT_TRUE(first.ready()) << first.log();
  struct stat sock_before;
  ASSERT_EQ(::stat((region + "/control.sock").c_str(), &sock_before), 0);

  ServeChild second(region, dir.path() + "/nbd2.sock", dir.path() + "/second.log",
                    {"--default-size", "4M"});
  EXPECT_FALSE(second.ready());
  EXPECT_EQ(second.pid(), -1) << "the second daemon is still running";
  std::string log = second.log();
  EXPECT_NE(log.find("rawdax: error: "), std::string::npos) << log;
  EXPECT_NE(log.find("in use by pid " + std::to_string(first.pid())), std::string::npos) << log;
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/nbd2.sock"));

  // The first's control socket is the same file and answers; its NBD export serves.
  struct stat sock_after;
  ASSERT_EQ(::stat((region + "/control.sock").c_str(), &sock_after), 0);
  EXPECT_EQ(sock_after.st_ino, sock_before.st_ino);
  RawConnection control(region + "/control.sock");
  json list = control.execute("query-namespaces");
  ASSERT_TRUE(list.contains("return")) << list;
  EXPECT_EQ(list["return"][0]["name"], "default");
  ::rawdax::testing::RawClient nbd(first.nbd_socket());
  ASSERT_NO_FATAL_FAILURE(nbd::wire::go(nbd, "default", /*structured=*/false));
  ASSERT_TRUE(nbd.send(nbd::wire::request(nbd::kCmdFlush, 1, 0, 0)));
  nbd::wire::Reply r = nbd::wire::read_reply(nbd);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.error, 0u);
  EXPECT_TRUE(::rawdax::testing::serve_error_lines(first.log()).empty()) << first.log();
  EXPECT_EQ(first.stop(), 0);
}

}  // namespace
}  // namespace rawdax
