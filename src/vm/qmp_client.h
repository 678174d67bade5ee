// QmpClient: a minimal client of QEMU's QMP control socket, enough to pause
// and resume a guest around a freeze or snapshot of the namespace it maps.
//
// QMP is one JSON object per line. The server greets with {"QMP":…}; the
// client must send qmp_capabilities before anything else. Replies are
// {"return":…} or {"error":{"class","desc"}}; asynchronous {"event":…} lines
// may come in between and are skipped.
//
// Not thread-safe: one caller at a time. Owns its socket (closed on
// destruction). Every call is bounded by the timeout given to connect().
#ifndef RAWDAX_VM_QMP_CLIENT_H_
#define RAWDAX_VM_QMP_CLIENT_H_

#include <chrono>
#include <string>

#include "common/unique_fd.h"
#include "rawdax/result.h"

namespace rawdax::internal {

class QmpClient {
 public:
  // Connects to the unix socket at `path`, reads the greeting and
  // negotiates capabilities. Errors name the path.
  static Result<QmpClient> connect(const std::string& path,
                                   std::chrono::milliseconds timeout = std::chrono::seconds(5));

  // Runs `command` (with `arguments_json`, an object, or empty) and returns
  // the reply's "return" value as JSON text. A QMP error becomes an Error
  // with its class and description.
  Result<std::string> execute(const std::string& command, const std::string& arguments_json = "");

  // "running", "paused", … from query-status.
  Result<std::string> status();
  Status stop();
  Status cont();

  const std::string& path() const { return path_; }

 private:
  QmpClient() = default;
  Result<std::string> read_line();
  Status write_all(const std::string& text);

  std::string path_;
  UniqueFd fd_;
  std::chrono::milliseconds timeout_{5000};
  std::string buffer_;  // bytes read past the last line
};

}  // namespace rawdax::internal

#endif  // RAWDAX_VM_QMP_CLIENT_H_
