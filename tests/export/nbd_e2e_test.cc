// The NBD server against real clients: nbdinfo, nbdcopy, qemu-img, qemu-io,
// fio's nbd engine and python3-libnbd. The server runs in this process on a
// unix socket in a scratch directory; the clients are the installed binaries.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "export/nbd_fixture.h"

namespace rawdax {
namespace {

using ::rawdax::testing::NbdFixture;
using ::rawdax::testing::python_with_libnbd;
using ::rawdax::testing::RunResult;

std::string q(const std::string& s) { return "'" + s + "'"; }

class NbdE2eTest : public NbdFixture {
 protected:
  // nbdsh, run by the python that has the bindings.
  std::string nbdsh() { return python_with_libnbd() + " -m nbd"; }
  std::string python() {
    std::string py = python_with_libnbd();
    return py.empty() ? "" : py + " " + RAWDAX_NBD_CLIENT_PY;
  }
  // Reads the device from this thread after stopping the server: joining
  // its threads orders their writes before this read (for TSan as well).
  std::vector<char> device_bytes(uint64_t offset, size_t n) {
    if (server_) server_->stop();
    std::vector<char> out(n);
    auto dev = open_device();
    EXPECT_TRUE(dev->read(offset, std::as_writable_bytes(std::span(out))));
    return out;
  }
};

#define REQUIRE_PYTHON_LIBNBD()                                                      \
  do {                                                                               \
    if (python_with_libnbd().empty()) {                                              \
      GTEST_FAIL() << "python3-libnbd is not installed (make deps installs it)";     \
    }                                                                                \
  } while (0)

TEST_P(NbdE2eTest, NbdinfoShowsFlagsBlockSizesListAndMap) {
  RAWDAX_REQUIRE_PROGRAM("nbdinfo");
  REQUIRE_PYTHON_LIBNBD();
  ASSERT_TRUE(region_->create_namespace({.name = "second", .size = 8 << 20}));
  start_server();
  RunResult info = run("nbdinfo --json " + q(uri()));
  ASSERT_EQ(info.exit_code, 0) << info.err;
  auto j = nlohmann::json::parse(info.out);
  auto e = j["exports"][0];
  EXPECT_EQ(j["protocol"], "newstyle-fixed");
  EXPECT_EQ(j["structured"], true);
  EXPECT_EQ(e["export-size"], namespace_size());
  for (const char* flag : {"can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero",
                           "can_multi_conn", "can_cache", "can_df"}) {
    EXPECT_EQ(e[flag], true) << flag << " in " << info.out;
  }
  EXPECT_EQ(e["is_read_only"], false);
  EXPECT_EQ(e["block_size_minimum"], 512);
  EXPECT_EQ(e["block_size_preferred"], 4096);
  EXPECT_GE(e["block_size_maximum"].get<uint64_t>(), 32u << 20);
  EXPECT_EQ(e["contexts"][0], "base:allocation");

  RunResult list = run("nbdinfo --list --json " + q(server_->uri("")));
  ASSERT_EQ(list.exit_code, 0) << list.err;
  std::set<std::string> names;
  auto listed = nlohmann::json::parse(list.out);
  for (const auto& x : listed["exports"]) {
    names.insert(x["export-name"].get<std::string>());
  }
  EXPECT_EQ(names, (std::set<std::string>{"default", "second"})) << list.out;

  // Data written through the device, then trimmed through NBD: --map shows
  // the allocation both ways.
  auto dev = open_device();
  std::vector<char> ones(1 << 20, 1);
  ASSERT_TRUE(dev->write(0, std::as_bytes(std::span(ones))));
  RunResult before = run("nbdinfo --map --json " + q(uri()));
  ASSERT_EQ(before.exit_code, 0) << before.err;
  auto map = nlohmann::json::parse(before.out);
  ASSERT_GE(map.size(), 2u) << before.out;
  EXPECT_EQ(map[0]["offset"], 0);
  EXPECT_EQ(map[0]["length"], 1 << 20);
  EXPECT_EQ(map[0]["type"], 0) << "data";
  EXPECT_EQ(map[1]["type"], 3) << "hole,zero";

  RunResult trim = run(nbdsh() + " -u " + q(uri()) + " -c 'h.trim(1048576, 0)'");
  ASSERT_EQ(trim.exit_code, 0) << trim.err;
  RunResult after = run("nbdinfo --map --json " + q(uri()));
  ASSERT_EQ(after.exit_code, 0) << after.err;
  auto map2 = nlohmann::json::parse(after.out);
  ASSERT_EQ(map2.size(), 1u) << after.out;
  EXPECT_EQ(map2[0]["length"], namespace_size());
  EXPECT_EQ(map2[0]["type"], 3);
}

TEST_P(NbdE2eTest, NbdinfoReadOnlyExport) {
  RAWDAX_REQUIRE_PROGRAM("nbdinfo");
  start_server(/*read_only=*/true);
  RunResult info = run("nbdinfo --json " + q(uri()));
  ASSERT_EQ(info.exit_code, 0) << info.err;
  auto e = nlohmann::json::parse(info.out)["exports"][0];
  EXPECT_EQ(e["is_read_only"], true);
  EXPECT_EQ(e["can_trim"], false);
  EXPECT_EQ(e["can_zero"], false);
  EXPECT_EQ(e["can_flush"], true);
}

class NbdCopyTest : public NbdE2eTest {
  uint64_t namespace_size() const override { return 256 << 20; }
};

TEST_P(NbdCopyTest, NbdcopyInAndOut256M) {
  RAWDAX_REQUIRE_PROGRAM("nbdcopy");
  start_server();
  std::string in = dir_.path() + "/in.img", out = dir_.path() + "/out.img";
  ASSERT_EQ(run("dd if=/dev/urandom of=" + in + " bs=1M count=256 status=none").exit_code, 0);
  RunResult up = run("nbdcopy " + in + " " + q(uri()));
  ASSERT_EQ(up.exit_code, 0) << up.err;
  RunResult down = run("nbdcopy " + q(uri()) + " " + out);
  ASSERT_EQ(down.exit_code, 0) << down.err;
  RunResult same = run("cmp " + in + " " + out);
  EXPECT_EQ(same.exit_code, 0) << same.out;
  // And the device holds the same bytes (not just a round trip).
  std::vector<char> head = device_bytes(100 << 20, 4096);
  std::FILE* f = std::fopen(in.c_str(), "rb");
  ASSERT_NE(f, nullptr);
  std::vector<char> want(4096);
  std::fseek(f, 100 << 20, SEEK_SET);
  ASSERT_EQ(std::fread(want.data(), 1, want.size(), f), want.size());
  std::fclose(f);
  EXPECT_EQ(head, want);
}

TEST_P(NbdE2eTest, QemuImgConvertInOutAndCompare) {
  RAWDAX_REQUIRE_PROGRAM("qemu-img");
  start_server();
  std::string src = dir_.path() + "/src.img", out = dir_.path() + "/out.img";
  ASSERT_EQ(run("qemu-img create -f raw " + src + " 64M").exit_code, 0);
  ASSERT_EQ(run("dd if=/dev/urandom of=" + src + " bs=1M count=8 seek=3 conv=notrunc status=none")
                .exit_code,
            0);
  RunResult info = run("qemu-img info " + q(uri()));
  ASSERT_EQ(info.exit_code, 0) << info.err;
  EXPECT_NE(info.out.find("virtual size: 64 MiB"), std::string::npos) << info.out;
  RunResult in = run("qemu-img convert -n -f raw -O raw " + src + " " + q(uri()));
  ASSERT_EQ(in.exit_code, 0) << in.err;
  RunResult back = run("qemu-img convert -f raw -O raw " + q(uri()) + " " + out);
  ASSERT_EQ(back.exit_code, 0) << back.err;
  EXPECT_EQ(run("cmp " + src + " " + out).exit_code, 0);
  RunResult same = run("qemu-img compare -f raw -F raw " + src + " " + q(uri()));
  EXPECT_EQ(same.exit_code, 0) << same.out << same.err;
  // One changed byte on the device: compare must notice.
  auto dev = open_device();
  char x = 0x5a;
  ASSERT_TRUE(dev->write(40 << 20, std::as_bytes(std::span(&x, 1))));
  // A new server: its threads start after the write, so they see it.
  server_->stop();
  server_.reset();
  start_server();
  RunResult differ = run("qemu-img compare -f raw -F raw " + src + " " + q(uri()));
  EXPECT_EQ(differ.exit_code, 1) << differ.out << differ.err;
}

TEST_P(NbdE2eTest, QemuIoWriteReadZeroDiscardFlushMap) {
  RAWDAX_REQUIRE_PROGRAM("qemu-io");
  start_server();
  auto dev = open_device();
  std::vector<char> ones(2 << 20, 1);
  ASSERT_TRUE(dev->write(1 << 20, std::as_bytes(std::span(ones))));
  RunResult io = run("qemu-io -f raw -c 'write -P 0xab 0 64k' -c 'read -P 0xab 0 64k' "
               "-c 'write -z -u 64k 64k' -c 'read -P 0 64k 64k' -c 'write -P 0xcd 7 1000' "
               "-c 'read -P 0xcd 7 1000' -c 'discard 1M 1M' -c 'read -P 0 1M 1M' "
               "-c 'read -P 1 2M 1M' -c 'flush' -c 'map' " + q(uri()));
  ASSERT_EQ(io.exit_code, 0) << io.out << io.err;
  EXPECT_EQ(io.out.find("Pattern verification failed"), std::string::npos) << io.out;
  EXPECT_NE(io.out.find("wrote 65536/65536 bytes"), std::string::npos) << io.out;
  EXPECT_NE(io.out.find("read 1048576/1048576 bytes"), std::string::npos) << io.out;
  // qemu-io's map is the raw format's view (all allocated); the protocol's
  // holes show in qemu-img map, which reads base:allocation.
  EXPECT_NE(io.out.find("allocated at offset 0 bytes"), std::string::npos) << io.out;
  RunResult map = run("qemu-img map --output=json -f raw " + q(uri()));
  ASSERT_EQ(map.exit_code, 0) << map.err;
  bool hole_at_1m = false, data_at_0 = false;
  for (const auto& e : nlohmann::json::parse(map.out)) {
    if (e["start"] == 0) data_at_0 = e["data"] == true;
    uint64_t start = e["start"], length = e["length"];
    if (start <= (1u << 20) && (1u << 20) < start + length) {
      hole_at_1m = e["data"] == false && e["zero"] == true;
    }
  }
  EXPECT_TRUE(data_at_0) << map.out;
  EXPECT_TRUE(hole_at_1m) << map.out;
  std::vector<char> head = device_bytes(0, 128 << 10);
  EXPECT_EQ(head[0], static_cast<char>(0xab));
  EXPECT_EQ(head[7], static_cast<char>(0xcd));
  EXPECT_EQ(head[1006], static_cast<char>(0xcd));
  EXPECT_EQ(head[1007], static_cast<char>(0xab));
  EXPECT_EQ(head[(64 << 10) + 5], 0);
  EXPECT_EQ(device_bytes(1 << 20, 1)[0], 0);
  EXPECT_EQ(device_bytes(2 << 20, 1)[0], 1);
}

TEST_P(NbdE2eTest, FioVerifyTwoJobsIodepth32) {
  RAWDAX_REQUIRE_PROGRAM("fio");
  if (run("fio --enghelp=nbd").exit_code != 0) GTEST_FAIL() << "fio lacks the nbd engine (Debian's fio has it; make deps installs it)";
  start_server();
  RunResult fio = run("fio --name=verify --ioengine=nbd --uri=" + q(uri()) +
                " --rw=randwrite --bs=4k --size=16M --offset_increment=16M --numjobs=2"
                " --iodepth=32 --verify=crc32c --do_verify=1 --verify_fatal=1"
                " --verify_state_save=0"  // no state file in the working directory
                " --output-format=json");
  ASSERT_EQ(fio.exit_code, 0) << fio.out << fio.err;
  auto j = nlohmann::json::parse(fio.out.substr(fio.out.find('{')));
  ASSERT_EQ(j["jobs"].size(), 2u);
  for (const auto& job : j["jobs"]) {
    EXPECT_EQ(job["error"], 0);
    EXPECT_EQ(job["write"]["io_bytes"], 16 << 20);
    EXPECT_EQ(job["read"]["io_bytes"], 16 << 20) << "the verify pass read it all back";
  }
}

TEST_P(NbdE2eTest, PythonBadRequestsGetSpecErrorsAndConnectionsSurvive) {
  REQUIRE_PYTHON_LIBNBD();
  start_server();
  RunResult py = run(python() + " bad-requests " + q(uri()));
  EXPECT_EQ(py.exit_code, 0) << py.out << py.err;
  EXPECT_EQ(py.out.find("FAIL"), std::string::npos) << py.out;
  EXPECT_NE(py.out.find("ok   huge read"), std::string::npos) << py.out;
  // The log names the client, export, offset and size of bad requests.
  std::string log = log_text();
  EXPECT_NE(log.find("export default: WRITE offset " + std::to_string(namespace_size())),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("(size " + std::to_string(namespace_size()) + ")"), std::string::npos);
  EXPECT_NE(log.find("client unix peer pid"), std::string::npos);
}

TEST_P(NbdE2eTest, TwoClientsSeeEachOthersWrites) {
  REQUIRE_PYTHON_LIBNBD();
  start_server();
  RunResult py = run(python() + " two-clients " + q(uri()));
  EXPECT_EQ(py.exit_code, 0) << py.out << py.err;
  EXPECT_EQ(py.out.find("FAIL"), std::string::npos) << py.out;
}

TEST_P(NbdE2eTest, RemovedNamespaceAnswersEshutdown) {
  REQUIRE_PYTHON_LIBNBD();
  RAWDAX_REQUIRE_PROGRAM("nbdinfo");
  ASSERT_TRUE(region_->create_namespace({.name = "other", .size = 4 << 20}));
  start_server();
  std::string cmd = python() + " until-error " + q(uri()) + " 2>&1";
  std::FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  char line[256] = {};
  ASSERT_NE(std::fgets(line, sizeof line, p), nullptr);
  ASSERT_STREQ(line, "started\n");
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // mid-I/O
  Status gone = region_->destroy_namespace("default", {.force = true});
  ASSERT_TRUE(gone) << gone.error().message();
  std::string rest;
  while (std::fgets(line, sizeof line, p) != nullptr) rest += line;
  int status = ::pclose(p);
  EXPECT_EQ(WEXITSTATUS(status), 0) << rest;
  EXPECT_NE(rest.find("error ESHUTDOWN"), std::string::npos) << rest;
  EXPECT_NE(rest.find("disconnected cleanly"), std::string::npos) << rest;
  EXPECT_NE(log_text().find("answering ESHUTDOWN"), std::string::npos) << log_text();
  // The export is gone for new clients; the others are untouched.
  EXPECT_NE(run("nbdinfo " + q(uri())).exit_code, 0);
  RunResult other = run("nbdinfo --json " + q(uri("other")));
  ASSERT_EQ(other.exit_code, 0) << other.err;
  EXPECT_EQ(nlohmann::json::parse(other.out)["exports"][0]["export-size"], 4 << 20);
}

TEST_P(NbdE2eTest, FrozenNamespaceMakesWritesWait) {
  REQUIRE_PYTHON_LIBNBD();
  start_server();
  auto dev = open_device();
  auto frozen = dev->freeze();
  ASSERT_TRUE(frozen) << frozen.error().message();
  // Reads pass a freeze.
  RunResult read = run(nbdsh() + " -u " + q(uri()) + " -c 'assert h.pread(512, 0) == bytes(512)'", 20);
  EXPECT_EQ(read.exit_code, 0) << read.err;
  std::atomic<bool> done{false};
  RunResult write;
  std::thread writer([&] {
    write = run(nbdsh() + " -u " + q(uri()) + " -c 'h.pwrite(b\"F\" * 4096, 0)'", 20);
    done = true;
  });
  // The server's write waits on the freeze (the device counts it); the
  // limit only bounds a failing run.
  EXPECT_TRUE(::rawdax::testing::eventually([&] { return dev->stats().parked_writers >= 1; },
                                            std::chrono::seconds(60)))
      << "the NBD write neither finished nor waited on the freeze";
  EXPECT_FALSE(done.load()) << "a write finished while the namespace was frozen";
  char first = 1;
  ASSERT_TRUE(dev->read(0, std::as_writable_bytes(std::span(&first, 1))));
  EXPECT_EQ(first, 0);  // the parked write has not touched the bytes
  frozen->thaw();
  writer.join();
  EXPECT_EQ(write.exit_code, 0) << write.err;
  EXPECT_EQ(device_bytes(0, 4096), std::vector<char>(4096, 'F'));
}

INSTANTIATE_TEST_SUITE_P(Media, NbdE2eTest, RAWDAX_TMPFS_AND_CARVED,
                         ::rawdax::testing::param_name);
INSTANTIATE_TEST_SUITE_P(Media, NbdCopyTest, RAWDAX_TMPFS_AND_CARVED,
                         ::rawdax::testing::param_name);

}  // namespace
}  // namespace rawdax
