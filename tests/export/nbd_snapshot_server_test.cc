// Snapshot exports at the byte level, on an in-process NbdServer: the
// registry's API (names, EEXIST, unexport), the metadata contexts of an
// incremental (queries, ids, one block status chunk per context), read-only
// flags and EPERM, hole chunks for unstored ranges, and ESHUTDOWN for a
// connection whose export was removed.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "export/nbd_codec.h"
#include "export/nbd_fixture.h"
#include "export/nbd_wire.h"

namespace rawdax {
namespace {

using namespace ::rawdax::nbd;        // NOLINT: protocol constants read better bare in tests
using namespace ::rawdax::nbd::wire;  // NOLINT: the byte-level helpers
using ::rawdax::testing::NbdFixture;
using ::rawdax::testing::RawClient;

class NbdSnapshotServerTest : public NbdFixture {
 protected:
  uint64_t namespace_size() const override { return 4 << 20; }

  std::string file(const std::string& name) const { return dir_.path() + "/" + name; }

  // s1: page 0 written; s2 on s1: page 3 written. The pages are the
  // region's (4 KiB here: tmpfs and carved on tmpfs).
  void take_chain() {
    auto dev = open_device();
    ASSERT_TRUE(dev);
    page_ = region_->capabilities().page_size;
    std::vector<char> a(page_, 'a'), b(page_, 'b');
    ASSERT_TRUE(dev->write(0, std::as_bytes(std::span(a))));
    ASSERT_TRUE(dev->snapshot(file("s1.snap")));
    ASSERT_TRUE(dev->write(3 * page_, std::as_bytes(std::span(b))));
    ASSERT_TRUE(dev->snapshot(file("s2.snap"), {.base = file("s1.snap")}));
  }

  // Structured replies, then SET_META_CONTEXT for `name` with `queries`:
  // the contexts granted, by id.
  std::vector<std::pair<uint32_t, std::string>> set_contexts(RawClient& c, const std::string& name,
                                                             const std::vector<std::string>& queries,
                                                             uint32_t option = kOptSetMetaContext) {
    std::string p = be32(static_cast<uint32_t>(name.size())) + name +
                    be32(static_cast<uint32_t>(queries.size()));
    for (const auto& q : queries) p += be32(static_cast<uint32_t>(q.size())) + q;
    EXPECT_TRUE(c.send(option_bytes(option, p)));
    std::vector<std::pair<uint32_t, std::string>> out;
    while (true) {
      OptReply r = read_opt_reply(c);
      if (!r.ok || r.type != kRepMetaContext) {
        EXPECT_EQ(r.type, kRepAck);
        break;
      }
      out.emplace_back(load_u32(r.data.data()), r.data.substr(4));
    }
    return out;
  }
  static std::string option_bytes(uint32_t opt, const std::string& payload) {
    return ::rawdax::nbd::wire::option(opt, payload);
  }

  uint64_t page_ = 4096;
};

TEST_P(NbdSnapshotServerTest, RegistryNamesAndRefusals) {
  take_chain();
  start_server();
  auto s1 = server_->export_snapshot(file("s1.snap"));
  ASSERT_TRUE(s1) << s1.error().message();
  EXPECT_EQ(s1->name, "default@s1");
  EXPECT_EQ(s1->kind, "snapshot");
  EXPECT_EQ(s1->namespace_name, "default");
  EXPECT_EQ(s1->base_export, "");
  auto s2 = server_->export_snapshot(file("s2.snap"));
  ASSERT_TRUE(s2) << s2.error().message();
  EXPECT_EQ(s2->base_export, "default@s1");

  auto again = server_->export_snapshot(file("s1.snap"));
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), std::errc::file_exists);
  auto ns = server_->export_snapshot(file("s1.snap"), "default");
  ASSERT_FALSE(ns);
  EXPECT_EQ(ns.error().code(), std::errc::file_exists);
  EXPECT_NE(ns.error().message().find("taken by a namespace"), std::string::npos);
  auto missing = server_->export_snapshot(file("none.snap"));
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), std::errc::no_such_file_or_directory);

  std::set<std::string> names;
  for (const auto& e : server_->exports()) names.insert(e.name + "/" + e.kind);
  EXPECT_EQ(names, (std::set<std::string>{"default/namespace", "default@s1/snapshot",
                                          "default@s2/snapshot"}));

  Status of_ns = server_->unexport("default");
  ASSERT_FALSE(of_ns);
  EXPECT_EQ(of_ns.error().code(), std::errc::invalid_argument);
  Status nothing = server_->unexport("nothing");
  ASSERT_FALSE(nothing);
  EXPECT_EQ(nothing.error().code(), std::errc::no_such_file_or_directory);
  ASSERT_TRUE(server_->unexport("default@s1"));
  EXPECT_EQ(server_->exports().size(), 2u);
  // The name is free again.
  EXPECT_TRUE(server_->export_snapshot(file("s1.snap")));
}

TEST_P(NbdSnapshotServerTest, ContextsFlagsHolesAndUnexport) {
  take_chain();
  start_server();
  ASSERT_TRUE(server_->export_snapshot(file("s2.snap")));
  RawClient c(socket_path());
  ASSERT_TRUE(c.connected());
  greet(c);
  ASSERT_TRUE(c.send(option(kOptStructuredReply)));
  ASSERT_EQ(read_opt_reply(c).type, kRepAck);

  const std::string bitmap = "qemu:dirty-bitmap:default@s1";
  using Granted = std::vector<std::pair<uint32_t, std::string>>;
  // LIST: every context without queries (ids 0), the bitmap for "qemu:" and
  // "qemu:dirty-bitmap:"; a namespace has none.
  EXPECT_EQ(set_contexts(c, "default@s2", {}, kOptListMetaContext),
            (Granted{{0, "base:allocation"}, {0, bitmap}}));
  EXPECT_EQ(set_contexts(c, "default@s2", {"qemu:"}, kOptListMetaContext), (Granted{{0, bitmap}}));
  EXPECT_EQ(set_contexts(c, "default@s2", {"qemu:dirty-bitmap:"}, kOptListMetaContext),
            (Granted{{0, bitmap}}));
  EXPECT_EQ(set_contexts(c, "default", {"qemu:"}, kOptListMetaContext), Granted{});
  EXPECT_EQ(set_contexts(c, "default@s2", {"qemu:dirty-bitmap:default@s0"}, kOptListMetaContext),
            Granted{});
  // SET: distinct ids, whatever the order of the queries.
  EXPECT_EQ(set_contexts(c, "default@s2", {bitmap, "base:allocation"}),
            (Granted{{1, "base:allocation"}, {2, bitmap}}));

  ASSERT_TRUE(c.send(option(kOptGo, info_payload("default@s2", {kInfoDescription}))));
  std::string description;
  while (true) {
    OptReply r = read_opt_reply(c);
    ASSERT_TRUE(r.ok);
    if (r.type == kRepAck) break;
    ASSERT_EQ(r.type, kRepInfo);
    uint16_t info = load_u16(r.data.data());
    if (info == kInfoExport) {
      EXPECT_EQ(load_u64(r.data.data() + 2), namespace_size());
      uint16_t flags = load_u16(r.data.data() + 10);
      EXPECT_TRUE(flags & kFlagReadOnly) << flags;
      EXPECT_FALSE(flags & (kFlagSendTrim | kFlagSendWriteZeroes | kFlagSendFua)) << flags;
    } else if (info == kInfoDescription) {
      description = r.data.substr(2);
    }
  }
  EXPECT_NE(description.find("snapshot of namespace default taken "), std::string::npos)
      << description;
  EXPECT_NE(description.find("changes since default@s1"), std::string::npos) << description;

  // Block status: one chunk per context, in the order chosen, the last DONE.
  ASSERT_TRUE(c.send(request(kCmdBlockStatus, 1, 0, static_cast<uint32_t>(8 * page_))));
  Reply alloc = read_reply(c);
  ASSERT_EQ(alloc.type, kReplyTypeBlockStatus);
  EXPECT_FALSE(alloc.flags & kReplyFlagDone);
  ASSERT_EQ(alloc.payload.size(), 4u + 4 * 8u);
  EXPECT_EQ(load_u32(alloc.payload.data()), 1u);
  // data 1 page, hole 2, data 1, hole 4.
  const uint32_t hole = kStateHole | kStateZero;
  std::vector<std::pair<uint32_t, uint32_t>> want = {
      {page_, 0}, {2 * page_, hole}, {page_, 0}, {4 * page_, hole}};
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(load_u32(alloc.payload.data() + 4 + 8 * i), want[i].first) << i;
    EXPECT_EQ(load_u32(alloc.payload.data() + 8 + 8 * i), want[i].second) << i;
  }
  Reply dirty = read_reply(c);
  ASSERT_EQ(dirty.type, kReplyTypeBlockStatus);
  EXPECT_TRUE(dirty.flags & kReplyFlagDone);
  EXPECT_EQ(dirty.cookie, 1u);
  ASSERT_EQ(dirty.payload.size(), 4u + 3 * 8u);
  EXPECT_EQ(load_u32(dirty.payload.data()), 2u);
  want = {{3 * page_, 0}, {page_, kStateDirty}, {4 * page_, 0}};
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(load_u32(dirty.payload.data() + 4 + 8 * i), want[i].first) << i;
    EXPECT_EQ(load_u32(dirty.payload.data() + 8 + 8 * i), want[i].second) << i;
  }

  // A read of an unstored range is one hole chunk; a stored page is data.
  ASSERT_TRUE(c.send(request(kCmdRead, 2, 1 << 20, 256 << 10)));
  Reply hole_read = read_reply(c);
  EXPECT_EQ(hole_read.type, kReplyTypeOffsetHole);
  EXPECT_TRUE(hole_read.flags & kReplyFlagDone);
  ASSERT_TRUE(c.send(request(kCmdRead, 3, 3 * page_, static_cast<uint32_t>(page_))));
  Reply data = read_reply(c);
  ASSERT_EQ(data.type, kReplyTypeOffsetData);
  EXPECT_EQ(data.payload.substr(8), std::string(page_, 'b'));
  // Writes are refused.
  ASSERT_TRUE(c.send(request(kCmdWrite, 4, 0, 512) + std::string(512, 'x')));
  EXPECT_EQ(read_reply(c).error, kEperm);
  ASSERT_TRUE(c.send(request(kCmdTrim, 5, 0, 512)));
  EXPECT_EQ(read_reply(c).error, kEperm);

  // Unexported while attached: ESHUTDOWN from the next request on.
  ASSERT_TRUE(server_->unexport("default@s2"));
  ASSERT_TRUE(c.send(request(kCmdRead, 6, 0, 4096)));
  EXPECT_EQ(read_reply(c).error, kEshutdown);
  ASSERT_TRUE(c.send(request(kCmdBlockStatus, 7, 0, 4096)));
  EXPECT_EQ(read_reply(c).error, kEshutdown);
  ASSERT_TRUE(c.send(request(kCmdDisc, 8, 0, 0)));
  EXPECT_TRUE(c.closed_by_server());
}

INSTANTIATE_TEST_SUITE_P(Media, NbdSnapshotServerTest, RAWDAX_TMPFS_AND_CARVED,
                         ::rawdax::testing::param_name);

}  // namespace
}  // namespace rawdax
