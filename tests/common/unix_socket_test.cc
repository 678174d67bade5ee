// The servers' Unix socket policy (common/unix_socket.h), and that both
// servers follow it: the NBD listener and the control daemon's socket.
#include "common/unix_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <string>

#include "control/protocol.h"
#include "export/listener.h"
#include "test_util.h"

namespace rawdax::internal {
namespace {

using ::rawdax::testing::ScratchDir;

// A connection to `path` is accepted by `listener`.
void expect_accepts(int listener, const std::string& path) {
  auto client = connect_unix(path);
  ASSERT_TRUE(client) << client.error().message();
  UniqueFd accepted(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
  EXPECT_TRUE(accepted.valid()) << "the first server no longer accepts at " << path;
}

TEST(UnixSocketTest, ASecondServerOnALivePathIsRefusedAndTheFirstGoesOn) {
  ScratchDir dir(::rawdax::testing::tmpfs_parent());
  const std::string path = dir.path() + "/s.sock";
  auto first = listen_unix(path, 4, "test socket");
  ASSERT_TRUE(first) << first.error().message();
  auto second = listen_unix(path, 4, "test socket");
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code(), std::errc::address_in_use);
  EXPECT_NE(second.error().message().find(path), std::string::npos) << second.error().message();
  expect_accepts(first->get(), path);
}

TEST(UnixSocketTest, AStaleSocketIsReplacedAndAnyOtherFileRefused) {
  ScratchDir dir(::rawdax::testing::tmpfs_parent());
  const std::string path = dir.path() + "/s.sock";
  {
    auto dead = listen_unix(path, 4, "test socket");
    ASSERT_TRUE(dead) << dead.error().message();
  }  // closed, its file left behind: nobody accepts there
  struct stat st;
  ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  auto next = listen_unix(path, 4, "test socket");
  ASSERT_TRUE(next) << next.error().message();
  expect_accepts(next->get(), path);

  const std::string file = dir.path() + "/plain";
  std::ofstream(file) << "keep me";
  auto refused = listen_unix(file, 4, "test socket");
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), std::errc::file_exists);
  std::ifstream in(file);
  std::string kept;
  std::getline(in, kept);
  EXPECT_EQ(kept, "keep me");
}

TEST(UnixSocketTest, ModeIs0600AndLongPathsWork) {
  ScratchDir dir(::rawdax::testing::tmpfs_parent());
  const std::string deep = dir.path() + "/" + std::string(60, 'd') + "/" + std::string(60, 'e');
  std::filesystem::create_directories(deep);
  const std::string path = deep + "/s.sock";
  ASSERT_GE(path.size(), sizeof(sockaddr_un{}.sun_path));
  auto server = listen_unix(path, 4, "test socket");
  ASSERT_TRUE(server) << server.error().message();
  struct stat st;
  ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  expect_accepts(server->get(), path);
}

// Both servers take the policy: a second NBD listener or control socket on
// a path where one serves is refused, and the first keeps its socket.
TEST(UnixSocketTest, NbdAndControlRefuseASecondServerOnTheirPath) {
  ScratchDir dir(::rawdax::testing::tmpfs_parent());
  const std::string nbd_path = dir.path() + "/nbd.sock";
  auto nbd = nbd::Listener::open("unix:" + nbd_path);
  ASSERT_TRUE(nbd) << nbd.error().message();
  auto nbd_again = nbd::Listener::open("unix:" + nbd_path);
  ASSERT_FALSE(nbd_again);
  EXPECT_EQ(nbd_again.error().code(), std::errc::address_in_use);
  expect_accepts(nbd->fd(), nbd_path);

  const std::string control_path = dir.path() + "/control.sock";
  auto control = control::listen_unix(control_path, 4);
  ASSERT_TRUE(control) << control.error().message();
  auto control_again = control::listen_unix(control_path, 4);
  ASSERT_FALSE(control_again);
  EXPECT_EQ(control_again.error().code(), std::errc::address_in_use);
  expect_accepts(control->get(), control_path);
}

}  // namespace
}  // namespace rawdax::internal
