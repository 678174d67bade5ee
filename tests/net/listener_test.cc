// net::Listener: address specs, the bound address, and peer naming.
#include "net/listener.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <string>

#include "net/unix_socket.h"
#include "test_util.h"

namespace rawdax::net {
namespace {

using ::rawdax::testing::ScratchDir;

TEST(ListenerTest, PortZeroBindsAFreePortAndAddressTellsWhich) {
  auto l = Listener::open("127.0.0.1:0", "test");
  ASSERT_TRUE(l) << l.error().message();
  EXPECT_FALSE(l->is_unix());
  EXPECT_EQ(l->host(), "127.0.0.1");
  ASSERT_NE(l->port(), 0);
  EXPECT_EQ(l->address(), "127.0.0.1:" + std::to_string(l->port()));
  // The port is really bound: a second listener on it is refused.
  auto again = Listener::open(l->address(), "test");
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), std::errc::address_in_use);
}

TEST(ListenerTest, MalformedSpecsAreEinvalNamingTheServer) {
  for (const char* bad : {"nohost", ":80", "127.0.0.1:", "127.0.0.1:99999", "127.0.0.1:x",
                          "127.0.0.1:123456", "[]:80", "unix:"}) {
    auto l = Listener::open(bad, "NBD");
    ASSERT_FALSE(l) << bad;
    EXPECT_EQ(l.error().code(), std::errc::invalid_argument) << bad;
    EXPECT_NE(l.error().message().find("NBD address '" + std::string(bad) + "'"),
              std::string::npos)
        << l.error().message();
  }
}

// "[V6]:PORT" is parsed as IPv6: it binds ::1, or (on a host without IPv6)
// fails in the socket calls, never as a malformed spec.
TEST(ListenerTest, BracketedIpv6IsParsedAsIpv6) {
  auto l = Listener::open("[::1]:0", "test");
  if (l) {
    EXPECT_EQ(l->host(), "[::1]");
    EXPECT_NE(l->port(), 0);
    EXPECT_EQ(l->address(), "[::1]:" + std::to_string(l->port()));
  } else {
    EXPECT_NE(l.error().code(), std::errc::invalid_argument) << l.error().message();
  }
}

TEST(ListenerTest, UnixSpecsListenAtThePath) {
  ScratchDir dir(::rawdax::testing::tmpfs_parent());
  const std::string path = dir.path() + "/s.sock";
  auto l = Listener::open("unix:" + path, "test");
  ASSERT_TRUE(l) << l.error().message();
  EXPECT_TRUE(l->is_unix());
  EXPECT_EQ(l->unix_path(), path);
  EXPECT_EQ(l->address(), "unix:" + path);
  auto client = connect_unix(path);
  ASSERT_TRUE(client) << client.error().message();
  internal::UniqueFd accepted(::accept4(l->fd(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(accepted.valid());
  EXPECT_EQ(peer_name(accepted.get()), "unix peer pid " + std::to_string(::getpid()));
  auto cred = peer_credentials(accepted.get());
  ASSERT_TRUE(cred) << cred.error().message();
  EXPECT_EQ(cred->pid, ::getpid());
  EXPECT_EQ(cred->uid, ::geteuid());
}

TEST(ListenerTest, TcpPeersAreNamedByTheirAddress) {
  auto l = Listener::open("127.0.0.1:0", "test");
  ASSERT_TRUE(l) << l.error().message();
  internal::UniqueFd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(l->port());
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(client.get(), reinterpret_cast<sockaddr*>(&to), sizeof to), 0);
  sockaddr_in own{};
  socklen_t len = sizeof own;
  ASSERT_EQ(::getsockname(client.get(), reinterpret_cast<sockaddr*>(&own), &len), 0);
  internal::UniqueFd accepted(::accept4(l->fd(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(accepted.valid());
  EXPECT_EQ(peer_name(accepted.get()), "127.0.0.1:" + std::to_string(ntohs(own.sin_port)));
  EXPECT_FALSE(peer_credentials(-1));
}

}  // namespace
}  // namespace rawdax::net
