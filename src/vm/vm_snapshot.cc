#include "vm/vm_snapshot.h"

#include <sys/socket.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/unique_fd.h"
#include "snapshot/snapshot_file.h"
#include "vm/migration_stream.h"

namespace rawdax::internal {
namespace {

using json = nlohmann::json;

constexpr const char* kFdName = "rawdax-snapshot";
constexpr uint64_t kStreamBandwidth = uint64_t{1} << 40;  // bytes/s: no throttling
constexpr auto kCompletionTimeout = std::chrono::seconds(60);

Error unsupported(const std::string& why) {
  return Error(std::errc::operation_not_supported, why);
}

Result<json> qmp_json(QmpClient& qmp, const std::string& command, const json& args = nullptr) {
  auto reply = qmp.execute(command, args.is_null() ? std::string() : args.dump());
  if (!reply) return reply.error();
  auto parsed = json::parse(*reply, nullptr, false);
  if (parsed.is_discarded()) {
    return Error(std::errc::protocol_error, "QMP " + command + ": reply is not JSON");
  }
  return parsed;
}

// The id of the VM's memory backend mapping `ns`: same file, size and
// offset. ENOTSUP when none does.
Result<std::string> backend_of(QmpClient& qmp, const NamespaceInfo& ns) {
  auto memdevs = qmp_json(qmp, "query-memdev");
  if (!memdevs) return memdevs.error();
  if (!memdevs->is_array()) return Error(std::errc::protocol_error, "QMP query-memdev: no list");
  for (const json& m : *memdevs) {
    if (!m.is_object() || !m.contains("id") || !m["id"].is_string()) continue;
    const std::string id = m["id"].get<std::string>();
    if (m.value("size", uint64_t{0}) != ns.size) continue;
    auto file = qmp_json(qmp, "qom-get", {{"path", "/objects/" + id}, {"property", "mem-path"}});
    if (!file || !file->is_string()) continue;  // not a memory-backend-file
    std::error_code ec;
    if (!std::filesystem::equivalent(file->get<std::string>(), ns.path, ec)) continue;
    if (ns.offset != 0) {
      auto offset = qmp_json(qmp, "qom-get", {{"path", "/objects/" + id}, {"property", "offset"}});
      if (!offset || !offset->is_number_unsigned() || offset->get<uint64_t>() != ns.offset) continue;
    }
    if (!m.value("share", true)) {  // reported since QEMU 6.1
      return unsupported("the VM's memory backend " + id + " of " + ns.path +
                         " is not share=on: the guest's stores do not reach the namespace");
    }
    return id;
  }
  return unsupported("no memory backend of the VM maps " + ns.path + " (" +
                     std::to_string(ns.size) + " bytes)");
}

// The capability's and max-bandwidth's old values, set back at scope exit.
class MigrationSettings {
 public:
  explicit MigrationSettings(QmpClient& qmp) : qmp_(qmp) {}
  ~MigrationSettings() {
    if (capability_set_) {
      (void)qmp_json(qmp_, "migrate-set-capabilities",
                     {{"capabilities",
                       json::array({{{"capability", "background-snapshot"}, {"state", false}}})}});
    }
    if (old_bandwidth_) {
      (void)qmp_json(qmp_, "migrate-set-parameters", {{"max-bandwidth", *old_bandwidth_}});
    }
  }

  Status enable(const NamespaceInfo& ns) {
    auto caps = qmp_json(qmp_, "query-migrate-capabilities");
    if (!caps) return caps.error();
    bool known = false;
    for (const json& c : *caps) {
      if (!c.is_object()) continue;
      const std::string name = c.value("capability", std::string());
      if (name == "background-snapshot") known = true;
      if (name == "x-ignore-shared" && c.value("state", false)) {
        return unsupported("the VM migrates with x-ignore-shared, which leaves shared memory "
                           "out of the stream");
      }
    }
    if (!known) {
      return unsupported("this QEMU has no background-snapshot migration capability (QEMU 6.0+)");
    }
    auto state = qmp_json(qmp_, "query-migrate");
    if (!state) return state.error();
    const std::string status = state->value("status", std::string("none"));
    if (status != "none" && status != "completed" && status != "failed" &&
        status != "cancelled") {
      return unsupported("a migration of the VM is " + status);
    }
    auto set = qmp_json(qmp_, "migrate-set-capabilities",
                        {{"capabilities", json::array({{{"capability", "background-snapshot"},
                                                        {"state", true}}})}});
    if (!set) {
      // QEMU checks here that the host kernel has userfaultfd write-protect
      // and that every RAM block of the guest can be registered for it.
      return unsupported(set.error().message() +
                         " (needs userfaultfd write-protect on every RAM block: anonymous "
                         "memory since Linux 5.7, shmem and hugetlbfs since 5.19; the "
                         "namespace " + ns.name + " is backed by " + ns.path + ")");
    }
    capability_set_ = true;
    auto params = qmp_json(qmp_, "query-migrate-parameters");
    if (!params) return params.error();
    if (params->contains("max-bandwidth")) {
      old_bandwidth_ = (*params)["max-bandwidth"].get<uint64_t>();
      RAWDAX_RETURN_IF_ERROR(
          qmp_json(qmp_, "migrate-set-parameters", {{"max-bandwidth", kStreamBandwidth}}));
    }
    return ok();
  }

 private:
  QmpClient& qmp_;
  bool capability_set_ = false;
  std::optional<uint64_t> old_bandwidth_;
};

// Waits for QEMU's side of the migration to end: ok when completed, its
// error-desc when it failed.
Status wait_completed(QmpClient& qmp) {
  const auto deadline = std::chrono::steady_clock::now() + kCompletionTimeout;
  for (;;) {
    auto state = qmp_json(qmp, "query-migrate");
    if (!state) return state.error();
    const std::string status = state->value("status", std::string());
    if (status == "completed") return ok();
    if (status == "failed" || status == "cancelled") {
      return Error(std::errc::io_error, "QEMU's background snapshot " + status + ": " +
                                            state->value("error-desc", std::string("no reason")));
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return Error(std::errc::timed_out, "QEMU's background snapshot still " + status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace

Result<SnapshotInfo> snapshot_through_qemu(QmpClient& qmp, const NamespaceInfo& ns,
                                           const std::string& path) {
  const auto start = std::chrono::steady_clock::now();
  const std::string what = "namespace " + ns.name + ": snapshot " + path + " through QEMU: ";
  if (ns.size % kQemuTargetPageSize != 0) {
    return unsupported(what + "its size is not a multiple of QEMU's 4 KiB pages");
  }
  auto backend = backend_of(qmp, ns);
  if (!backend) return backend.error().with_context(what);
  MigrationSettings settings(qmp);
  if (Status st = settings.enable(ns); !st) return st.error().with_context(what);

  auto writer = SnapshotWriter::create(
      path, new_snapshot_header(ns.name, ns.uuid, ns.size, kQemuTargetPageSize));
  if (!writer) return writer.error().with_context(what);
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
    return errno_error(errno, what + "socketpair");
  }
  UniqueFd ours(pair[0]);
  {
    UniqueFd theirs(pair[1]);  // QEMU has its own copy once getfd returns
    auto passed = qmp.execute_with_fd("getfd", json{{"fdname", kFdName}}.dump(), theirs.get());
    if (!passed) return passed.error().with_context(what);
  }
  // The pause to report is the one this migration makes.
  qmp.forget_pause();
  auto started = qmp_json(qmp, "migrate", {{"uri", std::string("fd:") + kFdName}});
  if (!started) {
    (void)qmp_json(qmp, "closefd", {{"fdname", kFdName}});
    return started.error().with_context(what);
  }
  auto stream = read_ram_block(ours.get(), *backend, [&](uint64_t offset, std::span<const std::byte> page) {
    return writer->write_pages(offset / kQemuTargetPageSize, page);
  });
  if (!stream) {
    (void)qmp_json(qmp, "migrate_cancel");
    ours.reset();  // QEMU's writes fail from here on
    Status qemu = wait_completed(qmp);
    return (qemu ? stream.error() : qemu.error().with_context(stream.error().message() + "; "))
        .with_context(what);
  }
  if (stream->block_size != ns.size) {
    return Error(std::errc::io_error, what + "QEMU's block " + *backend + " has " +
                                          std::to_string(stream->block_size) + " bytes, not " +
                                          std::to_string(ns.size));
  }
  if (Status st = wait_completed(qmp); !st) return st.error().with_context(what);
  auto pause = qmp.last_pause();
  if (!pause) {
    // The RESUME event may still be on its way behind the last reply.
    (void)qmp.execute("query-status");
    pause = qmp.last_pause();
  }
  auto done = writer->finish();
  if (!done) return done.error().with_context(what);
  SnapshotInfo info = snapshot_info_of(path, *done);
  info.duration_ns = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                               std::chrono::steady_clock::now() - start)
                                               .count());
  info.vm_snapshot = "background";
  info.vm_pause_ns = pause ? static_cast<uint64_t>(pause->count()) : 0;
  return info;
}

}  // namespace rawdax::internal
