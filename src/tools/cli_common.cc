#include "tools/cli_common.h"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "common/units.h"
#include "daemon/json_forms.h"

namespace rawdax::cli {

void add_global_options(CLI::App& verb, GlobalOptions& options) {
  verb.add_option("--region", options.region,
                  "Region: a directory, memfd:, or a carved device devdax:PATH or file:PATH "
                  "(created on first use; a device with data needs init-region)")
      ->capture_default_str();
  verb.add_option("--control", options.control,
                  "The control socket of the region's rawdax serve (serve: the one to listen "
                  "on). Default: where the daemon recorded it, else <region>/control.sock or "
                  "PATH.control.sock for file:PATH");
  verb.add_flag("--require-dax", options.require_dax,
                "Fail unless the region's media is DAX (devdax:, or a directory on a "
                "filesystem mounted -o dax)");
  verb.add_flag("--json", options.json, "JSON output (the default for listings)");
  verb.add_flag("--human", options.human, "Sizes as human-readable strings");
}

Result<std::unique_ptr<Region>> open_region(const GlobalOptions& options) {
  return Region::open(options.region, {.create = true, .require_dax = options.require_dax});
}

static nlohmann::json size_json(uint64_t bytes, bool human) {
  if (human) return internal::format_size(bytes);
  return bytes;
}

nlohmann::json to_json(const NamespaceInfo& ns, bool human) {
  nlohmann::json j = control::namespace_json(ns);
  j["size"] = size_json(ns.size, human);
  return j;
}

nlohmann::json capabilities_json(nlohmann::json raw, bool human) {
  auto render = [&](nlohmann::json& group, const char* key) {
    auto it = group.find(key);
    if (it != group.end() && it->is_number_unsigned()) *it = size_json(it->get<uint64_t>(), human);
  };
  render(raw, "page_size");
  if (auto media = raw.find("media"); media != raw.end() && media->is_object()) {
    render(*media, "huge_page_size");
    render(*media, "alignment");
  }
  return raw;
}

nlohmann::json space_json(nlohmann::json raw, bool human) {
  for (const char* key : {"align", "free", "largest_free_extent", "device_size", "label_area_size"}) {
    auto it = raw.find(key);
    if (it != raw.end() && it->is_number_unsigned()) *it = size_json(it->get<uint64_t>(), human);
  }
  return raw;
}

int fail(const Error& error) {
  std::fprintf(stderr, "rawdax: error: %s\n", error.message().c_str());
  return 1;
}

void print_json(const nlohmann::json& value) { std::cout << value.dump(2) << std::endl; }

}  // namespace rawdax::cli
