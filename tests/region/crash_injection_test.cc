// Crash injection: every region and snapshot operation is run through the CLI
// once for each persist point N, dying there (RAWDAX_CRASH_AT=N, see
// common/crash_point.h), until it runs to the end. After each crash the
// region must reopen to the old state or the new one with no leaked backing
// file, and `rawdax verify` must tell a complete snapshot from an incomplete.
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <functional>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "common/crash_point.h"
#include "rawdax/rawdax.h"
#include "test_util.h"

namespace rawdax {
namespace {

using ::rawdax::testing::ScratchDir;
namespace fs = std::filesystem;

constexpr uint64_t kMiB = 1 << 20;

class CrashInjectionTest : public ::testing::Test {
 protected:
  std::string region() const { return dir_.path() + "/region"; }
  std::string file(const std::string& name) const { return dir_.path() + "/" + name; }

  // Runs the CLI; returns its exit code (-1 if it did not exit).
  int cli(const std::string& args, long crash_at = 0, std::string* out = nullptr) {
    std::string env = crash_at > 0 ? "RAWDAX_CRASH_AT=" + std::to_string(crash_at) + " " : "";
    std::string out_path = file("cli.out");
    int status = std::system((env + RAWDAX_CLI_PATH + " " + args + " >" + out_path + " 2>" +
                              file("cli.err"))
                                 .c_str());
    if (out != nullptr) {
      std::ifstream in(out_path);
      *out = std::string(std::istreambuf_iterator<char>(in), {});
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  // name -> contents, read through a freshly opened region (which removes
  // orphans); checks that every backing file is named by a namespace and no
  // temporary metadata is left.
  std::map<std::string, std::vector<std::byte>> state() {
    std::map<std::string, std::vector<std::byte>> out;
    auto r = Region::open(region());
    EXPECT_TRUE(r) << r.error().message();
    if (!r) return out;
    std::set<std::string> named;
    for (const auto& ns : (*r)->list()) {
      named.insert(fs::path(ns.path).filename().string());
      auto dev = (*r)->open_device(ns.name);
      EXPECT_TRUE(dev) << dev.error().message();
      if (!dev) continue;
      std::vector<std::byte> bytes((*dev)->size());
      EXPECT_TRUE((*dev)->read(0, bytes));
      out[ns.name] = std::move(bytes);
    }
    for (const auto& entry : fs::directory_iterator(region() + "/ns")) {
      EXPECT_TRUE(named.count(entry.path().filename().string()))
          << "leaked backing file " << entry.path();
    }
    for (const auto& entry : fs::directory_iterator(region())) {
      EXPECT_EQ(entry.path().filename().string().find(".tmp."), std::string::npos)
          << "leftover " << entry.path();
    }
    return out;
  }

  // A fresh region with namespaces of 1 MiB filled with their first letter.
  void reset(const std::vector<std::string>& names) {
    fs::remove_all(region());
    auto r = Region::open(region(), {.create = true});
    ASSERT_TRUE(r) << r.error().message();
    for (const auto& name : names) {
      ASSERT_TRUE((*r)->create_namespace({.name = name, .size = kMiB}));
      auto dev = (*r)->open_device(name);
      ASSERT_TRUE(dev);
      std::vector<std::byte> data(kMiB, std::byte(name[0]));
      ASSERT_TRUE((*dev)->write(0, data));
    }
  }

  // Runs `args` crashing at 1, 2, … until it completes; after each crash
  // `check(state)` must accept the region. Returns the number of crashes.
  int sweep(const std::function<void()>& prepare, const std::string& args,
            const std::function<void(bool crashed)>& check) {
    for (long n = 1; n < 200; ++n) {
      prepare();
      int code = cli(args, n);
      if (code == 0) {
        check(false);
        return static_cast<int>(n - 1);
      }
      EXPECT_EQ(code, internal::kCrashExitCode) << args << " at point " << n << " failed otherwise";
      if (code != internal::kCrashExitCode) return -1;
      const int parts_before = parts();
      check(true);
      if (parts() != parts_before) {
        ADD_FAILURE() << args << ": wrong state after a crash at persist point " << n;
        return -1;
      }
    }
    ADD_FAILURE() << args << " never completed";
    return -1;
  }

  static int parts() {
    return ::testing::UnitTest::GetInstance()->current_test_info()->result()->total_part_count();
  }
  // What the last CLI run printed on stderr (the crash point's name).
  std::string last_err() {
    std::ifstream in(file("cli.err"));
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  static std::vector<std::byte> filled(uint64_t size, char c) {
    return std::vector<std::byte>(size, std::byte(c));
  }

  ScratchDir dir_{::rawdax::testing::disk_parent()};
};

TEST_F(CrashInjectionTest, CreateDestroyResize) {
  int crashes = sweep([&] { reset({"keep"}); }, "create-namespace --region " + region() +
                                                   " --name new --size 1M",
                      [&](bool) {
                        auto s = state();
                        ASSERT_TRUE(s.count("keep"));
                        EXPECT_EQ(s["keep"], filled(kMiB, 'k'));
                        EXPECT_LE(s.size(), 2u);
                        if (s.count("new")) {
                          EXPECT_EQ(s["new"], filled(kMiB, '\0'));
                        }
                      });
  EXPECT_GT(crashes, 0);
  crashes = sweep([&] { reset({"keep", "victim"}); },
                  "destroy-namespace victim --region " + region(), [&](bool) {
                    auto s = state();
                    EXPECT_EQ(s["keep"], filled(kMiB, 'k'));
                    if (s.count("victim")) {
                      EXPECT_EQ(s["victim"], filled(kMiB, 'v'));
                    }
                  });
  EXPECT_GT(crashes, 0);
  crashes = sweep([&] { reset({"grow"}); },
                  "resize-namespace grow --size 2M --region " + region(), [&](bool) {
                    auto s = state();
                    ASSERT_TRUE(s.count("grow"));
                    auto& g = s["grow"];
                    ASSERT_TRUE(g.size() == kMiB || g.size() == 2 * kMiB) << g.size();
                    EXPECT_EQ(std::vector<std::byte>(g.begin(), g.begin() + kMiB),
                              filled(kMiB, 'g'));
                  });
  EXPECT_GT(crashes, 0);
}

TEST_F(CrashInjectionTest, SnapshotIncrementalRestore) {
  const std::string full = file("full.snap"), inc = file("inc.snap");
  auto verified = [&](const std::string& path) {
    std::string out;
    return cli("verify " + path, 0, &out) == 0;
  };
  // A snapshot is complete at FILE or absent. The temporary file beside it
  // verifies only once its header is written (the last step before fsync
  // and rename), never before.
  auto check_snapshot = [&](const std::string& path, bool crashed) {
    const std::string err = last_err();
    const bool header_written = err.find("(snapshot header written)") != std::string::npos ||
                                err.find("(snapshot fsynced)") != std::string::npos;
    auto s = state();
    EXPECT_EQ(s["s"], filled(kMiB, 's'));
    if (!crashed) {
      EXPECT_TRUE(verified(path));
    }
    if (fs::exists(path)) {
      EXPECT_TRUE(verified(path)) << path << " exists but does not verify";
    }
    for (const auto& entry : fs::directory_iterator(dir_.path())) {
      std::string name = entry.path().string();
      if (name.find(".snap.tmp.") != std::string::npos) {
        EXPECT_EQ(verified(name), header_written) << name << " after: " << err;
        fs::remove(entry.path());
      }
    }
  };
  int crashes = sweep([&] { reset({"s"}); fs::remove(full); },
                      "snapshot s " + full + " --region " + region(),
                      [&](bool crashed) { check_snapshot(full, crashed); });
  EXPECT_GT(crashes, 0);

  // Incremental on top of a complete full snapshot, after one page changed.
  auto prepare_incremental = [&] {
    reset({"s"});
    fs::remove(inc);
    auto r = Region::open(region());
    ASSERT_TRUE(r);
    auto dev = (*r)->open_device("s");
    ASSERT_TRUE(dev);
    ASSERT_TRUE((*dev)->write(8192, filled(4096, 'x')));
  };
  reset({"s"});
  ASSERT_EQ(cli("snapshot s " + full + " --region " + region()), 0);
  crashes = sweep(prepare_incremental,
                  "snapshot s " + inc + " --base " + full + " --region " + region(),
                  [&](bool crashed) {
                    auto s = state();
                    EXPECT_EQ(s["s"][8192], std::byte('x'));
                    if (!crashed) {
                      EXPECT_TRUE(verified(inc));
                    }
                    if (fs::exists(inc)) {
                      EXPECT_TRUE(verified(inc));
                    }
                  });
  EXPECT_GT(crashes, 0);
  std::vector<std::byte> image = filled(kMiB, 's');
  std::fill(image.begin() + 8192, image.begin() + 12288, std::byte('x'));

  // Restore into a new namespace: absent, or whole.
  crashes = sweep([&] { reset({"s"}); }, "restore t " + inc + " --region " + region(),
                  [&](bool) {
                    auto s = state();
                    EXPECT_EQ(s["s"], filled(kMiB, 's'));
                    if (s.count("t")) {
                      EXPECT_EQ(s["t"], image);
                    }
                  });
  EXPECT_GT(crashes, 0);
  // Restore over an existing namespace of another size: old or new, whole.
  crashes = sweep(
      [&] {
        fs::remove_all(region());
        auto r = Region::open(region(), {.create = true});
        ASSERT_TRUE(r);
        ASSERT_TRUE((*r)->create_namespace({.name = "t", .size = 2 * kMiB}));
        ASSERT_TRUE((*(*r)->open_device("t"))->write(0, filled(2 * kMiB, 't')));
      },
      "restore t " + inc + " --force --region " + region(), [&](bool) {
        auto s = state();
        ASSERT_TRUE(s.count("t"));
        EXPECT_TRUE(s["t"] == filled(2 * kMiB, 't') || s["t"] == image)
            << "restore left a namespace of " << s["t"].size() << " bytes, neither old nor new";
      });
  EXPECT_GT(crashes, 0);
}

}  // namespace
}  // namespace rawdax
