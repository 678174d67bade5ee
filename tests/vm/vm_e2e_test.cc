// End to end with a real guest (QEMU TCG, the Debian kernel, a busybox
// initramfs built by tests/guest/build_kit.sh): a rawdax namespace is the guest's
// /dev/pmem0 (an nvdimm on a memory-backend-file with share=on, from
// rawdax's own vm-args). The guest writes markers, converts to fsdax, makes
// ext4, mounts it -o dax and writes a file. The host reads the markers
// through the block face, snapshots the namespace while the guest runs,
// paused through QMP for exactly the snapshot, restores it into a second
// namespace, and a second boot mounts that and reads the file back.
// The freeze and the snapshot go through the daemon's control socket after
// attach-vm, which pauses the guest through QMP for exactly their length.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <mutex>
#include <fstream>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "rawdax/rawdax.h"
#include "test_util.h"
#include "daemon/server.h"
#include "rawdax/client.h"
#include "vm/qemu_args.h"
#include "vm/qmp_client.h"

extern char** environ;

namespace rawdax {
namespace {

using ::rawdax::testing::ScratchDir;
using namespace std::chrono_literals;

constexpr uint64_t kSize = 256ull << 20;
constexpr const char* kQemu = "qemu-system-x86_64";

bool on_path(const std::string& tool) {
  return std::system(("command -v " + tool + " >/dev/null 2>&1").c_str()) == 0;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// One QEMU process running a guest step; killed if still running at the end.
class Guest {
 public:
  // `qmp` is for the daemon; `probe` a second QMP monitor for the test's
  // own status checks (each monitor takes one client at a time).
  Guest(const std::string& guest_dir, const NamespaceInfo& ns, const std::string& step,
        const std::string& serial, const std::string& qmp, const std::string& probe)
      : serial_(serial), probe_(probe) {
    auto pmem = internal::qemu_pmem_args(ns, /*virtio=*/false, 512ull << 20);
    EXPECT_TRUE(pmem) << pmem.error().message();
    if (!pmem) return;
    std::vector<std::string> args = {kQemu,
                                     "-machine",
                                     "pc,accel=tcg," + pmem->machine_option,
                                     "-cpu",
                                     "max",
                                     "-m",
                                     "512M," + pmem->memory_option};
    if (!guest_dir.empty()) {  // else the firmware alone, finding nothing to boot
      args.insert(args.end(), {"-kernel", guest_dir + "/vmlinux", "-initrd",
                               guest_dir + "/initramfs.cpio.gz", "-append",
                               "console=ttyS0 quiet no_timer_check rawdax.step=" + step});
    }
    args.insert(args.end(), {"-nographic",
                                     "-no-reboot",
                                     "-monitor",
                                     "none",
                                     "-serial",
                                     "file:" + serial,
                                     "-qmp",
                                     "unix:" + qmp + ",server=on,wait=off",
                                     "-qmp",
                                     "unix:" + probe + ",server=on,wait=off"});
    args.insert(args.end(), pmem->args.begin(), pmem->args.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    int rc = posix_spawnp(&pid_, kQemu, &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    EXPECT_EQ(rc, 0) << "cannot start " << kQemu;
    if (rc != 0) pid_ = -1;
  }
  ~Guest() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }

  // Waits until the serial console shows "RAWDAX-GUEST: <what>"; fails fast
  // on a FAILED line or an exited QEMU.
  bool wait_for(const std::string& what, std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      std::string out = read_file(serial_);
      if (out.find("RAWDAX-GUEST: " + what) != std::string::npos) return true;
      if (out.find("RAWDAX-GUEST: FAILED") != std::string::npos) return false;
      if (pid_ > 0 && ::waitpid(pid_, &status_, WNOHANG) == pid_) {
        pid_ = -1;
        return read_file(serial_).find("RAWDAX-GUEST: " + what) != std::string::npos;
      }
      std::this_thread::sleep_for(100ms);
    }
    return false;
  }
  // Waits for QEMU to exit (the guest powers off).
  bool wait_exit(std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (pid_ > 0 && std::chrono::steady_clock::now() < deadline) {
      if (::waitpid(pid_, &status_, WNOHANG) == pid_) pid_ = -1;
      std::this_thread::sleep_for(100ms);
    }
    return pid_ < 0 && WIFEXITED(status_) && WEXITSTATUS(status_) == 0;
  }
  std::string console() const { return read_file(serial_); }
  // QEMU's run state ("running", "paused"), from the probe monitor.
  std::string status() const {
    auto qmp = internal::QmpClient::connect(probe_);
    if (!qmp) return qmp.error().message();
    auto s = qmp->status();
    return s ? *s : s.error().message();
  }

 private:
  std::string serial_, probe_;
  pid_t pid_ = -1;
  int status_ = 0;
};

// Block number of the guest's markers: the last 4 4K blocks of the namespace.
uint64_t marker_offset(int i) { return kSize - (4 - i) * 4096ull; }

// The daemon's control path over a region: dispatcher, server at `socket`,
// and what the dispatcher logs.
class LoggedControl {
 public:
  LoggedControl(Region& region, std::string socket)
      : dispatcher_(region, {.log = [this](const std::string& line) {
                               std::lock_guard<std::mutex> lock(mu_);
                               log_ += line + "\n";
                             }}),
        socket_(std::move(socket)) {}
  // Starts the server and connects a client to it.
  Result<std::unique_ptr<Client>> start() {
    auto server = control::ControlServer::start(dispatcher_, {.socket_path = socket_});
    if (!server) return server.error();
    server_ = std::move(*server);
    return Client::connect(socket_);
  }
  // Every line logged so far, each ending in a newline.
  std::string log() {
    std::lock_guard<std::mutex> lock(mu_);
    return log_;
  }

 private:
  std::mutex mu_;
  std::string log_;  // guarded by mu_
  control::Dispatcher dispatcher_;
  std::string socket_;
  std::unique_ptr<control::ControlServer> server_;
};

TEST(VmEndToEnd, GuestOnANamespaceSnapshotRestoreAndSecondBoot) {
  if (!on_path(kQemu)) GTEST_FAIL() << kQemu << " not installed (make deps installs it)";
  const std::string guest_dir = std::string(RAWDAX_BUILD_DIR) + "/vm-guest";
  int built = std::system(("bash " + std::string(RAWDAX_SOURCE_DIR) +
                           "/tests/guest/build_kit.sh " + guest_dir).c_str());
  if (WIFEXITED(built) && WEXITSTATUS(built) == 77) {
    GTEST_FAIL() << "guest packages missing (see the reason above; make deps installs them)";
  }
  ASSERT_TRUE(WIFEXITED(built) && WEXITSTATUS(built) == 0) << "build_kit.sh failed";

  ScratchDir dir(::rawdax::testing::disk_parent());
  auto region = Region::open(dir.path() + "/region", {.create = true});
  ASSERT_TRUE(region) << region.error().message();
  auto ns = (*region)->create_namespace({.name = "vm1", .size = kSize});
  ASSERT_TRUE(ns) << ns.error().message();
  auto dev = (*region)->open_device("vm1");
  ASSERT_TRUE(dev);
  const std::string snap = dir.path() + "/vm1.snap";

  {  // First boot: markers, fsdax, ext4 -o dax, a file; snapshot while running.
    const std::string qmp = dir.path() + "/qmp1.sock";
    Guest guest(guest_dir, *ns, "write", dir.path() + "/serial1.log", qmp,
                dir.path() + "/probe1.sock");
    ASSERT_TRUE(guest.wait_for("markers", 120s)) << guest.console();
    for (int i = 0; i < 4; ++i) {
      std::string want = "rawdax-marker-" + std::to_string(i) + "\n";
      std::string got(want.size(), '\0');
      ASSERT_TRUE((*dev)->read(marker_offset(i), std::as_writable_bytes(std::span(got))));
      EXPECT_EQ(got, want) << "marker " << i << " through the block face";
    }
    ASSERT_TRUE(guest.wait_for("ready", 120s)) << guest.console();

    // Through the daemon: attach the VM, then freeze/thaw and snapshot.
    control::Dispatcher dispatcher(**region, {});
    auto server = control::ControlServer::start(dispatcher, {.socket_path = dir.path() + "/c.sock"});
    ASSERT_TRUE(server) << server.error().message();
    auto client = Client::connect(dir.path() + "/c.sock");
    ASSERT_TRUE(client) << client.error().message();
    auto attached = (*client)->execute("attach-vm", R"({"name":"vm1","qmp":")" + qmp + R"("})");
    ASSERT_TRUE(attached) << attached.error().message();
    EXPECT_EQ(guest.status(), "running");
    auto frozen = (*client)->execute("freeze", R"({"name":"vm1"})");
    ASSERT_TRUE(frozen) << frozen.error().message();
    EXPECT_EQ(guest.status(), "paused");  // paused exactly while frozen
    ASSERT_TRUE((*client)->execute("thaw", R"({"name":"vm1"})"));
    EXPECT_EQ(guest.status(), "running");
    auto taken = (*client)->execute("snapshot", R"({"name":"vm1","file":")" + snap + R"("})");
    ASSERT_TRUE(taken) << taken.error().message();
    EXPECT_EQ(guest.status(), "running");  // resumed after the copy
    auto info = nlohmann::json::parse(*taken);
    EXPECT_GT(info["pages"].get<uint64_t>(), 0u);
    ASSERT_TRUE((*client)->execute("detach-vm", R"({"name":"vm1"})"));
    client->reset();
    (*server)->stop();
    ASSERT_TRUE(guest.wait_for("done", 120s)) << guest.console();
    EXPECT_TRUE(guest.wait_exit(60s)) << guest.console();
  }

  // Restore into a second namespace and boot it: the file is there.
  auto restored = (*region)->restore_namespace("vm2", snap);
  ASSERT_TRUE(restored) << restored.error().message();
  {
    Guest guest(guest_dir, *restored, "read", dir.path() + "/serial2.log",
                dir.path() + "/qmp2.sock", dir.path() + "/probe2.sock");
    ASSERT_TRUE(guest.wait_for("file: hello from the guest", 120s)) << guest.console();
    EXPECT_TRUE(guest.wait_exit(60s)) << guest.console();
  }
}

// One cut of the generations guest, which writes the namespace in order,
// round after round, each round's bytes its generation g (1..255,
// wrapping): bytes [0, b) carry generation g+1 and bytes [b, end) carry g,
// or all carry one generation. The cut is at a byte, not a page: the guest
// may be stopped inside its copy of a page.
::testing::AssertionResult one_cut(const std::vector<std::byte>& image) {
  const auto newer = static_cast<uint8_t>(image.front());
  const auto older = static_cast<uint8_t>(image.back());
  if (older == 0) return ::testing::AssertionFailure() << "the last byte was never written";
  if (newer != older && newer != older % 255 + 1) {
    return ::testing::AssertionFailure() << "byte 0 has generation " << int(newer)
                                         << ", the last byte " << int(older);
  }
  size_t cut = 0;
  while (cut < image.size() && static_cast<uint8_t>(image[cut]) == newer) ++cut;
  for (size_t i = cut; i < image.size(); ++i) {
    if (static_cast<uint8_t>(image[i]) != older) {
      return ::testing::AssertionFailure()
             << "not one cut: bytes [0, " << cut << ") have generation " << int(newer)
             << ", byte " << i << " (page " << i / 4096 << ") has " << int(image[i])
             << " among bytes of " << int(older);
    }
  }
  return ::testing::AssertionSuccess() << "cut at byte " << cut << " between generations "
                                       << int(newer) << " and " << int(older);
}

std::vector<std::byte> read_all(Device& dev) {
  std::vector<std::byte> image(dev.size());
  auto got = dev.read(0, image);
  EXPECT_TRUE(got) << got.error().message();
  return image;
}

// The guest kit (build_kit.sh) in the build tree; empty after a failure.
std::string guest_kit() {
  const std::string guest_dir = std::string(RAWDAX_BUILD_DIR) + "/vm-guest";
  int built = std::system(("bash " + std::string(RAWDAX_SOURCE_DIR) +
                           "/tests/guest/build_kit.sh " + guest_dir).c_str());
  if (WIFEXITED(built) && WEXITSTATUS(built) == 77) {
    ADD_FAILURE() << "guest packages missing (see the reason above; make deps installs them)";
    return "";
  }
  if (!WIFEXITED(built) || WEXITSTATUS(built) != 0) {
    ADD_FAILURE() << "build_kit.sh failed";
    return "";
  }
  return guest_dir;
}

constexpr uint64_t kLiveSize = 64ull << 20;

// A guest writing its namespace all the time, snapshotted through the
// daemon: through QEMU's background snapshot (the namespace is on tmpfs,
// which has userfaultfd write-protect), then with the guest paused for the
// whole copy (vm: pause). Each image, restored into a second namespace, is
// one cut of the guest's rounds; each reply reports the guest's pause; and
// the guest kept writing while the background snapshot copied.
// As root: QEMU (7.2) opens its userfaultfd without UFFD_USER_MODE_ONLY,
// which a plain user may not while vm.unprivileged_userfaultfd is 0 (the
// default); QEMU then refuses the background snapshot and the daemon pauses.
TEST(VmEndToEndAsRoot, SnapshotOfAGuestWritingAllTheTimeIsOneCut) {
  if (!on_path(kQemu)) GTEST_FAIL() << kQemu << " not installed (make deps installs it)";
  const std::string guest_dir = guest_kit();
  ASSERT_FALSE(guest_dir.empty());
  ScratchDir dir(::rawdax::testing::tmpfs_parent());
  auto region = Region::open(dir.path() + "/region", {.create = true});
  ASSERT_TRUE(region) << region.error().message();
  auto ns = (*region)->create_namespace({.name = "live", .size = kLiveSize});
  ASSERT_TRUE(ns) << ns.error().message();
  auto dev = (*region)->open_device("live");
  ASSERT_TRUE(dev);

  const std::string qmp = dir.path() + "/qmp.sock";
  Guest guest(guest_dir, *ns, "generations", dir.path() + "/serial.log", qmp,
              dir.path() + "/probe.sock");
  ASSERT_TRUE(guest.wait_for("rounds", 120s)) << guest.console();

  LoggedControl control(**region, dir.path() + "/c.sock");
  auto client = control.start();
  ASSERT_TRUE(client) << client.error().message();
  ASSERT_TRUE((*client)->execute("attach-vm", R"({"name":"live","qmp":")" + qmp + R"("})"));

  for (const std::string mode : {"background", "pause"}) {
    SCOPED_TRACE(mode);
    const std::string snap = dir.path() + "/" + mode + ".snap";
    auto taken = (*client)->execute(
        "snapshot", R"({"name":"live","file":")" + snap + R"(","vm":")" + mode + R"("})");
    ASSERT_TRUE(taken) << taken.error().message();
    // Read at once: what the guest wrote since the cut.
    std::vector<std::byte> live_after = read_all(**dev);
    EXPECT_EQ(guest.status(), "running");
    auto info = nlohmann::json::parse(*taken);
    EXPECT_EQ(info.value("vm_snapshot", ""), mode) << *taken;
    EXPECT_GT(info.value("vm_pause_ns", uint64_t{0}), 0u) << *taken;
    EXPECT_EQ(info["page_size"].get<uint64_t>(), 4096u);

    auto restored = (*region)->restore_namespace("copy-" + std::string(mode), snap);
    ASSERT_TRUE(restored) << restored.error().message();
    auto copy = (*region)->open_device("copy-" + std::string(mode));
    ASSERT_TRUE(copy) << copy.error().message();
    std::vector<std::byte> image = read_all(**copy);
    EXPECT_TRUE(one_cut(image));
    if (mode == std::string("background")) {
      // QEMU sends a page the guest writes before the write goes on, so
      // the guest ran on while the stream was copied.
      EXPECT_NE(image, live_after) << "the guest wrote nothing during the copy";
    }
  }
  const std::string all = control.log();
  EXPECT_NE(all.find("through QEMU's background snapshot"), std::string::npos) << all;
  EXPECT_NE(all.find("pausing the VM for the whole snapshot: asked to"), std::string::npos)
      << all;
}

// A namespace on a disk filesystem is a regular file, which userfaultfd
// cannot write-protect: QEMU refuses the background snapshot, and the
// daemon pauses the guest for the whole copy and logs why. (The guest is
// the firmware alone: nothing needs to run.)
TEST(VmEndToEnd, ANamespaceOnADiskFilesystemFallsBackToTheFullPause) {
  if (!on_path(kQemu)) GTEST_FAIL() << kQemu << " not installed (make deps installs it)";
  ScratchDir dir(::rawdax::testing::disk_parent());
  auto region = Region::open(dir.path() + "/region", {.create = true});
  ASSERT_TRUE(region) << region.error().message();
  auto ns = (*region)->create_namespace({.name = "disk", .size = 16ull << 20});
  ASSERT_TRUE(ns) << ns.error().message();
  auto dev = (*region)->open_device("disk");
  ASSERT_TRUE(dev);
  std::vector<std::byte> marker(4096, std::byte{0x5a});
  ASSERT_TRUE((*dev)->write(8192, marker));

  const std::string qmp = dir.path() + "/qmp.sock";
  Guest guest("", *ns, "", dir.path() + "/serial.log", qmp, dir.path() + "/probe.sock");
  LoggedControl control(**region, dir.path() + "/c.sock");
  auto client = control.start();
  ASSERT_TRUE(client) << client.error().message();
  // QEMU takes a moment to open its monitor.
  Result<std::string> attached = Error(std::errc::timed_out, "not tried");
  for (int i = 0; i < 100 && !attached; ++i) {
    attached = (*client)->execute("attach-vm", R"({"name":"disk","qmp":")" + qmp + R"("})");
    if (!attached) std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(attached) << attached.error().message();
  const std::string snap = dir.path() + "/disk.snap";
  auto taken = (*client)->execute("snapshot", R"({"name":"disk","file":")" + snap + R"("})");
  ASSERT_TRUE(taken) << taken.error().message();
  auto info = nlohmann::json::parse(*taken);
  EXPECT_EQ(info.value("vm_snapshot", ""), "pause") << *taken;
  EXPECT_GT(info.value("vm_pause_ns", uint64_t{0}), 0u) << *taken;
  EXPECT_EQ(info["pages"].get<uint64_t>(), 1u) << *taken;
  EXPECT_EQ(guest.status(), "running");
  const std::string all = control.log();
  EXPECT_NE(all.find("pausing the VM for the whole snapshot"), std::string::npos) << all;
  EXPECT_NE(all.find("userfaultfd write-protect"), std::string::npos) << all;
}

}  // namespace
}  // namespace rawdax
