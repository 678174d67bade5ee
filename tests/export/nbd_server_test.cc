// The NBD server at the byte level: handshake, options, transmission
// replies, pipelining, and what protocol corruption closes (only its own
// connection).
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "export/nbd_codec.h"
#include "export/nbd_fixture.h"
#include "export/nbd_wire.h"

namespace rawdax {
namespace {

using namespace ::rawdax::nbd;  // NOLINT: protocol constants read better bare in tests
using ::rawdax::testing::NbdFixture;
using ::rawdax::testing::RawClient;
using namespace ::rawdax::nbd::wire;  // NOLINT: the byte-level helpers

class NbdServerTest : public NbdFixture {};

TEST_P(NbdServerTest, HandshakeOptionsAndGo) {
  ASSERT_TRUE(region_->create_namespace({.name = "second", .size = 2 << 20}));
  start_server();
  RawClient c(socket_path());
  ASSERT_TRUE(c.connected());
  greet(c);

  // An unknown option gets ERR_UNSUP, and the next option is still parsed.
  ASSERT_TRUE(c.send(option(99, "junk")));
  OptReply unsup = read_opt_reply(c);
  EXPECT_EQ(unsup.option, 99u);
  EXPECT_EQ(unsup.type, kRepErrUnsup);

  ASSERT_TRUE(c.send(option(kOptList)));
  std::set<std::string> names;
  while (true) {
    OptReply r = read_opt_reply(c);
    ASSERT_TRUE(r.ok);
    if (r.type == kRepAck) break;
    ASSERT_EQ(r.type, kRepServer);
    names.insert(r.data.substr(4, load_u32(r.data.data())));
  }
  EXPECT_EQ(names, (std::set<std::string>{"default", "second"}));

  // Metadata contexts need structured replies first.
  std::string q = be32(7) + "default" + be32(1) + be32(15) + "base:allocation";
  ASSERT_TRUE(c.send(option(kOptSetMetaContext, q)));
  EXPECT_EQ(read_opt_reply(c).type, kRepErrInvalid);
  ASSERT_TRUE(c.send(option(kOptStructuredReply)));
  EXPECT_EQ(read_opt_reply(c).type, kRepAck);
  ASSERT_TRUE(c.send(option(kOptListMetaContext, be32(7) + "default" + be32(0))));
  OptReply listed = read_opt_reply(c);
  EXPECT_EQ(listed.type, kRepMetaContext);
  EXPECT_EQ(listed.data.substr(4), "base:allocation");
  EXPECT_EQ(read_opt_reply(c).type, kRepAck);
  ASSERT_TRUE(c.send(option(kOptSetMetaContext, q)));
  OptReply set = read_opt_reply(c);
  ASSERT_EQ(set.type, kRepMetaContext);
  EXPECT_EQ(load_u32(set.data.data()), kBaseAllocationId);
  EXPECT_EQ(read_opt_reply(c).type, kRepAck);

  // GO of a missing export fails politely; the session goes on.
  ASSERT_TRUE(c.send(option(kOptGo, info_payload("nope", {}))));
  OptReply unknown = read_opt_reply(c);
  EXPECT_EQ(unknown.type, kRepErrUnknown);
  EXPECT_NE(unknown.data.find("nope"), std::string::npos) << unknown.data;

  ASSERT_TRUE(c.send(option(kOptGo, info_payload("default", {kInfoName, kInfoDescription,
                                                              kInfoBlockSize}))));
  std::set<uint16_t> infos;
  while (true) {
    OptReply r = read_opt_reply(c);
    ASSERT_TRUE(r.ok);
    if (r.type == kRepAck) break;
    ASSERT_EQ(r.type, kRepInfo);
    uint16_t info = load_u16(r.data.data());
    infos.insert(info);
    if (info == kInfoExport) {
      EXPECT_EQ(load_u64(r.data.data() + 2), namespace_size());
      uint16_t flags = load_u16(r.data.data() + 10);
      for (uint16_t f : {kFlagHasFlags, kFlagSendFlush, kFlagSendFua, kFlagSendTrim,
                         kFlagSendWriteZeroes, kFlagSendFastZero, kFlagSendDf, kFlagSendCache,
                         kFlagCanMultiConn}) {
        EXPECT_TRUE(flags & f) << "flag " << f << " missing from " << flags;
      }
      EXPECT_FALSE(flags & kFlagReadOnly);
    } else if (info == kInfoName) {
      EXPECT_EQ(r.data.substr(2), "default");
    } else if (info == kInfoBlockSize) {
      EXPECT_EQ(load_u32(r.data.data() + 2), 512u);
      EXPECT_EQ(load_u32(r.data.data() + 6), 4096u);
      EXPECT_GE(load_u32(r.data.data() + 10), 32u << 20);
    }
  }
  EXPECT_EQ(infos, (std::set<uint16_t>{kInfoExport, kInfoName, kInfoDescription, kInfoBlockSize}));

  // Transmission with structured replies.
  ASSERT_TRUE(c.send(request(9, 1, 0, 4096)));
  Reply bad = read_reply(c);
  ASSERT_TRUE(bad.ok);
  EXPECT_EQ(bad.cookie, 1u);
  EXPECT_EQ(bad.type, kReplyTypeError);
  EXPECT_EQ(bad.error, kEnotsup);

  ASSERT_TRUE(c.send(request(kCmdWrite, 2, 4096, 4096, kCmdFlagFua) + std::string(4096, 'q')));
  Reply wrote = read_reply(c);
  EXPECT_EQ(wrote.cookie, 2u);
  EXPECT_EQ(wrote.error, 0u);
  ASSERT_TRUE(c.send(request(kCmdRead, 3, 4096, 4096, kCmdFlagDf)));
  Reply data = read_reply(c);
  ASSERT_TRUE(data.structured);
  EXPECT_EQ(data.type, kReplyTypeOffsetData);
  EXPECT_TRUE(data.flags & kReplyFlagDone);
  EXPECT_EQ(load_u64(data.payload.data()), 4096u);
  EXPECT_EQ(data.payload.substr(8), std::string(4096, 'q'));

  ASSERT_TRUE(c.send(request(kCmdBlockStatus, 4, 0, 1 << 20)));
  Reply status = read_reply(c);
  ASSERT_EQ(status.type, kReplyTypeBlockStatus);
  EXPECT_EQ(load_u32(status.payload.data()), kBaseAllocationId);
  ASSERT_GE(status.payload.size(), 4u + 16u);
  // [0, 4096) a hole, [4096, 8192) data: the page just written.
  EXPECT_EQ(load_u32(status.payload.data() + 4), 4096u);
  EXPECT_EQ(load_u32(status.payload.data() + 8), kStateHole | kStateZero);
  EXPECT_EQ(load_u32(status.payload.data() + 12), 4096u);
  EXPECT_EQ(load_u32(status.payload.data() + 16), 0u);

  ASSERT_TRUE(c.send(request(kCmdRead, 5, namespace_size(), 512)));
  Reply past = read_reply(c);
  EXPECT_EQ(past.type, kReplyTypeError);
  EXPECT_EQ(past.error, kEinval);

  ASSERT_TRUE(c.send(request(kCmdDisc, 6, 0, 0)));
  EXPECT_TRUE(c.closed_by_server());
}

TEST_P(NbdServerTest, ExportNameAndSimpleReplies) {
  start_server();
  {
    RawClient c(socket_path());
    greet(c, kClientFixedNewstyle);  // no NO_ZEROES: 124 zero bytes follow
    ASSERT_TRUE(c.send(option(kOptExportName, "default")));
    std::string reply = c.recv(134);
    ASSERT_EQ(reply.size(), 134u);
    EXPECT_EQ(load_u64(reply.data()), namespace_size());
    EXPECT_EQ(reply.substr(10), std::string(124, '\0'));
  }
  RawClient c(socket_path());
  greet(c);
  ASSERT_TRUE(c.send(option(kOptExportName, "default")));
  std::string reply = c.recv(10);
  ASSERT_EQ(reply.size(), 10u);
  uint16_t flags = load_u16(reply.data() + 8);
  EXPECT_FALSE(flags & kFlagSendDf) << "DF needs structured replies";

  // Simple replies; 1-byte granularity (the client never asked for sizes).
  ASSERT_TRUE(c.send(request(kCmdWrite, 10, 3, 5) + "hello"));
  EXPECT_EQ(read_reply(c).error, 0u);
  ASSERT_TRUE(c.send(request(kCmdRead, 11, 3, 5)));
  Reply r = read_reply(c);
  EXPECT_EQ(r.cookie, 11u);
  EXPECT_EQ(r.error, 0u);
  EXPECT_EQ(c.recv(5), "hello");
  ASSERT_TRUE(c.send(request(kCmdWrite, 12, namespace_size() - 2, 5) + "abcde"));
  Reply nospc = read_reply(c);
  EXPECT_EQ(nospc.cookie, 12u);
  EXPECT_EQ(nospc.error, kEnospc);
  ASSERT_TRUE(c.send(request(kCmdRead, 13, 0, 5, 1 << 7)));
  EXPECT_EQ(read_reply(c).error, kEinval);  // and no payload follows
  ASSERT_TRUE(c.send(request(kCmdBlockStatus, 14, 0, 4096)));
  EXPECT_EQ(read_reply(c).error, kEinval);  // no context negotiated
  ASSERT_TRUE(c.send(request(kCmdFlush, 15, 0, 0)));
  EXPECT_EQ(read_reply(c).error, 0u);
  ASSERT_TRUE(c.send(request(kCmdRead, 16, 3, 5)));
  EXPECT_EQ(read_reply(c).cookie, 16u);
  EXPECT_EQ(c.recv(5), "hello");

  server_->stop();  // joins the server's threads: their writes come before this read
  auto dev = open_device();
  std::string seen(5, '\0');
  ASSERT_TRUE(dev->read(3, std::as_writable_bytes(std::span(seen.data(), 5))));
  EXPECT_EQ(seen, "hello");
  std::string log = log_text();
  EXPECT_NE(log.find("WRITE offset " + std::to_string(namespace_size() - 2) + " length 5: ENOSPC"),
            std::string::npos)
      << log;
}

TEST_P(NbdServerTest, PipelinedRequestsAreAllAnswered) {
  start_server();
  RawClient c(socket_path());
  go(c, "default", /*structured=*/false);
  // 128 writes then 128 reads in one burst: a queue depth of 256.
  std::string burst;
  for (uint64_t i = 0; i < 128; ++i) {
    burst += request(kCmdWrite, i, i * 4096, 4096) + std::string(4096, static_cast<char>('a' + i % 26));
  }
  for (uint64_t i = 0; i < 128; ++i) burst += request(kCmdRead, 1000 + i, i * 4096, 4096);
  ASSERT_TRUE(c.send(burst));
  std::set<uint64_t> cookies;
  for (int i = 0; i < 256; ++i) {
    Reply r = read_reply(c);
    ASSERT_TRUE(r.ok) << i;
    EXPECT_EQ(r.error, 0u);
    cookies.insert(r.cookie);
    if (r.cookie >= 1000) {
      std::string data = c.recv(4096);
      EXPECT_EQ(data, std::string(4096, static_cast<char>('a' + (r.cookie - 1000) % 26)));
    }
  }
  EXPECT_EQ(cookies.size(), 256u);
}

TEST_P(NbdServerTest, GarbageClosesOnlyThatConnection) {
  start_server();
  RawClient good(socket_path());
  go(good, "default", /*structured=*/true);

  RawClient bad_option(socket_path());
  greet(bad_option);
  ASSERT_TRUE(bad_option.send(std::string(64, '\xee')));
  EXPECT_TRUE(bad_option.closed_by_server());

  RawClient bad_request(socket_path());
  go(bad_request, "default", /*structured=*/true);
  ASSERT_TRUE(bad_request.send(std::string(28, 'G')));
  EXPECT_TRUE(bad_request.closed_by_server());

  RawClient bad_flags(socket_path());
  greet(bad_flags, 0x80);
  EXPECT_TRUE(bad_flags.closed_by_server());

  RawClient bad_export(socket_path());
  greet(bad_export);
  ASSERT_TRUE(bad_export.send(option(kOptExportName, "missing")));
  EXPECT_TRUE(bad_export.closed_by_server());

  // The connection that behaved never noticed.
  ASSERT_TRUE(good.send(request(kCmdWrite, 1, 0, 512) + std::string(512, 'k')));
  EXPECT_EQ(read_reply(good).error, 0u);
  ASSERT_TRUE(good.send(request(kCmdRead, 2, 0, 512)));
  Reply r = read_reply(good);
  EXPECT_EQ(r.payload.substr(8), std::string(512, 'k'));
  RawClient fresh(socket_path());
  go(fresh, "default", /*structured=*/false);
  ASSERT_TRUE(fresh.send(request(kCmdFlush, 3, 0, 0)));
  EXPECT_EQ(read_reply(fresh).error, 0u);
  std::string log = log_text();
  EXPECT_NE(log.find("protocol corruption"), std::string::npos) << log;
  EXPECT_NE(log.find("missing"), std::string::npos) << log;
}

TEST_P(NbdServerTest, NamespaceCreatedLaterIsExported) {
  start_server();
  ASSERT_TRUE(region_->create_namespace({.name = "later", .size = 4 << 20}));
  RawClient c(socket_path());
  greet(c);
  ASSERT_TRUE(c.send(option(kOptGo, info_payload("later", {}))));
  OptReply r = read_opt_reply(c);
  ASSERT_EQ(r.type, kRepInfo);
  EXPECT_EQ(load_u64(r.data.data() + 2), 4u << 20);
  EXPECT_EQ(server_->uri("later"), "nbd+unix:///later?socket=" + socket_path());
}

TEST_P(NbdServerTest, ReadOnlyExportRefusesWrites) {
  start_server(/*read_only=*/true);
  RawClient c(socket_path());
  greet(c);
  ASSERT_TRUE(c.send(option(kOptExportName, "default")));
  std::string reply = c.recv(10);
  ASSERT_EQ(reply.size(), 10u);
  uint16_t flags = load_u16(reply.data() + 8);
  EXPECT_TRUE(flags & kFlagReadOnly);
  EXPECT_FALSE(flags & kFlagSendTrim);
  ASSERT_TRUE(c.send(request(kCmdWrite, 1, 0, 4) + "nope"));
  EXPECT_EQ(read_reply(c).error, kEperm);
  ASSERT_TRUE(c.send(request(kCmdRead, 2, 0, 4)));
  EXPECT_EQ(read_reply(c).error, 0u);
  EXPECT_EQ(c.recv(4), std::string(4, '\0'));
}

TEST_P(NbdServerTest, TcpListenerPicksAFreePortOnLoopback) {
  auto server = NbdServer::start(*region_, {.listen = "127.0.0.1:0", .read_only = false, .log = {}});
  ASSERT_TRUE(server) << server.error().message();
  const std::string& addr = (*server)->address();
  ASSERT_EQ(addr.rfind("127.0.0.1:", 0), 0u) << addr;
  EXPECT_NE(addr, "127.0.0.1:0");
  EXPECT_EQ((*server)->uri("default"), "nbd://" + addr + "/default");
  for (const char* bad : {"nohost", "127.0.0.1:99999", "127.0.0.1:x", "unix:"}) {
    auto refused = NbdServer::start(*region_, {.listen = bad, .read_only = false, .log = {}});
    ASSERT_FALSE(refused) << bad;
    EXPECT_EQ(refused.error().code(), std::errc::invalid_argument) << bad;
  }
  auto taken = NbdServer::start(*region_, {.listen = addr, .read_only = false, .log = {}});
  ASSERT_FALSE(taken);
  EXPECT_EQ(taken.error().code(), std::errc::address_in_use);
}

INSTANTIATE_TEST_SUITE_P(Media, NbdServerTest, RAWDAX_TMPFS_AND_CARVED,
                         ::rawdax::testing::param_name);

}  // namespace
}  // namespace rawdax
