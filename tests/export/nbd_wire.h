// Byte-level NBD client helpers for the protocol tests: big-endian fields,
// options, requests, option replies and replies (simple or structured), and
// the handshake through NBD_OPT_GO.
#ifndef RAWDAX_TESTS_EXPORT_NBD_WIRE_H_
#define RAWDAX_TESTS_EXPORT_NBD_WIRE_H_

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "export/nbd_codec.h"
#include "export/nbd_fixture.h"
#include "export/nbd_protocol.h"

// In rawdax::nbd so the protocol constants read bare.
namespace rawdax::nbd::wire {

using ::rawdax::testing::RawClient;

inline std::string be16(uint16_t v) {
  OutBuffer o;
  o.put_u16(v);
  return std::string(o.data(), o.size());
}
inline std::string be32(uint32_t v) {
  OutBuffer o;
  o.put_u32(v);
  return std::string(o.data(), o.size());
}
inline std::string be64(uint64_t v) {
  OutBuffer o;
  o.put_u64(v);
  return std::string(o.data(), o.size());
}

inline std::string option(uint32_t opt, const std::string& payload = "") {
  return be64(kOptMagic) + be32(opt) + be32(static_cast<uint32_t>(payload.size())) + payload;
}

inline std::string request(uint16_t type, uint64_t cookie, uint64_t offset, uint32_t length,
                    uint16_t flags = 0) {
  return be32(kRequestMagic) + be16(flags) + be16(type) + be64(cookie) + be64(offset) +
         be32(length);
}

struct OptReply {
  uint32_t option = 0;
  uint32_t type = 0;
  std::string data;
  bool ok = false;
};

inline OptReply read_opt_reply(RawClient& c) {
  OptReply r;
  std::string h = c.recv(20);
  if (h.size() != 20 || load_u64(h.data()) != kOptReplyMagic) return r;
  r.option = load_u32(h.data() + 8);
  r.type = load_u32(h.data() + 12);
  r.data = c.recv(load_u32(h.data() + 16));
  r.ok = true;
  return r;
}

struct Reply {
  bool ok = false;
  bool structured = false;
  uint16_t flags = 0, type = 0;
  uint32_t error = 0;
  uint64_t cookie = 0;
  std::string payload;  // structured chunks only
};

// Reads one simple reply header or one structured chunk (with its payload).
inline Reply read_reply(RawClient& c) {
  Reply r;
  std::string magic = c.recv(4);
  if (magic.size() != 4) return r;
  if (load_u32(magic.data()) == kSimpleReplyMagic) {
    std::string rest = c.recv(12);
    if (rest.size() != 12) return r;
    r.error = load_u32(rest.data());
    r.cookie = load_u64(rest.data() + 4);
    r.ok = true;
    return r;
  }
  if (load_u32(magic.data()) != kStructuredReplyMagic) return r;
  std::string rest = c.recv(16);
  if (rest.size() != 16) return r;
  r.structured = true;
  r.flags = load_u16(rest.data());
  r.type = load_u16(rest.data() + 2);
  r.cookie = load_u64(rest.data() + 4);
  r.payload = c.recv(load_u32(rest.data() + 12));
  if (r.type & 0x8000) r.error = load_u32(r.payload.data());
  r.ok = true;
  return r;
}

// Greets and sends client flags (fixed newstyle + NO_ZEROES unless told).
inline void greet(RawClient& c, uint32_t flags = kClientFixedNewstyle | kClientNoZeroes) {
  std::string g = c.recv(18);
  ASSERT_EQ(g.size(), 18u);
  ASSERT_EQ(g, encode_greeting());
  ASSERT_TRUE(c.send(be32(flags)));
}

inline std::string info_payload(const std::string& name, std::vector<uint16_t> infos) {
  std::string p = be32(static_cast<uint32_t>(name.size())) + name +
                  be16(static_cast<uint16_t>(infos.size()));
  for (uint16_t i : infos) p += be16(i);
  return p;
}

// Handshake through NBD_OPT_GO with structured replies (and base:allocation).
inline void go(RawClient& c, const std::string& name, bool structured) {
  greet(c);
  if (structured) {
    ASSERT_TRUE(c.send(option(kOptStructuredReply)));
    ASSERT_EQ(read_opt_reply(c).type, kRepAck);
    std::string q = be32(static_cast<uint32_t>(name.size())) + name + be32(1) + be32(15) +
                    "base:allocation";
    ASSERT_TRUE(c.send(option(kOptSetMetaContext, q)));
    ASSERT_EQ(read_opt_reply(c).type, kRepMetaContext);
    ASSERT_EQ(read_opt_reply(c).type, kRepAck);
  }
  ASSERT_TRUE(c.send(option(kOptGo, info_payload(name, {kInfoBlockSize}))));
  while (true) {
    OptReply r = read_opt_reply(c);
    ASSERT_TRUE(r.ok);
    if (r.type == kRepAck) break;
    ASSERT_EQ(r.type, kRepInfo);
  }
}


}  // namespace rawdax::nbd::wire

#endif  // RAWDAX_TESTS_EXPORT_NBD_WIRE_H_
