// The soak: `rawdax serve` as a child for RAWDAX_SOAK_SECONDS (120 unless
// set), under everything at once:
//   - NBD I/O on "default": two connections, each owning half of it, writing
//     runs of versioned 4 KiB blocks and reading them back against a model,
//     reconnecting every few hundred requests;
//   - namespace churn through the control socket: create, NBD I/O on the new
//     export, trim, grow, passed-fd stores, destroy; query-* in between;
//   - freezes and thaws of "default" while its writers run;
//   - snapshots (full, then incrementals on it) of a namespace with a model,
//     each verified and restored into a scratch region and compared; and
//     live snapshots of "default" under its writers, verified.
// At the end the daemon's RSS must be within 10 % of its value after the
// warm-up (every namespace already filled once, so their pages count in
// both), its open descriptors and threads back where they were, its log
// free of error lines ("rawdax serve: error: "), every read verified, and
// it must stop cleanly. A summary with the counts is printed.
//
// Not part of `make test`: `make soak` (SOAK_SECONDS, 600 by default) and CI
// (120 s) run it. docs/hardening.md.
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <gtest/gtest.h>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "export/nbd_fixture.h"
#include "export/nbd_wire.h"
#include "rawdax/rawdax.h"
#include "serve_child.h"
#include "test_util.h"

namespace rawdax {
namespace {

using namespace ::rawdax::nbd;        // NOLINT: protocol constants read better bare in tests
using namespace ::rawdax::nbd::wire;  // NOLINT: the byte-level helpers
using ::rawdax::testing::RawClient;
using ::rawdax::testing::ScratchDir;
using ::rawdax::testing::ServeChild;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kBlock = 4096;
constexpr uint64_t kDefaultSize = 64ull << 20;
constexpr uint64_t kSnapSize = 8ull << 20;

int soak_seconds() {
  const char* env = std::getenv("RAWDAX_SOAK_SECONDS");
  int s = env != nullptr ? std::atoi(env) : 120;
  return s > 0 ? s : 120;
}

// The bytes of block `index` at `version`: 8-byte words naming both, so a
// block from the wrong place or the wrong time never matches.
void fill_block(char* dst, uint64_t index, uint32_t version) {
  uint64_t word = (index << 32) | version;
  for (uint64_t i = 0; i < kBlock; i += 8) {
    uint64_t w = word ^ i;
    std::memcpy(dst + i, &w, 8);
  }
}
bool block_matches(const char* src, uint64_t index, uint32_t version) {
  if (version == 0) {
    return std::all_of(src, src + kBlock, [](char c) { return c == 0; });
  }
  char want[kBlock];
  fill_block(want, index, version);
  return std::memcmp(src, want, kBlock) == 0;
}

struct Counters {
  std::atomic<uint64_t> writes{0}, reads{0}, flushes{0}, trims{0}, bytes{0};
  std::atomic<uint64_t> reconnects{0}, creates{0}, destroys{0}, resizes{0}, queries{0};
  std::atomic<uint64_t> fd_opens{0}, freezes{0}, snapshots{0}, restores{0}, live_snapshots{0};
  std::atomic<uint64_t> verified_blocks{0};
};

class Soak {
 public:
  Soak() : serve_(region(), dir_.path() + "/nbd.sock", dir_.path() + "/serve.log",
                  {"--default-size", std::to_string(kDefaultSize)}) {}

  std::string region() const { return dir_.path() + "/region"; }
  std::string control() const { return region() + "/control.sock"; }
  ServeChild& serve() { return serve_; }
  Counters& counters() { return counters_; }

  // A failure from any thread: recorded (the first few in full) and counted.
  void fail(const std::string& what) {
    std::lock_guard<std::mutex> lock(mu_);
    if (failures_.size() < 20) failures_.push_back(what);
    ++failure_count_;
  }
  std::vector<std::string> failures() {
    std::lock_guard<std::mutex> lock(mu_);
    return failures_;
  }
  uint64_t failure_count() {
    std::lock_guard<std::mutex> lock(mu_);
    return failure_count_;
  }

  std::unique_ptr<Client> client() {
    auto c = Client::connect(control());
    if (!c) {
      fail("control connect: " + c.error().message());
      return nullptr;
    }
    return std::move(*c);
  }
  // One control command; the parsed "return", or null after a recorded failure.
  json command(Client& c, const std::string& name, const json& args = json::object()) {
    auto r = c.execute(name, args.dump());
    counters_.queries.fetch_add(name.rfind("query-", 0) == 0 ? 1 : 0);
    if (!r) {
      fail(name + " " + args.dump() + ": " + r.error().message());
      return nullptr;
    }
    return json::parse(*r, nullptr, false);
  }

 private:
  ScratchDir dir_{::rawdax::testing::tmpfs_parent()};
  ServeChild serve_;
  Counters counters_;
  std::mutex mu_;
  std::vector<std::string> failures_;
  uint64_t failure_count_ = 0;
};

// One NBD connection with a model of the blocks it owns: [first, first+count).
class ModelledExport {
 public:
  ModelledExport(Soak& soak, std::string name, uint64_t first, uint64_t count, uint32_t seed)
      : soak_(soak), name_(std::move(name)), first_(first), version_(count, 0), rng_(seed) {}

  bool connect() {
    client_ = std::make_unique<RawClient>(soak_.serve().nbd_socket());
    go(*client_, name_, /*structured=*/false);
    if (::testing::Test::HasFatalFailure()) {
      soak_.fail("NBD handshake for " + name_ + " failed");
      return false;
    }
    soak_.counters().reconnects.fetch_add(1);
    return true;
  }
  void disconnect() {
    if (client_) client_->send(request(kCmdDisc, 0, 0, 0));
    client_.reset();
  }

  // Writes `n` blocks from model block `b`, each at its next version.
  bool write(uint64_t b, uint64_t n) {
    std::string data(n * kBlock, '\0');
    for (uint64_t i = 0; i < n; ++i) fill_block(data.data() + i * kBlock, first_ + b + i, version_[b + i] + 1);
    if (!expect_ok(request(kCmdWrite, ++cookie_, (first_ + b) * kBlock, data.size()) + data,
                   "WRITE", b, n)) {
      return false;
    }
    for (uint64_t i = 0; i < n; ++i) ++version_[b + i];
    soak_.counters().writes.fetch_add(1);
    soak_.counters().bytes.fetch_add(data.size());
    return true;
  }
  bool read_and_verify(uint64_t b, uint64_t n) {
    if (!client_->send(request(kCmdRead, ++cookie_, (first_ + b) * kBlock, n * kBlock))) {
      soak_.fail(name_ + ": READ send failed");
      return false;
    }
    Reply r = read_reply(*client_);
    if (!r.ok || r.error != 0 || r.cookie != cookie_) {
      soak_.fail(name_ + ": READ block " + std::to_string(first_ + b) + " x" + std::to_string(n) +
                 ": reply ok " + std::to_string(r.ok) + " error " + std::to_string(r.error));
      return false;
    }
    std::string data = client_->recv(n * kBlock);
    if (data.size() != n * kBlock) {
      soak_.fail(name_ + ": READ payload short");
      return false;
    }
    for (uint64_t i = 0; i < n; ++i) {
      if (!block_matches(data.data() + i * kBlock, first_ + b + i, version_[b + i])) {
        soak_.fail(name_ + ": block " + std::to_string(first_ + b + i) + " does not hold version " +
                   std::to_string(version_[b + i]));
        return false;
      }
    }
    soak_.counters().reads.fetch_add(1);
    soak_.counters().verified_blocks.fetch_add(n);
    return true;
  }
  bool trim(uint64_t b, uint64_t n) {
    if (!expect_ok(request(kCmdTrim, ++cookie_, (first_ + b) * kBlock, n * kBlock), "TRIM", b, n)) {
      return false;
    }
    for (uint64_t i = 0; i < n; ++i) version_[b + i] = 0;
    soak_.counters().trims.fetch_add(1);
    return true;
  }
  bool flush() {
    if (!expect_ok(request(kCmdFlush, ++cookie_, 0, 0), "FLUSH", 0, 0)) return false;
    soak_.counters().flushes.fetch_add(1);
    return true;
  }
  bool verify_all() {
    for (uint64_t b = 0; b < version_.size(); b += 64) {
      if (!read_and_verify(b, std::min<uint64_t>(64, version_.size() - b))) return false;
    }
    return true;
  }
  // One random request: mostly writes and reads, some flushes.
  bool random_op(bool allow_trim) {
    uint64_t n = 1 + rng_() % 64;
    uint64_t b = rng_() % (version_.size() - n + 1);
    switch (rng_() % 10) {
      case 0: return flush();
      case 1: return allow_trim ? trim(b, n) : read_and_verify(b, n);
      case 2: case 3: case 4: case 5: return write(b, n);
      default: return read_and_verify(b, n);
    }
  }
  const std::vector<uint32_t>& versions() const { return version_; }
  uint64_t first() const { return first_; }

 private:
  bool expect_ok(const std::string& bytes, const char* what, uint64_t b, uint64_t n) {
    if (!client_->send(bytes)) {
      soak_.fail(name_ + ": " + what + " send failed");
      return false;
    }
    Reply r = read_reply(*client_);
    if (!r.ok || r.error != 0 || r.cookie != cookie_) {
      soak_.fail(name_ + ": " + what + " block " + std::to_string(first_ + b) + " x" +
                 std::to_string(n) + ": reply ok " + std::to_string(r.ok) + " error " +
                 std::to_string(r.error));
      return false;
    }
    return true;
  }

  Soak& soak_;
  std::string name_;
  uint64_t first_;
  std::vector<uint32_t> version_;
  std::mt19937_64 rng_;
  std::unique_ptr<RawClient> client_;
  uint64_t cookie_ = 0;
};

void io_worker(Soak& soak, int index, Clock::time_point end) {
  const uint64_t half = kDefaultSize / kBlock / 2;
  ModelledExport e(soak, "default", index * half, half, 1000 + index);
  if (!e.connect()) return;
  // Fill once, so the warm-up has every page of the namespace resident.
  for (uint64_t b = 0; b < half; b += 64) {
    if (!e.write(b, 64)) return;
  }
  for (uint64_t ops = 1; Clock::now() < end; ++ops) {
    if (!e.random_op(/*allow_trim=*/false)) return;
    if (ops % 500 == 0) {
      e.disconnect();
      if (!e.connect()) return;
    }
  }
  e.verify_all();
  e.disconnect();
}

void churn_worker(Soak& soak, Clock::time_point end) {
  auto c = soak.client();
  if (!c) return;
  std::mt19937_64 rng(7);
  for (int i = 0; Clock::now() < end; ++i) {
    std::string name = "churn" + std::to_string(i % 4);
    uint64_t size = (1 + rng() % 4) << 20;
    json made = soak.command(*c, "create-namespace", {{"name", name}, {"size", size}});
    if (made.is_null()) return;
    soak.counters().creates.fetch_add(1);
    {
      ModelledExport e(soak, name, 0, size / kBlock, static_cast<uint32_t>(i));
      if (!e.connect()) return;
      for (int k = 0; k < 40; ++k) {
        if (!e.random_op(/*allow_trim=*/true)) return;
      }
      if (!e.verify_all()) return;
      e.disconnect();
    }
    json grown = soak.command(*c, "resize-namespace", {{"name", name}, {"size", size + (1 << 20)}});
    if (grown.is_null()) return;
    soak.counters().resizes.fetch_add(1);
    if (grown.value("size", uint64_t{0}) != size + (1 << 20)) soak.fail("resize: " + grown.dump());
    if (i % 3 == 0) {
      // A store through a passed fd, seen by the daemon's NBD export.
      auto ns = c->open_namespace(name, Access::ReadWrite, /*exclusive=*/false);
      if (!ns) {
        soak.fail("open-namespace: " + ns.error().message());
        return;
      }
      auto m = ns->map(0, kBlock);
      if (!m) {
        soak.fail("map: " + m.error().message());
        return;
      }
      m->data()[0] = std::byte{0x5a};
      soak.counters().fd_opens.fetch_add(1);
      if (auto st = c->release_namespace(name); !st) soak.fail("release: " + st.error().message());
    }
    for (const char* q : {"query-namespaces", "query-stats", "query-region"}) {
      if (soak.command(*c, q).is_null()) return;
    }
    if (soak.command(*c, "destroy-namespace", {{"name", name}}).is_null()) return;
    soak.counters().destroys.fetch_add(1);
  }
}

void freeze_worker(Soak& soak, Clock::time_point end) {
  auto c = soak.client();
  if (!c) return;
  while (Clock::now() < end) {
    if (soak.command(*c, "freeze", {{"name", "default"}, {"timeout", 10}}).is_null()) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (soak.command(*c, "thaw", {{"name", "default"}}).is_null()) return;
    soak.counters().freezes.fetch_add(1);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

void snapshot_worker(Soak& soak, const std::string& scratch, Clock::time_point end) {
  auto c = soak.client();
  if (!c) return;
  if (soak.command(*c, "create-namespace", {{"name", "snapsrc"}, {"size", kSnapSize}}).is_null()) {
    return;
  }
  auto restored_region = Region::open(scratch + "/restored", {.create = true});
  if (!restored_region) {
    soak.fail("scratch region: " + restored_region.error().message());
    return;
  }
  ModelledExport e(soak, "snapsrc", 0, kSnapSize / kBlock, 99);
  if (!e.connect()) return;
  for (uint64_t b = 0; b < kSnapSize / kBlock; b += 64) {
    if (!e.write(b, 64)) return;
  }
  std::string base;
  for (int i = 0; Clock::now() < end; ++i) {
    for (int k = 0; k < 50; ++k) {
      if (!e.random_op(/*allow_trim=*/true)) return;
    }
    // Every 8th starts a new chain; the others are incrementals on the last.
    if (i % 8 == 0) {
      for (const auto& f : std::filesystem::directory_iterator(scratch)) {
        if (f.path().extension() == ".snap") std::filesystem::remove(f.path());
      }
      base.clear();
    }
    std::string file = scratch + "/s" + std::to_string(i) + ".snap";
    json taken = soak.command(*c, "snapshot", {{"name", "snapsrc"}, {"file", file}, {"base", base}});
    if (taken.is_null()) return;
    soak.counters().snapshots.fetch_add(1);
    auto chain = verify_snapshot(file);
    if (!chain) {
      soak.fail("verify " + file + ": " + chain.error().message());
      return;
    }
    base = file;
    // Restore into the scratch region and compare with the model.
    auto info = (*restored_region)->restore_namespace("copy", file);
    if (!info) {
      soak.fail("restore " + file + ": " + info.error().message());
      return;
    }
    {
      auto dev = (*restored_region)->open_device("copy");
      if (!dev) {
        soak.fail("open restored: " + dev.error().message());
        return;
      }
      std::vector<char> buf(kSnapSize);
      if (auto st = (*dev)->read(0, std::as_writable_bytes(std::span(buf))); !st) {
        soak.fail("read restored: " + st.error().message());
        return;
      }
      for (uint64_t b = 0; b < kSnapSize / kBlock; ++b) {
        if (!block_matches(buf.data() + b * kBlock, b, e.versions()[b])) {
          soak.fail("restored " + file + ": block " + std::to_string(b) + " is not version " +
                    std::to_string(e.versions()[b]));
          return;
        }
      }
    }
    if (auto st = (*restored_region)->destroy_namespace("copy"); !st) {
      soak.fail("destroy restored: " + st.error().message());
      return;
    }
    soak.counters().restores.fetch_add(1);
    // A live snapshot of "default" under its writers: it must verify.
    if (i % 4 == 0) {
      std::string live = scratch + "/live.snapshot";
      if (soak.command(*c, "snapshot", {{"name", "default"}, {"file", live}}).is_null()) return;
      auto ok = verify_snapshot(live);
      if (!ok) soak.fail("verify live: " + ok.error().message());
      std::filesystem::remove(live);
      soak.counters().live_snapshots.fetch_add(1);
    }
  }
  e.verify_all();
  e.disconnect();
  // Gone again, so the daemon's descriptors can be compared with the start.
  if (!soak.command(*c, "destroy-namespace", {{"name", "snapsrc"}}).is_null()) {
    soak.counters().destroys.fetch_add(1);
  }
}

TEST(Soak, ServeUnderMixedLoad) {
  const int seconds = soak_seconds();
  Soak soak;
  ServeChild& serve = soak.serve();
  ASSERT_TRUE(serve.ready()) << serve.log();
  ScratchDir scratch(::rawdax::testing::tmpfs_parent());
  const size_t fds_start = serve.fd_count();
  const size_t threads_start = serve.threads();

  const auto start = Clock::now();
  const auto end = start + std::chrono::seconds(seconds);
  // Warm-up: a tenth of the run (at least 10 s), by which every namespace
  // has been filled once and every kind of operation has run.
  const auto warm = start + std::max(std::chrono::seconds(10), std::chrono::seconds(seconds / 10));
  std::vector<std::thread> workers;
  for (int i = 0; i < 2; ++i) workers.emplace_back(io_worker, std::ref(soak), i, end);
  workers.emplace_back(churn_worker, std::ref(soak), end);
  workers.emplace_back(freeze_worker, std::ref(soak), end);
  workers.emplace_back(snapshot_worker, std::ref(soak), scratch.path(), end);

  std::this_thread::sleep_until(warm);
  const uint64_t rss_warm = serve.rss_kib();
  uint64_t rss_max = rss_warm;
  while (Clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::seconds(1));
    rss_max = std::max(rss_max, serve.rss_kib());
  }
  for (auto& t : workers) t.join();

  // Connections have ended; the daemon reaps them within a second.
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  auto c = soak.client();
  ASSERT_TRUE(c);
  json list = soak.command(*c, "query-namespaces");
  c.reset();
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  const uint64_t rss_end = serve.rss_kib();
  const size_t fds_end = serve.fd_count();
  const size_t threads_end = serve.threads();

  const Counters& n = soak.counters();
  std::printf(
      "soak: %d s\n"
      "  nbd: %llu writes (%llu MiB), %llu reads (%llu blocks verified), %llu flushes, %llu trims, "
      "%llu connections\n"
      "  control: %llu creates, %llu resizes, %llu destroys, %llu fd opens, %llu queries, "
      "%llu freezes\n"
      "  snapshots: %llu verified and restored, %llu live of default\n"
      "  rss: %llu KiB after warm-up, %llu KiB max, %llu KiB at the end\n"
      "  fds: %zu at start, %zu at the end; threads: %zu at start, %zu at the end\n"
      "  failures: %llu\n",
      seconds, (unsigned long long)n.writes.load(), (unsigned long long)(n.bytes.load() >> 20),
      (unsigned long long)n.reads.load(), (unsigned long long)n.verified_blocks.load(),
      (unsigned long long)n.flushes.load(), (unsigned long long)n.trims.load(),
      (unsigned long long)n.reconnects.load(), (unsigned long long)n.creates.load(),
      (unsigned long long)n.resizes.load(), (unsigned long long)n.destroys.load(),
      (unsigned long long)n.fd_opens.load(), (unsigned long long)n.queries.load(),
      (unsigned long long)n.freezes.load(), (unsigned long long)n.restores.load(),
      (unsigned long long)n.live_snapshots.load(), (unsigned long long)rss_warm,
      (unsigned long long)rss_max, (unsigned long long)rss_end, fds_start, fds_end,
      threads_start, threads_end, (unsigned long long)soak.failure_count());

  EXPECT_EQ(soak.failure_count(), 0u);
  for (const auto& f : soak.failures()) ADD_FAILURE() << f;
  EXPECT_GT(n.verified_blocks.load(), 0u);
  EXPECT_GT(n.restores.load(), 0u);
  EXPECT_GT(n.freezes.load(), 0u);
  EXPECT_GT(n.destroys.load(), 0u);
  // Stable: not above the warm-up value by more than 10 %. (Lower is fine:
  // namespaces that existed then may be gone now, and their pages with them.)
  EXPECT_LE(rss_end, rss_warm + rss_warm / 10);
  EXPECT_EQ(fds_end, fds_start);
  EXPECT_EQ(threads_end, threads_start);
  ASSERT_TRUE(list.is_array()) << list;
  ASSERT_EQ(list.size(), 1u) << list;
  EXPECT_EQ(list[0]["name"], "default");
  auto errors = ::rawdax::testing::serve_error_lines(serve.log());
  EXPECT_TRUE(errors.empty()) << errors.size() << " error lines, the first: "
                              << (errors.empty() ? "" : errors.front());
  EXPECT_EQ(serve.stop(), 0);
}

}  // namespace
}  // namespace rawdax
