// NbdConnection: one client's NBD session, from the greeting through option
// haggling to the end of transmission, run on one thread.
//
// Execution model: the session thread reads requests from a 256 KiB input
// buffer, executes each inline on the export's source (ExportSource: a
// namespace's Device, a memcpy on the shared mapping, or a snapshot image),
// and appends its reply to an output buffer. The output is sent before the
// thread would block on input (or when it grows past 256 KiB),
// so a pipelined burst of N requests costs about one recv and one send
// instead of N of each. Before it waits for more requests, a session that
// is kept busy pauses 100 us so that the next burst gathers
// (export/input_coalescer.h). Reads of 64 KiB or more go out with sendfile(2) from
// the namespace's backing file instead of through the buffer (snapshot
// exports have none: their pages are checked as they are read). Replies leave
// in request order, which the protocol allows but does not require.
//
// TLS (export/nbd_tls.h): after NBD_OPT_STARTTLS and its handshake, every
// receive and send goes through the connection's TlsSession, and option
// haggling starts over. sendfile cannot encrypt, so large reads are then
// copied from the device into the output buffer and sent in 256 KiB pieces.
// The plain path is unchanged (one branch on tls_ per socket call).
//
// Errors: a bad request gets its NBD error and the session goes on; only
// protocol corruption (bad magic, a short read mid-message, unknown client
// flags) or a failing socket ends it. Each is logged naming the client,
// export, command, offset and length. A client that stops reading replies
// is cut off by the socket's send timeout, which the server sets at accept
// (net::AcceptLoop, to message_timeout); handshake_timeout and
// message_timeout on input are this class's own deadlines.
//
// Thread safety: run() is called once, on the session thread. request_stop()
// and cut_off() may be called from any thread at any time (they act on the
// socket, which the object owns until it is destroyed, after run() returns).
#ifndef RAWDAX_EXPORT_NBD_CONNECTION_H_
#define RAWDAX_EXPORT_NBD_CONNECTION_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "export/export_source.h"
#include "export/input_coalescer.h"
#include "export/nbd_codec.h"
#include "export/nbd_tls.h"
#include "rawdax/region.h"

namespace rawdax::nbd {

class ExportRegistry;

// What every session of one server shares. Counters are relaxed atomics:
// they are statistics and order nothing.
struct ServerContext {
  Region* region = nullptr;
  // What export names resolve to (namespaces of `region`, snapshot exports).
  ExportRegistry* exports = nullptr;
  bool read_only = false;
  std::function<void(const std::string&)> log;
  std::chrono::milliseconds handshake_timeout{10000};
  std::chrono::milliseconds message_timeout{30000};
  NbdTls tls_mode = NbdTls::kOff;
  const TlsCredentials* tls = nullptr;  // null when TLS is off; owned by the server
  std::atomic<uint64_t> requests{0};
  std::atomic<uint64_t> errors{0};
  // Only its address is used: the clock that models, for ThreadSanitizer,
  // the ordering clients impose between connections (see client_order).
  char client_clock = 0;
};

class NbdConnection {
 public:
  // The block sizes we advertise: minimum 512 to clients that ask for block
  // sizes (1 otherwise), preferred 4 KiB, maximum 32 MiB.
  static constexpr uint32_t kMinBlock = 512;
  static constexpr uint32_t kPreferredBlock = 4096;
  static constexpr uint32_t kMaxPayload = 32u << 20;

  NbdConnection(internal::UniqueFd fd, std::string peer, ServerContext& context);
  ~NbdConnection();
  NbdConnection(const NbdConnection&) = delete;
  NbdConnection& operator=(const NbdConnection&) = delete;

  // Runs the whole session; returns when it has ended and the device (if it
  // was written) is flushed.
  void run();

  // Ask the session to end once it has answered every request it has fully
  // received. Wakes a session blocked in recv (shutdown(SHUT_RD)).
  void request_stop();
  // Ends the session now (shutdown(SHUT_RDWR)): for one that will not finish.
  void cut_off();

  const std::string& peer() const { return peer_; }

 private:
  enum class Next { kOption, kStartTls, kTransmit, kClose };

  // --- Socket I/O ---
  // Fills dst with n bytes: buffered ones first, then from the socket
  // (directly into dst for large payloads). False on EOF or error.
  bool read_exact(char* dst, size_t n);
  // Waits until the socket has input or the deadline (if any) passes; false
  // on the deadline, which also sets timed_out_.
  bool wait_input();
  // Reads and drops n bytes (the payload of a rejected write).
  bool skip(uint64_t n);
  // Receives more input; sends pending output first, since the client may be
  // waiting for it before it sends more. `between_requests`: the input ended
  // at a request boundary, where the coalescer may pause before the wait.
  // False on EOF or error.
  bool refill(bool between_requests = false);
  // Sends all pending output. False when the socket fails.
  bool flush_output();
  size_t buffered() const { return in_end_ - in_pos_; }
  // A receive through TLS, bounded by deadline_; -1 on an error, with errno
  // set (ETIMEDOUT once the deadline passed, EPROTO otherwise).
  ssize_t tls_recv(char* dst, size_t n);

  // --- Handshake ---
  bool handshake();
  Next handle_option(uint32_t option, std::string& payload);
  // NBD_OPT_STARTTLS: ACK (kStartTls) or an error reply.
  Next handle_starttls(const std::string& payload);
  // The TLS handshake after the ACK, within the handshake deadline. False
  // (logged) when it fails; the connection then closes.
  bool start_tls();
  Next handle_info_or_go(uint32_t option, const std::string& payload);
  void handle_meta_context(uint32_t option, const std::string& payload);
  // Opens an export by name ("" is the default export).
  Result<std::unique_ptr<ExportSource>> open_export(const std::string& name,
                                                    std::string* resolved);
  // Makes `source` the session's export: the contexts SET_META_CONTEXT chose
  // for it become active.
  void attach(std::unique_ptr<ExportSource> source, const std::string& resolved);
  bool read_only(const ExportSource& source) const;
  uint16_t transmission_flags(const ExportSource& source) const;

  // --- Transmission ---
  void transmit();
  // Returns false when the session must end (DISC, corruption, socket).
  bool serve_request(const RequestHeader& request);
  // False when the session must end (a read whose data could not be sent).
  bool execute(const RequestHeader& request, std::span<const std::byte> payload);
  // Logs why a write's payload did not arrive (a timeout, or the client
  // left); `refused`: the reason the write was going to be refused.
  void log_payload_failure(const RequestHeader& request, const std::string& refused);
  void reply_ok(const RequestHeader& request);
  void reply_error(const RequestHeader& request, uint32_t error, const std::string& why);
  void block_status(const RequestHeader& request);
  // A read answered with its data (simple reply or one data chunk); large
  // ones by sendfile, once the device vouched for the range (a read that
  // meets a media error is answered with EIO alone).
  bool read_data(const RequestHeader& request);
  // A structured read of a hole answered with one hole chunk.
  bool read_sparse(const RequestHeader& request);
  void put_read_header(const RequestHeader& request);
  // Sends the pending output, then the request's data from the backing file.
  bool send_backing(const RequestHeader& request);
  // Under TLS: the request's data from the device in pieces through the
  // output buffer, after the header already in it.
  bool send_tls_pieces(const RequestHeader& request);
  void open_backing();

  void log(const std::string& line) const;
  std::string describe(const RequestHeader& request) const;

  internal::UniqueFd fd_;
  const std::string peer_;
  ServerContext& context_;
  std::atomic<bool> stop_requested_{false};

  std::unique_ptr<char[]> in_;
  size_t in_pos_ = 0, in_end_ = 0;
  InputCoalescer coalescer_;
  // Request headers that came whole in the first receive after the last
  // wait between requests (no more than the client's queue depth: all its
  // replies had been sent), for the coalescer.
  uint64_t first_receive_requests_ = 0;
  bool first_receive_ = false;  // no receive since that one
  OutBuffer out_;
  // Write payloads too large to use in place. Allocated uninitialized, so a
  // client that declares a large write but sends little costs only the pages
  // its bytes fill; kept for the connection's next large write.
  std::unique_ptr<char[]> payload_;
  size_t payload_capacity_ = 0;

  // While a handshake or a started request is being received: when it must
  // be complete. time_point::max(): no deadline (idle between requests).
  std::chrono::steady_clock::time_point deadline_ = std::chrono::steady_clock::time_point::max();
  bool timed_out_ = false;

  // Negotiated state.
  bool no_zeroes_ = false;
  bool fixed_newstyle_ = false;
  bool structured_ = false;
  std::vector<std::string> meta_selected_;  // the contexts SET_META_CONTEXT chose
  std::string meta_export_;                 // for the export it named
  std::vector<uint32_t> contexts_;  // active on the attached export: ids, in the order chosen
  uint32_t min_block_ = 1;
  std::string export_name_;
  std::unique_ptr<ExportSource> source_;
  internal::UniqueFd backing_;  // the namespace's backing file, read-only; invalid: no sendfile
  uint64_t backing_offset_ = 0;  // where the namespace starts in backing_
  bool wrote_since_flush_ = false;
  bool logged_shutdown_ = false;
  // Set once STARTTLS's handshake succeeded; from then on all I/O uses it.
  // Declared after fd_, so it is destroyed before the socket closes.
  std::unique_ptr<TlsSession> tls_;
};

}  // namespace rawdax::nbd

#endif  // RAWDAX_EXPORT_NBD_CONNECTION_H_
