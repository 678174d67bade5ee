// Verbs: snapshot, restore, verify.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>

#include "common/units.h"
#include "daemon/json_forms.h"
#include "tools/cli_common.h"
#include "tools/command_path.h"
#include "tools/commands.h"

namespace rawdax::cli {
namespace {

nlohmann::json to_json(const SnapshotInfo& s, bool human) {
  nlohmann::json j = control::snapshot_json(s);
  if (human) {
    j["namespace_size"] = internal::format_size(s.namespace_size);
    j["bytes_written"] = internal::format_size(s.bytes_written);
  }
  return j;
}

struct SnapshotVerbOptions {
  GlobalOptions global;
  std::string name;
  std::string file;
  std::string base;
  unsigned threads = 0;
  bool vm_pause = false;
  bool force = false;
  bool lazy = false;
};

void print_snapshot(const SnapshotVerbOptions& options, const SnapshotInfo& info) {
  if (options.global.json) {
    print_json(to_json(info, options.global.human));
  } else {
    std::cout << "snapshot " << info.path << ": " << info.pages << " pages ("
              << internal::format_size(info.bytes_written) << ") of namespace " << options.name << " in "
              << info.duration_ns / 1000000.0 << " ms\n";
    if (!info.vm_snapshot.empty()) {
      std::cout << "VM paused " << info.vm_pause_ns / 1000000.0 << " ms ("
                << (info.vm_snapshot == "background" ? "QEMU background snapshot"
                                                     : "for the whole copy")
                << ")\n";
    }
  }
}

// Paths go absolute: a daemon resolves relative ones against its own
// directory. The output names the file as the user did.
std::string absolute(const std::string& file) {
  std::error_code ec;
  return std::filesystem::absolute(file, ec).string();
}

// A bar on stderr when it is a terminal (only a snapshot run in this
// process reports progress).
PathOptions with_progress_bar() {
  PathOptions out;
  if (::isatty(STDERR_FILENO)) {
    out.progress = [](uint64_t done, uint64_t total) {
      int width = 40, filled = total ? static_cast<int>(width * done / total) : width;
      std::fprintf(stderr, "\r[%s%s] %3d%%", std::string(filled, '#').c_str(),
                   std::string(width - filled, ' ').c_str(),
                   total ? static_cast<int>(100 * done / total) : 100);
      if (done == total) std::fputc('\n', stderr);
    };
  }
  return out;
}

// In a fresh process there is no tracking history, so an incremental
// compares each page with the base chain; the daemon's tracking may skip
// the unwritten ones. The file is the same either way.
int run_snapshot(const SnapshotVerbOptions& options) {
  auto path = CommandPath::open(options.global, with_progress_bar());
  if (!path) return fail(path.error());
  nlohmann::json args = {{"name", options.name}, {"file", absolute(options.file)}};
  if (!options.base.empty()) args["base"] = absolute(options.base);
  if (options.threads != 0) args["threads"] = options.threads;
  if (options.vm_pause) args["vm"] = "pause";
  auto reply = (*path)->execute("snapshot", args);
  if (!reply) return fail(reply.error());
  auto info = (*path)->snapshot_info(*reply);
  if (!info) return fail(info.error());
  info->path = options.file;
  print_snapshot(options, *info);
  return 0;
}

// The namespace's restore state as the region reports it now: nullopt
// once the fill is complete.
Result<std::optional<RestoreState>> restore_state(CommandPath& path, const std::string& name) {
  auto reply = path.execute("query-namespaces", nlohmann::json::object());
  if (!reply) return reply.error();
  if (!reply->is_array()) return Error(std::errc::protocol_error, "malformed namespaces in a reply");
  for (const auto& entry : *reply) {
    auto ns = path.namespace_info(entry);
    if (!ns) return ns.error();
    if (ns->name == name) return ns->restore;
  }
  return Error(std::errc::no_such_file_or_directory, "namespace " + name + " is gone");
}

// Without a daemon, the fill runs in this process and would stop when it
// exits: it runs to completion here, with progress on stderr. (Stopped
// anyway, by a kill or a crash, it resumes at the region's next open.)
Status fill_in_foreground(CommandPath& path, const std::string& name) {
  const bool bar = ::isatty(STDERR_FILENO);
  for (;;) {
    auto state = restore_state(path, name);
    if (!state) return state.error();
    if (!*state) break;
    const RestoreState& r = **state;
    if (!r.error.empty()) {
      return Error(std::errc::io_error, "namespace " + name + ": the lazy restore stopped: " +
                                            r.error);
    }
    if (bar) {
      std::fprintf(stderr, "\rfilling namespace %s: %llu of %llu pages", name.c_str(),
                   static_cast<unsigned long long>(r.pages_filled),
                   static_cast<unsigned long long>(r.pages_total));
    }
    ::usleep(100 * 1000);
  }
  if (bar) std::fputc('\n', stderr);
  return ok();
}

int run_restore(const SnapshotVerbOptions& options) {
  auto path = CommandPath::open(options.global);
  if (!path) return fail(path.error());
  auto reply = (*path)->execute("restore-namespace", {{"name", options.name},
                                                      {"file", absolute(options.file)},
                                                      {"force", options.force},
                                                      {"lazy", options.lazy}});
  if (!reply) return fail(reply.error());
  auto info = (*path)->namespace_info(*reply);
  if (!info) return fail(info.error());
  if (options.lazy && (*path)->through_daemon()) {
    std::fprintf(stderr,
                 "namespace %s is usable now; the daemon fills the rest in the background "
                 "(`rawdax list --json` shows its progress)\n",
                 options.name.c_str());
  } else if (options.lazy) {
    Status filled = fill_in_foreground(**path, options.name);
    if (!filled) return fail(filled.error());
    info->restore.reset();
  }
  print_json(::rawdax::cli::to_json(*info, options.global.human));
  return 0;
}

// Reads only the file: without a daemon no region is opened.
int run_verify(const SnapshotVerbOptions& options) {
  auto path = CommandPath::open(options.global, {.region_free = true});
  if (!path) return fail(path.error());
  auto reply = (*path)->execute("verify-snapshot", {{"file", absolute(options.file)}});
  if (!reply) return fail(reply.error());
  if (!reply->is_array() || reply->empty()) {
    return fail(Error(std::errc::protocol_error, "malformed snapshot chain in a reply"));
  }
  std::vector<SnapshotInfo> chain;
  for (const auto& entry : *reply) {
    auto info = (*path)->snapshot_info(entry);
    if (!info) return fail(info.error());
    chain.push_back(std::move(*info));
  }
  chain.front().path = options.file;
  if (options.global.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& s : chain) out.push_back(to_json(s, options.global.human));
    print_json(out);
  } else {
    std::cout << options.file << ": ok, chain of " << chain.size() << " snapshot(s), "
              << chain.front().pages << " pages in this file\n";
  }
  return 0;
}

}  // namespace

void register_snapshot_commands(CLI::App& app, int* exit_code) {
  auto snap = std::make_shared<SnapshotVerbOptions>();
  CLI::App* snapshot = app.add_subcommand("snapshot", "Write a point-in-time image of a namespace");
  add_global_options(*snapshot, snap->global);
  snapshot->add_option("name", snap->name, "Namespace")->required();
  snapshot->add_option("file", snap->file, "Snapshot file to write")->required();
  snapshot->add_option("--base", snap->base,
                       "Store only the pages that changed since this snapshot");
  snapshot
      ->add_option("--threads", snap->threads,
                   "Threads copying in the background (0: one per CPU, at most 2)")
      ->check(CLI::Range(0u, kMaxSnapshotCopyThreads));
  snapshot->add_flag("--vm-pause", snap->vm_pause,
                     "Pause an attached VM for the whole copy instead of taking the snapshot "
                     "through QEMU's background snapshot");
  snapshot->callback([=] { *exit_code = run_snapshot(*snap); });

  auto rest = std::make_shared<SnapshotVerbOptions>();
  CLI::App* restore = app.add_subcommand("restore", "Restore a snapshot (and its base chain)");
  add_global_options(*restore, rest->global);
  restore->add_option("name", rest->name, "Namespace, created when missing")->required();
  restore->add_option("file", rest->file, "Snapshot file")->required();
  restore->add_flag("--force,-f", rest->force, "Resize an existing namespace of another size");
  restore->add_flag("--lazy", rest->lazy,
                    "Make the namespace usable at once and fill it on demand and in the "
                    "background (in the daemon; without one, before this command returns)");
  restore->callback([=] { *exit_code = run_restore(*rest); });

  auto ver = std::make_shared<SnapshotVerbOptions>();
  CLI::App* verify = app.add_subcommand("verify", "Check a snapshot file and its base chain");
  add_global_options(*verify, ver->global);
  verify->add_option("file", ver->file, "Snapshot file")->required();
  verify->callback([=] { *exit_code = run_verify(*ver); });
}

}  // namespace rawdax::cli
