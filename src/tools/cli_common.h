// Shared pieces of the rawdax CLI verbs: the options every verb takes,
// region opening, JSON rendering, and the one-line error convention.
#ifndef RAWDAX_TOOLS_CLI_COMMON_H_
#define RAWDAX_TOOLS_CLI_COMMON_H_

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "rawdax/capabilities.h"
#include "rawdax/namespace.h"
#include "rawdax/region.h"
#include "rawdax/region_space.h"
#include "rawdax/result.h"

namespace CLI {
class App;
}

namespace rawdax::cli {

inline constexpr const char* kDefaultRegion = "./rawdax-data";

// Options shared by every verb. Verbs add their own.
struct GlobalOptions {
  std::string region = kDefaultRegion;
  bool json = false;
  bool human = false;
  bool require_dax = false;  // refuse a region on media without DAX
  std::string control;       // the daemon's control socket; empty: found (command_path.h)
};

// Adds --region, --control, --require-dax, --json and --human to a verb.
void add_global_options(CLI::App& verb, GlobalOptions& options);

// Opens (creating on first use) the region named by --region.
Result<std::unique_ptr<Region>> open_region(const GlobalOptions& options);

nlohmann::json to_json(const NamespaceInfo& ns, bool human);
// Capabilities and a region's space as query-region returns them (raw
// sizes), with sizes as strings when `human`.
nlohmann::json capabilities_json(nlohmann::json raw, bool human);
nlohmann::json space_json(nlohmann::json raw, bool human);

// Prints "rawdax: error: MESSAGE" on stderr and returns the exit code 1.
int fail(const Error& error);

// Prints JSON to stdout, indented like ndctl.
void print_json(const nlohmann::json& value);

}  // namespace rawdax::cli

#endif  // RAWDAX_TOOLS_CLI_COMMON_H_
