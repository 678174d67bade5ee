// The servers' Unix socket policy (net/unix_socket.h), and that both
// servers follow it: the NBD export and the control daemon's socket.
#include "net/unix_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <string>

#include "daemon/server.h"
#include "net/listener.h"
#include "rawdax/nbd_server.h"
#include "rawdax/region.h"
#include "test_util.h"

namespace rawdax::net {
namespace {

using ::rawdax::testing::ScratchDir;

// A connection to `path` is accepted by `listener`.
void expect_accepts(int listener, const std::string& path) {
  auto client = connect_unix(path);
  ASSERT_TRUE(client) << client.error().message();
  internal::UniqueFd accepted(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
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

// The first server at `path` still answers: a client gets `greeting_size`
// bytes of greeting.
void expect_greets(const std::string& path, size_t greeting_size) {
  auto client = connect_unix(path);
  ASSERT_TRUE(client) << client.error().message();
  timeval tv{10, 0};  // never hang the test on a silent server
  ::setsockopt(client->get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string got(greeting_size, '\0');
  size_t n = 0;
  while (n < got.size()) {
    ssize_t r = ::recv(client->get(), got.data() + n, got.size() - n, 0);
    if (r <= 0) break;
    n += static_cast<size_t>(r);
  }
  EXPECT_EQ(n, greeting_size) << "the first server no longer serves at " << path;
}

// Both servers take the policy: a second NBD export or control daemon on a
// path where one serves is refused, and the first goes on serving there.
TEST(UnixSocketTest, NbdAndControlRefuseASecondServerOnTheirPath) {
  ScratchDir dir(::rawdax::testing::tmpfs_parent());
  auto region = Region::open("memfd:", {.create = true});
  ASSERT_TRUE(region) << region.error().message();

  const std::string nbd_path = dir.path() + "/nbd.sock";
  auto nbd = NbdServer::start(**region, {.listen = "unix:" + nbd_path, .read_only = false, .log = {}});
  ASSERT_TRUE(nbd) << nbd.error().message();
  auto nbd_again = NbdServer::start(**region, {.listen = "unix:" + nbd_path, .read_only = false, .log = {}});
  ASSERT_FALSE(nbd_again);
  EXPECT_EQ(nbd_again.error().code(), std::errc::address_in_use);
  EXPECT_NE(nbd_again.error().message().find("NBD socket " + nbd_path), std::string::npos)
      << nbd_again.error().message();
  expect_greets(nbd_path, 18);  // NBDMAGIC, IHAVEOPT, handshake flags

  const std::string control_path = dir.path() + "/control.sock";
  control::Dispatcher dispatcher(**region, {});
  auto control = control::ControlServer::start(dispatcher, {.socket_path = control_path});
  ASSERT_TRUE(control) << control.error().message();
  auto control_again = control::ControlServer::start(dispatcher, {.socket_path = control_path});
  ASSERT_FALSE(control_again);
  EXPECT_EQ(control_again.error().code(), std::errc::address_in_use);
  EXPECT_NE(control_again.error().message().find("control socket " + control_path),
            std::string::npos)
      << control_again.error().message();
  expect_greets(control_path, std::string_view("{\"rawdax\":").size());

  // The first servers remove their socket files when they go.
  nbd->reset();
  control->reset();
  struct stat st;
  EXPECT_NE(::lstat(nbd_path.c_str(), &st), 0);
  EXPECT_NE(::lstat(control_path.c_str(), &st), 0);
}

// A listener removes its socket file when it closes, but not a socket
// another server has put at the path since.
TEST(UnixSocketTest, AListenerRemovesOnlyItsOwnSocketFile) {
  ScratchDir dir(::rawdax::testing::tmpfs_parent());
  const std::string path = dir.path() + "/s.sock";
  {
    auto own = Listener::open("unix:" + path, "test");
    ASSERT_TRUE(own) << own.error().message();
    struct stat st;
    ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  }
  struct stat st;
  EXPECT_NE(::lstat(path.c_str(), &st), 0) << "the closed listener left its socket file";

  auto old = Listener::open("unix:" + path, "test");
  ASSERT_TRUE(old) << old.error().message();
  ASSERT_EQ(::unlink(path.c_str()), 0);  // someone removed it ...
  auto replacing = Listener::open("unix:" + path, "test");  // ... and serves there now
  ASSERT_TRUE(replacing) << replacing.error().message();
  old->close();
  ASSERT_EQ(::lstat(path.c_str(), &st), 0) << "closing the old listener removed the new socket";
  expect_accepts(replacing->fd(), path);
}

}  // namespace
}  // namespace rawdax::net
