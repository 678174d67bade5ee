// Verbs: export-snapshot, unexport, exports. Control commands on the
// region's CommandPath like every verb; only a daemon has an NBD server, so
// without one each prints the dispatcher's error saying so.
#include <CLI/CLI.hpp>
#include <filesystem>
#include <iostream>
#include <memory>

#include "common/units.h"
#include "tools/cli_common.h"
#include "tools/command_path.h"
#include "tools/commands.h"

namespace rawdax::cli {
namespace {

struct ExportVerbOptions {
  GlobalOptions global;
  std::string file;
  std::string name;
};

// The reply's export, sizes as strings when `human`.
nlohmann::json human_export(nlohmann::json e, bool human) {
  if (human && e.contains("size") && e["size"].is_number_unsigned()) {
    e["size"] = internal::format_size(e["size"].get<uint64_t>());
  }
  return e;
}

std::string text_of(const nlohmann::json& e, const char* key) {
  auto it = e.find(key);
  return it != e.end() && it->is_string() ? it->get<std::string>() : std::string();
}

int run_export_snapshot(const ExportVerbOptions& options) {
  auto path = CommandPath::open(options.global);
  if (!path) return fail(path.error());
  // Absolute: the daemon resolves relative paths against its own directory.
  std::error_code ec;
  nlohmann::json args = {{"file", std::filesystem::absolute(options.file, ec).string()}};
  if (!options.name.empty()) args["export"] = options.name;
  auto reply = (*path)->execute("export-snapshot", args);
  if (!reply) return fail(reply.error());
  if (!reply->is_object()) return fail(Error(std::errc::protocol_error, "malformed export"));
  if (options.global.json) {
    print_json(human_export(*reply, options.global.human));
  } else {
    std::cout << text_of(*reply, "name") << " " << text_of(*reply, "uri") << "\n";
  }
  return 0;
}

int run_unexport(const ExportVerbOptions& options) {
  auto path = CommandPath::open(options.global);
  if (!path) return fail(path.error());
  auto reply = (*path)->execute("unexport", {{"export", options.name}});
  if (!reply) return fail(reply.error());
  if (options.global.json) {
    print_json({{"export", options.name}, {"unexported", true}});
  } else {
    std::cout << "export " << options.name << " removed\n";
  }
  return 0;
}

int run_exports(const ExportVerbOptions& options) {
  auto path = CommandPath::open(options.global);
  if (!path) return fail(path.error());
  auto reply = (*path)->execute("query-exports", nlohmann::json::object());
  if (!reply) return fail(reply.error());
  if (!reply->is_array()) return fail(Error(std::errc::protocol_error, "malformed export list"));
  if (options.global.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& e : *reply) out.push_back(human_export(e, options.global.human));
    print_json(out);
    return 0;
  }
  for (const auto& e : *reply) {
    std::cout << text_of(e, "name") << "\t" << text_of(e, "kind") << "\t" << text_of(e, "state")
              << "\t" << text_of(e, "uri");
    if (text_of(e, "kind") == "snapshot") {
      std::cout << "\t" << text_of(e, "file") << " (namespace " << text_of(e, "namespace")
                << ", taken " << text_of(e, "taken_at") << ")";
    }
    if (std::string why = text_of(e, "reason"); !why.empty()) std::cout << "\t" << why;
    std::cout << "\n";
  }
  return 0;
}

}  // namespace

void register_export_commands(CLI::App& app, int* exit_code) {
  auto exp = std::make_shared<ExportVerbOptions>();
  CLI::App* export_snapshot = app.add_subcommand(
      "export-snapshot",
      "Export a snapshot file (and its base chain) read-only over the daemon's NBD server");
  add_global_options(*export_snapshot, exp->global);
  export_snapshot->add_option("file", exp->file, "Snapshot file")->required();
  export_snapshot->add_option("--as", exp->name,
                              "Export name (default: <namespace>@<file stem>)");
  export_snapshot->callback([=] { *exit_code = run_export_snapshot(*exp); });

  auto unexp = std::make_shared<ExportVerbOptions>();
  CLI::App* unexport = app.add_subcommand("unexport", "Remove a snapshot export");
  add_global_options(*unexport, unexp->global);
  unexport->add_option("name", unexp->name, "Export name")->required();
  unexport->callback([=] { *exit_code = run_unexport(*unexp); });

  auto list = std::make_shared<ExportVerbOptions>();
  CLI::App* exports = app.add_subcommand(
      "exports", "List the daemon's NBD exports (namespaces and snapshots) and their state");
  add_global_options(*exports, list->global);
  exports->callback([=] { *exit_code = run_exports(*list); });
}

}  // namespace rawdax::cli
