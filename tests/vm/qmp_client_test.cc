// QmpClient against a real QEMU (no guest: -machine none), and its errors.
#include "vm/qmp_client.h"

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

TEST(QmpClient, TalksToQemu) {
  if (std::system("command -v qemu-system-x86_64 >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "qemu-system-x86_64 not installed (make deps installs it)";
  }
  ::rawdax::testing::ScratchDir dir(::rawdax::testing::tmpfs_parent());
  std::string sock = dir.path() + "/qmp.sock";
  std::string qmp = "unix:" + sock + ",server=on,wait=off";
  const char* argv[] = {"qemu-system-x86_64", "-machine", "none", "-nographic", "-monitor",
                        "none", "-serial", "none", "-qmp", qmp.c_str(), nullptr};
  pid_t pid = -1;
  ASSERT_EQ(posix_spawnp(&pid, argv[0], nullptr, nullptr, const_cast<char**>(argv), environ), 0);
  struct Reap {
    pid_t pid;
    ~Reap() {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  } reap{pid};
  for (int i = 0; i < 200 && !std::filesystem::exists(sock); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
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

TEST(QmpClient, MissingSocketIsAClearError) {
  auto client = QmpClient::connect("/nonexistent/qmp.sock");
  ASSERT_FALSE(client);
  EXPECT_NE(client.error().message().find("/nonexistent/qmp.sock"), std::string::npos);
}

}  // namespace
}  // namespace rawdax::internal
