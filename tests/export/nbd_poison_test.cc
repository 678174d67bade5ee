// `rawdax serve` meeting a media error: the backing file of namespace "a" is
// cut short under the daemon (a real SIGBUS, BUS_ADRERR, for any load past
// the cut, as poison raises BUS_MCEERR_AR). The NBD read that meets it gets
// NBD_EIO, through the buffered path and the sendfile path alike; the same
// connection goes on reading good ranges, a client of namespace "b" never
// notices, and the daemon lives. The bad pages show as data in
// base:allocation, in `rawdax list --json` and in query-stats; writing them
// whole clears them.
#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "cli_run.h"
#include "daemon/control_test_util.h"
#include "export/nbd_wire.h"
#include "serve_child.h"

namespace rawdax::nbd {
namespace {

using ::rawdax::testing::RawClient;
using ::rawdax::testing::ScratchDir;
using json = nlohmann::json;

constexpr uint64_t kSize = 1 << 20;
constexpr uint64_t kCut = 512 << 10;
constexpr uint64_t kBadSmall = 600 << 10;  // read in one 4 KiB request (buffered path)
constexpr uint64_t kBadLarge = 768 << 10;  // read in one 128 KiB request (sendfile path)
constexpr uint32_t kPage = 4096;

std::string pattern(size_t n, uint32_t seed) {
  std::string out(n, '\0');
  std::mt19937 rng(seed);
  for (auto& c : out) c = static_cast<char>(rng());
  return out;
}

// One request; the reply's error (0: data follows, returned in *data).
uint32_t read_request(RawClient& c, bool structured, uint64_t cookie, uint64_t offset,
                      uint32_t length, std::string* data) {
  EXPECT_TRUE(c.send(wire::request(kCmdRead, cookie, offset, length)));
  wire::Reply r = wire::read_reply(c);
  EXPECT_TRUE(r.ok);
  EXPECT_EQ(r.cookie, cookie);
  if (r.error != 0) return r.error;
  if (structured) {
    EXPECT_EQ(r.type, kReplyTypeOffsetData);
    *data = r.payload.substr(8);
  } else {
    *data = c.recv(length);
  }
  return 0;
}

class NbdPoisonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto region = Region::open(region_dir_, {.create = true});
    ASSERT_TRUE(region) << region.error().message();
    for (const char* name : {"a", "b"}) {
      ASSERT_TRUE((*region)->create_namespace({.name = name, .size = kSize}));
      auto dev = (*region)->open_device(name);
      ASSERT_TRUE(dev);
      std::string bytes = pattern(kSize, name[0]);
      ASSERT_TRUE((*dev)->write(0, std::as_bytes(std::span(bytes))));
    }
    auto info = (*region)->find("a");
    ASSERT_TRUE(info);
    a_path_ = info->path;
  }

  json list_a() {
    auto r = ::rawdax::testing::run_cli(dir_.path(), "list --json --region " + region_dir_);
    EXPECT_EQ(r.exit_code, 0) << r;
    json all = json::parse(r.out, nullptr, false);
    for (const json& ns : all) {
      if (ns.value("name", "") == "a") return ns;
    }
    ADD_FAILURE() << "namespace a not listed: " << r.out;
    return json::object();
  }

  ScratchDir dir_{::rawdax::testing::tmpfs_parent()};
  std::string region_dir_ = dir_.path() + "/region";
  std::string a_path_;
};

TEST_F(NbdPoisonTest, BadRangeGetsEioWhileOtherClientsAndRangesGoOn) {
  ::rawdax::testing::ServeChild serve(region_dir_, dir_.path() + "/nbd.sock",
                                      dir_.path() + "/serve.log");
  ASSERT_TRUE(serve.ready()) << serve.log();
  RawClient a(serve.nbd_socket()), a_simple(serve.nbd_socket()), b(serve.nbd_socket());
  wire::go(a, "a", /*structured=*/true);
  wire::go(a_simple, "a", /*structured=*/false);
  wire::go(b, "b", /*structured=*/true);
  const std::string want_a = pattern(kSize, 'a'), want_b = pattern(kSize, 'b');

  ASSERT_EQ(::truncate(a_path_.c_str(), kCut), 0);  // someone else cuts the file

  std::string data;
  // Buffered path (4 KiB): the load faults inside the daemon's guarded copy.
  EXPECT_EQ(read_request(a, true, 1, kBadSmall, kPage, &data), kEio);
  // The same connection reads good ranges, small and large (sendfile).
  ASSERT_EQ(read_request(a, true, 2, 0, kPage, &data), 0u);
  EXPECT_EQ(data, want_a.substr(0, kPage));
  ASSERT_EQ(read_request(a, true, 3, 128 << 10, 128 << 10, &data), 0u);
  EXPECT_EQ(data, want_a.substr(128 << 10, 128 << 10));
  // sendfile path (128 KiB): refused before the header promises data.
  EXPECT_EQ(read_request(a, true, 4, kBadLarge, 128 << 10, &data), kEio);
  ASSERT_EQ(read_request(a, true, 5, 0, kPage, &data), 0u);
  // Simple replies: the listed page is refused with the error alone.
  EXPECT_EQ(read_request(a_simple, false, 6, kBadSmall, kPage, &data), kEio);
  ASSERT_EQ(read_request(a_simple, false, 7, kPage, kPage, &data), 0u);
  EXPECT_EQ(data, want_a.substr(kPage, kPage));
  // The other namespace's client, whole, both paths.
  ASSERT_EQ(read_request(b, true, 8, 0, kSize, &data), 0u);
  EXPECT_EQ(data, want_b);
  ASSERT_EQ(read_request(b, true, 9, kBadSmall, kPage, &data), 0u);
  EXPECT_EQ(data, want_b.substr(kBadSmall, kPage));

  // base:allocation: the bad pages are data (not hole, not zero), as nbdkit
  // reports bad blocks; the rest of the cut is hole.
  ASSERT_TRUE(a.send(wire::request(kCmdBlockStatus, 10, kCut, kSize - kCut)));
  wire::Reply status = wire::read_reply(a);
  ASSERT_TRUE(status.ok);
  ASSERT_EQ(status.type, kReplyTypeBlockStatus);
  std::vector<std::pair<uint64_t, uint32_t>> data_runs;  // offset, length of non-holes
  uint64_t at = kCut;
  for (size_t i = 4; i + 8 <= status.payload.size(); i += 8) {
    uint32_t len = load_u32(status.payload.data() + i);
    uint32_t flags = load_u32(status.payload.data() + i + 4);
    if ((flags & kStateHole) == 0) data_runs.push_back({at, len});
    at += len;
  }
  const std::vector<std::pair<uint64_t, uint32_t>> want_runs = {{kBadSmall, kPage},
                                                                {kBadLarge, kPage}};
  EXPECT_EQ(data_runs, want_runs);

  // The list, through the daemon, and query-stats.
  json listed = list_a();
  EXPECT_EQ(listed["badblocks"], json::parse(R"([{"offset":614400,"length":4096},
                                                 {"offset":786432,"length":4096}])"));
  ::rawdax::testing::RawConnection control(region_dir_ + "/control.sock");
  json stats = control.execute("query-stats");
  ASSERT_TRUE(stats["return"].is_array()) << stats;
  bool saw_a = false;
  for (const json& ns : stats["return"]) {
    if (ns["name"] != "a") continue;
    saw_a = true;
    EXPECT_EQ(ns["bad_ranges"], 2);
    EXPECT_GE(ns["media_errors"].get<uint64_t>(), 3u);
    EXPECT_EQ(ns["badblocks"], listed["badblocks"]);
  }
  EXPECT_TRUE(saw_a) << stats;

  // The file's owner puts its size back; writing the bad pages clears them.
  ASSERT_EQ(::truncate(a_path_.c_str(), kSize), 0);
  const std::string fresh = pattern(kPage, 7);
  ASSERT_TRUE(a.send(wire::request(kCmdWrite, 11, kBadSmall, kPage) + fresh));
  EXPECT_EQ(wire::read_reply(a).error, 0u);
  ASSERT_TRUE(a.send(wire::request(kCmdWriteZeroes, 12, kBadLarge, kPage)));
  EXPECT_EQ(wire::read_reply(a).error, 0u);
  EXPECT_EQ(list_a()["badblocks"], json::array());
  ASSERT_EQ(read_request(a, true, 13, kBadSmall, kPage, &data), 0u);
  EXPECT_EQ(data, fresh);

  // The daemon lived through it and logged the namespace and offset.
  EXPECT_EQ(::kill(serve.pid(), 0), 0);
  const std::string log = serve.log();
  EXPECT_NE(log.find("namespace a: read at offset " + std::to_string(kBadSmall)),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("media error"), std::string::npos) << log;
  EXPECT_EQ(serve.stop(), 0) << log;
}

}  // namespace
}  // namespace rawdax::nbd
