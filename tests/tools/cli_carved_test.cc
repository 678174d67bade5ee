// Carved regions from the outside: init-region, list --space, vm-args on an
// extent, and the daemon handing out a carved namespace (fd at an offset,
// never destroyed or shrunk under its holders).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <filesystem>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli_run.h"
#include "rawdax/client.h"
#include "rawdax/client_c.h"
#include "rawdax/rawdax.h"
#include "serve_child.h"
#include "test_util.h"

namespace rawdax {
namespace {

using ::rawdax::testing::CliRun;
using ::rawdax::testing::run_cli;
using ::rawdax::testing::ScratchDir;
using ::rawdax::testing::ServeChild;

class CarvedCliTest : public ::testing::Test {
 protected:
  CliRun rawdax(const std::string& args) { return run_cli(dir_.path(), args); }
  std::string file() const { return dir_.path() + "/region.img"; }
  std::string spec() const { return "file:" + file(); }
  nlohmann::json region_entry() {
    CliRun list = rawdax("list --space --region " + spec());
    EXPECT_EQ(list.exit_code, 0) << list.err;
    auto all = nlohmann::json::parse(list.out);
    return all.at(0);
  }
  // A script standing in for QEMU: `help` is what it prints for
  // "-object memory-backend-file,help".
  std::string fake_qemu(const std::string& version, const std::string& help) {
    std::string path = dir_.path() + "/qemu-" + version;
    std::ofstream(path) << "#!/bin/sh\ncase \"$1\" in\n"
                        << "  --version) echo 'QEMU emulator version " << version << "' ;;\n"
                        << "  *) printf '%s\\n' 'memory-backend-file options:' '" << help
                        << "' ;;\nesac\n";
    ::chmod(path.c_str(), 0755);
    return path;
  }

  ScratchDir dir_{::rawdax::testing::tmpfs_parent()};
};

TEST_F(CarvedCliTest, InitRegionRefusesWhatItWouldEraseAndForceErasesIt) {
  // A file with data and no label area.
  {
    std::ofstream out(file());
    out.seekp(32 << 20);
    out << "old data";
    out.seekp((64 << 20) - 1);
    out << '\0';
  }
  CliRun refused = rawdax("init-region " + spec() + " --size 128M");
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("first non-zero byte is at offset " + std::to_string(32 << 20)),
            std::string::npos)
      << refused.err;
  CliRun open = rawdax("list --region " + spec());
  EXPECT_EQ(open.exit_code, 1) << "a device with data is never formatted by a plain open";

  CliRun forced = rawdax("init-region " + spec() + " --force --json");
  ASSERT_EQ(forced.exit_code, 0) << forced.err;
  EXPECT_FALSE(nlohmann::json::parse(forced.out)["erased"].get<std::string>().empty());

  ASSERT_EQ(rawdax("create-namespace --region " + spec() + " --name a --size 1M").exit_code, 0);
  ASSERT_EQ(rawdax("create-namespace --region " + spec() + " --name b --size 2M").exit_code, 0);
  CliRun again = rawdax("init-region " + spec());
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.err.find("2 namespace(s): a ("), std::string::npos) << again.err;
  EXPECT_NE(again.err.find(", b ("), std::string::npos) << again.err;
  EXPECT_EQ(region_entry()["namespaces"].size(), 2u) << "a refused init changes nothing";

  CliRun erased = rawdax("init-region " + spec() + " --force");
  ASSERT_EQ(erased.exit_code, 0) << erased.err;
  EXPECT_NE(erased.out.find("erased: 2 namespace(s)"), std::string::npos) << erased.out;
  EXPECT_EQ(region_entry()["namespaces"].size(), 0u);
}

TEST_F(CarvedCliTest, ListSpaceReportsOffsetsFreeSpaceAndTheLargestFreeExtent) {
  ASSERT_EQ(rawdax("init-region " + spec() + " --size 64M").exit_code, 0);
  for (auto [name, size] : {std::pair{"a", "1M"}, {"b", "3M"}, {"c", "1M"}}) {
    CliRun made = rawdax("create-namespace --region " + spec() + " --name " + name +
                         " --size " + size);
    ASSERT_EQ(made.exit_code, 0) << made.err;
  }
  ASSERT_EQ(rawdax("destroy-namespace b --region " + spec()).exit_code, 0);
  nlohmann::json entry = region_entry();
  const nlohmann::json& space = entry["space"];
  ASSERT_TRUE(space["carved"].get<bool>());
  uint64_t device = space["device_size"], area = space["label_area_size"];
  uint64_t used = 0, end = 0, first = UINT64_MAX;
  for (const auto& ns : entry["namespaces"]) {
    uint64_t offset = ns["offset"], size = ns["size"];
    EXPECT_GE(offset, area);
    EXPECT_EQ(offset % space["align"].get<uint64_t>(), 0u);
    EXPECT_EQ(ns["path"], file());
    used += size;
    end = std::max(end, offset + size);
    first = std::min(first, offset);
  }
  EXPECT_EQ(space["free"].get<uint64_t>(), device - area - used);
  // b's hole lies between a and c; the tail after c is the largest.
  EXPECT_EQ(space["largest_free_extent"].get<uint64_t>(), device - end);
  EXPECT_EQ(first, area) << "best fit from an empty region starts at the data area";

  // The hole is reused by a namespace that fits it, before the tail.
  ASSERT_EQ(rawdax("create-namespace --region " + spec() + " --name d --size 2M").exit_code, 0);
  const nlohmann::json after = region_entry();  // kept alive: the loop borrows from it
  bool found = false;
  for (const auto& ns : after["namespaces"]) {
    if (ns["name"] == "d") {
      found = true;
      EXPECT_LT(ns["offset"].get<uint64_t>(), end);
    }
  }
  EXPECT_TRUE(found) << after.dump();
}

TEST_F(CarvedCliTest, VmArgsPlaceTheExtentWithOffsetOrNameTheQemuVersionNeeded) {
  ASSERT_EQ(rawdax("init-region " + spec() + " --size 64M").exit_code, 0);
  CliRun made = rawdax("create-namespace --region " + spec() + " --name vm --size 4M");
  ASSERT_EQ(made.exit_code, 0) << made.err;
  uint64_t offset = nlohmann::json::parse(made.out)["offset"];
  ASSERT_GT(offset, 0u);

  std::string modern = fake_qemu("9.1.0", "  offset=<int>          - Offset into the target file");
  CliRun args = rawdax("vm-args vm --json --region " + spec() + " --qemu " + modern);
  ASSERT_EQ(args.exit_code, 0) << args.err;
  auto j = nlohmann::json::parse(args.out);
  EXPECT_EQ(j["offset"].get<uint64_t>(), offset);
  std::string all;
  for (const auto& a : j["args"]) all += a.get<std::string>() + " ";
  EXPECT_NE(all.find("mem-path=" + file() + ",size=4194304,offset=" + std::to_string(offset)),
            std::string::npos)
      << all;

  std::string old = fake_qemu("7.2.22", "  size=<int>            - Size of the memory region");
  CliRun refused = rawdax("vm-args vm --region " + spec() + " --qemu " + old);
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("since version 8.1"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("(7.2.22) lacks it"), std::string::npos) << refused.err;
  EXPECT_TRUE(refused.out.empty()) << "no arguments printed on error";

  // The QEMU named is run through a shell, in the daemon when one runs: a
  // name that could say more than a path is refused before anything runs.
  const std::string touched = dir_.path() + "/touched";
  CliRun injected =
      rawdax("vm-args vm --region " + spec() + " --qemu \"" + modern + "';touch " + touched + ";'\"");
  EXPECT_EQ(injected.exit_code, 1);
  EXPECT_NE(injected.err.find("only A-Z a-z 0-9 . _ / + - are allowed"), std::string::npos)
      << injected.err;
  EXPECT_FALSE(std::filesystem::exists(touched));
}

TEST_F(CarvedCliTest, DaemonHandsOutTheDeviceAtTheExtentAndNeverFreesItUnderAHolder) {
  ASSERT_EQ(rawdax("init-region " + spec() + " --size 64M").exit_code, 0);
  ASSERT_EQ(rawdax("create-namespace --region " + spec() + " --name first --size 4M").exit_code,
            0);
  ASSERT_EQ(rawdax("create-namespace --region " + spec() + " --name vm --size 4M").exit_code, 0);
  ServeChild daemon(spec(), dir_.path() + "/nbd.sock", dir_.path() + "/serve.log");
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  const std::string socket = file() + ".control.sock";
  auto client = Client::connect(socket);
  ASSERT_TRUE(client) << client.error().message();
  auto ns = (*client)->open_namespace("vm", Access::ReadWrite);
  ASSERT_TRUE(ns) << ns.error().message();
  ASSERT_GT(ns->offset(), 0u);
  auto m = ns->map(4096, 4096);
  ASSERT_TRUE(m) << m.error().message();
  const char marker[] = "stored through the client's mapping";
  std::memcpy(m->data(), marker, sizeof marker);

  // The bytes landed in vm's extent of the file, at namespace offset 4096.
  char seen[sizeof marker] = {};
  int fd = ::open(file().c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pread(fd, seen, sizeof seen, static_cast<off_t>(ns->offset() + 4096)),
            static_cast<ssize_t>(sizeof seen));
  ::close(fd);
  EXPECT_STREQ(seen, marker);

  // Neither a forced destroy nor a forced shrink frees what the holder maps.
  CliRun destroy = rawdax("destroy-namespace vm --force --region " + spec());
  EXPECT_EQ(destroy.exit_code, 1);
  EXPECT_NE(destroy.err.find("cannot be destroyed until they release it"), std::string::npos)
      << destroy.err;
  CliRun shrink = rawdax("resize-namespace vm --size 2M --force --region " + spec());
  EXPECT_EQ(shrink.exit_code, 1);
  EXPECT_NE(shrink.err.find("cannot be shrunk"), std::string::npos) << shrink.err;
  EXPECT_STREQ(reinterpret_cast<const char*>(m->data()), marker);

  CliRun plain = rawdax("destroy-namespace vm --region " + spec());
  EXPECT_EQ(plain.exit_code, 1);
  EXPECT_EQ(plain.err.find("force revokes it"), std::string::npos)
      << "force would not help on a carved region: " << plain.err;

  // The C interface: the plain open refuses what it cannot place; the _at
  // open gives the same offset.
  rawdax_client* c = nullptr;
  ASSERT_EQ(rawdax_client_connect(socket.c_str(), &c), 0);
  int cfd = -1;
  uint64_t coffset = 0, csize = 0;
  EXPECT_EQ(rawdax_client_open(c, "vm", 1, 0, &cfd, &csize), -ENOTSUP);
  EXPECT_EQ(cfd, -1);
  EXPECT_NE(std::string(rawdax_client_error(c)).find("rawdax_client_open_at"), std::string::npos);
  ASSERT_EQ(rawdax_client_open_at(c, "vm", 1, 0, &cfd, &coffset, &csize), 0)
      << rawdax_client_error(c);
  EXPECT_EQ(coffset, ns->offset());
  EXPECT_EQ(csize, 4u << 20);
  ::close(cfd);
  rawdax_client_close(c);

  ASSERT_TRUE((*client)->release_namespace("vm"));
  CliRun gone = rawdax("destroy-namespace vm --region " + spec());
  EXPECT_EQ(gone.exit_code, 0) << gone.err;
}

}  // namespace
}  // namespace rawdax
