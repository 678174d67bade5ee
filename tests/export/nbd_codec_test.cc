// The NBD codec on byte strings: handshake, options, request headers,
// request validation and error mapping.
#include "export/nbd_codec.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <string>

namespace rawdax::nbd {
namespace {

std::string be32(uint32_t v) {
  OutBuffer out;
  out.put_u32(v);
  return std::string(out.data(), out.size());
}

std::string be16(uint16_t v) {
  OutBuffer out;
  out.put_u16(v);
  return std::string(out.data(), out.size());
}

std::string request_bytes(uint32_t magic, uint16_t flags, uint16_t type, uint64_t cookie,
                          uint64_t offset, uint32_t length) {
  OutBuffer out;
  out.put_u32(magic);
  out.put_u16(flags);
  out.put_u16(type);
  out.put_u64(cookie);
  out.put_u64(offset);
  out.put_u32(length);
  return std::string(out.data(), out.size());
}

TEST(NbdCodec, GreetingIsFixedNewstyleWithNoZeroes) {
  std::string g = encode_greeting();
  ASSERT_EQ(g.size(), 18u);
  EXPECT_EQ(g.substr(0, 8), "NBDMAGIC");
  EXPECT_EQ(g.substr(8, 8), "IHAVEOPT");
  EXPECT_EQ(load_u16(g.data() + 16), kFlagFixedNewstyle | kFlagNoZeroes);
}

TEST(NbdCodec, OptionHeaderNeedsTheMagic) {
  OutBuffer out;
  out.put_u64(kOptMagic);
  out.put_u32(kOptGo);
  out.put_u32(77);
  auto header = parse_option_header(out.data());
  ASSERT_TRUE(header.has_value());
  EXPECT_EQ(header->option, kOptGo);
  EXPECT_EQ(header->length, 77u);
  std::string bad(out.data(), out.size());
  bad[3] ^= 1;
  EXPECT_FALSE(parse_option_header(bad.data()).has_value());
}

TEST(NbdCodec, InfoRequestParsesNameAndInfos) {
  std::string payload = be32(3) + "vm1" + be16(2) + be16(kInfoBlockSize) + be16(kInfoName);
  auto r = parse_info_request(payload);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->name, "vm1");
  EXPECT_EQ(r->infos, (std::vector<uint16_t>{kInfoBlockSize, kInfoName}));

  EXPECT_FALSE(parse_info_request(be32(10) + "vm1"));                       // name runs past
  EXPECT_FALSE(parse_info_request(be32(3) + "vm1"));                        // no count
  EXPECT_FALSE(parse_info_request(be32(3) + "vm1" + be16(2) + be16(1)));    // count too big
  EXPECT_FALSE(parse_info_request(be32(3) + "vm1" + be16(0) + "x"));        // trailing bytes
  auto huge = parse_info_request(be32(kMaxString + 1) + std::string(kMaxString + 1, 'a') + be16(0));
  ASSERT_FALSE(huge);
  EXPECT_NE(huge.error().message().find("4096"), std::string::npos);
}

TEST(NbdCodec, MetaContextRequestParsesQueries) {
  std::string payload = be32(7) + "default" + be32(2) + be32(15) + "base:allocation" + be32(5) +
                        "base:";
  auto r = parse_meta_context_request(payload);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->export_name, "default");
  ASSERT_EQ(r->queries.size(), 2u);
  EXPECT_TRUE(query_selects(r->queries[0], kBaseAllocation));
  EXPECT_TRUE(query_selects(r->queries[1], kBaseAllocation));
  EXPECT_FALSE(query_selects("qemu:dirty-bitmap:x", kBaseAllocation));
  EXPECT_FALSE(query_selects("base:allocationX", kBaseAllocation));
  EXPECT_FALSE(query_selects("base", kBaseAllocation));
  EXPECT_FALSE(query_selects("", kBaseAllocation));
  // QEMU's dirty bitmaps: by full name, by "qemu:dirty-bitmap:" and by "qemu:".
  EXPECT_TRUE(query_selects("qemu:dirty-bitmap:vm1@s1", "qemu:dirty-bitmap:vm1@s1"));
  EXPECT_TRUE(query_selects("qemu:dirty-bitmap:", "qemu:dirty-bitmap:vm1@s1"));
  EXPECT_TRUE(query_selects("qemu:", "qemu:dirty-bitmap:vm1@s1"));
  EXPECT_FALSE(query_selects("qemu:dirty-bitmap:vm1@s0", "qemu:dirty-bitmap:vm1@s1"));
  EXPECT_FALSE(query_selects("base:", "qemu:dirty-bitmap:vm1@s1"));
  EXPECT_FALSE(parse_meta_context_request(be32(7) + "default" + be32(1)));  // query missing
  EXPECT_FALSE(parse_meta_context_request(be32(7) + "default" + be32(0) + "junk"));
}

TEST(NbdCodec, OptionRepliesAndInfos) {
  OutBuffer out;
  put_option_reply(out, kOptGo, kRepInfo, info_block_size(512, 4096, 32 << 20));
  ASSERT_EQ(out.size(), 20u + 14u);
  EXPECT_EQ(load_u64(out.data()), kOptReplyMagic);
  EXPECT_EQ(load_u32(out.data() + 8), kOptGo);
  EXPECT_EQ(load_u32(out.data() + 12), kRepInfo);
  EXPECT_EQ(load_u32(out.data() + 16), 14u);
  EXPECT_EQ(load_u16(out.data() + 20), kInfoBlockSize);
  EXPECT_EQ(load_u32(out.data() + 22), 512u);
  EXPECT_EQ(load_u32(out.data() + 26), 4096u);
  EXPECT_EQ(load_u32(out.data() + 30), 32u << 20);

  std::string e = info_export(1 << 20, kFlagHasFlags | kFlagSendFlush);
  ASSERT_EQ(e.size(), 12u);
  EXPECT_EQ(load_u64(e.data() + 2), 1u << 20);
  EXPECT_EQ(load_u16(e.data() + 10), kFlagHasFlags | kFlagSendFlush);
  EXPECT_EQ(export_name_reply(5, 1, /*no_zeroes=*/true).size(), 10u);
  EXPECT_EQ(export_name_reply(5, 1, /*no_zeroes=*/false).size(), 134u);
  std::string s = server_entry("vm1", "");
  EXPECT_EQ(load_u32(s.data()), 3u);
  EXPECT_EQ(s.substr(4), "vm1");
}

TEST(NbdCodec, RequestHeaderParses) {
  std::string bytes = request_bytes(kRequestMagic, kCmdFlagFua, kCmdWrite, 0x1122334455667788,
                                    1 << 20, 4096);
  ASSERT_EQ(bytes.size(), kRequestHeaderSize);
  auto r = parse_request(bytes.data());
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->flags, kCmdFlagFua);
  EXPECT_EQ(r->type, kCmdWrite);
  EXPECT_EQ(r->cookie, 0x1122334455667788u);
  EXPECT_EQ(r->offset, 1u << 20);
  EXPECT_EQ(r->length, 4096u);
  std::string bad = request_bytes(kSimpleReplyMagic, 0, kCmdRead, 1, 0, 512);
  EXPECT_FALSE(parse_request(bad.data()).has_value());
}

ExportLimits limits() {
  ExportLimits l;
  l.size = 1 << 20;
  l.structured_replies = true;
  l.base_allocation = true;
  l.min_block = 512;
  l.max_payload = 32 << 20;
  return l;
}

RequestHeader req(uint16_t type, uint64_t offset, uint32_t length, uint16_t flags = 0) {
  RequestHeader r;
  r.type = type;
  r.offset = offset;
  r.length = length;
  r.flags = flags;
  return r;
}

TEST(NbdCodec, CheckRequestGivesTheSpecsErrors) {
  const ExportLimits l = limits();
  EXPECT_EQ(check_request(req(kCmdRead, 0, 4096), l).error, 0u);
  EXPECT_EQ(check_request(req(kCmdWrite, l.size - 512, 512, kCmdFlagFua), l).error, 0u);
  EXPECT_EQ(check_request(req(kCmdFlush, 0, 0), l).error, 0u);
  EXPECT_EQ(check_request(req(kCmdWriteZeroes, 0, 4096, kCmdFlagNoHole | kCmdFlagFastZero), l)
                .error,
            0u);
  EXPECT_EQ(check_request(req(kCmdBlockStatus, 1, 100, kCmdFlagReqOne), l).error, 0u);
  EXPECT_EQ(check_request(req(kCmdRead, 0, 4096, kCmdFlagDf), l).error, 0u);

  EXPECT_EQ(check_request(req(9, 0, 4096), l).error, kEnotsup);
  EXPECT_EQ(check_request(req(kCmdRead, 0, 0), l).error, kEinval);
  EXPECT_EQ(check_request(req(kCmdWrite, 0, 0), l).error, kEinval);
  EXPECT_EQ(check_request(req(kCmdRead, 0, 4096, 1 << 9), l).error, kEinval);
  EXPECT_EQ(check_request(req(kCmdWrite, 0, 4096, kCmdFlagNoHole), l).error, kEinval);
  EXPECT_EQ(check_request(req(kCmdRead, 1, 512), l).error, kEinval);
  EXPECT_EQ(check_request(req(kCmdWrite, 0, 100), l).error, kEinval);
  EXPECT_EQ(check_request(req(kCmdRead, l.size, 512), l).error, kEinval);
  EXPECT_EQ(check_request(req(kCmdRead, UINT64_MAX - 511, 512), l).error, kEinval);
  EXPECT_EQ(check_request(req(kCmdWrite, l.size, 512), l).error, kEnospc);
  EXPECT_EQ(check_request(req(kCmdTrim, l.size - 512, 1024), l).error, kEnospc);
  EXPECT_EQ(check_request(req(kCmdRead, 0, (32 << 20) + 512), l).error, kEoverflow);
  EXPECT_EQ(check_request(req(kCmdWrite, 0, (32 << 20) + 512), l).error, kEinval);

  ExportLimits simple = l;
  simple.structured_replies = false;
  simple.base_allocation = false;
  EXPECT_EQ(check_request(req(kCmdRead, 0, 4096, kCmdFlagDf), simple).error, kEinval);
  EXPECT_EQ(check_request(req(kCmdBlockStatus, 0, 4096), simple).error, kEinval);

  ExportLimits ro = l;
  ro.read_only = true;
  EXPECT_EQ(check_request(req(kCmdWrite, 0, 512), ro).error, kEperm);
  EXPECT_EQ(check_request(req(kCmdRead, 0, 512), ro).error, 0u);

  ExportLimits byte = l;
  byte.min_block = 1;
  EXPECT_EQ(check_request(req(kCmdWrite, 3, 5), byte).error, 0u);
  Verdict v = check_request(req(kCmdWrite, l.size, 512), l);
  EXPECT_NE(v.reason.find(std::to_string(l.size)), std::string::npos) << v.reason;
}

TEST(NbdCodec, RepliesEncode) {
  OutBuffer out;
  put_simple_reply(out, 0xabcdef0012345678, kEnospc);
  ASSERT_EQ(out.size(), kSimpleReplyHeaderSize);
  EXPECT_EQ(load_u32(out.data()), kSimpleReplyMagic);
  EXPECT_EQ(load_u32(out.data() + 4), kEnospc);
  EXPECT_EQ(load_u64(out.data() + 8), 0xabcdef0012345678u);
  out.clear();
  put_error_chunk(out, 7, kEinval, "zero length");
  ASSERT_EQ(out.size(), kStructuredReplyHeaderSize + 6 + 11);
  EXPECT_EQ(load_u32(out.data()), kStructuredReplyMagic);
  EXPECT_EQ(load_u16(out.data() + 4), kReplyFlagDone);
  EXPECT_EQ(load_u16(out.data() + 6), kReplyTypeError);
  EXPECT_EQ(load_u64(out.data() + 8), 7u);
  EXPECT_EQ(load_u32(out.data() + 16), 17u);
  EXPECT_EQ(load_u32(out.data() + 20), kEinval);
  EXPECT_EQ(load_u16(out.data() + 24), 11u);
  EXPECT_EQ(std::string(out.data() + 26, 11), "zero length");
}

TEST(NbdCodec, ErrorMapping) {
  auto map = [](int err) { return to_nbd_error(errno_error(err, "x")); };
  EXPECT_EQ(map(ENXIO), kEshutdown);
  EXPECT_EQ(map(EINVAL), kEinval);
  EXPECT_EQ(map(ENOSPC), kEnospc);
  EXPECT_EQ(map(EROFS), kEperm);
  EXPECT_EQ(map(EACCES), kEperm);
  EXPECT_EQ(map(ENOMEM), kEnomem);
  EXPECT_EQ(map(ETIMEDOUT), kEio);
  EXPECT_EQ(map(EIO), kEio);
  EXPECT_STREQ(nbd_error_name(kEshutdown), "ESHUTDOWN");
  EXPECT_EQ(command_name(kCmdWriteZeroes), "WRITE_ZEROES");
  EXPECT_EQ(command_name(42), "CMD#42");
}

TEST(NbdCodec, OutBufferGrowsAndShrinks) {
  OutBuffer out;
  for (int i = 0; i < 3000; ++i) out.put_u32(static_cast<uint32_t>(i));
  ASSERT_EQ(out.size(), 12000u);
  EXPECT_EQ(load_u32(out.data() + 4 * 2999), 2999u);
  out.shrink_by(4);
  EXPECT_EQ(out.size(), 11996u);
  WireReader in(std::string_view(out.data(), 6));
  EXPECT_EQ(in.u32(), 0u);
  EXPECT_EQ(in.u32(), 0u);  // past the end
  EXPECT_FALSE(in.ok());
}

}  // namespace
}  // namespace rawdax::nbd
