// Verbs: snapshot, restore, verify.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>

#include "common/units.h"
#include "control/json_forms.h"
#include "tools/cli_common.h"
#include "tools/daemon_link.h"
#include "tools/commands.h"

namespace rawdax::cli {
namespace {

nlohmann::json to_json(const SnapshotInfo& s, bool human) {
  nlohmann::json j = control::snapshot_json(s);
  if (human) {
    j["namespace_size"] = format_size(s.namespace_size);
    j["bytes_written"] = format_size(s.bytes_written);
  }
  return j;
}

struct SnapshotVerbOptions {
  GlobalOptions global;
  std::string name;
  std::string file;
  std::string base;
  unsigned threads = 0;
  bool force = false;
};

void print_snapshot(const SnapshotVerbOptions& options, const SnapshotInfo& info) {
  if (options.global.json) {
    print_json(to_json(info, options.global.human));
  } else {
    std::cout << "snapshot " << info.path << ": " << info.pages << " pages ("
              << format_size(info.bytes_written) << ") of namespace " << options.name << " in "
              << info.duration_ns / 1000000.0 << " ms\n";
  }
}

// The daemon resolves relative paths against its own directory, so they go
// absolute; the output names the file as the user did.
int snapshot_through(DaemonLink& daemon, const SnapshotVerbOptions& options) {
  std::error_code ec;
  nlohmann::json args = {{"name", options.name},
                         {"file", std::filesystem::absolute(options.file, ec).string()}};
  if (!options.base.empty()) args["base"] = std::filesystem::absolute(options.base, ec).string();
  if (options.threads != 0) args["threads"] = options.threads;
  auto reply = daemon.execute("snapshot", args);
  if (!reply) return fail(reply.error());
  auto info = daemon.snapshot_info(*reply);
  if (!info) return fail(info.error());
  info->path = options.file;
  print_snapshot(options, *info);
  return 0;
}

int run_snapshot(const SnapshotVerbOptions& options) {
  if (auto daemon = DaemonLink::connect(options.global.region)) {
    return snapshot_through(*daemon, options);
  }
  auto region = open_region(options.global);
  if (!region) return fail(region.error());
  // A fresh process has no tracking history, so an incremental compares each
  // page with the base chain (dirty tracking would not help here).
  auto dev = (*region)->open_device(options.name);
  if (!dev) return fail(dev.error());
  SnapshotOptions snap{.base = options.base, .copy_threads = options.threads};
  if (::isatty(STDERR_FILENO)) {
    snap.progress = [](uint64_t done, uint64_t total) {
      int width = 40, filled = total ? static_cast<int>(width * done / total) : width;
      std::fprintf(stderr, "\r[%s%s] %3d%%", std::string(filled, '#').c_str(),
                   std::string(width - filled, ' ').c_str(),
                   total ? static_cast<int>(100 * done / total) : 100);
      if (done == total) std::fputc('\n', stderr);
    };
  }
  auto info = (*dev)->snapshot(options.file, snap);
  if (!info) return fail(info.error());
  print_snapshot(options, *info);
  return 0;
}

int run_restore(const SnapshotVerbOptions& options) {
  auto region = open_region(options.global);
  if (!region) return fail(region.error());
  auto info = (*region)->restore_namespace(options.name, options.file, {.force = options.force});
  if (!info) return fail(info.error());
  print_json(::rawdax::cli::to_json(*info, options.global.human));
  return 0;
}

int run_verify(const SnapshotVerbOptions& options) {
  auto chain = verify_snapshot(options.file);
  if (!chain) return fail(chain.error());
  if (options.global.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& s : *chain) out.push_back(to_json(s, options.global.human));
    print_json(out);
  } else {
    std::cout << options.file << ": ok, chain of " << chain->size() << " snapshot(s), "
              << chain->front().pages << " pages in this file\n";
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
  snapshot->callback([=] { *exit_code = run_snapshot(*snap); });

  auto rest = std::make_shared<SnapshotVerbOptions>();
  CLI::App* restore = app.add_subcommand("restore", "Restore a snapshot (and its base chain)");
  add_global_options(*restore, rest->global);
  restore->add_option("name", rest->name, "Namespace, created when missing")->required();
  restore->add_option("file", rest->file, "Snapshot file")->required();
  restore->add_flag("--force,-f", rest->force, "Resize an existing namespace of another size");
  restore->callback([=] { *exit_code = run_restore(*rest); });

  auto ver = std::make_shared<SnapshotVerbOptions>();
  CLI::App* verify = app.add_subcommand("verify", "Check a snapshot file and its base chain");
  add_global_options(*verify, ver->global);
  verify->add_option("file", ver->file, "Snapshot file")->required();
  verify->callback([=] { *exit_code = run_verify(*ver); });
}

}  // namespace rawdax::cli
