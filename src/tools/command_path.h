// CommandPath: the one way every CLI verb runs. A verb is a control command
// (docs/control.md) executed by a control::Dispatcher:
// - the daemon's, over its control socket, when a `rawdax serve` owns the
//   region (it holds the region's lock, so nothing else could open it);
// - otherwise one made here, in this process, over the region opened here.
// Both give the same reply line, read by the one reply parser
// (control::reply_result), so a verb prints the same bytes either way.
//
// The daemon is found by --control when given (then it must answer: no
// fallback), else by its DaemonRecord, else at the default socket path
// beside a directory or file: region. Replies name the region as the daemon
// spells it; paths in them are rebased to the verb's own spelling.
//
// Thread safety: none; one verb uses it from one thread.
#ifndef RAWDAX_TOOLS_COMMAND_PATH_H_
#define RAWDAX_TOOLS_COMMAND_PATH_H_

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "daemon/dispatcher.h"
#include "rawdax/client.h"
#include "rawdax/region.h"
#include "rawdax/snapshot.h"
#include "tools/cli_common.h"

namespace rawdax::cli {

// The control socket serve uses by default for `region_spec`: "" for memfd:
// and devdax: regions, which have no directory to hold one; PATH.control.sock
// beside a file:PATH region's file.
std::string default_control_path(const std::string& region_spec);

struct PathOptions {
  // The command touches no region (verify-snapshot): without a daemon it
  // runs over an empty memfd: region, so nothing on disk is opened or made.
  bool region_free = false;
  // Progress of a snapshot run in this process (the daemon reports none).
  std::function<void(uint64_t done, uint64_t total)> progress = nullptr;
};

class CommandPath {
 public:
  // The daemon's path, or ENOTCONN "no rawdax serve runs on region R" when
  // none answers (with --control: "... on control socket P: why").
  static Result<std::unique_ptr<CommandPath>> daemon(const GlobalOptions& options);
  // The daemon's path when one runs, else this process's. Errors: --control
  // naming a socket nobody answers on; the region's own open errors.
  static Result<std::unique_ptr<CommandPath>> open(const GlobalOptions& options,
                                                   PathOptions path_options = {});
  ~CommandPath();

  bool through_daemon() const { return client_ != nullptr; }

  // The reply's "return" value, or its error (paths in our spelling).
  Result<nlohmann::json> execute(const std::string& command, const nlohmann::json& arguments);

  // Reply values read back into the library's types (EPROTO when malformed),
  // their paths in our spelling.
  Result<NamespaceInfo> namespace_info(const nlohmann::json& reply) const;
  Result<SnapshotInfo> snapshot_info(const nlohmann::json& reply) const;
  // Replaces the daemon's spelling of the region path with ours: whole
  // spellings only (at the start or after ' ', '=' or ','; followed by '/',
  // ' ', ':', ',' or the end).
  std::string rebase(std::string text) const;

 private:
  CommandPath() = default;

  std::string ours_;    // --region as given to this verb
  std::string theirs_;  // the region as the executing dispatcher spells it
  // Through the daemon:
  std::unique_ptr<Client> client_;
  // In this process (destroyed in reverse: session, dispatcher, region):
  std::unique_ptr<Region> region_;
  std::unique_ptr<control::Dispatcher> dispatcher_;
  std::unique_ptr<control::Session> session_;
};

}  // namespace rawdax::cli

#endif  // RAWDAX_TOOLS_COMMAND_PATH_H_
