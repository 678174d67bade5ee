// The control socket across processes: fds passed to a client process map
// the daemon's bytes (read back through the block face and NBD), a forced
// destroy revokes them (SIGBUS; on a carved region it is refused while they
// are held, since the device's fd cannot be revoked), and a client killed
// while holding a freeze
// leaves the daemon serving. The clients are this binary re-executed.
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <map>
#include <string>
#include <cstring>
#include <filesystem>
#include <gtest/gtest.h>
#include <thread>
#include <vector>

#include "daemon/control_test_util.h"
#include "export/nbd_fixture.h"
#include "fault_catcher.h"

namespace rawdax {
namespace {

using ::rawdax::testing::DaemonFixture;
using ::rawdax::testing::TestMedia;
using ::rawdax::testing::wait_byte;
using ::rawdax::testing::wait_child;

// A byte pattern that differs per offset and per test, so stale bytes show.
std::vector<std::byte> pattern(size_t n, unsigned seed) {
  std::vector<std::byte> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = std::byte(static_cast<uint8_t>(i * 31 + seed));
  return out;
}

constexpr uint64_t kStoreOffset = 8192, kRawStoreOffset = 12345, kReadOffset = 100;
const std::vector<std::byte> kStoreBytes = pattern(3000, 11);
const std::vector<std::byte> kRawStoreBytes = pattern(5000, 23);
const std::vector<std::byte> kReadBytes = pattern(5000, 77);

// --- Child processes --------------------------------------------------------
// Each returns its exit code; `ready` is a pipe to write one byte to once
// the parent may go on (-1 if unused).

// Stores kStoreBytes through a Client mapping.
int child_store(const std::string& socket, int) {
  auto client = Client::connect(socket);
  if (!client) return 10;
  auto ns = (*client)->open_namespace("vm1", Access::ReadWrite);
  if (!ns) return 11;
  auto m = ns->map(kStoreOffset, kStoreBytes.size());
  if (!m) return 12;
  std::memcpy(m->data(), kStoreBytes.data(), kStoreBytes.size());  // plain stores
  return 0;
}

// Stores kRawStoreBytes through the raw protocol and its own mmap of the fd.
int child_raw_store(const std::string& socket, int) {
  auto fd = control::connect_unix(socket);
  if (!fd) return 10;
  control::LineReader reader(control::kMaxReplyLine);
  if (!reader.read_line(fd->get())) return 11;
  const char* open = R"({"execute":"open-namespace","arguments":{"name":"vm1"}})";
  if (!control::send_line(fd->get(), open)) return 12;
  auto reply = reader.read_line(fd->get());
  if (!reply || reader.fds().empty()) return 13;
  // The namespace starts at the reply's offset of the fd (a carved extent).
  auto offset = ::rawdax::testing::open_reply_offset(*reply);
  if (!offset) return 13;
  void* p = ::mmap(nullptr, 32768, PROT_READ | PROT_WRITE, MAP_SHARED,
                   reader.fds().front().get(), static_cast<off_t>(*offset));
  if (p == MAP_FAILED) return 14;
  std::memcpy(static_cast<std::byte*>(p) + kRawStoreOffset, kRawStoreBytes.data(),
              kRawStoreBytes.size());
  return 0;
}

// Reads kReadBytes through a read-only open, and cannot map it for writing.
int child_read_only(const std::string& socket, int) {
  auto client = Client::connect(socket);
  if (!client) return 10;
  auto ns = (*client)->open_namespace("vm1", Access::ReadOnly);
  if (!ns) return 11;
  auto m = ns->map(kReadOffset, kReadBytes.size());
  if (!m) return 12;
  if (std::memcmp(m->data(), kReadBytes.data(), kReadBytes.size()) != 0) return 13;
  void* w = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, ns->fd(), 0);
  return w == MAP_FAILED ? 0 : 14;
}

// Maps vm1, signals `ready`, waits for NAMESPACE_REVOKED; then a store must
// raise SIGBUS within a bounded time.
int child_revoked(const std::string& socket, int ready) {
  auto client = Client::connect(socket);
  if (!client) return 10;
  auto ns = (*client)->open_namespace("vm1", Access::ReadWrite);
  if (!ns) return 11;
  auto m = ns->map(0, 4096);
  if (!m) return 12;
  volatile std::byte* p = m->data();
  p[10] = std::byte{5};  // works before the revocation
  if (::write(ready, "r", 1) != 1) return 13;
  auto event = (*client)->wait_event(std::chrono::seconds(10));
  if (!event || event->name != "NAMESPACE_REVOKED") return 14;
  // The event comes just before the truncate, so the first stores may
  // still land; within a bounded time one must fault.
  int sig = 0;
  for (int i = 0; i < 500 && sig == 0; ++i) {
    sig = ::rawdax::testing::run_catching_faults([&] { p[10] = std::byte{6}; });
    if (sig == 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return sig == SIGBUS ? 0 : 16;
}

// Freezes vm1 and holds it exclusively, signals `ready`, and waits to be killed.
int child_freeze_holder(const std::string& socket, int ready) {
  auto client = Client::connect(socket);
  if (!client) return 10;
  if (!(*client)->execute("freeze", R"({"name":"vm1","timeout":5})")) return 11;
  if (!(*client)->open_namespace("vm1", Access::ReadWrite, true)) return 12;
  if (::write(ready, "f", 1) != 1) return 13;
  for (;;) ::pause();
}

// Connects as another uid: refused (exit 0) or let in (11).
int child_other_user(const std::string& socket, int) {
  if (::setgid(65534) != 0 || ::setuid(65534) != 0) return 10;
  return Client::connect(socket) ? 11 : 0;
}

const std::map<std::string, int (*)(const std::string&, int)> kChildren = {
    {"store", child_store},           {"raw-store", child_raw_store},
    {"read-only", child_read_only},   {"revoked", child_revoked},
    {"freeze-holder", child_freeze_holder}, {"other-user", child_other_user}};

// Runs the child named by RAWDAX_PROCESS_CHILD, before main(), and exits.
[[maybe_unused]] const bool kChildRan = [] {
  const char* name = std::getenv("RAWDAX_PROCESS_CHILD");
  if (name == nullptr) return false;
  const char* socket = std::getenv("RAWDAX_PROCESS_SOCKET");
  const char* ready = std::getenv("RAWDAX_PROCESS_READY");
  auto child = kChildren.find(name);
  if (socket == nullptr || ready == nullptr || child == kChildren.end()) ::_exit(2);
  ::_exit(child->second(socket, std::atoi(ready)));
}();

// Starts child `name` against `socket`; it inherits `ready` (a pipe's write end).
pid_t spawn_child(const std::string& name, const std::string& socket, int ready = -1) {
  return ::rawdax::testing::spawn_self({"RAWDAX_PROCESS_CHILD=" + name,
                                        "RAWDAX_PROCESS_SOCKET=" + socket,
                                        "RAWDAX_PROCESS_READY=" + std::to_string(ready)},
                                       "RAWDAX_PROCESS_");
}

class ControlProcessTest : public ::testing::TestWithParam<TestMedia> {
 protected:
  DaemonFixture daemon_{GetParam()};
};

TEST_P(ControlProcessTest, ChildStoresThroughPassedFdDaemonReadsThem) {
  pid_t child = spawn_child("store", daemon_.socket_path());
  ASSERT_GT(child, 0);
  ASSERT_EQ(wait_child(child), 0);
  auto dev = daemon_.region().open_device("vm1");
  ASSERT_TRUE(dev);
  std::vector<std::byte> got(kStoreBytes.size());
  ASSERT_TRUE((*dev)->read(kStoreOffset, got));
  EXPECT_EQ(got, kStoreBytes);
}

// The same stores, read back through the daemon's NBD export of the region
// (nbdcopy over a unix socket).
TEST_P(ControlProcessTest, ChildStoresThroughPassedFdNbdReadsThem) {
  RAWDAX_REQUIRE_PROGRAM("nbdcopy");
  ::rawdax::testing::ScratchDir dir(::rawdax::testing::tmpfs_parent());
  auto nbd = NbdServer::start(daemon_.region(),
                              {.listen = "unix:" + dir.path() + "/nbd.sock", .log = nullptr});
  ASSERT_TRUE(nbd) << nbd.error().message();
  const uint64_t offset = kRawStoreOffset;
  const auto& bytes = kRawStoreBytes;
  pid_t child = spawn_child("raw-store", daemon_.socket_path());
  ASSERT_GT(child, 0);
  ASSERT_EQ(wait_child(child), 0);
  std::string out = dir.path() + "/copy.img";
  std::string cmd = "timeout 60 nbdcopy 'nbd+unix:///vm1?socket=" + dir.path() + "/nbd.sock' " +
                    out + " >" + dir.path() + "/nbdcopy.log 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0)
      << ::rawdax::testing::slurp_file(dir.path() + "/nbdcopy.log");
  std::string image = ::rawdax::testing::slurp_file(out);
  ASSERT_GE(image.size(), offset + bytes.size());
  EXPECT_EQ(std::memcmp(image.data() + offset, bytes.data(), bytes.size()), 0)
      << "the NBD export does not show the client's stores";
  (*nbd)->stop();
}

TEST_P(ControlProcessTest, DaemonWritesChildSeesThemThroughReadOnlyFd) {
  auto dev = daemon_.region().open_device("vm1");
  ASSERT_TRUE(dev);
  ASSERT_TRUE((*dev)->write(kReadOffset, kReadBytes));
  pid_t child = spawn_child("read-only", daemon_.socket_path());
  ASSERT_GT(child, 0);
  EXPECT_EQ(wait_child(child), 0);
}

TEST_P(ControlProcessTest, ForceDestroyRevokesClientMappingsWithSigbus) {
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t child = spawn_child("revoked", daemon_.socket_path(), ready[1]);
  ASSERT_GT(child, 0);
  ::close(ready[1]);
  ASSERT_TRUE(wait_byte(ready[0], std::chrono::seconds(10)));
  ::close(ready[0]);
  auto client = Client::connect(daemon_.socket_path());
  ASSERT_TRUE(client);
  auto busy = (*client)->execute("destroy-namespace", R"({"name":"vm1"})");
  ASSERT_FALSE(busy);
  EXPECT_EQ(busy.error().code(), std::errc::device_or_resource_busy);
  EXPECT_NE(busy.error().message().find(std::to_string(child)), std::string::npos)
      << busy.error().message();
  auto forced = (*client)->execute("destroy-namespace", R"({"name":"vm1","force":true})");
  if (GetParam() == TestMedia::kCarved) {
    // The child maps the carved device itself: nothing can revoke that, so
    // the extent is never freed under it, force or not; once its
    // connection closes the namespace goes.
    ASSERT_FALSE(forced);
    EXPECT_EQ(forced.error().code(), std::errc::device_or_resource_busy);
    EXPECT_NE(forced.error().message().find(std::to_string(child)), std::string::npos)
        << forced.error().message();
    EXPECT_NE(forced.error().message().find("cannot be revoked"), std::string::npos)
        << forced.error().message();
    EXPECT_TRUE(daemon_.region().find("vm1"));
    ::kill(child, SIGKILL);
    EXPECT_EQ(wait_child(child), 128 + SIGKILL);
    EXPECT_TRUE(::rawdax::testing::eventually([&] {
      return static_cast<bool>((*client)->execute("destroy-namespace", R"({"name":"vm1"})"));
    }));
  } else {
    ASSERT_TRUE(forced) << forced.error().message();
    EXPECT_EQ(wait_child(child), 0) << "the child's store after revocation did not raise SIGBUS";
  }
  EXPECT_FALSE(daemon_.region().find("vm1"));
}

TEST_P(ControlProcessTest, ClientKilledWhileHoldingFreezeThawsAndDaemonServes) {
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t child = spawn_child("freeze-holder", daemon_.socket_path(), ready[1]);
  ASSERT_GT(child, 0);
  ::close(ready[1]);
  ASSERT_TRUE(wait_byte(ready[0], std::chrono::seconds(10)));
  ::close(ready[0]);
  auto dev = daemon_.region().open_device("vm1");
  ASSERT_TRUE(dev);
  std::atomic<bool> written{false};
  std::thread writer([&] {
    std::byte b{9};
    EXPECT_TRUE((*dev)->write(0, std::span(&b, 1)));
    written = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(written.load()) << "the freeze did not hold block writes";
  ::kill(child, SIGKILL);
  EXPECT_EQ(wait_child(child), 128 + SIGKILL);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!written.load() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_TRUE(written.load()) << "the dead client's freeze was not thawed";
  writer.join();
  // Its exclusive open went with it, and the daemon goes on serving.
  auto client = Client::connect(daemon_.socket_path());
  ASSERT_TRUE(client);
  EXPECT_TRUE((*client)->open_namespace("vm1", Access::ReadWrite, true));
  EXPECT_TRUE((*client)->execute("freeze", R"({"name":"vm1"})"));
  EXPECT_TRUE((*client)->execute("thaw", R"({"name":"vm1"})"));
  EXPECT_TRUE(daemon_.logged("connection closed"));
}

INSTANTIATE_TEST_SUITE_P(Media, ControlProcessTest, RAWDAX_ALL_MEDIA,
                         ::rawdax::testing::param_name);

// Root: the child connects as another uid, and only root can become one
// (setuid needs CAP_SETUID); labelled `root`.
TEST(ControlPeerAsRoot, OtherUsersAreRefused) {
  ASSERT_EQ(::geteuid(), 0u) << "needs root to connect as another uid (ctest label root)";
  DaemonFixture daemon(TestMedia::kMemfd);
  // Let the other uid past the file mode, so the credential check decides.
  ASSERT_EQ(::chmod(daemon.socket_path().c_str(), 0666), 0);
  ASSERT_EQ(::chmod(std::filesystem::path(daemon.socket_path()).parent_path().c_str(), 0755), 0);
  pid_t child = spawn_child("other-user", daemon.socket_path());
  ASSERT_GT(child, 0);
  EXPECT_EQ(wait_child(child), 0);
  EXPECT_TRUE(daemon.logged("refused control connection"));
  // The owner still gets in.
  EXPECT_TRUE(Client::connect(daemon.socket_path()));
}

}  // namespace
}  // namespace rawdax
