// The control socket across processes: fds passed to a forked client map the
// daemon's bytes (read back through the block face and NBD), force-destroy revokes them (SIGBUS), and a client killed
// while holding a freeze leaves the daemon serving.
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <gtest/gtest.h>
#include <thread>
#include <vector>

#include "control/control_test_util.h"
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

class ControlProcessTest : public ::testing::TestWithParam<TestMedia> {
 protected:
  DaemonFixture daemon_{GetParam()};
};

TEST_P(ControlProcessTest, ChildStoresThroughPassedFdDaemonReadsThem) {
  const uint64_t offset = 8192;
  const auto bytes = pattern(3000, 11);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto client = Client::connect(daemon_.socket_path());
    if (!client) _exit(10);
    auto ns = (*client)->open_namespace("vm1", Access::ReadWrite);
    if (!ns) _exit(11);
    auto m = ns->map(offset, bytes.size());
    if (!m) _exit(12);
    std::memcpy(m->data(), bytes.data(), bytes.size());  // plain stores
    _exit(0);
  }
  ASSERT_EQ(wait_child(child), 0);
  auto dev = daemon_.region().open_device("vm1");
  ASSERT_TRUE(dev);
  std::vector<std::byte> got(bytes.size());
  ASSERT_TRUE((*dev)->read(offset, got));
  EXPECT_EQ(got, bytes);
}

// The same stores, read back through the daemon's NBD export of the region
// (nbdcopy over a unix socket).
TEST_P(ControlProcessTest, ChildStoresThroughPassedFdNbdReadsThem) {
  RAWDAX_REQUIRE_PROGRAM("nbdcopy");
  ::rawdax::testing::ScratchDir dir(::rawdax::testing::tmpfs_parent());
  auto nbd = NbdServer::start(daemon_.region(),
                              {.listen = "unix:" + dir.path() + "/nbd.sock", .log = nullptr});
  ASSERT_TRUE(nbd) << nbd.error().message();
  const uint64_t offset = 12345;
  const auto bytes = pattern(5000, 23);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Stores only (no Client thread in a child of a multi-threaded process).
    auto fd = control::connect_unix(daemon_.socket_path());
    if (!fd) _exit(10);
    control::LineReader reader(control::kMaxReplyLine);
    if (!reader.read_line(fd->get())) _exit(11);
    if (!control::send_line(fd->get(), R"({"execute":"open-namespace","arguments":{"name":"vm1"}})")) {
      _exit(12);
    }
    if (!reader.read_line(fd->get()) || reader.fds().empty()) _exit(13);
    void* p = ::mmap(nullptr, 32768, PROT_READ | PROT_WRITE, MAP_SHARED,
                     reader.fds().front().get(), 0);
    if (p == MAP_FAILED) _exit(14);
    std::memcpy(static_cast<std::byte*>(p) + offset, bytes.data(), bytes.size());
    _exit(0);
  }
  ASSERT_EQ(wait_child(child), 0);
  std::string out = dir.path() + "/copy.img";
  std::string cmd = "timeout 60 nbdcopy 'nbd+unix:///vm1?socket=" + dir.path() + "/nbd.sock' " +
                    out + " >" + dir.path() + "/nbdcopy.log 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << ::rawdax::testing::slurp_file(dir.path() + "/nbdcopy.log");
  std::string image = ::rawdax::testing::slurp_file(out);
  ASSERT_GE(image.size(), offset + bytes.size());
  EXPECT_EQ(std::memcmp(image.data() + offset, bytes.data(), bytes.size()), 0)
      << "the NBD export does not show the client's stores";
  (*nbd)->stop();
}

TEST_P(ControlProcessTest, DaemonWritesChildSeesThemThroughReadOnlyFd) {
  const auto bytes = pattern(5000, 77);
  auto dev = daemon_.region().open_device("vm1");
  ASSERT_TRUE(dev);
  ASSERT_TRUE((*dev)->write(100, bytes));
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto client = Client::connect(daemon_.socket_path());
    if (!client) _exit(10);
    auto ns = (*client)->open_namespace("vm1", Access::ReadOnly);
    if (!ns) _exit(11);
    auto m = ns->map(100, bytes.size());
    if (!m) _exit(12);
    if (std::memcmp(m->data(), bytes.data(), bytes.size()) != 0) _exit(13);
    // Read-only: the fd cannot be mapped for writing.
    void* w = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, ns->fd(), 0);
    _exit(w == MAP_FAILED ? 0 : 14);
  }
  EXPECT_EQ(wait_child(child), 0);
}

TEST_P(ControlProcessTest, ForceDestroyRevokesClientMappingsWithSigbus) {
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(ready[0]);
    auto client = Client::connect(daemon_.socket_path());
    if (!client) _exit(10);
    auto ns = (*client)->open_namespace("vm1", Access::ReadWrite);
    if (!ns) _exit(11);
    auto m = ns->map(0, 4096);
    if (!m) _exit(12);
    volatile std::byte* p = m->data();
    p[10] = std::byte{5};  // works before the revocation
    if (::write(ready[1], "r", 1) != 1) _exit(13);
    auto event = (*client)->wait_event(std::chrono::seconds(10));
    if (!event || event->name != "NAMESPACE_REVOKED") _exit(14);
    // The event comes just before the truncate, so the first stores may
    // still land; within a bounded time one must fault.
    int sig = 0;
    for (int i = 0; i < 500 && sig == 0; ++i) {
      sig = ::rawdax::testing::run_catching_faults([&] { p[10] = std::byte{6}; });
      if (sig == 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    _exit(sig == SIGBUS ? 0 : 16);
  }
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
  ASSERT_TRUE(forced) << forced.error().message();
  EXPECT_EQ(wait_child(child), 0) << "the child's store after revocation did not raise SIGBUS";
  EXPECT_FALSE(daemon_.region().find("vm1"));
}

TEST_P(ControlProcessTest, ClientKilledWhileHoldingFreezeThawsAndDaemonServes) {
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(ready[0]);
    auto client = Client::connect(daemon_.socket_path());
    if (!client) _exit(10);
    if (!(*client)->execute("freeze", R"({"name":"vm1","timeout":5})")) _exit(11);
    if (!(*client)->open_namespace("vm1", Access::ReadWrite, true)) _exit(12);
    if (::write(ready[1], "f", 1) != 1) _exit(13);
    for (;;) ::pause();
  }
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

TEST(ControlPeerTest, OtherUsersAreRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to connect as another uid";
  DaemonFixture daemon(TestMedia::kMemfd);
  // Let the other uid past the file mode, so the credential check decides.
  ASSERT_EQ(::chmod(daemon.socket_path().c_str(), 0666), 0);
  ASSERT_EQ(::chmod(std::filesystem::path(daemon.socket_path()).parent_path().c_str(), 0755), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) _exit(10);
    auto client = Client::connect(daemon.socket_path());
    _exit(client ? 11 : 0);
  }
  EXPECT_EQ(wait_child(child), 0);
  EXPECT_TRUE(daemon.logged("refused control connection"));
  // The owner still gets in.
  EXPECT_TRUE(Client::connect(daemon.socket_path()));
}

}  // namespace
}  // namespace rawdax
