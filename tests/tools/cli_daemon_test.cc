// The rawdax binary with a running `rawdax serve`: verbs go through the
// control socket and print what they print without a daemon; a restarted
// daemon serves the same namespaces.
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <regex>
#include <sstream>

#include "cli_run.h"
#include "daemon/control_test_util.h"
#include "serve_child.h"

namespace rawdax {
namespace {

using ::rawdax::testing::CliRun;
using ::rawdax::testing::json;
using ::rawdax::testing::RawConnection;
using ::rawdax::testing::read_text;
using ::rawdax::testing::run_cli;
using ::rawdax::testing::ScratchDir;
using ::rawdax::testing::ServeChild;


class ControlCliTest : public ::testing::Test {
 protected:
  CliRun rawdax(const std::string& args) {
    return run_cli(dir_.path(), args + " --region " + region());
  }
  std::string region() const { return dir_.path() + "/region"; }
  std::string serve_log() const { return dir_.path() + "/serve.log"; }
  std::string nbd_socket() const { return dir_.path() + "/nbd.sock"; }

  ScratchDir dir_{::rawdax::testing::disk_parent()};
};

// Masks what legitimately differs between two snapshots or two namespaces.
json masked(json j, std::initializer_list<const char*> keys) {
  for (const char* k : keys) j.erase(k);
  return j;
}

TEST_F(ControlCliTest, VerbsPrintTheSameThroughTheDaemon) {
  // Without a daemon.
  ASSERT_EQ(rawdax("create-namespace --name vm1 --size 2M").exit_code, 0);
  CliRun resized = rawdax("resize-namespace vm1 --size 3M");
  ASSERT_EQ(resized.exit_code, 0) << resized;
  CliRun list = rawdax("list");
  CliRun list_human = rawdax("list --human");
  CliRun caps = rawdax("list --capabilities --human");
  CliRun missing = rawdax("destroy-namespace nosuch");
  CliRun bad_create = rawdax("create-namespace --name vm1 --size 1M");
  CliRun created2 = rawdax("create-namespace --name vm2 --size 1M");
  CliRun destroyed2 = rawdax("destroy-namespace vm2");
  CliRun snap = rawdax("snapshot vm1 " + dir_.path() + "/direct.snap --json");
  ASSERT_EQ(snap.exit_code, 0) << snap;
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(bad_create.exit_code, 0);

  ServeChild serve(region(), nbd_socket(), serve_log(), {"--default-size", "4M"});
  ASSERT_TRUE(serve.ready()) << serve.log();
  // The region's flock is the daemon's now: only the socket gets through.
  auto direct = Region::open(region());
  ASSERT_FALSE(direct);
  EXPECT_EQ(direct.error().code(), std::errc::device_or_resource_busy);

  EXPECT_EQ(rawdax("list"), list);
  EXPECT_EQ(rawdax("list --human"), list_human);
  // The free space of a directory region is the filesystem's, live: other
  // tests write meanwhile. Everything else must be the same.
  CliRun caps_daemon = rawdax("list --capabilities --human");
  ASSERT_EQ(caps_daemon.exit_code, caps.exit_code) << caps_daemon;
  EXPECT_EQ(caps_daemon.err, caps.err);
  auto without_free = [](const std::string& out) -> std::string {
    json j = json::parse(out);
    for (auto& entry : j) {
      EXPECT_TRUE(entry["space"].contains("free")) << out;
      entry["space"] = masked(entry["space"], {"free", "largest_free_extent"});
    }
    return j.dump();
  };
  EXPECT_EQ(without_free(caps_daemon.out), without_free(caps.out));
  EXPECT_EQ(rawdax("resize-namespace vm1 --size 3M"), resized);
  EXPECT_EQ(rawdax("destroy-namespace nosuch"), missing);
  EXPECT_EQ(rawdax("create-namespace --name vm1 --size 1M"), bad_create);
  CliRun created2_daemon = rawdax("create-namespace --name vm2 --size 1M");
  ASSERT_EQ(created2_daemon.exit_code, 0) << created2_daemon;
  EXPECT_EQ(masked(json::parse(created2_daemon.out), {"uuid", "path"}),
            masked(json::parse(created2.out), {"uuid", "path"}));
  EXPECT_EQ(rawdax("destroy-namespace vm2"), destroyed2);
  CliRun snap_daemon = rawdax("snapshot vm1 " + dir_.path() + "/daemon.snap --json");
  ASSERT_EQ(snap_daemon.exit_code, 0) << snap_daemon;
  const auto varying = {"path", "id", "duration_ns", "max_writer_stall_ns"};
  json a = json::parse(snap_daemon.out), b = json::parse(snap.out);
  EXPECT_EQ(a["path"], dir_.path() + "/daemon.snap");
  EXPECT_EQ(masked(a, varying), masked(b, varying));
  EXPECT_EQ(rawdax("verify " + dir_.path() + "/daemon.snap").exit_code, 0);

  // The verbs did go through the daemon: it logged their connections.
  EXPECT_NE(read_text(serve_log()).find("namespace vm2 created"), std::string::npos);
  EXPECT_EQ(serve.stop(), 0);
  // And with the daemon gone they work directly again.
  EXPECT_EQ(rawdax("list"), list);
}

// stats prints the daemon's counters (query-stats): a write over NBD that
// waits on a freeze shows in parked_writers until the thaw. Without a daemon
// there are no counters to show, and stats says so.
TEST_F(ControlCliTest, StatsPrintsTheDaemonsCountersParkedWritersIncluded) {
  CliRun none = rawdax("stats");
  EXPECT_NE(none.exit_code, 0);
  EXPECT_NE(none.err.find("no rawdax serve runs on region " + region()), std::string::npos)
      << none;
  ServeChild serve(region(), nbd_socket(), serve_log(), {"--default-size", "4M"});
  ASSERT_TRUE(serve.ready()) << serve.log();
  std::smatch m;
  const std::string log = read_text(serve_log());
  ASSERT_TRUE(std::regex_search(log, m, std::regex("NBD export (\\S+/default\\S*)"))) << log;
  const std::string uri = m[1];
  auto parked = [&]() -> uint64_t {
    CliRun run = rawdax("stats default");
    json j = json::parse(run.out, nullptr, false);
    if (run.exit_code != 0 || !j.is_array() || j.size() != 1 || !j[0].contains("parked_writers")) {
      ADD_FAILURE() << run;
      return UINT64_MAX;
    }
    return j[0]["parked_writers"].get<uint64_t>();
  };
  EXPECT_EQ(parked(), 0u);

  RawConnection conn(region() + "/control.sock");
  ASSERT_TRUE(conn.execute("freeze", {{"name", "default"}, {"timeout", 5}}).contains("return"));
  const std::string write = "/usr/bin/python3 -m nbd -u '" + uri +
                            "' -c 'h.pwrite(b\"S\" * 4096, 0)' 2>&1";
  std::FILE* writer = ::popen(write.c_str(), "r");
  ASSERT_NE(writer, nullptr);
  uint64_t seen = 0;  // until the write is counted (or stats is malformed)
  ::rawdax::testing::eventually([&] { return (seen = parked()) != 0; }, std::chrono::seconds(60));
  EXPECT_EQ(seen, 1u) << "the NBD write neither finished nor waited on the freeze";
  EXPECT_TRUE(conn.execute("thaw", {{"name", "default"}}).contains("return"));
  EXPECT_EQ(::pclose(writer), 0) << write;
  EXPECT_EQ(parked(), 0u);

  // Every namespace's counters, as query-stats has them.
  CliRun all = rawdax("stats");
  ASSERT_EQ(all.exit_code, 0) << all;
  json direct = conn.execute("query-stats");
  ASSERT_TRUE(direct.contains("return")) << direct;
  EXPECT_EQ(json::parse(all.out, nullptr, false), direct["return"]) << all;
  EXPECT_GE(direct["return"][0]["writes"].get<uint64_t>(), 1u);
  CliRun missing = rawdax("stats nosuch");
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.err.find("namespace nosuch"), std::string::npos) << missing;
}

TEST_F(ControlCliTest, DaemonRestartKeepsNamespacesAndClientsReopen) {
  const std::string sock = region() + "/control.sock";
  const char message[] = "written before the restart";
  std::string uuid;
  {
    ServeChild serve(region(), nbd_socket(), serve_log(), {"--default-size", "4M"});
    ASSERT_TRUE(serve.ready()) << serve.log();
    auto client = Client::connect(sock);
    ASSERT_TRUE(client);
    ASSERT_TRUE((*client)->execute("create-namespace", R"({"name":"keep","size":1048576})"));
    auto ns = (*client)->open_namespace("keep", Access::ReadWrite);
    ASSERT_TRUE(ns) << ns.error().message();
    auto m = ns->map(4096, sizeof message);
    ASSERT_TRUE(m);
    std::memcpy(m->data(), message, sizeof message);
    ASSERT_EQ(::msync(reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(m->data()) & ~uintptr_t{4095}),
                      4096, MS_SYNC),
              0);
    uuid = json::parse(ns->reply_json())["uuid"];
    EXPECT_EQ(serve.stop(), 0);
  }
  {
    // A killed daemon leaves its socket file behind; the next one replaces it.
    ServeChild serve(region(), nbd_socket(), serve_log(), {"--default-size", "4M"});
    ASSERT_TRUE(serve.ready()) << serve.log();
    EXPECT_EQ(serve.stop(SIGKILL), 128 + SIGKILL);
  }
  ServeChild serve(region(), nbd_socket(), serve_log(), {"--default-size", "4M"});
  ASSERT_TRUE(serve.ready()) << serve.log();
  auto client = Client::connect(sock);
  ASSERT_TRUE(client);
  auto list = json::parse(*(*client)->execute("query-namespaces"));
  ASSERT_EQ(list.size(), 2u) << list;  // "default" and "keep"
  auto ns = (*client)->open_namespace("keep", Access::ReadOnly);
  ASSERT_TRUE(ns) << ns.error().message();
  EXPECT_EQ(json::parse(ns->reply_json())["uuid"], uuid);
  auto m = ns->map(4096, sizeof message);
  ASSERT_TRUE(m);
  EXPECT_EQ(std::memcmp(m->data(), message, sizeof message), 0);
  EXPECT_EQ(serve.stop(), 0);
}


// What legitimately differs between two runs of the same verbs on a fresh
// region at the same path: fresh uuids and snapshot ids, the time a
// snapshot took, and a directory region's free space (the filesystem's).
std::string volatile_masked(std::string text) {
  static const std::pair<std::regex, const char*> kMasks[] = {
      {std::regex("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "UUID"},
      {std::regex("\"(duration_ns|max_writer_stall_ns|free|largest_free_extent)\": "
                  "(\"[^\"]*\"|[0-9]+)"),
       "\"$1\": N"},
      {std::regex(" in [0-9.e+-]+ ms"), " in T ms"},
  };
  for (const auto& [re, with] : kMasks) text = std::regex_replace(text, re, with);
  return text;
}

// Every verb that works on a region is one control command, run by the
// daemon's Dispatcher or by one in the verb's process: the same sequence of
// verbs, good and bad, prints the same bytes (exit code, stdout, stderr) both
// ways. The daemon listens on a socket that is not the default one, and the
// verbs still find it (its record), or are told it with --control.
// export-snapshot, unexport and exports are not in the sweep: they manage
// the daemon's NBD server, so they work through it and, by design, fail in
// a verb's own process (SnapshotExportCli.VerbsWithoutADaemonSaySo in
// tests/export/nbd_snapshot_export_test.cc checks that error).
TEST_F(ControlCliTest, EveryVerbPrintsTheSameBytesWithAndWithoutTheDaemon) {
  const std::string s1 = dir_.path() + "/s1.snap", s2 = dir_.path() + "/s2.snap",
                    s3 = dir_.path() + "/s3.snap";
  const std::vector<std::string> verbs = {
      "create-namespace --name vm2 --size 1M --human",
      "list",
      "list --human",
      "list --capabilities --space",
      "resize-namespace vm1 --size 3M",
      "snapshot vm1 " + s1 + " --json",
      "snapshot vm1 " + s2 + " --base " + s1 + " --json --human",
      "snapshot vm1 " + s3,
      "verify " + s2,
      "verify " + s2 + " --json",
      "restore vm3 " + s2,
      "restore vm1 " + s1 + " --human",
      "vm-args vm1",
      "vm-args vm3 --virtio --ram 1G --json",
      "destroy-namespace vm2",
      "destroy-namespace vm3 --json",
      "stats vm1",  // the counters are the daemon's: compared apart
      // Bad input: the same one-line errors.
      "create-namespace --name vm1 --size 1M",
      "resize-namespace nosuch --size 1M",
      "snapshot nosuch " + s3,
      "snapshot vm1 " + s3 + " --base " + dir_.path() + "/none.snap",
      "restore vm1 " + dir_.path() + "/none.snap",
      "verify " + dir_.path() + "/none.snap",
      "vm-args nosuch",
      "destroy-namespace nosuch",
      "list",
  };
  auto run_all = [&](const std::string& extra) {
    std::vector<CliRun> out;
    for (const std::string& verb : verbs) {
      // After the verb's name, so that a trailing bad flag stays last.
      std::string args = verb;
      args.insert(std::min(args.find(' '), args.size()), " --region " + region() + extra);
      CliRun run = run_cli(dir_.path(), args);
      run.out = volatile_masked(run.out);
      run.err = volatile_masked(run.err);
      out.push_back(run);
    }
    return out;
  };
  auto fresh_region = [&] {
    std::filesystem::remove_all(region());
    for (const auto& f : {s1, s2, s3}) std::filesystem::remove(f);
    CliRun made = rawdax("create-namespace --name vm1 --size 2M");
    ASSERT_EQ(made.exit_code, 0) << made;
  };

  fresh_region();
  std::vector<CliRun> direct = run_all("");
  // The good verbs worked and the bad ones failed, or the sweep proves little.
  const size_t stats = 16;
  ASSERT_EQ(verbs[stats], "stats vm1");
  for (size_t i = 0; i < verbs.size(); ++i) {
    bool good = i < stats || i + 1 == verbs.size();
    EXPECT_EQ(direct[i].exit_code, good ? 0 : 1) << verbs[i] << ": " << direct[i];
  }

  const std::string sock = dir_.path() + "/elsewhere.sock";
  for (const std::string& extra : {std::string(), " --control " + sock}) {
    fresh_region();
    ServeChild serve(region(), nbd_socket(),
                                        dir_.path() + "/serve" + std::to_string(extra.size()) + ".log",
                                        {"--control", sock});
    ASSERT_TRUE(serve.ready()) << serve.log();
    std::vector<CliRun> through = run_all(extra);
    ASSERT_EQ(through.size(), direct.size());
    for (size_t i = 0; i < verbs.size(); ++i) {
      if (verbs[i].rfind("stats", 0) == 0) {
        EXPECT_EQ(through[i].exit_code, 0) << through[i];
        EXPECT_EQ(json::parse(through[i].out)[0]["name"], "vm1") << through[i];
        continue;
      }
      EXPECT_EQ(through[i], direct[i]) << "rawdax " << verbs[i] << extra;
    }
    // They went through the daemon: it logged what they did.
    std::string log = serve.log();
    EXPECT_NE(log.find("namespace vm3 restored from " + s2), std::string::npos) << log;
    EXPECT_NE(log.find("namespace vm2 destroyed"), std::string::npos) << log;
    EXPECT_EQ(serve.stop(), 0);
  }

  // --control naming a socket nobody serves is an error, not a fallback to
  // opening the region.
  CliRun nobody = rawdax("list --control " + sock);
  EXPECT_EQ(nobody.exit_code, 1);
  EXPECT_NE(nobody.err.find("no rawdax serve answers on control socket " + sock),
            std::string::npos)
      << nobody;
}

}  // namespace
}  // namespace rawdax
