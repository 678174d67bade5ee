// DaemonLink: how a CLI verb reaches the `rawdax serve` that owns its region.
//
// While serve runs, it holds the region's flock, so the other verbs cannot
// open the region; they find the daemon by its control socket,
// <region>/control.sock, and send it the command instead. Their output must
// not depend on which way they went, so replies are turned back into the
// same values (NamespaceInfo, SnapshotInfo) the direct path prints, with the
// daemon's spelling of the region path replaced by the verb's own.
//
// Thread safety: none needed; one verb uses it from one thread.
#ifndef RAWDAX_TOOLS_DAEMON_LINK_H_
#define RAWDAX_TOOLS_DAEMON_LINK_H_

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "rawdax/client.h"
#include "rawdax/namespace.h"
#include "rawdax/result.h"
#include "rawdax/snapshot.h"

namespace rawdax::cli {

// The control socket serve uses by default for `region_spec`: "" for memfd:
// and devdax: regions, which have no directory to hold one; PATH.control.sock
// beside a file:PATH region's file.
std::string default_control_path(const std::string& region_spec);

class DaemonLink {
 public:
  // nullptr when no daemon accepts on the region's control socket (no
  // socket file, or a stale one): the verb then opens the region itself.
  static std::unique_ptr<DaemonLink> connect(const std::string& region_spec);

  // Runs `command`; the reply's "return" value. Errors keep the daemon's
  // description, with region paths in the verb's spelling.
  Result<nlohmann::json> execute(const std::string& command, const nlohmann::json& arguments);

  Result<NamespaceInfo> namespace_info(const nlohmann::json& reply) const;
  Result<SnapshotInfo> snapshot_info(const nlohmann::json& reply) const;

 private:
  DaemonLink(std::unique_ptr<Client> client, std::string ours, std::string theirs)
      : client_(std::move(client)), ours_(std::move(ours)), theirs_(std::move(theirs)) {}
  // Replaces the daemon's spelling of the region path with ours.
  std::string rebase(std::string text) const;

  std::unique_ptr<Client> client_;
  std::string ours_;    // --region as given to this verb
  std::string theirs_;  // the region as the daemon spells it
};

}  // namespace rawdax::cli

#endif  // RAWDAX_TOOLS_DAEMON_LINK_H_
