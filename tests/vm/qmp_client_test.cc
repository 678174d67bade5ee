// QmpClient against a real QEMU (no guest: -machine none), and its errors.
#include "vm/qmp_client.h"
#include "vm/attached_vms.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <gtest/gtest.h>
#include <thread>

#include "test_util.h"

extern char** environ;

namespace rawdax::internal {
namespace {

// QEMU with no guest and a QMP socket; killed on destruction.
class BareQemu {
 public:
  BareQemu() {
    if (std::system("command -v qemu-system-x86_64 >/dev/null 2>&1") != 0) return;
    // Two QMP monitors: one for the code under test, one for the test's
    // own status checks (each takes one client at a time).
    std::string qmp = "unix:" + sock_ + ",server=on,wait=off";
    std::string probe = "unix:" + probe_ + ",server=on,wait=off";
    const char* argv[] = {"qemu-system-x86_64", "-machine", "none", "-nographic",
                          "-monitor", "none", "-serial", "none", "-qmp", qmp.c_str(),
                          "-qmp", probe.c_str(), nullptr};
    if (posix_spawnp(&pid_, argv[0], nullptr, nullptr, const_cast<char**>(argv), environ) != 0) {
      pid_ = -1;
      return;
    }
    for (int i = 0; i < 200 && !std::filesystem::exists(probe_); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  ~BareQemu() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  bool running() const { return pid_ > 0; }
  const std::string& socket() const { return sock_; }
  std::string status() {
    auto client = QmpClient::connect(probe_);
    if (!client) return client.error().message();
    auto s = client->status();
    return s ? *s : s.error().message();
  }

 private:
  ::rawdax::testing::ScratchDir dir_{::rawdax::testing::tmpfs_parent()};
  std::string sock_ = dir_.path() + "/qmp.sock", probe_ = dir_.path() + "/probe.sock";
  pid_t pid_ = -1;
};

TEST(QmpClient, TalksToQemu) {
  BareQemu qemu;
  if (!qemu.running()) GTEST_FAIL() << "qemu-system-x86_64 not installed (make deps installs it)";
  const std::string& sock = qemu.socket();
  auto client = QmpClient::connect(sock);
  ASSERT_TRUE(client) << client.error().message();
  auto status = client->status();
  ASSERT_TRUE(status) << status.error().message();
  EXPECT_EQ(*status, "running");
  ASSERT_TRUE(client->stop());
  EXPECT_EQ(*client->status(), "paused");
  ASSERT_TRUE(client->cont());
  EXPECT_EQ(*client->status(), "running");
  auto unknown = client->execute("no-such-command");
  ASSERT_FALSE(unknown);
  EXPECT_NE(unknown.error().message().find("CommandNotFound"), std::string::npos)
      << unknown.error().message();
  auto bad_args = client->execute("query-status", "[1]");
  ASSERT_FALSE(bad_args);
  EXPECT_TRUE(client->status());  // the connection still works
}

TEST(AttachedVms, PausesNestAndResumeWithTheLast) {
  BareQemu qemu;
  if (!qemu.running()) GTEST_FAIL() << "qemu-system-x86_64 not installed (make deps installs it)";
  AttachedVms vms;
  auto none = vms.pause("vm1");  // nothing attached: nothing to pause
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->paused());
  ASSERT_TRUE(vms.attach("vm1", qemu.socket()));
  EXPECT_EQ(vms.qmp_path("vm1"), qemu.socket());
  {
    auto outer = vms.pause("vm1");
    ASSERT_TRUE(outer) << outer.error().message();
    EXPECT_TRUE(outer->paused());
    EXPECT_EQ(qemu.status(), "paused");
    {
      auto inner = vms.pause("vm1");
      ASSERT_TRUE(inner);
    }
    EXPECT_EQ(qemu.status(), "paused");  // the outer pause still holds
  }
  EXPECT_EQ(qemu.status(), "running");
  ASSERT_TRUE(vms.detach("vm1"));
  EXPECT_FALSE(vms.detach("vm1"));
  auto bad = vms.attach("vm2", "/nonexistent/qmp.sock");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("vm2"), std::string::npos);
  EXPECT_TRUE(vms.list().empty());
}

TEST(QmpClient, ABusySocketTimesOutClearly) {
  BareQemu qemu;
  if (!qemu.running()) GTEST_FAIL() << "qemu-system-x86_64 not installed (make deps installs it)";
  auto first = QmpClient::connect(qemu.socket());
  ASSERT_TRUE(first) << first.error().message();
  auto second = QmpClient::connect(qemu.socket(), std::chrono::milliseconds(300));
  ASSERT_FALSE(second);
  EXPECT_NE(second.error().message().find(qemu.socket()), std::string::npos)
      << second.error().message();
  EXPECT_TRUE(first->status());
}

TEST(QmpClient, MissingSocketIsAClearError) {
  auto client = QmpClient::connect("/nonexistent/qmp.sock");
  ASSERT_FALSE(client);
  EXPECT_NE(client.error().message().find("/nonexistent/qmp.sock"), std::string::npos);
}

}  // namespace
}  // namespace rawdax::internal
