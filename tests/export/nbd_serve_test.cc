// `rawdax serve` as an NBD server: the URI in its log, TCP on a free port,
// and SIGTERM during I/O (in-flight requests answered, exit 0 within 5 s,
// every acknowledged write in the backing file).
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "common/unique_fd.h"
#include "export/nbd_fixture.h"
#include "rawdax/rawdax.h"

namespace rawdax {
namespace {

using ::rawdax::testing::python_with_libnbd;
using ::rawdax::testing::ScratchDir;
using ::rawdax::testing::slurp_file;

class NbdServeTest : public ::testing::TestWithParam<::rawdax::testing::TestMedia> {
 protected:
  ~NbdServeTest() override {
    if (child_ > 0) {
      ::kill(child_, SIGKILL);
      ::waitpid(child_, nullptr, 0);
    }
  }

  // Starts `rawdax serve` and waits for "ready" in its log.
  void serve(const std::string& nbd) {
    child_ = fork();
    ASSERT_GE(child_, 0);
    if (child_ == 0) {
      std::freopen(log_.c_str(), "w", stderr);
      const std::string& region = region_.spec();
      execl(RAWDAX_CLI_PATH, "rawdax", "serve", "--region", region.c_str(), "--default-size",
            "32M", "--nbd", nbd.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (slurp_file(log_).find("ready") == std::string::npos &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ASSERT_NE(slurp_file(log_).find("ready"), std::string::npos) << slurp_file(log_);
  }

  // SIGTERM; returns the exit status and how long the exit took.
  std::pair<int, std::chrono::milliseconds> terminate() {
    auto sent = std::chrono::steady_clock::now();
    ::kill(child_, SIGTERM);
    int status = 0;
    while (::waitpid(child_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() - sent > std::chrono::seconds(15)) {
        ::kill(child_, SIGKILL);
        ::waitpid(child_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    child_ = -1;
    auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - sent);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, took};
  }

  std::string uri_from_log() {
    std::smatch m;
    std::string text = slurp_file(log_);
    if (!std::regex_search(text, m, std::regex("NBD export (\\S+/default\\S*)"))) return "";
    return m[1];
  }

  ScratchDir dir_{::rawdax::testing::tmpfs_parent()};
  ::rawdax::testing::ScratchRegion region_{GetParam()};  // serve creates it
  std::string log_ = dir_.path() + "/serve.log";
  pid_t child_ = -1;
};

TEST_P(NbdServeTest, TcpOnAFreePortLogsTheUri) {
  RAWDAX_REQUIRE_PROGRAM("nbdinfo");
  RAWDAX_REQUIRE_PROGRAM("qemu-img");
  serve("127.0.0.1:0");
  std::string uri = uri_from_log();
  ASSERT_EQ(uri.rfind("nbd://127.0.0.1:", 0), 0u) << slurp_file(log_);
  EXPECT_EQ(uri.find(":0/"), std::string::npos) << uri;
  std::string out = dir_.path() + "/info.json";
  ASSERT_EQ(std::system(("nbdinfo --json '" + uri + "' >" + out).c_str()), 0);
  EXPECT_EQ(nlohmann::json::parse(slurp_file(out))["exports"][0]["export-size"], 32 << 20);
  ASSERT_EQ(std::system(("qemu-img info '" + uri + "' >" + out).c_str()), 0);
  EXPECT_NE(slurp_file(out).find("virtual size: 32 MiB"), std::string::npos) << slurp_file(out);
  auto [code, took] = terminate();
  EXPECT_EQ(code, 0) << slurp_file(log_);
}

// Every write a client saw acknowledged, before or after the SIGTERM, is in
// the namespace's backing file once the daemon has exited.
TEST_P(NbdServeTest, SigtermDuringIoExitsZeroWithinFiveSeconds) {
  std::string py = python_with_libnbd();
  if (py.empty()) GTEST_FAIL() << "python3-libnbd is not installed (make deps installs it)";
  serve("unix:" + dir_.path() + "/nbd.sock");
  std::string uri = uri_from_log();
  ASSERT_EQ(uri, "nbd+unix:///default?socket=" + dir_.path() + "/nbd.sock") << slurp_file(log_);
  std::vector<std::FILE*> clients;
  for (int i = 0; i < 2; ++i) {
    // Each client writes its own half: overlapping writes would be a race.
    std::string cmd = py + " " + RAWDAX_NBD_CLIENT_PY + " load '" + uri + "' 30 " +
                      std::to_string(i) + " 2>&1";
    std::FILE* p = ::popen(cmd.c_str(), "r");
    ASSERT_NE(p, nullptr);
    char line[256] = {};
    ASSERT_NE(std::fgets(line, sizeof line, p), nullptr);
    ASSERT_STREQ(line, "started\n");
    clients.push_back(p);
  }
  for (std::FILE* p : clients) {  // both mid-I/O: some writes acknowledged
    char line[256] = {};
    ASSERT_NE(std::fgets(line, sizeof line, p), nullptr);
    ASSERT_STREQ(line, "writing\n");
  }
  auto [code, took] = terminate();
  EXPECT_EQ(code, 0) << slurp_file(log_);
  EXPECT_LT(took, std::chrono::seconds(5));
  std::vector<uint64_t> acked;
  for (std::FILE* p : clients) {
    char line[256];
    std::string rest;
    while (std::fgets(line, sizeof line, p) != nullptr) rest += line;
    ::pclose(p);
    std::smatch m;
    ASSERT_TRUE(std::regex_search(rest, m, std::regex("stopped after (\\d+) writes"))) << rest;
    acked.push_back(std::stoull(m[1]));
  }
  std::string log = slurp_file(log_);
  EXPECT_NE(log.find("SIGTERM"), std::string::npos) << log;
  EXPECT_NE(log.find("NBD stopped"), std::string::npos) << log;
  EXPECT_EQ(log.find("cutting it off"), std::string::npos) << log;

  // The namespace's bytes, read from its backing file (not through rawdax).
  auto region = Region::open(region_.spec());
  ASSERT_TRUE(region) << region.error().message();
  auto info = (*region)->find("default");
  ASSERT_TRUE(info) << info.error().message();
  region->reset();  // closed: nothing but the file is read below
  internal::UniqueFd fd(::open(info->path.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd.valid()) << info->path;
  // nbd_client.py's load: write i of client `slot` is 64 KiB of the word
  // slot << 32 | i + 1, at block i % blocks of the slot's half (all its 64 KiB
  // blocks but the last). Write N (the one that failed) may have landed too,
  // whole or in part.
  constexpr uint64_t kBlock = 64 << 10;
  const uint64_t half = info->size / 2, blocks = half / kBlock - 1;
  std::vector<uint64_t> words(kBlock / 8);
  for (uint64_t slot = 0; slot < 2; ++slot) {
    const uint64_t n = acked[slot];
    for (uint64_t b = 0; b < blocks; ++b) {
      // The last acknowledged write to block b, or zeros if none was.
      const uint64_t want = n > b ? (slot << 32 | ((n - 1 - b) / blocks * blocks + b + 1)) : 0;
      const uint64_t failed = n % blocks == b ? (slot << 32 | (n + 1)) : want;
      const uint64_t off = info->offset + slot * half + b * kBlock;
      ASSERT_EQ(::pread(fd.get(), words.data(), kBlock, static_cast<off_t>(off)),
                static_cast<ssize_t>(kBlock));
      for (uint64_t w = 0; w < words.size(); ++w) {
        if (words[w] == want || words[w] == failed) continue;
        FAIL() << "client " << slot << " (" << n << " writes acknowledged): block " << b
               << " word " << w << " holds " << std::hex << words[w] << ", want " << want
               << " (or the failed write's " << failed << ")";
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Media, NbdServeTest, RAWDAX_TMPFS_AND_CARVED,
                         ::rawdax::testing::param_name);

}  // namespace
}  // namespace rawdax
