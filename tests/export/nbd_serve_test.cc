// `rawdax serve` as an NBD server: the URI in its log, TCP on a free port,
// and SIGTERM during I/O (in-flight requests answered, exit 0 within 5 s).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "export/nbd_fixture.h"

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
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto [code, took] = terminate();
  EXPECT_EQ(code, 0) << slurp_file(log_);
  EXPECT_LT(took, std::chrono::seconds(5));
  for (std::FILE* p : clients) {
    char line[256];
    std::string rest;
    while (std::fgets(line, sizeof line, p) != nullptr) rest += line;
    ::pclose(p);
    EXPECT_NE(rest.find("stopped after"), std::string::npos) << rest;
  }
  std::string log = slurp_file(log_);
  EXPECT_NE(log.find("SIGTERM"), std::string::npos) << log;
  EXPECT_NE(log.find("NBD stopped"), std::string::npos) << log;
  EXPECT_EQ(log.find("cutting it off"), std::string::npos) << log;
}

INSTANTIATE_TEST_SUITE_P(Media, NbdServeTest, RAWDAX_TMPFS_AND_CARVED,
                         ::rawdax::testing::param_name);

}  // namespace
}  // namespace rawdax
