#include "export/nbd_connection.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include "export/export_registry.h"

#if defined(__SANITIZE_THREAD__)
#define RAWDAX_NBD_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RAWDAX_NBD_TSAN 1
#endif
#endif
#ifdef RAWDAX_NBD_TSAN
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#endif

namespace rawdax::nbd {
namespace {

// Clients order requests across connections: one sends a request only after
// the replies it depends on have arrived (on this connection or another),
// and that edge runs through the kernel and the client, where
// ThreadSanitizer cannot see it. Model it: every send of replies releases
// the server's client clock, every receive of requests acquires it. Without
// TSan these compile to nothing.
enum class ClientEdge { kSent, kReceived };
inline void client_order([[maybe_unused]] ServerContext& context,
                         [[maybe_unused]] ClientEdge edge) {
#ifdef RAWDAX_NBD_TSAN
  if (edge == ClientEdge::kSent) {
    __tsan_release(&context.client_clock);
  } else {
    __tsan_acquire(&context.client_clock);
  }
#endif
}

constexpr size_t kInSize = 256 << 10;
// Payload bytes still to come beyond this go straight from the socket into
// their destination instead of through the input buffer.
constexpr size_t kDirectRead = 64 << 10;
// Pending output beyond this is sent at once rather than at the next block.
constexpr size_t kOutFlush = 256 << 10;
// Structured reads from this size on check for a hole first (one lseek is
// noise next to copying and sending 64 KiB).
constexpr uint32_t kSparseReadMin = 64 << 10;
// Reads from this size on are sent with sendfile(2) from the backing file:
// one kernel copy instead of a memcpy into the output buffer plus the send.
constexpr uint32_t kSendfileMin = 64 << 10;
// Under TLS, large reads leave in pieces of this size: the device's data is
// copied into the output buffer (sendfile cannot encrypt) and sent from there.
constexpr uint32_t kTlsPiece = 256 << 10;
// Option payloads are names and queries; anything larger is refused.
constexpr uint32_t kMaxOptionLength = 64 << 10;

bool contains(const std::vector<uint16_t>& v, uint16_t x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

}  // namespace

NbdConnection::NbdConnection(internal::UniqueFd fd, std::string peer, ServerContext& context)
    : fd_(std::move(fd)), peer_(std::move(peer)), context_(context), in_(new char[kInSize]) {}

NbdConnection::~NbdConnection() = default;

void NbdConnection::log(const std::string& line) const {
  if (context_.log) context_.log(line);
}

void NbdConnection::request_stop() {
  // The flag is read by the session thread between requests; the shutdown
  // wakes a recv that would otherwise wait for the client. seq_cst store
  // before the shutdown: a session woken by it sees the flag.
  stop_requested_.store(true);
  ::shutdown(fd_.get(), SHUT_RD);
}

void NbdConnection::cut_off() { ::shutdown(fd_.get(), SHUT_RDWR); }

bool NbdConnection::flush_output() {
  client_order(context_, ClientEdge::kSent);
  if (tls_ != nullptr) {
    if (!tls_->send(out_.data(), out_.size())) return false;
    out_.clear();
    return true;
  }
  size_t sent = 0;
  while (sent < out_.size()) {
    ssize_t n = ::send(fd_.get(), out_.data() + sent, out_.size() - sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    sent += static_cast<size_t>(n);
  }
  out_.clear();
  return true;
}

bool NbdConnection::wait_input() {
  if (deadline_ == std::chrono::steady_clock::time_point::max()) return true;
  // Under TLS the receive itself waits at most until the deadline (a record
  // timeout, tls_recv), which also sees the bytes GnuTLS has decrypted
  // already and a poll on the socket would not.
  if (tls_ != nullptr) return true;
  while (true) {
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline_ -
                                                              std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p = {fd_.get(), POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 60000)));
    if (n > 0) return true;  // input, EOF or an error: recv tells which
    if (n < 0 && errno != EINTR) return false;
  }
  timed_out_ = true;
  return false;
}

bool NbdConnection::refill(bool between_requests) {
  // Only called with the buffer drained, so it always restarts at the front.
  in_pos_ = in_end_ = 0;
  if (out_.size() > 0 && !flush_output()) return false;
  if (between_requests) {
    // The replies are out: let the client's next requests gather (see
    // export/input_coalescer.h).
    if (coalescer_.pause_before_wait(first_receive_requests_)) {
      std::this_thread::sleep_for(InputCoalescer::kPause);
    }
    first_receive_requests_ = 0;
    first_receive_ = true;
  } else {
    first_receive_ = false;
  }
  while (true) {
    if (!wait_input()) return false;
    ssize_t n = tls_ != nullptr ? tls_recv(in_.get(), kInSize)
                                : ::recv(fd_.get(), in_.get(), kInSize, 0);
    if (n > 0) {
      client_order(context_, ClientEdge::kReceived);
      in_end_ = static_cast<size_t>(n);
      return true;
    }
    if (n < 0 && errno == EINTR) continue;
    return false;
  }
}

bool NbdConnection::read_exact(char* dst, size_t n) {
  while (n > 0) {
    if (buffered() > 0) {
      size_t take = std::min(n, buffered());
      std::memcpy(dst, in_.get() + in_pos_, take);
      in_pos_ += take;
      dst += take;
      n -= take;
      continue;
    }
    if (n >= kDirectRead) {
      if (out_.size() > 0 && !flush_output()) return false;
      // Under a deadline, take what has come: a trickling client must not
      // keep us inside one MSG_WAITALL past it.
      if (!wait_input()) return false;
      bool bounded = deadline_ != std::chrono::steady_clock::time_point::max();
      ssize_t got = tls_ != nullptr ? tls_recv(dst, n)
                                    : ::recv(fd_.get(), dst, n, bounded ? 0 : MSG_WAITALL);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) return false;
      client_order(context_, ClientEdge::kReceived);
      dst += got;
      n -= static_cast<size_t>(got);
      continue;
    }
    if (!refill()) return false;
  }
  return true;
}

ssize_t NbdConnection::tls_recv(char* dst, size_t n) {
  std::chrono::milliseconds wait{0};  // no deadline: wait without limit
  if (deadline_ != std::chrono::steady_clock::time_point::max()) {
    wait = std::chrono::ceil<std::chrono::milliseconds>(deadline_ -
                                                        std::chrono::steady_clock::now());
    if (wait.count() <= 0) {
      timed_out_ = true;
      errno = ETIMEDOUT;
      return -1;
    }
  }
  ssize_t got = tls_->recv(dst, n, wait, &timed_out_);
  if (got < 0) {
    // Never EINTR: the callers retry on that, and the session already did.
    errno = timed_out_ ? ETIMEDOUT : EPROTO;
    if (!timed_out_) log("client " + peer_ + ": TLS receive failed: " + tls_->error());
  }
  return got;
}

bool NbdConnection::skip(uint64_t n) {
  while (n > 0) {
    if (buffered() == 0 && !refill()) return false;
    size_t take = static_cast<size_t>(std::min<uint64_t>(n, buffered()));
    in_pos_ += take;
    n -= take;
  }
  return true;
}

void NbdConnection::run() {
  if (!peer_.starts_with("unix")) {
    int one = 1;
    ::setsockopt(fd_.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  deadline_ = std::chrono::steady_clock::now() + context_.handshake_timeout;
  bool attached = handshake();
  deadline_ = std::chrono::steady_clock::time_point::max();
  if (!attached && timed_out_) {
    log("client " + peer_ + ": handshake not finished within " +
        std::to_string(context_.handshake_timeout.count()) + " ms; closing");
  }
  if (attached) transmit();
  if (flush_output() && tls_ != nullptr) tls_->bye();
  if (source_ != nullptr && wrote_since_flush_) {
    Status st = source_->flush();
    if (!st && st.error().code() != std::errc::no_such_device_or_address) {
      log("error: client " + peer_ + " export " + export_name_ + ": flush at disconnect failed: " +
          st.error().message());
    }
  }
  if (source_ != nullptr) log("client " + peer_ + " left export " + export_name_);
  source_.reset();
  // The client sees the end now. The fd itself is closed by the destructor:
  // request_stop() and cut_off() may still act on it from another thread,
  // and a close here could let them hit a reused descriptor number.
  ::shutdown(fd_.get(), SHUT_RDWR);
}

// --- Handshake ---

bool NbdConnection::handshake() {
  out_.put_bytes(encode_greeting());
  if (!flush_output()) return false;
  char flags[4];
  if (!read_exact(flags, sizeof flags)) return false;
  uint32_t client_flags = load_u32(flags);
  if ((client_flags & ~(kClientFixedNewstyle | kClientNoZeroes)) != 0) {
    log("client " + peer_ + ": unknown client flags " + std::to_string(client_flags) +
        "; closing");
    return false;
  }
  no_zeroes_ = (client_flags & kClientNoZeroes) != 0;
  fixed_newstyle_ = (client_flags & kClientFixedNewstyle) != 0;
  // TLS needs fixed newstyle (the spec has the server fall back to no TLS
  // without it), which under require means no service.
  if (!fixed_newstyle_ && context_.tls_mode == NbdTls::kRequire) {
    log("client " + peer_ + ": TLS is required and the client is not fixed newstyle; closing");
    return false;
  }
  while (true) {
    char header[16];
    if (!read_exact(header, sizeof header)) return false;
    auto option = parse_option_header(header);
    if (!option) {
      log("client " + peer_ + ": protocol corruption: bad option magic; closing");
      return false;
    }
    if (option->length > kMaxOptionLength) {
      if (!skip(option->length)) return false;
      put_option_reply(out_, option->option, kRepErrTooBig,
                       "option data of " + std::to_string(option->length) + " bytes is too large");
      log("client " + peer_ + ": option " + option_name(option->option) + " with " +
          std::to_string(option->length) + " bytes of data refused");
      if (!flush_output()) return false;
      continue;
    }
    std::string payload(option->length, '\0');
    if (!read_exact(payload.data(), payload.size())) return false;
    Next next = handle_option(option->option, payload);
    if (!flush_output()) return false;
    if (next == Next::kTransmit) return true;
    if (next == Next::kClose) return false;
    if (next == Next::kStartTls && !start_tls()) return false;
  }
}

NbdConnection::Next NbdConnection::handle_starttls(const std::string& payload) {
  if (context_.tls == nullptr || !fixed_newstyle_) {
    put_option_reply(out_, kOptStartTls, kRepErrUnsup, "option STARTTLS is not supported");
    log("client " + peer_ + ": unsupported option STARTTLS");
    return Next::kOption;
  }
  if (tls_ != nullptr) {
    put_option_reply(out_, kOptStartTls, kRepErrInvalid, "TLS is already on");
    log("client " + peer_ + ": STARTTLS inside TLS refused");
    return Next::kOption;
  }
  if (!payload.empty()) {
    put_option_reply(out_, kOptStartTls, kRepErrInvalid, "STARTTLS takes no data");
    return Next::kOption;
  }
  put_option_reply(out_, kOptStartTls, kRepAck);
  return Next::kStartTls;
}

bool NbdConnection::start_tls() {
  // The client sends its ClientHello only after our ACK: bytes already
  // buffered were sent in clear text past the STARTTLS, which the protocol
  // does not allow (and which would be lost to the handshake).
  if (buffered() > 0) {
    log("client " + peer_ + ": data after STARTTLS before the TLS handshake; closing");
    return false;
  }
  auto session = context_.tls->new_session(fd_.get());
  if (!session) {
    log("error: client " + peer_ + ": " + session.error().message() + "; closing");
    return false;
  }
  auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline_ -
                                                           std::chrono::steady_clock::now());
  if (left.count() <= 0) {
    timed_out_ = true;
    return false;
  }
  Status st = (*session)->handshake(left);
  if (!st) {
    if (st.error().code() == std::errc::timed_out) {
      timed_out_ = true;  // run() logs the handshake timeout
    } else {
      log("client " + peer_ + ": " + st.error().message() + "; closing");
    }
    return false;
  }
  tls_ = std::move(*session);
  log("client " + peer_ + ": TLS on (" + tls_->describe() + ")");
  // Option haggling starts over inside TLS: nothing negotiated in clear
  // text carries over.
  structured_ = false;
  meta_selected_.clear();
  meta_export_.clear();
  return true;
}

NbdConnection::Next NbdConnection::handle_option(uint32_t option, std::string& payload) {
  if (option == kOptStartTls) return handle_starttls(payload);
  if (tls_ == nullptr && context_.tls_mode == NbdTls::kRequire && option != kOptAbort) {
    if (option == kOptExportName) {
      // EXPORT_NAME has no error reply: the spec says to close.
      log("client " + peer_ + ": EXPORT_NAME refused: TLS is required; closing");
      return Next::kClose;
    }
    put_option_reply(out_, option, kRepErrTlsReqd,
                     "TLS is required: negotiate NBD_OPT_STARTTLS first");
    log("client " + peer_ + ": option " + option_name(option) + " refused: TLS is required");
    return Next::kOption;
  }
  switch (option) {
    case kOptExportName: {
      std::string resolved;
      auto source = open_export(payload, &resolved);
      if (!source) {
        // EXPORT_NAME cannot fail politely: the spec says to close.
        log("client " + peer_ + ": EXPORT_NAME '" + payload + "' refused: " +
            source.error().message() + "; closing");
        return Next::kClose;
      }
      attach(std::move(*source), resolved);
      out_.put_bytes(
          export_name_reply(source_->size(), transmission_flags(*source_), no_zeroes_));
      log("client " + peer_ + " attached to export " + export_name_ + " (EXPORT_NAME)");
      return Next::kTransmit;
    }
    case kOptAbort:
      put_option_reply(out_, option, kRepAck);
      return Next::kClose;
    case kOptList:
      if (!payload.empty()) {
        put_option_reply(out_, option, kRepErrInvalid, "LIST takes no data");
        return Next::kOption;
      }
      for (const auto& [name, description] : context_.exports->listing()) {
        put_option_reply(out_, option, kRepServer, server_entry(name, description));
      }
      put_option_reply(out_, option, kRepAck);
      return Next::kOption;
    case kOptInfo:
    case kOptGo:
      return handle_info_or_go(option, payload);
    case kOptStructuredReply:
      if (!payload.empty()) {
        put_option_reply(out_, option, kRepErrInvalid, "STRUCTURED_REPLY takes no data");
        return Next::kOption;
      }
      structured_ = true;
      put_option_reply(out_, option, kRepAck);
      return Next::kOption;
    case kOptListMetaContext:
    case kOptSetMetaContext:
      handle_meta_context(option, payload);
      return Next::kOption;
    default:
      put_option_reply(out_, option, kRepErrUnsup,
                       "option " + option_name(option) + " is not supported");
      log("client " + peer_ + ": unsupported option " + option_name(option));
      return Next::kOption;
  }
}

Result<std::unique_ptr<ExportSource>> NbdConnection::open_export(const std::string& name,
                                                                 std::string* resolved) {
  return context_.exports->open(name, resolved);
}

void NbdConnection::attach(std::unique_ptr<ExportSource> source, const std::string& resolved) {
  // The contexts chosen for this export, by their ids; those chosen for
  // another export (or no longer offered) are dropped.
  contexts_.clear();
  if (meta_export_ == resolved) {
    const std::vector<std::string>& offered = source->contexts();
    for (const std::string& name : meta_selected_) {
      auto it = std::find(offered.begin(), offered.end(), name);
      if (it != offered.end()) contexts_.push_back(static_cast<uint32_t>(it - offered.begin()) + 1);
    }
  }
  source_ = std::move(source);
  export_name_ = resolved;
  open_backing();
}

void NbdConnection::open_backing() {
  if (tls_ != nullptr) return;  // sendfile would bypass the encryption
  // The namespace's backing file, for sendfile. The same page cache pages as
  // the device's shared mapping, so what it sends is what a read would copy.
  // Only regular files: memfd regions have no path, devdax cannot sendfile.
  const std::string path = source_->backing_path();
  if (path.empty()) return;
  internal::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  struct stat st;
  if (!fd.valid() || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return;
  // sendfile needs a filesystem that splices, which hugetlbfs does not
  // (EINVAL): one byte into a pipe tells, before any header promises data.
  int ends[2];
  if (::pipe2(ends, O_CLOEXEC | O_NONBLOCK) != 0) return;
  internal::UniqueFd pipe_out(ends[0]), pipe_in(ends[1]);
  off_t at = 0;
  if (::sendfile(pipe_in.get(), fd.get(), &at, 1) != 1) return;
  backing_ = std::move(fd);
  backing_offset_ = source_->backing_offset();  // a carved namespace's extent
}

bool NbdConnection::read_only(const ExportSource& source) const {
  return context_.read_only || source.read_only();
}

uint16_t NbdConnection::transmission_flags(const ExportSource& source) const {
  uint16_t flags = kFlagHasFlags | kFlagSendFlush | kFlagSendCache | kFlagCanMultiConn;
  if (read_only(source)) {
    flags |= kFlagReadOnly;
  } else {
    flags |= kFlagSendFua | kFlagSendTrim | kFlagSendWriteZeroes | kFlagSendFastZero;
  }
  if (structured_) flags |= kFlagSendDf;
  return flags;
}

NbdConnection::Next NbdConnection::handle_info_or_go(uint32_t option, const std::string& payload) {
  auto request = parse_info_request(payload);
  if (!request) {
    put_option_reply(out_, option, kRepErrInvalid, request.error().message());
    log("client " + peer_ + ": " + option_name(option) + ": " + request.error().message());
    return Next::kOption;
  }
  std::string resolved;
  auto source = open_export(request->name, &resolved);
  if (!source) {
    put_option_reply(out_, option, kRepErrUnknown, source.error().message());
    log("client " + peer_ + ": " + option_name(option) + " for export '" + request->name +
        "' refused: " + source.error().message());
    return Next::kOption;
  }
  // Alignment is only enforced on clients that asked for the block sizes:
  // the others were never told, so they get 1-byte granularity.
  bool told_block_size = contains(request->infos, kInfoBlockSize);
  uint32_t min_block = told_block_size ? kMinBlock : 1;
  uint64_t size = (*source)->size();
  put_option_reply(out_, option, kRepInfo, info_export(size, transmission_flags(**source)));
  if (contains(request->infos, kInfoName)) {
    put_option_reply(out_, option, kRepInfo, info_name(resolved));
  }
  if (contains(request->infos, kInfoDescription)) {
    put_option_reply(out_, option, kRepInfo, info_description((*source)->description()));
  }
  put_option_reply(out_, option, kRepInfo, info_block_size(min_block, kPreferredBlock, kMaxPayload));
  put_option_reply(out_, option, kRepAck);
  if (option == kOptInfo) return Next::kOption;
  attach(std::move(*source), resolved);
  min_block_ = min_block;
  std::string contexts;
  for (uint32_t id : contexts_) contexts += ", " + source_->contexts()[id - 1];
  log("client " + peer_ + " attached to export " + export_name_ + " (size " +
      std::to_string(size) + (structured_ ? ", structured replies" : "") + contexts + ")");
  return Next::kTransmit;
}

void NbdConnection::handle_meta_context(uint32_t option, const std::string& payload) {
  if (!structured_) {
    put_option_reply(out_, option, kRepErrInvalid,
                     "negotiate NBD_OPT_STRUCTURED_REPLY before metadata contexts");
    return;
  }
  auto request = parse_meta_context_request(payload);
  if (!request) {
    put_option_reply(out_, option, kRepErrInvalid, request.error().message());
    log("client " + peer_ + ": " + option_name(option) + ": " + request.error().message());
    return;
  }
  std::string resolved = request->export_name.empty() ? context_.exports->default_export()
                                                       : request->export_name;
  auto offered = context_.exports->contexts(request->export_name);
  if (!offered) {
    put_option_reply(out_, option, kRepErrUnknown,
                     "no export named '" + request->export_name + "'");
    return;
  }
  // Each offered context once, in the export's order, if any query selects it
  // (LIST without queries: all of them).
  std::vector<std::string> selected;
  for (size_t i = 0; i < offered->size(); ++i) {
    const std::string& name = (*offered)[i];
    bool chosen = option == kOptListMetaContext && request->queries.empty();
    for (const auto& query : request->queries) chosen |= query_selects(query, name);
    if (!chosen) continue;
    // LIST replies carry id 0, as the spec reserves ids for SET.
    uint32_t id = option == kOptSetMetaContext ? static_cast<uint32_t>(i) + 1 : 0;
    put_option_reply(out_, option, kRepMetaContext, meta_context_entry(id, name));
    selected.push_back(name);
  }
  put_option_reply(out_, option, kRepAck);
  if (option == kOptSetMetaContext) {
    meta_selected_ = std::move(selected);
    meta_export_ = resolved;
  }
}

// --- Transmission ---

void NbdConnection::transmit() {
  char header[kRequestHeaderSize];
  // The coalescing pause is short: with the default 50 us timer slack it
  // would last half as long again.
  ::prctl(PR_SET_TIMERSLACK, 10000UL, 0UL, 0UL, 0UL);
  while (true) {
    if (buffered() < kRequestHeaderSize) {
      // Between requests: the place to honour a stop.
      if (stop_requested_.load()) return;
      if (buffered() == 0 && !refill(true)) return;  // the client closed, or a stop woke us
    }
    // The request has begun (or is about to): it must arrive whole in time.
    // serve_request() lifts the deadline once its payload is in.
    deadline_ = std::chrono::steady_clock::now() + context_.message_timeout;
    if (!read_exact(header, sizeof header)) {
      if (timed_out_) {
        log("client " + peer_ + " export " + export_name_ + ": request header not complete within " +
            std::to_string(context_.message_timeout.count()) + " ms; closing this connection");
      } else {
        log("client " + peer_ + " export " + export_name_ +
            ": connection closed in the middle of a request header");
      }
      return;
    }
    if (first_receive_) ++first_receive_requests_;
    auto request = parse_request(header);
    if (!request) {
      log("client " + peer_ + " export " + export_name_ +
          ": protocol corruption: bad request magic; closing this connection");
      return;
    }
    if (!serve_request(*request)) return;
    if (out_.size() >= kOutFlush && !flush_output()) return;
  }
}

std::string NbdConnection::describe(const RequestHeader& r) const {
  return "client " + peer_ + " export " + export_name_ + ": " + command_name(r.type) +
         " offset " + std::to_string(r.offset) + " length " + std::to_string(r.length);
}

bool NbdConnection::serve_request(const RequestHeader& request) {
  if (request.type == kCmdDisc) return false;
  ExportLimits limits;
  limits.size = source_->size();
  limits.read_only = read_only(*source_);
  limits.structured_replies = structured_;
  limits.base_allocation = !contexts_.empty();
  limits.min_block = min_block_;
  limits.max_payload = kMaxPayload;
  Verdict verdict = check_request(request, limits);
  std::span<const std::byte> payload;
  if (request.type == kCmdWrite) {
    if (verdict.error != 0) {
      // The payload follows the header whatever we think of it: drop it to
      // stay in step with the client.
      if (!skip(request.length)) {
        log_payload_failure(request, verdict.reason);
        return false;
      }
    } else if (buffered() >= request.length) {
      payload = std::as_bytes(std::span<const char>(in_.get() + in_pos_, request.length));
      in_pos_ += request.length;  // still valid until the next refill
    } else {
      if (payload_capacity_ < request.length) {
        payload_.reset();  // the old one goes first: never two at once
        payload_.reset(new char[request.length]);
        payload_capacity_ = request.length;
      }
      if (!read_exact(payload_.get(), request.length)) {
        log_payload_failure(request, "");
        return false;
      }
      payload = std::as_bytes(std::span<const char>(payload_.get(), request.length));
    }
  }
  deadline_ = std::chrono::steady_clock::time_point::max();
  context_.requests.fetch_add(1, std::memory_order_relaxed);
  if (verdict.error != 0) {
    reply_error(request, verdict.error, verdict.reason);
    return true;
  }
  return execute(request, payload);
}

void NbdConnection::log_payload_failure(const RequestHeader& request, const std::string& refused) {
  std::string what = describe(request);
  if (!refused.empty()) what += " (refused: " + refused + ")";
  if (timed_out_) {
    log(what + ": payload not complete within " +
        std::to_string(context_.message_timeout.count()) + " ms; closing this connection");
  } else {
    log(what + ": connection closed in the middle of the payload");
  }
}

bool NbdConnection::execute(const RequestHeader& r, std::span<const std::byte> payload) {
  ExportSource& source = *source_;
  Status st;
  switch (r.type) {
    case kCmdRead:
      if (structured_ && (r.flags & kCmdFlagDf) == 0 && r.length >= kSparseReadMin) {
        return read_sparse(r);
      }
      return read_data(r);
    case kCmdWrite:
      st = source.write(r.offset, payload, (r.flags & kCmdFlagFua) != 0);
      wrote_since_flush_ = true;
      break;
    case kCmdFlush:
      st = source.flush();
      if (st) wrote_since_flush_ = false;
      break;
    case kCmdTrim:
      // Discards and zeroes persist what they change before returning, so
      // FUA needs nothing more.
      st = source.discard(r.offset, r.length);
      wrote_since_flush_ = true;
      break;
    case kCmdWriteZeroes:
      // FAST_ZERO is always honoured: a punched hole or a memset of mapped
      // memory is faster than the client writing zeroes over the socket.
      st = source.write_zeroes(r.offset, r.length, (r.flags & kCmdFlagNoHole) != 0);
      wrote_since_flush_ = true;
      break;
    case kCmdCache:
      // The data already lives in memory; nothing to prefetch.
      break;
    case kCmdBlockStatus:
      block_status(r);
      return true;
  }
  if (!st) {
    reply_error(r, to_nbd_error(st.error()), st.error().message());
    return true;
  }
  reply_ok(r);
  return true;
}

void NbdConnection::put_read_header(const RequestHeader& r) {
  if (structured_) {
    put_chunk_header(out_, r.cookie, kReplyFlagDone, kReplyTypeOffsetData, 8 + r.length);
    out_.put_u64(r.offset);
  } else {
    put_simple_reply(out_, r.cookie, 0);
  }
}

bool NbdConnection::read_data(const RequestHeader& r) {
  if (backing_.valid() && r.length >= kSendfileMin) {
    // The device vouches for the range before the header promises the
    // data: the namespace is still there, no listed bad block is in it, and
    // the backing file still covers it (sendfile of a file cut short stops
    // short instead of faulting). Refused here, the read is answered by the
    // error alone.
    Status readable = source_->check_readable(r.offset, r.length);
    if (!readable) {
      reply_error(r, to_nbd_error(readable.error()), readable.error().message());
      return true;
    }
    put_read_header(r);
    return send_backing(r);
  }
  if (tls_ != nullptr && r.length >= kSendfileMin) {
    Status readable = source_->check_readable(r.offset, r.length);
    if (!readable) {
      reply_error(r, to_nbd_error(readable.error()), readable.error().message());
      return true;
    }
    put_read_header(r);
    return send_tls_pieces(r);
  }
  size_t mark = out_.size();
  put_read_header(r);
  // Straight from the device into the output buffer: the one user copy.
  char* data = out_.append(r.length);
  Status st = source_->read(r.offset, std::as_writable_bytes(std::span<char>(data, r.length)));
  if (!st) {
    // Nothing of this reply has been sent yet: replace it by the error.
    out_.shrink_by(out_.size() - mark);
    reply_error(r, to_nbd_error(st.error()), st.error().message());
  }
  return true;
}

bool NbdConnection::send_backing(const RequestHeader& r) {
  if (!flush_output()) return false;
  client_order(context_, ClientEdge::kSent);
  uint64_t sent = 0;
  while (sent < r.length) {
    off_t at = static_cast<off_t>(backing_offset_ + r.offset + sent);
    ssize_t n = ::sendfile(fd_.get(), backing_.get(), &at, r.length - sent);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      // The header already promised the data: the stream cannot recover.
      // (Only a file cut short or poison met between the check and here;
      // the check lists a cut-short range, so the next read gets EIO.)
      const std::string why =
          n < 0 ? std::string(std::strerror(errno)) : std::string("end of file");
      Status recheck = source_->check_readable(r.offset + sent, r.length - sent);
      log("error: " + describe(r) + ": sendfile stopped after " + std::to_string(sent) +
          " bytes (" + why + (recheck ? "" : "; " + recheck.error().message()) +
          "); closing this connection");
      return false;
    }
    sent += static_cast<uint64_t>(n);
  }
  return true;
}

bool NbdConnection::send_tls_pieces(const RequestHeader& r) {
  uint64_t done = 0;
  while (done < r.length) {
    uint32_t piece = static_cast<uint32_t>(std::min<uint64_t>(kTlsPiece, r.length - done));
    char* data = out_.append(piece);
    Status st =
        source_->read(r.offset + done, std::as_writable_bytes(std::span<char>(data, piece)));
    if (!st) {
      // The header already promised the data: the stream cannot recover.
      // (Only poison met, or a file cut short, since the check.)
      log("error: " + describe(r) + ": read stopped after " + std::to_string(done) + " bytes (" +
          st.error().message() + "); closing this connection");
      out_.shrink_by(piece);
      flush_output();
      return false;
    }
    if (!flush_output()) return false;
    done += piece;
  }
  return true;
}

bool NbdConnection::read_sparse(const RequestHeader& r) {
  // A read of a hole goes out as one OFFSET_HOLE chunk: 12 bytes on the wire
  // instead of the zeros, and the hole's pages are never touched (reading a
  // hole through a shared tmpfs mapping would allocate it). Only a whole
  // hole is detected: finding where a data run ends (SEEK_HOLE) costs a walk
  // over every page of the run, far more than sending it.
  // A range past the end of a backing file cut short under us looks like a
  // hole to SEEK_DATA, but it is missing, not zero: refuse it (EIO) first.
  Status readable = source_->check_readable(r.offset, r.length);
  if (!readable) {
    reply_error(r, to_nbd_error(readable.error()), readable.error().message());
    return true;
  }
  auto hole = source_->is_hole(r.offset, r.length);
  if (!hole) {
    reply_error(r, to_nbd_error(hole.error()), hole.error().message());
    return true;
  }
  if (*hole) {
    put_chunk_header(out_, r.cookie, kReplyFlagDone, kReplyTypeOffsetHole, 12);
    out_.put_u64(r.offset);
    out_.put_u32(r.length);
    return true;
  }
  return read_data(r);
}

void NbdConnection::block_status(const RequestHeader& r) {
  // One chunk per negotiated context, the last flagged DONE. REQ_ONE asks
  // for one extent each; otherwise cap the answer, as the spec lets a server
  // return fewer descriptors than the range needs.
  size_t max = (r.flags & kCmdFlagReqOne) ? 1 : 1024;
  const size_t mark = out_.size();
  for (size_t i = 0; i < contexts_.size(); ++i) {
    const uint32_t id = contexts_[i];
    auto runs = source_->block_status(id - 1, r.offset, r.length, max);
    if (!runs) {
      // Nothing of this reply has been sent yet: replace it by the error.
      out_.shrink_by(out_.size() - mark);
      reply_error(r, to_nbd_error(runs.error()), runs.error().message());
      return;
    }
    put_chunk_header(out_, r.cookie, i + 1 == contexts_.size() ? kReplyFlagDone : 0,
                     kReplyTypeBlockStatus, static_cast<uint32_t>(4 + 8 * runs->size()));
    out_.put_u32(id);
    for (const StatusExtent& e : *runs) {
      out_.put_u32(static_cast<uint32_t>(e.length));
      out_.put_u32(e.flags);
    }
  }
}

void NbdConnection::reply_ok(const RequestHeader& r) { put_simple_reply(out_, r.cookie, 0); }

void NbdConnection::reply_error(const RequestHeader& r, uint32_t error, const std::string& why) {
  context_.errors.fetch_add(1, std::memory_order_relaxed);
  if (error == kEshutdown) {
    if (!logged_shutdown_) {
      log("client " + peer_ + " export " + export_name_ +
          ": the export was removed (namespace removed or snapshot unexported); answering "
          "ESHUTDOWN");
      logged_shutdown_ = true;
    }
  } else {
    // EIO is the media failing, not the client asking for something wrong.
    log((error == kEio ? "error: " : "") + describe(r) + ": " + nbd_error_name(error) + ": " +
        why);
  }
  if (structured_) {
    put_error_chunk(out_, r.cookie, error, why);
  } else {
    put_simple_reply(out_, r.cookie, error);
  }
}

}  // namespace rawdax::nbd
