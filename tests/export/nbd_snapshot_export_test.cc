// Point-in-time exports end to end: `rawdax serve` as a child, snapshots
// taken and exported with the CLI, and only standard clients reading them
// (nbdinfo, qemu-img, qemu-io): listing with descriptions, zeros and holes
// for unstored pages, a sparse qcow2 of a full snapshot, the dirty bitmap of
// an incremental, the pull-mode backup flow (full qcow2, then an overlay
// filled from the dirty extents alone), and the bad input: a taken name, a
// chain that fails verify, a file deleted while exported, unexport.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "cli_run.h"
#include "rawdax/client.h"
#include "export/nbd_fixture.h"
#include "serve_child.h"
#include "snapshot/snapshot_file.h"
#include "test_util.h"

namespace rawdax {
namespace {

using ::rawdax::testing::CliRun;
using ::rawdax::testing::RunResult;
using ::rawdax::testing::ScratchDir;
using ::rawdax::testing::ServeChild;

constexpr uint64_t kKiB = 1024, kMiB = 1024 * kKiB;
constexpr uint64_t kSize = 32 * kMiB;

std::string q(const std::string& s) { return "'" + s + "'"; }

// A write: `length` bytes of `fill` at `offset` (4 KiB multiples).
struct Write {
  uint64_t offset, length;
  int fill;
};
// Before s1, then between s1 and s2 (the first overwrites part of s1's data).
const std::vector<Write> kBefore = {{0, 64 * kKiB, 0xa1}, {1 * kMiB, 4 * kKiB, 0xa2},
                                    {20 * kMiB, 128 * kKiB, 0xa3}};
const std::vector<Write> kAfter = {{4 * kKiB, 4 * kKiB, 0xb1}, {8 * kMiB, 64 * kKiB, 0xb2},
                                   {20 * kMiB + 64 * kKiB, 4 * kKiB, 0xb3}};

class SnapshotExportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    serve_ = std::make_unique<ServeChild>(region(), sock(), path("serve.log"),
                                          std::vector<std::string>{"--default-name", "vm1",
                                                                   "--default-size", "32M"});
    ASSERT_TRUE(serve_->ready()) << serve_->log();
  }

  std::string path(const std::string& name) const { return dir_.path() + "/" + name; }
  std::string region() const { return path("region"); }
  std::string sock() const { return path("nbd.sock"); }
  std::string uri(const std::string& name) const {
    return "nbd+unix:///" + name + "?socket=" + sock();
  }

  CliRun rawdax(const std::string& args) {
    std::string a = args;
    a.insert(std::min(a.find(' '), a.size()), " --region " + region());
    return ::rawdax::testing::run_cli(dir_.path(), a);
  }

  // A shell command, bounded; its exit code and output.
  RunResult run(const std::string& command, int timeout_s = 60) {
    std::string out = path("cmd.out"), err = path("cmd.err");
    int status = std::system(("timeout " + std::to_string(timeout_s) + " " + command + " >" + out +
                              " 2>" + err + " </dev/null")
                                 .c_str());
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, ::rawdax::testing::slurp_file(out),
            ::rawdax::testing::slurp_file(err)};
  }

  // Writes through the namespace's own NBD export, and into the model.
  void write_all(const std::vector<Write>& writes) {
    std::string cmd = "qemu-io -f raw";
    for (const Write& w : writes) {
      cmd += " -c 'write -P " + std::to_string(w.fill) + " " + std::to_string(w.offset) + " " +
             std::to_string(w.length) + "'";
      std::memset(model_.data() + w.offset, w.fill, w.length);
    }
    RunResult r = run(cmd + " " + q(uri("vm1")));
    ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  }

  // The model now, as a raw file to compare images with.
  std::string save_model(const std::string& name) {
    std::string file = path(name);
    int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::pwrite(fd, model_.data(), model_.size(), 0), static_cast<ssize_t>(model_.size()));
    ::close(fd);
    return file;
  }

  // Takes s1 (full) and s2 (incremental on s1) through the daemon, with the
  // writes around them; saves the model at each.
  void take_chain() {
    write_all(kBefore);
    CliRun s1 = rawdax("snapshot vm1 " + path("s1.snap"));
    ASSERT_EQ(s1.exit_code, 0) << s1;
    save_model("s1.raw");
    write_all(kAfter);
    CliRun s2 = rawdax("snapshot vm1 " + path("s2.snap") + " --base " + path("s1.snap"));
    ASSERT_EQ(s2.exit_code, 0) << s2;
    save_model("s2.raw");
  }

  nlohmann::json exports() {
    CliRun r = rawdax("exports --json");
    EXPECT_EQ(r.exit_code, 0) << r;
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    EXPECT_TRUE(j.is_array()) << r.out;
    return j;
  }
  nlohmann::json export_named(const std::string& name) {
    for (const auto& e : exports()) {
      if (e["name"] == name) return e;
    }
    return nullptr;
  }

  // `nbdinfo --map[=CONTEXT] --json`: [(offset, length, type)].
  std::vector<std::tuple<uint64_t, uint64_t, uint64_t>> map(const std::string& name,
                                                             const std::string& context = "") {
    RunResult r = run("nbdinfo --json --map" + (context.empty() ? "" : "=" + context) + " " +
                      q(uri(name)));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::vector<std::tuple<uint64_t, uint64_t, uint64_t>> out;
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    if (!j.is_array()) {
      ADD_FAILURE() << r.out;
      return out;
    }
    for (const auto& e : j) {
      out.emplace_back(e["offset"].get<uint64_t>(), e["length"].get<uint64_t>(),
                       e["type"].get<uint64_t>());
    }
    return out;
  }

  ScratchDir dir_{::rawdax::testing::tmpfs_parent()};
  std::unique_ptr<ServeChild> serve_;
  std::vector<char> model_ = std::vector<char>(kSize, 0);
};

// The data runs a map should show for `writes`, merged, in offset order.
std::vector<std::pair<uint64_t, uint64_t>> merged(std::vector<Write> writes) {
  std::sort(writes.begin(), writes.end(),
            [](const Write& a, const Write& b) { return a.offset < b.offset; });
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (const Write& w : writes) {
    if (!out.empty() && out.back().first + out.back().second >= w.offset) {
      out.back().second = std::max(out.back().second, w.offset + w.length - out.back().first);
    } else {
      out.emplace_back(w.offset, w.length);
    }
  }
  return out;
}

// The runs of `map` whose type is `type`.
std::vector<std::pair<uint64_t, uint64_t>> runs_of(
    const std::vector<std::tuple<uint64_t, uint64_t, uint64_t>>& map, uint64_t type) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (const auto& [offset, length, t] : map) {
    if (t == type) out.emplace_back(offset, length);
  }
  return out;
}

TEST_F(SnapshotExportTest, ExportsServeTheImagesToStandardTools) {
  RAWDAX_REQUIRE_PROGRAM("nbdinfo");
  RAWDAX_REQUIRE_PROGRAM("qemu-img");
  RAWDAX_REQUIRE_PROGRAM("qemu-io");
  take_chain();
  // The daemon says it can.
  auto client = Client::connect(region() + "/control.sock");
  ASSERT_TRUE(client) << client.error().message();
  auto caps = nlohmann::json::parse((*client)->greeting_json())["capabilities"];
  EXPECT_NE(std::find(caps.begin(), caps.end(), "snapshot-export"), caps.end()) << caps;

  CliRun e1 = rawdax("export-snapshot " + path("s1.snap"));
  ASSERT_EQ(e1.exit_code, 0) << e1;
  EXPECT_EQ(e1.out, "vm1@s1 " + uri("vm1@s1") + "\n");
  CliRun e2 = rawdax("export-snapshot " + path("s2.snap") + " --json");
  ASSERT_EQ(e2.exit_code, 0) << e2;
  auto j2 = nlohmann::json::parse(e2.out);
  EXPECT_EQ(j2["name"], "vm1@s2");
  EXPECT_EQ(j2["kind"], "snapshot");
  EXPECT_EQ(j2["namespace"], "vm1");
  EXPECT_EQ(j2["base_export"], "vm1@s1");
  EXPECT_EQ(j2["state"], "ok");
  EXPECT_EQ(j2["size"], kSize);

  // nbdinfo --list: every export; the snapshots described with namespace and time.
  RunResult list = run("nbdinfo --list --json " + q("nbd+unix:///?socket=" + sock()));
  ASSERT_EQ(list.exit_code, 0) << list.err;
  auto listed = nlohmann::json::parse(list.out);
  std::set<std::string> names;
  auto s1_file = internal::SnapshotFile::open(path("s1.snap"));
  ASSERT_TRUE(s1_file);
  for (const auto& x : listed["exports"]) {
    std::string name = x["export-name"];
    names.insert(name);
    if (name == "vm1@s1") {
      std::string description = x.value("description", "");
      EXPECT_NE(description.find("namespace vm1"), std::string::npos) << list.out;
      EXPECT_NE(description.find(s1_file->header().taken_at), std::string::npos) << list.out;
      EXPECT_EQ(x["is_read_only"], true) << list.out;
    }
  }
  EXPECT_EQ(names, (std::set<std::string>{"vm1", "vm1@s1", "vm1@s2"})) << list.out;

  // The incremental offers its dirty bitmap beside base:allocation.
  RunResult info = run("nbdinfo --json " + q(uri("vm1@s2")));
  ASSERT_EQ(info.exit_code, 0) << info.err;
  auto contexts = nlohmann::json::parse(info.out)["exports"][0]["contexts"];
  EXPECT_EQ(contexts, nlohmann::json::array({"base:allocation", "qemu:dirty-bitmap:vm1@s1"}))
      << info.out;

  // Allocation: data exactly where s1 stored pages; holes (3 = hole|zero) elsewhere.
  auto m1 = map("vm1@s1");
  EXPECT_EQ(runs_of(m1, 0), merged(kBefore));
  uint64_t covered = 0;
  for (const auto& [offset, length, type] : m1) covered += length;
  EXPECT_EQ(covered, kSize);
  for (const auto& [offset, length, type] : m1) EXPECT_TRUE(type == 0 || type == 3) << type;
  // An unstored page reads as zeros, a stored one as written at s1.
  RunResult zeros = run("qemu-io -r -f raw -c 'read -P 0 30M 64k' -c 'read -P 161 0 4k' -c "
                        "'read -P 161 4k 4k' " + q(uri("vm1@s1")));
  EXPECT_EQ(zeros.exit_code, 0) << zeros.out << zeros.err;
  EXPECT_EQ(zeros.out.find("Pattern verification failed"), std::string::npos) << zeros.out;
  // Read-only: a write is refused.
  RunResult write = run("qemu-io -f raw -c 'write 0 4k' " + q(uri("vm1@s1")));
  EXPECT_NE(write.exit_code, 0) << write.out;

  // The dirty bitmap: exactly the pages written between s1 and s2.
  auto dirty = map("vm1@s2", "qemu:dirty-bitmap:vm1@s1");
  EXPECT_EQ(runs_of(dirty, 1), merged(kAfter));

  // The images, compared with what was written before each snapshot.
  RunResult c1 = run("qemu-img compare -f raw -F raw " + q(path("s1.raw")) + " " +
                     q(uri("vm1@s1")));
  EXPECT_EQ(c1.exit_code, 0) << c1.out << c1.err;
  RunResult c2 = run("qemu-img compare -f raw -F raw " + q(path("s2.raw")) + " " +
                     q(uri("vm1@s2")));
  EXPECT_EQ(c2.exit_code, 0) << c2.out << c2.err;
  RunResult differ = run("qemu-img compare -f raw -F raw " + q(path("s2.raw")) + " " +
                         q(uri("vm1@s1")));
  EXPECT_EQ(differ.exit_code, 1) << "s1 is not s2: " << differ.out << differ.err;

  // nbdcopy to a raw file: the same bytes, and the holes stay holes.
  RAWDAX_REQUIRE_PROGRAM("nbdcopy");
  RunResult copy = run("nbdcopy " + q(uri("vm1@s1")) + " " + q(path("copy.raw")));
  ASSERT_EQ(copy.exit_code, 0) << copy.err;
  RunResult copied = run("qemu-img compare -f raw -F raw " + q(path("s1.raw")) + " " +
                         q(path("copy.raw")));
  EXPECT_EQ(copied.exit_code, 0) << copied.out << copied.err;
  struct stat st;
  ASSERT_EQ(::stat(path("copy.raw").c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), kSize);
  EXPECT_LE(static_cast<uint64_t>(st.st_blocks) * 512, 1 * kMiB) << "196 KiB of data";
}

// The pull-mode backup with standard tools only (docs/export.md, "Backups
// with qemu-img and nbdcopy"): a full qcow2 of s1, then an overlay on it
// holding only the extents s2's dirty bitmap lists, each read with nbdsh
// and written with qemu-io.
TEST_F(SnapshotExportTest, PullBackupFullThenIncremental) {
  RAWDAX_REQUIRE_PROGRAM("nbdinfo");
  ASSERT_FALSE(::rawdax::testing::python_with_libnbd().empty())
      << "python3-libnbd (nbdsh) is not installed (make deps installs it)";
  RAWDAX_REQUIRE_PROGRAM("qemu-img");
  RAWDAX_REQUIRE_PROGRAM("qemu-io");
  take_chain();
  ASSERT_EQ(rawdax("export-snapshot " + path("s1.snap")).exit_code, 0);
  ASSERT_EQ(rawdax("export-snapshot " + path("s2.snap")).exit_code, 0);
  const std::string full = path("full.qcow2"), inc = path("inc.qcow2");

  // (1) The full backup, sparse.
  RunResult convert = run("qemu-img convert -f raw -O qcow2 " + q(uri("vm1@s1")) + " " + q(full));
  ASSERT_EQ(convert.exit_code, 0) << convert.err;
  RunResult same = run("qemu-img compare -f qcow2 -F raw " + q(full) + " " + q(uri("vm1@s1")));
  EXPECT_EQ(same.exit_code, 0) << same.out << same.err;
  RunResult as_written = run("qemu-img compare -f qcow2 -F raw " + q(full) + " " +
                             q(path("s1.raw")));
  EXPECT_EQ(as_written.exit_code, 0) << as_written.out << as_written.err;
  RunResult qmap = run("qemu-img map -f qcow2 --output=json " + q(full));
  ASSERT_EQ(qmap.exit_code, 0) << qmap.err;
  uint64_t allocated = 0;
  for (const auto& e : nlohmann::json::parse(qmap.out)) {
    if (e["data"] == true) allocated += e["length"].get<uint64_t>();
  }
  // 196 KiB written; qcow2 allocates whole 64 KiB clusters.
  EXPECT_GE(allocated, 196 * kKiB);
  EXPECT_LE(allocated, 512 * kKiB) << qmap.out;

  // (2) The incremental: an overlay, and each dirty extent of s2 copied into it.
  RunResult create = run("qemu-img create -f qcow2 -b " + q(full) + " -F qcow2 " + q(inc));
  ASSERT_EQ(create.exit_code, 0) << create.err;
  RunResult dirty = run("nbdinfo --json --map=qemu:dirty-bitmap:vm1@s1 " + q(uri("vm1@s2")));
  ASSERT_EQ(dirty.exit_code, 0) << dirty.err;
  size_t copied = 0;
  for (const auto& e : nlohmann::json::parse(dirty.out)) {
    if (e["type"] != 1) continue;
    const uint64_t offset = e["offset"], length = e["length"];
    const std::string tmp = path("extent.bin");
    // nbdsh, run by the python that has the bindings (pyenv shims may hide them).
    RunResult read = run(::rawdax::testing::python_with_libnbd() + " -m nbd -u " +
                         q(uri("vm1@s2")) + " -c " +
                         q("open(\"" + tmp + "\", \"wb\").write(h.pread(" +
                           std::to_string(length) + ", " + std::to_string(offset) + "))"));
    ASSERT_EQ(read.exit_code, 0) << read.err;
    RunResult put = run("qemu-io -f qcow2 -c " +
                        q("write -s " + tmp + " " + std::to_string(offset) + " " +
                          std::to_string(length)) +
                        " " + q(inc));
    ASSERT_EQ(put.exit_code, 0) << put.out << put.err;
    ++copied;
  }
  EXPECT_EQ(copied, merged(kAfter).size());

  // (3) The chain full <- inc is s2.
  RunResult equal = run("qemu-img compare -f qcow2 -F raw " + q(inc) + " " + q(uri("vm1@s2")));
  EXPECT_EQ(equal.exit_code, 0) << equal.out << equal.err;
  RunResult model = run("qemu-img compare -f qcow2 -F raw " + q(inc) + " " + q(path("s2.raw")));
  EXPECT_EQ(model.exit_code, 0) << model.out << model.err;
}

TEST_F(SnapshotExportTest, BadInputAndBrokenExports) {
  RAWDAX_REQUIRE_PROGRAM("qemu-img");
  RAWDAX_REQUIRE_PROGRAM("qemu-io");
  take_chain();
  ASSERT_EQ(rawdax("export-snapshot " + path("s1.snap")).exit_code, 0);
  ASSERT_EQ(rawdax("export-snapshot " + path("s2.snap")).exit_code, 0);

  // A taken name: by another export, or by a namespace.
  CliRun again = rawdax("export-snapshot " + path("s1.snap"));
  EXPECT_EQ(again.exit_code, 1) << again;
  EXPECT_NE(again.err.find("export name vm1@s1 is taken by the snapshot export of"),
            std::string::npos)
      << again;
  CliRun ns = rawdax("export-snapshot " + path("s1.snap") + " --as vm1");
  EXPECT_EQ(ns.exit_code, 1) << ns;
  EXPECT_NE(ns.err.find("export name vm1 is taken by a namespace"), std::string::npos) << ns;
  // Another name for the same file is fine.
  CliRun other = rawdax("export-snapshot " + path("s1.snap") + " --as monday");
  EXPECT_EQ(other.exit_code, 0) << other;

  // A chain that fails verify is refused before it is exported.
  std::filesystem::copy_file(path("s1.snap"), path("bad.snap"));
  {
    auto f = internal::SnapshotFile::open(path("bad.snap"));
    ASSERT_TRUE(f);
    int fd = ::open(path("bad.snap").c_str(), O_RDWR | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    char c = 0;
    const off_t at = static_cast<off_t>(f->header().data_offset() + 1 * kMiB + 100);
    ASSERT_EQ(::pread(fd, &c, 1, at), 1);
    c = static_cast<char>(c ^ 1);
    ASSERT_EQ(::pwrite(fd, &c, 1, at), 1);
    ::close(fd);
  }
  CliRun bad = rawdax("export-snapshot " + path("bad.snap"));
  EXPECT_EQ(bad.exit_code, 1) << bad;
  EXPECT_NE(bad.err.find("fails its checksum"), std::string::npos) << bad;
  EXPECT_TRUE(export_named("vm1@bad").is_null());

  // Unexport: of nothing, and of a namespace, refused; of a snapshot export done.
  CliRun none = rawdax("unexport nosuch");
  EXPECT_EQ(none.exit_code, 1) << none;
  EXPECT_NE(none.err.find("no snapshot export named nosuch"), std::string::npos) << none;
  CliRun of_ns = rawdax("unexport vm1");
  EXPECT_EQ(of_ns.exit_code, 1) << of_ns;
  EXPECT_NE(of_ns.err.find("is a namespace"), std::string::npos) << of_ns;
  CliRun gone = rawdax("unexport monday");
  EXPECT_EQ(gone.exit_code, 0) << gone;
  EXPECT_TRUE(export_named("monday").is_null());
  RunResult after = run("qemu-io -r -f raw -c 'read 0 4k' " + q(uri("monday")));
  EXPECT_NE(after.exit_code, 0) << after.out;

  // s2's file deleted while exported: its reads fail and it is listed
  // broken; s1's export and the namespace keep serving.
  ASSERT_TRUE(std::filesystem::remove(path("s2.snap")));
  RunResult broken_read = run("qemu-io -r -f raw -c 'read 8M 4k' " + q(uri("vm1@s2")));
  EXPECT_TRUE(broken_read.exit_code != 0 ||
              broken_read.out.find("Input/output error") != std::string::npos)
      << broken_read.out << broken_read.err;
  EXPECT_NE((broken_read.out + broken_read.err).find("Input/output error"), std::string::npos)
      << broken_read.out << broken_read.err;
  auto s2 = export_named("vm1@s2");
  ASSERT_FALSE(s2.is_null());
  EXPECT_EQ(s2["state"], "broken");
  EXPECT_NE(s2["reason"].get<std::string>().find("s2.snap was deleted"), std::string::npos) << s2;
  EXPECT_EQ(export_named("vm1@s1")["state"], "ok");
  RunResult s1_still = run("qemu-img compare -f raw -F raw " + q(path("s1.raw")) + " " +
                           q(uri("vm1@s1")));
  EXPECT_EQ(s1_still.exit_code, 0) << s1_still.out << s1_still.err;
  RunResult ns_still = run("qemu-io -f raw -c 'read -P 178 8M 4k' " + q(uri("vm1")));
  EXPECT_EQ(ns_still.exit_code, 0) << ns_still.out << ns_still.err;
  EXPECT_EQ(ns_still.out.find("Pattern verification failed"), std::string::npos);
  // A broken export can still be unexported.
  EXPECT_EQ(rawdax("unexport vm1@s2").exit_code, 0);
  EXPECT_TRUE(serve_->stop() == 0) << serve_->log();
}

// Without a daemon there is no NBD server: the verbs say so.
TEST(SnapshotExportCli, VerbsWithoutADaemonSaySo) {
  ScratchDir dir(::rawdax::testing::tmpfs_parent());
  const std::string region = dir.path() + "/region";
  for (const std::string& verb :
       std::vector<std::string>{"exports", "unexport vm1@s1",
                                "export-snapshot " + dir.path() + "/s1.snap"}) {
    std::string args = verb;
    args.insert(std::min(args.find(' '), args.size()), " --region " + region);
    CliRun run = ::rawdax::testing::run_cli(dir.path(), args);
    EXPECT_EQ(run.exit_code, 1) << verb << ": " << run;
    std::string command = verb == "exports" ? "query-exports" : verb.substr(0, verb.find(' '));
    EXPECT_EQ(run.err, "rawdax: error: " + command + " needs a running `rawdax serve` for region " +
                           region + " (its NBD server serves the exports)\n")
        << verb;
  }
}

}  // namespace
}  // namespace rawdax
