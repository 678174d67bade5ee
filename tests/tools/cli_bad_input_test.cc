// The bad-input sweep of the CLI: every verb with bad sizes (0, huge, "12Q",
// -5), bad names (empty, 64 characters, '/', "..", spaces, non-ASCII) and
// missing arguments, once against the region directly and once through a
// running `rawdax serve`. Each must exit non-zero with one line naming the
// bad value and the namespace, print nothing on stdout, and leave the region
// byte for byte as it was; the daemon keeps serving and logs no error.
#include <sys/stat.h>
#include <sys/wait.h>

#include <filesystem>
#include <gtest/gtest.h>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli_run.h"
#include "serve_child.h"
#include "test_util.h"

namespace rawdax {
namespace {

using ::rawdax::testing::CliRun;
using ::rawdax::testing::read_text;
using ::rawdax::testing::run_cli;
using ::rawdax::testing::ScratchDir;
using ::rawdax::testing::ServeChild;


struct Case {
  std::string args;                 // before the verb's --region
  std::vector<std::string> texts;  // each must be in the error line
};

class CliBadInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(rawdax("create-namespace --region " + region() + " -n keep -s 1M").exit_code, 0);
    ASSERT_EQ(rawdax("snapshot keep " + dir_.path() + "/keep.snap --region " + region()).exit_code,
              0);
  }

  CliRun rawdax(const std::string& args) { return run_cli(dir_.path(), args); }
  std::string region() const { return dir_.path() + "/region"; }

  // Every entry under the region and the scratch directory: its type, size
  // and, for regular files but the lock, its bytes. Equal before and after means nothing
  // was created, removed or written.
  std::map<std::string, std::string> state() {
    std::map<std::string, std::string> out;
    for (const auto& e : std::filesystem::recursive_directory_iterator(dir_.path())) {
      std::string rel = std::filesystem::relative(e.path(), dir_.path());
      if (rel == "out" || rel == "err" || rel == "serve.log") continue;
      struct stat st;
      if (::lstat(e.path().c_str(), &st) != 0) continue;
      // The lock file names the last process that held the region: who
      // looked, not what the region holds; its size follows the pid's digits
      // (5 on one run, 3 once pids wrap), so only its mode counts.
      std::string v = std::to_string(st.st_mode);
      if (e.path().filename() == "rawdax.lock") {
        out[rel] = std::move(v);
        continue;
      }
      v += ":" + std::to_string(st.st_size);
      if (S_ISREG(st.st_mode)) v += ":" + read_text(e.path());
      out[rel] = std::move(v);
    }
    return out;
  }

  static std::vector<Case> cases() {
    const std::string huge = "18446744073709551615";
    const std::string long_name(64, 'x');
    return {
        {"create-namespace -n a -s 0", {"namespace a", "greater than 0"}},
        {"create-namespace -n a -s 12Q", {"namespace a", "'12Q'"}},
        {"create-namespace -n a --size=-5", {"namespace a", "'-5'"}},
        {"create-namespace -n a -s " + huge, {"namespace a", huge, "too large"}},
        {"create-namespace -n a -s 999999T", {"namespace a", "1099510528264372224 bytes", "do not fit"}},
        {"create-namespace -n '' -s 1M", {"''", "empty"}},
        {"create-namespace -n " + long_name + " -s 1M", {long_name, "63"}},
        {"create-namespace -n a/b -s 1M", {"'a/b'"}},
        {"create-namespace -n .. -s 1M", {"'..'", "reserved"}},
        {"create-namespace -n 'a b' -s 1M", {"'a b'"}},
        {"create-namespace -n 'n\xc3\xa9' -s 1M", {"'n\xc3\xa9'"}},
        {"create-namespace -n keep -s 1M", {"keep", "already exists"}},
        {"resize-namespace keep -s 0", {"namespace keep", "greater than 0"}},
        {"resize-namespace keep -s 12Q", {"namespace keep", "'12Q'"}},
        {"resize-namespace keep --size=-5", {"namespace keep", "'-5'"}},
        {"resize-namespace keep -s " + huge, {"namespace keep", huge}},
        {"resize-namespace keep -s 999999T", {"namespace keep", "do not fit"}},
        {"resize-namespace nope -s 2M", {"nope"}},
        {"resize-namespace a/b -s 2M", {"'a/b'", "only A-Z"}},
        {"destroy-namespace nope", {"nope", "not found"}},
        {"destroy-namespace ..", {"'..'", "reserved"}},
        {"destroy-namespace ''", {"''", "empty"}},
        {"destroy-namespace 'n\xc3\xa9'", {"'n\xc3\xa9'", "only A-Z"}},
        {"snapshot nope SCRATCH/n.snap", {"nope"}},
        {"snapshot keep SCRATCH/no/such/dir/k.snap", {"SCRATCH/no/such/dir/k.snap"}},
        {"snapshot keep SCRATCH/k.snap --threads 65", {"--threads", "65"}},
        {"restore a/b SCRATCH/keep.snap", {"'a/b'"}},
        {"restore c SCRATCH/none.snap", {"SCRATCH/none.snap"}},
        // Missing arguments: CLI11 names the option or positional.
        {"create-namespace", {"--name"}},
        {"create-namespace -n only-name", {"--size"}},
        {"create-namespace -n a -s", {"--size"}},
        {"resize-namespace keep", {"--size"}},
        {"resize-namespace", {"name"}},
        {"destroy-namespace", {"name"}},
        {"snapshot keep", {"file"}},
        {"restore c", {"file"}},
    };
  }

  // Runs every case and checks the three promises; `where` names the mode.
  void sweep(const std::string& where) {
    auto before = state();
    std::string list_before = rawdax("list --region " + region()).out;
    for (Case c : cases()) {
      for (std::string* s : {&c.args}) {
        for (size_t at; (at = s->find("SCRATCH")) != std::string::npos;) s->replace(at, 7, dir_.path());
      }
      for (auto& t : c.texts) {
        for (size_t at; (at = t.find("SCRATCH")) != std::string::npos;) t.replace(at, 7, dir_.path());
      }
      // --region right after the verb, so a flag missing its value at the
      // end has nothing to take.
      std::string args = c.args;
      args.insert(args.find(' ') == std::string::npos ? args.size() : args.find(' '),
                  " --region " + region());
      CliRun run = rawdax(args);
      EXPECT_NE(run.exit_code, 0) << where << ": " << c.args;
      EXPECT_EQ(run.err.rfind("rawdax: error: ", 0), 0u) << where << ": " << run.err;
      for (const auto& t : c.texts) {
        EXPECT_NE(run.err.find(t), std::string::npos)
            << where << ": " << c.args << ": no '" << t << "' in: " << run.err;
      }
      EXPECT_EQ(run.out, "") << where << ": " << c.args;
      // One line.
      EXPECT_EQ(std::count(run.err.begin(), run.err.end(), '\n'), 1) << where << ": " << run.err;
      if (before != state()) {
        ADD_FAILURE() << where << ": " << c.args << " changed the region";
        before = state();
      }
    }
    EXPECT_EQ(rawdax("list --region " + region()).out, list_before) << where;
  }

  ScratchDir dir_{::rawdax::testing::disk_parent()};
};

TEST_F(CliBadInputTest, EveryVerbRefusesBadInputAndChangesNothing) { sweep("direct"); }

TEST_F(CliBadInputTest, ThroughTheDaemonTheSameAndItKeepsServing) {
  ServeChild serve(region(), dir_.path() + "/nbd.sock", dir_.path() + "/serve.log");
  ASSERT_TRUE(serve.ready()) << serve.log();
  sweep("daemon");
  CliRun list = rawdax("list --region " + region());
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_EQ(nlohmann::json::parse(list.out)[0]["name"], "keep");
  EXPECT_TRUE(::rawdax::testing::serve_error_lines(serve.log()).empty()) << serve.log();
  EXPECT_EQ(serve.stop(), 0);
}

// Size 1 is not an error: it rounds up to the region's alignment, and the
// printed size says so.
TEST_F(CliBadInputTest, SizeOneRoundsUpToTheAlignment) {
  CliRun caps = rawdax("list --capabilities --region " + region());
  ASSERT_EQ(caps.exit_code, 0) << caps.err;
  uint64_t alignment = nlohmann::json::parse(caps.out)[0]["capabilities"]["media"]["alignment"];
  CliRun one = rawdax("create-namespace -n one -s 1 --region " + region());
  ASSERT_EQ(one.exit_code, 0) << one.err;
  EXPECT_EQ(nlohmann::json::parse(one.out)["size"], alignment);
  CliRun resized = rawdax("resize-namespace keep -s 1 --force --region " + region());
  ASSERT_EQ(resized.exit_code, 0) << resized.err;
  EXPECT_EQ(nlohmann::json::parse(resized.out)["size"], alignment);
}

}  // namespace
}  // namespace rawdax
