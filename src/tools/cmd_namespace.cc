// Verbs: list, create-namespace, destroy-namespace, resize-namespace.
#include <CLI/CLI.hpp>
#include <iostream>
#include <memory>

#include "common/units.h"
#include "tools/cli_common.h"
#include "tools/commands.h"

namespace rawdax::cli {
namespace {

struct ListOptions {
  GlobalOptions global;
  bool capabilities = false;
};

int run_list(const ListOptions& options) {
  auto region = open_region(options.global);
  if (!region) return fail(region.error());
  nlohmann::json namespaces = nlohmann::json::array();
  for (const auto& ns : (*region)->list()) namespaces.push_back(to_json(ns, options.global.human));
  if (!options.capabilities) {
    print_json(namespaces);
    return 0;
  }
  nlohmann::json entry = {{"region", (*region)->spec()},
                          {"capabilities", to_json((*region)->capabilities(), options.global.human)},
                          {"namespaces", namespaces}};
  print_json(nlohmann::json::array({entry}));
  return 0;
}

struct CreateOptions {
  GlobalOptions global;
  std::string name;
  std::string size;
};

int run_create(const CreateOptions& options) {
  auto size = parse_size(options.size);
  if (!size) return fail(size.error().with_context("namespace " + options.name + ": "));
  auto region = open_region(options.global);
  if (!region) return fail(region.error());
  auto info = (*region)->create_namespace({.name = options.name, .size = *size});
  if (!info) return fail(info.error());
  print_json(to_json(*info, options.global.human));
  return 0;
}

struct DestroyOptions {
  GlobalOptions global;
  std::string name;
  bool force = false;
};

int run_destroy(const DestroyOptions& options) {
  auto region = open_region(options.global);
  if (!region) return fail(region.error());
  Status st = (*region)->destroy_namespace(options.name, {.force = options.force});
  if (!st) return fail(st.error());
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
  auto size = parse_size(options.size);
  if (!size) return fail(size.error().with_context("namespace " + options.name + ": "));
  auto region = open_region(options.global);
  if (!region) return fail(region.error());
  auto dev = (*region)->open_device(options.name);
  if (!dev) return fail(dev.error());
  Status st = (*dev)->resize(*size, {.force = options.force});
  if (!st) return fail(st.error());
  print_json(to_json((*dev)->info(), options.global.human));
  return 0;
}

}  // namespace

void register_namespace_commands(CLI::App& app, int* exit_code) {
  auto list_options = std::make_shared<ListOptions>();
  CLI::App* list = app.add_subcommand("list", "List the region's namespaces as JSON");
  add_global_options(*list, list_options->global);
  list->add_flag("--capabilities", list_options->capabilities,
                 "Also print the region's detected capabilities");
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
}

}  // namespace rawdax::cli
