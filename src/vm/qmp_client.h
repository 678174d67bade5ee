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
#include <optional>
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
  // The same, passing `fd` along with the request (SCM_RIGHTS), as QMP's
  // getfd wants. The caller keeps its own copy of `fd`.
  Result<std::string> execute_with_fd(const std::string& command,
                                      const std::string& arguments_json, int fd);

  // RESUME timestamp − STOP timestamp of the last pause whose two events
  // this client has read (QEMU's clock, microsecond resolution); nullopt
  // when no STOP followed by a RESUME has been read.
  std::optional<std::chrono::nanoseconds> last_pause() const;
  // Forgets the pause events read so far.
  void forget_pause() { stop_us_ = resume_us_ = -1; }

  // "running", "paused", … from query-status.
  Result<std::string> status();
  Status stop();
  Status cont();

  const std::string& path() const { return path_; }

 private:
  QmpClient() = default;
  Result<std::string> read_line();
  Status write_all(const std::string& text, int fd = -1);
  Result<std::string> run(const std::string& command, const std::string& arguments_json, int fd);
  void note_event(const std::string& name, int64_t timestamp_us);

  std::string path_;
  UniqueFd fd_;
  std::chrono::milliseconds timeout_{5000};
  std::string buffer_;  // bytes read past the last line
  int64_t stop_us_ = -1, resume_us_ = -1;  // the last STOP and the RESUME after it
};

}  // namespace rawdax::internal

#endif  // RAWDAX_VM_QMP_CLIENT_H_
