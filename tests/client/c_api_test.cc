// The C interface, driven from a C translation unit (c_api_check.c).
#include <cstring>
#include <gtest/gtest.h>

#include "daemon/control_test_util.h"
#include "rawdax/client_c.h"

extern "C" int rawdax_c_api_check(const char* socket_path, char* message, size_t message_size);

namespace rawdax {
namespace {

TEST(ControlCApiTest, ConnectExecuteOpenReleaseFromC) {
  ::rawdax::testing::DaemonFixture daemon(::rawdax::testing::TestMedia::kTmpfs);
  char message[512] = "";
  ASSERT_EQ(rawdax_c_api_check(daemon.socket_path().c_str(), message, sizeof message), 0)
      << message;
  // The C side's store is in the daemon's namespace.
  auto dev = daemon.region().open_device("vm1");
  ASSERT_TRUE(dev);
  char got[7] = {};
  ASSERT_TRUE((*dev)->read(512, std::as_writable_bytes(std::span(got))));
  EXPECT_EQ(std::memcmp(got, "from C", 7), 0);
  // And the C side released it: an exclusive open from here succeeds.
  auto client = Client::connect(daemon.socket_path());
  ASSERT_TRUE(client);
  EXPECT_TRUE((*client)->open_namespace("vm1", Access::ReadWrite, true));
}

TEST(ControlCApiTest, ConnectFailureIsNegativeErrno) {
  ::rawdax::testing::ScratchDir dir(::rawdax::testing::tmpfs_parent());
  rawdax_client* client = reinterpret_cast<rawdax_client*>(1);
  int rc = rawdax_client_connect((dir.path() + "/none.sock").c_str(), &client);
  EXPECT_EQ(rc, -ENOENT);
  EXPECT_EQ(client, nullptr);
}

}  // namespace
}  // namespace rawdax
