// DaemonRecord: where a running `rawdax serve` tells the other verbs its
// control socket is, whatever --control it was given and whatever the
// region's kind (a carved devdax: or file: region has no directory to hold a
// socket by default).
//
// One small file per region in the user's runtime directory: the first of
// $XDG_RUNTIME_DIR/rawdax, /run/rawdax (root) or /tmp/rawdax-UID that is, or
// can be made, a directory of this user's own with mode 0700 (a directory
// someone else made is never trusted). The file is named by the region's
// identity (device and inode of its directory, file or device node), so any
// spelling of the region's path finds it, and holds the socket's absolute
// path. A record left by a daemon that died names a socket nobody accepts
// on; readers treat it as absent. memfd: regions have no identity (no other
// process can open them) and get no record.
//
// Thread safety: none needed; serve writes its record once, a verb reads once.
#ifndef RAWDAX_TOOLS_DAEMON_RECORD_H_
#define RAWDAX_TOOLS_DAEMON_RECORD_H_

#include <string>

#include "rawdax/result.h"

namespace rawdax::cli {

class DaemonRecord {
 public:
  // Records `control_path` for `region_spec`. Errors: EINVAL for a memfd:
  // region, the failing call's errno when the runtime directory or the
  // record cannot be made (serve logs it and goes on: the default socket
  // path still reaches it).
  static Result<DaemonRecord> write(const std::string& region_spec,
                                    const std::string& control_path);
  // The control socket recorded for `region_spec`; "" when there is none.
  static std::string find(const std::string& region_spec);

  DaemonRecord(DaemonRecord&& other) noexcept : path_(std::move(other.path_)) { other.path_.clear(); }
  DaemonRecord& operator=(DaemonRecord&&) = delete;
  DaemonRecord(const DaemonRecord&) = delete;
  ~DaemonRecord();  // removes the record

 private:
  explicit DaemonRecord(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

}  // namespace rawdax::cli

#endif  // RAWDAX_TOOLS_DAEMON_RECORD_H_
