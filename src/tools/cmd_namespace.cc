// Verbs: list, create-namespace, destroy-namespace, resize-namespace. Each
// is a control command on the region's CommandPath (the daemon's when one
// runs, this process's otherwise); the output is the same either way. And
// init-region, which formats a carved device (never through a daemon: the
// daemon holds the device's lock, so it is refused while one runs), and
// stats, which only a daemon can answer.
#include <CLI/CLI.hpp>
#include <iostream>
#include <memory>
#include <vector>

#include "common/units.h"
#include "tools/cli_common.h"
#include "tools/command_path.h"
#include "tools/commands.h"

namespace rawdax::cli {
namespace {

struct ListOptions {
  GlobalOptions global;
  bool capabilities = false;
  bool space = false;
};

int run_list(const ListOptions& options) {
  auto path = CommandPath::open(options.global);
  if (!path) return fail(path.error());
  auto all = (*path)->execute("query-namespaces", nlohmann::json::object());
  if (!all) return fail(all.error());
  if (!all->is_array()) return fail(Error(std::errc::protocol_error, "malformed namespace list"));
  nlohmann::json namespaces = nlohmann::json::array();
  for (const auto& entry : *all) {
    auto ns = (*path)->namespace_info(entry);
    if (!ns) return fail(ns.error());
    namespaces.push_back(to_json(*ns, options.global.human));
  }
  if (!options.capabilities && !options.space) {
    print_json(namespaces);
    return 0;
  }
  auto region = (*path)->execute("query-region", nlohmann::json::object());
  if (!region) return fail(region.error());
  if (!region->is_object() || !region->contains("capabilities") || !region->contains("space")) {
    return fail(Error(std::errc::protocol_error, "malformed region description"));
  }
  nlohmann::json entry = {{"region", options.global.region},
                          {"space", space_json((*region)["space"], options.global.human)}};
  if (options.capabilities) {
    entry["capabilities"] = capabilities_json((*region)["capabilities"], options.global.human);
  }
  entry["namespaces"] = namespaces;
  print_json(nlohmann::json::array({entry}));
  return 0;
}

// Runs `command` and prints the namespace it returns.
int print_namespace_reply(const GlobalOptions& options, const std::string& command,
                          const nlohmann::json& arguments) {
  auto path = CommandPath::open(options);
  if (!path) return fail(path.error());
  auto reply = (*path)->execute(command, arguments);
  if (!reply) return fail(reply.error());
  auto info = (*path)->namespace_info(*reply);
  if (!info) return fail(info.error());
  print_json(to_json(*info, options.human));
  return 0;
}

struct CreateOptions {
  GlobalOptions global;
  std::string name;
  std::string size;
};

int run_create(const CreateOptions& options) {
  auto size = internal::parse_size(options.size);
  if (!size) return fail(size.error().with_context("namespace " + options.name + ": "));
  return print_namespace_reply(options.global, "create-namespace",
                               {{"name", options.name}, {"size", *size}});
}

struct DestroyOptions {
  GlobalOptions global;
  std::string name;
  bool force = false;
};

int run_destroy(const DestroyOptions& options) {
  auto path = CommandPath::open(options.global);
  if (!path) return fail(path.error());
  auto reply =
      (*path)->execute("destroy-namespace", {{"name", options.name}, {"force", options.force}});
  if (!reply) return fail(reply.error());
  if (options.global.json) {
    print_json({{"destroyed", options.name}});
  } else {
    std::cout << "destroyed namespace " << options.name << "\n";
  }
  return 0;
}

struct ResizeOptions {
  GlobalOptions global;
  std::string name;
  std::string size;
  bool force = false;
};

int run_resize(const ResizeOptions& options) {
  auto size = internal::parse_size(options.size);
  if (!size) return fail(size.error().with_context("namespace " + options.name + ": "));
  return print_namespace_reply(options.global, "resize-namespace",
                               {{"name", options.name}, {"size", *size}, {"force", options.force}});
}

struct InitRegionOptions {
  std::string spec;
  std::string size;
  bool force = false;
  bool json = false;
  bool human = false;
};

int run_init_region(const InitRegionOptions& options) {
  uint64_t file_size = 0;
  if (!options.size.empty()) {
    auto size = internal::parse_size(options.size);
    if (!size) return fail(size.error().with_context("init-region " + options.spec + ": "));
    file_size = *size;
  }
  auto report = Region::init(options.spec, {.force = options.force, .file_size = file_size});
  if (!report) return fail(report.error());
  if (options.json || options.human) {
    nlohmann::json j = {{"region", report->spec},
                        {"device_size", report->device_size},
                        {"label_area_size", report->label_area_size},
                        {"align", report->align},
                        {"erased", report->erased}};
    if (options.human) {
      for (const char* key : {"device_size", "label_area_size", "align"}) {
        j[key] = internal::format_size(j[key].get<uint64_t>());
      }
    }
    print_json(j);
    return 0;
  }
  std::cout << "region " << report->spec << ": formatted: "
            << internal::format_size(report->device_size - report->label_area_size)
            << " for namespaces in extents of " << internal::format_size(report->align) << " (label area "
            << internal::format_size(report->label_area_size) << ")\n";
  if (!report->erased.empty()) std::cout << "erased: " << report->erased << "\n";
  return 0;
}

struct StatsOptions {
  GlobalOptions global;
  std::string name;  // empty: every namespace
};

// The counters are the daemon's (each counts since the daemon opened the
// namespace), so stats needs the region's daemon: opening the region here
// would only show a fresh device's zeros.
int run_stats(const StatsOptions& options) {
  auto daemon = CommandPath::daemon(options.global);
  if (!daemon) {
    return fail(Error(daemon.error().code(),
                      "stats: " + daemon.error().message() + " (the counters are its own)"));
  }
  auto all = (*daemon)->execute("query-stats", nlohmann::json::object());
  if (!all) return fail(all.error());
  if (!all->is_array()) return fail(Error(std::errc::protocol_error, "malformed stats"));
  if (options.name.empty()) {
    print_json(*all);
    return 0;
  }
  for (const auto& entry : *all) {
    if (entry.value("name", "") == options.name) {
      print_json(nlohmann::json::array({entry}));
      return 0;
    }
  }
  return fail(Error(std::errc::no_such_device,
                    "stats: namespace " + options.name + " is not open in the daemon"));
}

}  // namespace

void register_namespace_commands(CLI::App& app, int* exit_code) {
  auto init_options = std::make_shared<InitRegionOptions>();
  CLI::App* init = app.add_subcommand(
      "init-region",
      "Format a carved device (devdax:PATH or file:PATH) with an empty label area");
  init->add_option("spec", init_options->spec, "devdax:/dev/daxX.Y or file:PATH")->required();
  init->add_flag("--force,-f", init_options->force,
                 "Erase what the device holds (its namespaces, or data without a label area); "
                 "without it such a device is refused with a list of what would be erased");
  init->add_option("--size,-s", init_options->size,
                   "file: the size of a file to create, with K/M/G/T suffixes (default 4G)");
  init->add_flag("--json", init_options->json, "JSON output");
  init->add_flag("--human", init_options->human, "JSON output with human-readable sizes");
  init->callback([=] { *exit_code = run_init_region(*init_options); });

  auto list_options = std::make_shared<ListOptions>();
  CLI::App* list = app.add_subcommand("list", "List the region's namespaces as JSON");
  add_global_options(*list, list_options->global);
  list->add_flag("--capabilities", list_options->capabilities,
                 "Also print the region's detected capabilities (and its space)");
  list->add_flag("--space", list_options->space,
                 "Also print the region's free space and largest free extent");
  list->callback([=] { *exit_code = run_list(*list_options); });

  auto create_options = std::make_shared<CreateOptions>();
  CLI::App* create = app.add_subcommand("create-namespace", "Create a namespace");
  add_global_options(*create, create_options->global);
  create->add_option("--name,-n", create_options->name, "Name: 1-63 of [A-Za-z0-9._-]")
      ->required();
  create->add_option("--size,-s", create_options->size, "Size, with K/M/G/T suffixes")
      ->required();
  create->callback([=] { *exit_code = run_create(*create_options); });

  auto destroy_options = std::make_shared<DestroyOptions>();
  CLI::App* destroy = app.add_subcommand("destroy-namespace", "Destroy a namespace");
  add_global_options(*destroy, destroy_options->global);
  destroy->add_option("name", destroy_options->name, "Namespace to destroy")->required();
  destroy->add_flag("--force,-f", destroy_options->force,
                    "Destroy even if it is open: remove it first (I/O fails, mappings revoked)");
  destroy->callback([=] { *exit_code = run_destroy(*destroy_options); });

  auto resize_options = std::make_shared<ResizeOptions>();
  CLI::App* resize = app.add_subcommand("resize-namespace", "Grow or shrink a namespace");
  add_global_options(*resize, resize_options->global);
  resize->add_option("name", resize_options->name, "Namespace to resize")->required();
  resize->add_option("--size,-s", resize_options->size, "New size, with K/M/G/T suffixes")
      ->required();
  resize->add_flag("--force,-f", resize_options->force,
                   "Shrink even under live mappings (they are revoked)");
  resize->callback([=] { *exit_code = run_resize(*resize_options); });

  auto stats_options = std::make_shared<StatsOptions>();
  CLI::App* stats = app.add_subcommand(
      "stats", "Print the running daemon's counters for each namespace (query-stats)");
  add_global_options(*stats, stats_options->global);
  stats->add_option("name", stats_options->name, "Only this namespace");
  stats->callback([=] { *exit_code = run_stats(*stats_options); });
}

}  // namespace rawdax::cli
