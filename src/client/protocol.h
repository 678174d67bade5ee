// The control protocol's wire pieces, shared by the daemon and the Client:
// connecting (net/unix_socket.h), line framing with a
// bound, fd passing (SCM_RIGHTS), and the error classes.
//
// Framing: one JSON object per line ('\n'-terminated). A line that carries an
// fd is sent with one sendmsg() whose ancillary data holds the fd; the
// receiver queues fds in arrival order, so an fd is always queued before its
// line is complete and the n-th fd-bearing reply owns the n-th queued fd.
//
// Thread safety: the free functions are thread-safe; a LineReader belongs to
// one reader at a time. Writers to one socket must serialize their lines
// themselves (send_line may write a line in several pieces).
#ifndef RAWDAX_CLIENT_PROTOCOL_H_
#define RAWDAX_CLIENT_PROTOCOL_H_

#include <cstddef>
#include <deque>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <system_error>

#include "common/unique_fd.h"
#include "net/unix_socket.h"
#include "rawdax/result.h"

namespace rawdax::control {

// The longest request line the daemon accepts (the newline excluded).
inline constexpr size_t kMaxRequestLine = size_t{1} << 20;
// Replies can list many namespaces; the client allows more.
inline constexpr size_t kMaxReplyLine = size_t{16} << 20;

inline constexpr std::string_view kCommandNotFound = "CommandNotFound";
inline constexpr std::string_view kGenericError = "GenericError";
inline constexpr std::string_view kDeviceNotFound = "DeviceNotFound";
inline constexpr std::string_view kDeviceBusy = "DeviceBusy";

// The class a daemon-side Error is reported with: ENOENT -> DeviceNotFound,
// EBUSY -> DeviceBusy, ENOSYS -> CommandNotFound, anything else GenericError.
std::string_view error_class(const Error& error);
// The inverse, for the client: the code a reply's class maps to.
std::error_code error_code_for_class(std::string_view error_class);

// What a reply says: its "return" value, or the Error its "error" object
// names (class -> code by error_code_for_class, "desc" -> message). The one
// reading of replies, for the Client and for a verb run in-process.
// EPROTO for a message that is neither.
Result<nlohmann::json> reply_result(const nlohmann::json& message);

// Clients reach the daemon through the servers' one Unix socket policy
// (net/unix_socket.h: long paths work); the daemon's side is a net::Listener.
using ::rawdax::net::connect_unix;

// Writes `line` and a '\n'. With pass_fd >= 0 the first piece carries it by
// SCM_RIGHTS. MSG_NOSIGNAL: a vanished peer is EPIPE, not a signal.
Status send_line(int socket, std::string_view line, int pass_fd = -1);

// Splits a byte stream into lines, keeping at most `max_line` bytes of an
// unfinished line, and queues every fd received by SCM_RIGHTS.
class LineReader {
 public:
  explicit LineReader(size_t max_line) : max_line_(max_line) {}

  // The next line (without '\n'), reading as needed. Errors: ECONNRESET when
  // the peer closed (an unfinished line is dropped), EMSGSIZE when a line
  // exceeds max_line (the reader is then unusable), or the recvmsg errno.
  Result<std::string> read_line(int socket);
  // A complete line is buffered: read_line() will not block.
  bool has_line() const;
  // Fds received so far, oldest first. The caller takes them.
  std::deque<internal::UniqueFd>& fds() { return fds_; }

 private:
  size_t max_line_;
  std::string buffer_;
  size_t scanned_ = 0;  // buffer_[0, scanned_) has no '\n'
  std::deque<internal::UniqueFd> fds_;
};

}  // namespace rawdax::control

#endif  // RAWDAX_CLIENT_PROTOCOL_H_
