// The control protocol and every command, good and bad arguments, against a
// ControlServer in this process.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <atomic>
#include <filesystem>
#include <gtest/gtest.h>
#include <thread>

#include "daemon/control_test_util.h"

namespace rawdax {
namespace {

using ::rawdax::testing::DaemonFixture;
using ::rawdax::testing::error_class;
using ::rawdax::testing::json;
using ::rawdax::testing::RawConnection;
using ::rawdax::testing::TestMedia;

class ControlCommandTest : public ::testing::Test {
 protected:
  DaemonFixture daemon_{TestMedia::kTmpfs};
  RawConnection conn_{daemon_.socket_path()};
};

TEST_F(ControlCommandTest, GreetingNamesVersionAndCapabilities) {
  const json& g = conn_.greeting();
  ASSERT_TRUE(g.is_object()) << g;
  ASSERT_TRUE(g.contains("rawdax"));
  EXPECT_TRUE(g["rawdax"]["version"].is_string());
  ASSERT_TRUE(g["rawdax"]["capabilities"].is_array());
  auto caps = g["rawdax"]["capabilities"].get<std::vector<std::string>>();
  EXPECT_NE(std::find(caps.begin(), caps.end(), "fd-passing"), caps.end());
}

TEST_F(ControlCommandTest, RepliesEchoTheId) {
  json r = conn_.call(R"({"execute":"query-namespaces","id":"abc"})");
  EXPECT_EQ(r["id"], "abc");
  ASSERT_TRUE(r.contains("return")) << r;
  r = conn_.call(R"({"execute":"nope","id":7})");
  EXPECT_EQ(r["id"], 7);
  EXPECT_EQ(error_class(r), "CommandNotFound");
}

TEST_F(ControlCommandTest, UnknownCommandIsCommandNotFound) {
  json r = conn_.execute("frobnicate");
  EXPECT_EQ(error_class(r), "CommandNotFound") << r;
  EXPECT_NE(r["error"]["desc"].get<std::string>().find("frobnicate"), std::string::npos);
}

TEST_F(ControlCommandTest, MalformedRequestsAreGenericErrorsAndTheConnectionStays) {
  for (const char* bad : {"{not json", "[1,2]", R"({"arguments":{}})", R"({"execute":5})",
                          R"({"execute":"query-namespaces","arguments":[]})",
                          R"({"execute":"query-namespaces","bogus":1})", "\"\\ud800\""}) {
    json r = conn_.call(bad);
    EXPECT_EQ(error_class(r), "GenericError") << bad << " -> " << r;
  }
  json ok = conn_.execute("query-namespaces");
  ASSERT_TRUE(ok.contains("return")) << ok;
  EXPECT_EQ(ok["return"].size(), daemon_.region().list().size());
}

TEST_F(ControlCommandTest, QueryNamespacesListsFieldsAndHolders) {
  json r = conn_.execute("query-namespaces");
  ASSERT_TRUE(r["return"].is_array()) << r;
  ASSERT_EQ(r["return"].size(), 1u);
  auto info = daemon_.region().find("vm1");
  ASSERT_TRUE(info);
  const json& ns = r["return"][0];
  EXPECT_EQ(ns["name"], "vm1");
  EXPECT_EQ(ns["uuid"], info->uuid);
  EXPECT_EQ(ns["size"], info->size);
  EXPECT_EQ(ns["mode"], info->mode);
  EXPECT_EQ(ns["path"], info->path);
  EXPECT_TRUE(ns["holders"].empty());

  RawConnection other(daemon_.socket_path());
  json opened = other.execute("open-namespace", {{"name", "vm1"}, {"access", "ro"}});
  ASSERT_TRUE(opened.contains("return")) << opened;
  json after = conn_.execute("query-namespaces");
  ASSERT_EQ(after["return"][0]["holders"].size(), 1u);
  EXPECT_EQ(after["return"][0]["holders"][0]["pid"], ::getpid());
  EXPECT_EQ(after["return"][0]["holders"][0]["access"], "ro");
  EXPECT_EQ(after["return"][0]["holders"][0]["exclusive"], false);
}

TEST_F(ControlCommandTest, CreateNamespace) {
  json r = conn_.execute("create-namespace", {{"name", "vm2"}, {"size", 2 << 20}});
  ASSERT_TRUE(r.contains("return")) << r;
  EXPECT_EQ(r["return"]["name"], "vm2");
  EXPECT_EQ(r["return"]["size"], 2u << 20);
  auto found = daemon_.region().find("vm2");
  ASSERT_TRUE(found);
  EXPECT_EQ(r["return"]["uuid"], found->uuid);

  EXPECT_EQ(error_class(conn_.execute("create-namespace", {{"size", 4096}})), "GenericError");
  EXPECT_EQ(error_class(conn_.execute("create-namespace", {{"name", "vm3"}})), "GenericError");
  EXPECT_EQ(error_class(conn_.execute("create-namespace", {{"name", "vm3"}, {"size", "1M"}})),
            "GenericError");
  EXPECT_EQ(error_class(conn_.execute("create-namespace", {{"name", "vm3"}, {"size", -4096}})),
            "GenericError");
  EXPECT_EQ(error_class(conn_.execute("create-namespace", {{"name", 3}, {"size", 4096}})),
            "GenericError");
  EXPECT_EQ(error_class(conn_.execute("create-namespace",
                                      {{"name", "vm3"}, {"size", 4096}, {"colour", "red"}})),
            "GenericError");
  EXPECT_EQ(error_class(conn_.execute("create-namespace", {{"name", "a/b"}, {"size", 4096}})),
            "GenericError");
  EXPECT_EQ(error_class(conn_.execute("create-namespace", {{"name", "vm2"}, {"size", 4096}})),
            "GenericError");
  EXPECT_FALSE(daemon_.region().find("vm3"));
}

TEST_F(ControlCommandTest, DestroyNamespace) {
  EXPECT_EQ(error_class(conn_.execute("destroy-namespace", {{"name", "nosuch"}})),
            "DeviceNotFound");
  EXPECT_EQ(error_class(conn_.execute("destroy-namespace")), "GenericError");
  EXPECT_EQ(error_class(conn_.execute("destroy-namespace", {{"name", "vm1"}, {"force", "yes"}})),
            "GenericError");
  ASSERT_TRUE(daemon_.region().find("vm1"));
  json r = conn_.execute("destroy-namespace", {{"name", "vm1"}});
  ASSERT_TRUE(r.contains("return")) << r;
  EXPECT_FALSE(daemon_.region().find("vm1"));
  EXPECT_TRUE(conn_.execute("query-namespaces")["return"].empty());
}

TEST_F(ControlCommandTest, DestroyWithHoldersIsBusyNamingThePid) {
  RawConnection holder(daemon_.socket_path());
  ASSERT_TRUE(holder.execute("open-namespace", {{"name", "vm1"}}).contains("return"));
  json r = conn_.execute("destroy-namespace", {{"name", "vm1"}});
  EXPECT_EQ(error_class(r), "DeviceBusy") << r;
  EXPECT_NE(r["error"]["desc"].get<std::string>().find(std::to_string(::getpid())),
            std::string::npos);
  EXPECT_TRUE(daemon_.region().find("vm1"));
  // Force: the holder hears of it before the reply to the destroyer.
  r = conn_.execute("destroy-namespace", {{"name", "vm1"}, {"force", true}});
  ASSERT_TRUE(r.contains("return")) << r;
  json event = holder.read();
  EXPECT_EQ(event["event"], "NAMESPACE_REVOKED") << event;
  EXPECT_EQ(event["data"]["name"], "vm1");
  EXPECT_FALSE(daemon_.region().find("vm1"));
}

TEST_F(ControlCommandTest, ResizeNamespace) {
  uint64_t size = daemon_.region().find("vm1")->size;
  json r = conn_.execute("resize-namespace", {{"name", "vm1"}, {"size", size * 2}});
  ASSERT_TRUE(r.contains("return")) << r;
  EXPECT_EQ(r["return"]["size"], size * 2);
  EXPECT_EQ(daemon_.region().find("vm1")->size, size * 2);

  EXPECT_EQ(error_class(conn_.execute("resize-namespace", {{"name", "nosuch"}, {"size", size}})),
            "DeviceNotFound");
  EXPECT_EQ(error_class(conn_.execute("resize-namespace", {{"name", "vm1"}})), "GenericError");
  EXPECT_EQ(error_class(conn_.execute("resize-namespace", {{"name", "vm1"}, {"size", true}})),
            "GenericError");
  EXPECT_EQ(error_class(conn_.execute("resize-namespace", {{"name", "vm1"}, {"size", 0}})),
            "GenericError");

  // A holder's mappings may cover the cut: a shrink needs force, and the
  // holder hears the new size.
  RawConnection holder(daemon_.socket_path());
  ASSERT_TRUE(holder.execute("open-namespace", {{"name", "vm1"}}).contains("return"));
  r = conn_.execute("resize-namespace", {{"name", "vm1"}, {"size", size}});
  EXPECT_EQ(error_class(r), "DeviceBusy") << r;
  EXPECT_EQ(daemon_.region().find("vm1")->size, size * 2);
  r = conn_.execute("resize-namespace", {{"name", "vm1"}, {"size", size}, {"force", true}});
  ASSERT_TRUE(r.contains("return")) << r;
  EXPECT_EQ(daemon_.region().find("vm1")->size, size);
  json event = holder.read();
  EXPECT_EQ(event["event"], "NAMESPACE_RESIZED") << event;
  EXPECT_EQ(event["data"]["size"], size);
}

TEST_F(ControlCommandTest, OpenPassesAnFdWithTheAskedAccess) {
  json r = conn_.execute("open-namespace", {{"name", "vm1"}, {"access", "ro"}});
  ASSERT_TRUE(r.contains("return")) << r;
  EXPECT_EQ(r["return"]["size"], daemon_.region().find("vm1")->size);
  EXPECT_EQ(r["return"]["access"], "ro");
  EXPECT_TRUE(r["return"]["capabilities"].is_object());
  ASSERT_EQ(conn_.fds().size(), 1u);
  EXPECT_EQ(::fcntl(conn_.fds().front().get(), F_GETFL) & O_ACCMODE, O_RDONLY);
  conn_.fds().clear();
  ASSERT_TRUE(conn_.execute("release-namespace", {{"name", "vm1"}}).contains("return"));

  r = conn_.execute("open-namespace", {{"name", "vm1"}});  // rw by default
  ASSERT_TRUE(r.contains("return")) << r;
  ASSERT_EQ(conn_.fds().size(), 1u);
  EXPECT_EQ(::fcntl(conn_.fds().front().get(), F_GETFL) & O_ACCMODE, O_RDWR);
  conn_.fds().clear();
}

TEST_F(ControlCommandTest, OpenAndReleaseErrors) {
  EXPECT_EQ(error_class(conn_.execute("open-namespace", {{"name", "nosuch"}})), "DeviceNotFound");
  EXPECT_EQ(error_class(conn_.execute("open-namespace")), "GenericError");
  EXPECT_EQ(error_class(conn_.execute("open-namespace", {{"name", "vm1"}, {"access", "rx"}})),
            "GenericError");
  EXPECT_EQ(error_class(conn_.execute("open-namespace", {{"name", "vm1"}, {"exclusive", 1}})),
            "GenericError");
  EXPECT_TRUE(conn_.fds().empty());  // errors pass no fd
  EXPECT_EQ(error_class(conn_.execute("release-namespace", {{"name", "vm1"}})), "GenericError");
  EXPECT_EQ(error_class(conn_.execute("release-namespace", {{"name", "nosuch"}})),
            "DeviceNotFound");
  EXPECT_EQ(error_class(conn_.execute("release-namespace")), "GenericError");
  ASSERT_TRUE(conn_.execute("open-namespace", {{"name", "vm1"}}).contains("return"));
  EXPECT_EQ(error_class(conn_.execute("open-namespace", {{"name", "vm1"}})), "GenericError");
  EXPECT_TRUE(conn_.execute("release-namespace", {{"name", "vm1"}}).contains("return"));
  EXPECT_EQ(error_class(conn_.execute("release-namespace", {{"name", "vm1"}})), "GenericError");
}

TEST_F(ControlCommandTest, ExclusiveOpensAcrossTwoClients) {
  auto a = Client::connect(daemon_.socket_path());
  auto b = Client::connect(daemon_.socket_path());
  ASSERT_TRUE(a && b);
  auto held = (*a)->open_namespace("vm1", Access::ReadWrite, /*exclusive=*/true);
  ASSERT_TRUE(held) << held.error().message();
  auto shared = (*b)->open_namespace("vm1", Access::ReadOnly);
  ASSERT_FALSE(shared);
  EXPECT_EQ(shared.error().code(), std::errc::device_or_resource_busy);
  EXPECT_NE(shared.error().message().find(std::to_string(::getpid())), std::string::npos);
  ASSERT_TRUE((*a)->release_namespace("vm1"));

  // Shared first: an exclusive open is refused while anyone holds it.
  ASSERT_TRUE((*a)->open_namespace("vm1", Access::ReadOnly));
  auto exclusive = (*b)->open_namespace("vm1", Access::ReadWrite, true);
  ASSERT_FALSE(exclusive);
  EXPECT_EQ(exclusive.error().code(), std::errc::device_or_resource_busy);
  // Closing the connection releases what it held, once the daemon has seen
  // the close (asynchronously: poll for it, bounded).
  a->reset();
  Result<ClientNamespace> reopened = Error(std::errc::timed_out, "not tried");
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  do {
    reopened = (*b)->open_namespace("vm1", Access::ReadWrite, true);
    if (!reopened) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  } while (!reopened && std::chrono::steady_clock::now() < deadline);
  ASSERT_TRUE(reopened) << reopened.error().message();
}

TEST_F(ControlCommandTest, FreezeHoldsWritesUntilThaw) {
  EXPECT_EQ(error_class(conn_.execute("freeze", {{"name", "nosuch"}})), "DeviceNotFound");
  EXPECT_EQ(error_class(conn_.execute("freeze", {{"name", "vm1"}, {"timeout", "5s"}})),
            "GenericError");
  EXPECT_EQ(error_class(conn_.execute("freeze", {{"name", "vm1"}, {"timeout", -1}})),
            "GenericError");
  EXPECT_EQ(error_class(conn_.execute("thaw", {{"name", "vm1"}})), "GenericError");
  EXPECT_EQ(error_class(conn_.execute("thaw", {{"name", "nosuch"}})), "DeviceNotFound");

  json r = conn_.execute("freeze", {{"name", "vm1"}, {"timeout", 5}});
  ASSERT_TRUE(r.contains("return")) << r;
  auto dev = daemon_.region().open_device("vm1");
  ASSERT_TRUE(dev);
  std::atomic<bool> written{false};
  std::thread writer([&] {
    std::byte b{7};
    EXPECT_TRUE((*dev)->write(0, std::span(&b, 1)));
    written = true;
  });
  // The daemon's query-stats says when the write waits on the freeze.
  auto parked = [&] {
    json stats = conn_.execute("query-stats");
    return stats["return"][0]["parked_writers"].get<uint64_t>();
  };
  EXPECT_TRUE(::rawdax::testing::eventually([&] { return parked() == 1; },
                                            std::chrono::seconds(60)))
      << "the block write neither landed nor waited";
  EXPECT_FALSE(written.load()) << "a block write landed while frozen";
  std::byte first{1};
  ASSERT_TRUE((*dev)->read(0, std::span(&first, 1)));
  EXPECT_EQ(first, std::byte{0}) << "a block write landed while frozen";
  r = conn_.execute("thaw", {{"name", "vm1"}});
  EXPECT_TRUE(r.contains("return")) << r;
  writer.join();
  EXPECT_TRUE(written.load());
  ASSERT_TRUE((*dev)->read(0, std::span(&first, 1)));
  EXPECT_EQ(first, std::byte{7});
  EXPECT_EQ(parked(), 0u);
  EXPECT_EQ(error_class(conn_.execute("thaw", {{"name", "vm1"}})), "GenericError");
}

TEST_F(ControlCommandTest, Snapshot) {
  ::rawdax::testing::ScratchDir dir(::rawdax::testing::tmpfs_parent());
  std::string file = dir.path() + "/vm1.snap";
  json r = conn_.execute("snapshot", {{"name", "vm1"}, {"file", file}});
  ASSERT_TRUE(r.contains("return")) << r;
  EXPECT_EQ(r["return"]["path"], file);
  EXPECT_EQ(r["return"]["namespace_size"], daemon_.region().find("vm1")->size);
  auto chain = verify_snapshot(file);
  ASSERT_TRUE(chain) << chain.error().message();
  EXPECT_EQ(chain->front().id, r["return"]["id"]);

  EXPECT_EQ(error_class(conn_.execute("snapshot", {{"name", "nosuch"}, {"file", file + "2"}})),
            "DeviceNotFound");
  EXPECT_EQ(error_class(conn_.execute("snapshot", {{"name", "vm1"}})), "GenericError");
  EXPECT_EQ(error_class(conn_.execute("snapshot", {{"name", "vm1"}, {"file", 1}})),
            "GenericError");
  // A missing directory or base file is not a missing device.
  EXPECT_EQ(error_class(conn_.execute("snapshot", {{"name", "vm1"}, {"file", dir.path() + "/x/y"}})),
            "GenericError");
  EXPECT_EQ(error_class(conn_.execute(
                "snapshot", {{"name", "vm1"}, {"file", file + "3"}, {"base", dir.path() + "/no"}})),
            "GenericError");
  for (json threads : {json(65), json(-1), json("2")}) {
    r = conn_.execute("snapshot", {{"name", "vm1"}, {"file", file + "4"}, {"threads", threads}});
    EXPECT_EQ(error_class(r), "GenericError") << threads;
    EXPECT_NE(r["error"]["desc"].get<std::string>().find(
                  "snapshot: argument 'threads' must be an integer from 0 to 64"),
              std::string::npos)
        << r;
  }
  EXPECT_FALSE(std::filesystem::exists(file + "4"));
  r = conn_.execute("snapshot", {{"name", "vm1"}, {"file", file + "4"}, {"threads", 3}});
  ASSERT_TRUE(r.contains("return")) << r;
  EXPECT_TRUE(verify_snapshot(file + "4"));
}

// The happy path (a real QEMU paused while frozen) is VmEndToEnd.*.
TEST_F(ControlCommandTest, AttachAndDetachVmErrors) {
  EXPECT_EQ(error_class(conn_.execute("attach-vm", {{"name", "nosuch"}, {"qmp", "/x"}})),
            "DeviceNotFound");
  json r = conn_.execute("attach-vm", {{"name", "vm1"}, {"qmp", "/nonexistent/qmp.sock"}});
  EXPECT_EQ(error_class(r), "GenericError");
  EXPECT_NE(r["error"]["desc"].get<std::string>().find("/nonexistent/qmp.sock"),
            std::string::npos)
      << r;
  EXPECT_EQ(error_class(conn_.execute("attach-vm", {{"name", "vm1"}})), "GenericError");
  EXPECT_EQ(error_class(conn_.execute("detach-vm", {{"name", "vm1"}})), "GenericError");
  EXPECT_EQ(error_class(conn_.execute("detach-vm", {{"name", "nosuch"}})), "DeviceNotFound");
  // Nothing attached: freeze and thaw work as without a VM.
  EXPECT_TRUE(conn_.execute("freeze", {{"name", "vm1"}}).contains("return"));
  EXPECT_TRUE(conn_.execute("thaw", {{"name", "vm1"}}).contains("return"));
}

TEST_F(ControlCommandTest, QueryStatsCountsBlockIo) {
  json before = conn_.execute("query-stats");
  ASSERT_TRUE(before["return"].is_array()) << before;
  ASSERT_EQ(before["return"].size(), 1u);
  EXPECT_EQ(before["return"][0]["name"], "vm1");
  uint64_t writes = before["return"][0]["writes"];
  auto dev = daemon_.region().open_device("vm1");
  ASSERT_TRUE(dev);
  std::byte b{1};
  ASSERT_TRUE((*dev)->write(0, std::span(&b, 1)));
  ASSERT_TRUE((*dev)->write(4096, std::span(&b, 1)));
  json after = conn_.execute("query-stats");
  EXPECT_EQ(after["return"][0]["writes"].get<uint64_t>(), writes + 2);
  EXPECT_EQ(error_class(conn_.execute("query-stats", {{"name", "vm1"}})), "GenericError");
}

TEST_F(ControlCommandTest, OverlongLineIsRefusedAndClosesOnlyThatConnection) {
  std::string big(control::kMaxRequestLine + 4096, 'x');
  (void)conn_.send(big);  // the daemon may close before taking it all
  json r = conn_.read();
  EXPECT_EQ(error_class(r), "GenericError") << r;
  EXPECT_TRUE(conn_.read().is_discarded());  // closed
  EXPECT_TRUE(daemon_.logged("longer than"));
  RawConnection fresh(daemon_.socket_path());
  EXPECT_TRUE(fresh.execute("query-namespaces").contains("return"));
}

TEST_F(ControlCommandTest, AStalledClientBlocksNobody) {
  // Half a request, never finished: its thread waits, the others do not.
  std::string partial = R"({"execute":"query-namespaces")";
  ASSERT_EQ(::send(conn_.fd(), partial.data(), partial.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(partial.size()));
  auto start = std::chrono::steady_clock::now();
  auto other = Client::connect(daemon_.socket_path());
  ASSERT_TRUE(other);
  auto listed = (*other)->execute("query-namespaces");
  ASSERT_TRUE(listed) << listed.error().message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
}

TEST_F(ControlCommandTest, ClientReportsErrorClassesAsCodes) {
  auto client = Client::connect(daemon_.socket_path());
  ASSERT_TRUE(client);
  EXPECT_EQ((*client)->execute("nope").error().code(), std::errc::function_not_supported);
  EXPECT_EQ((*client)->execute("open-namespace", R"({"name":"zz"})").error().code(),
            std::errc::no_such_file_or_directory);
  EXPECT_EQ((*client)->execute("open-namespace", R"({"name":1})").error().code(),
            std::errc::invalid_argument);
  EXPECT_EQ((*client)->execute("query-stats", "not json").error().code(),
            std::errc::invalid_argument);
  auto greeting = json::parse((*client)->greeting_json());
  EXPECT_TRUE(greeting["capabilities"].is_array());
}

TEST(ControlServerTest, SocketIsPrivateAndRemovedOnStop) {
  DaemonFixture daemon(TestMedia::kMemfd);
  struct stat st;
  ASSERT_EQ(::stat(daemon.socket_path().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // A second server on the same path is refused while the first listens.
  control::ServerOptions options;
  options.socket_path = daemon.socket_path();
  auto second = control::ControlServer::start(daemon.dispatcher(), options);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code(), std::errc::address_in_use);
  daemon.stop();
  EXPECT_NE(::stat(daemon.socket_path().c_str(), &st), 0);
}

TEST(ControlServerTest, LongSocketPathsWork) {
  ::rawdax::testing::ScratchDir dir(::rawdax::testing::tmpfs_parent());
  std::string deep = dir.path() + "/" + std::string(60, 'd') + "/" + std::string(60, 'e');
  std::filesystem::create_directories(deep);
  std::string path = deep + "/control.sock";
  ASSERT_GT(path.size(), sizeof(sockaddr_un::sun_path));
  auto region = Region::open("memfd:", {.create = true});
  ASSERT_TRUE(region);
  control::ServerOptions options;
  options.socket_path = path;
  control::Dispatcher dispatcher(**region, {});
  auto server = control::ControlServer::start(dispatcher, options);
  ASSERT_TRUE(server) << server.error().message();
  auto client = Client::connect(path);
  ASSERT_TRUE(client) << client.error().message();
  EXPECT_TRUE((*client)->execute("query-namespaces"));
}

}  // namespace
}  // namespace rawdax
