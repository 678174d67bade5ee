// The public Client: the protocol of docs/control.md over client/protocol.h.
#include "rawdax/client.h"

#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <deque>
#include <limits>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>
#include <utility>

#include "common/unique_fd.h"
#include "client/client_protection.h"
#include "client/protocol.h"

namespace rawdax {

using json = nlohmann::json;

namespace {

std::string dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

Error protocol_error(const std::string& what) {
  return Error(std::errc::protocol_error, "control socket: " + what);
}

}  // namespace

// --- ClientMapping ---

ClientMapping::ClientMapping(ClientMapping&& other) noexcept
    : base_(std::exchange(other.base_, nullptr)),
      mapped_(std::exchange(other.mapped_, 0)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      protection_(std::move(other.protection_)),
      key_(std::exchange(other.key_, 0)) {}

ClientMapping& ClientMapping::operator=(ClientMapping&& other) noexcept {
  if (this != &other) {
    reset();
    base_ = std::exchange(other.base_, nullptr);
    mapped_ = std::exchange(other.mapped_, 0);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    protection_ = std::move(other.protection_);
    key_ = std::exchange(other.key_, 0);
  }
  return *this;
}

ClientMapping::~ClientMapping() { reset(); }

void ClientMapping::reset() {
  if (protection_ != nullptr) {
    protection_->remove_and_unmap(key_);
    protection_.reset();
  } else if (base_ != nullptr) {
    ::munmap(base_, mapped_);
  }
  base_ = nullptr;
}

// --- ClientNamespace ---

ClientNamespace::ClientNamespace(ClientNamespace&& other) noexcept
    : name_(std::move(other.name_)),
      size_(other.size_),
      offset_(other.offset_),
      alignment_(other.alignment_),
      access_(other.access_),
      exclusive_(other.exclusive_),
      fd_(std::exchange(other.fd_, -1)),
      reply_json_(std::move(other.reply_json_)),
      protection_(std::move(other.protection_)) {}

ClientNamespace& ClientNamespace::operator=(ClientNamespace&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    name_ = std::move(other.name_);
    size_ = other.size_;
    offset_ = other.offset_;
    alignment_ = other.alignment_;
    access_ = other.access_;
    exclusive_ = other.exclusive_;
    fd_ = std::exchange(other.fd_, -1);
    reply_json_ = std::move(other.reply_json_);
    protection_ = std::move(other.protection_);
  }
  return *this;
}

ClientNamespace::~ClientNamespace() {
  if (fd_ >= 0) ::close(fd_);
}

int ClientNamespace::release_fd() { return std::exchange(fd_, -1); }

Result<ClientMapping> ClientNamespace::map(uint64_t offset, size_t length) const {
  if (fd_ < 0) return Error(std::errc::bad_file_descriptor, "namespace " + name_ + ": fd released");
  if (length == 0 || offset > size_ || length > size_ - offset) {
    return Error(std::errc::invalid_argument,
                 "namespace " + name_ + ": map of " + std::to_string(length) + " bytes at " +
                     std::to_string(offset) + " is outside its " + std::to_string(size_) +
                     " bytes");
  }
  // mmap offsets must be aligned to the media's granularity (huge pages on
  // hugetlbfs and devdax); map from the boundary below and point into it.
  uint64_t align = alignment_ > 0 ? alignment_ : static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  uint64_t start = offset / align * align;
  size_t delta = static_cast<size_t>(offset - start);
  size_t mapped = (delta + length + align - 1) / align * align;
  int prot = access_ == Access::ReadWrite ? PROT_READ | PROT_WRITE : PROT_READ;
  // A carved namespace is an extent of the fd's device, starting at
  // offset_ (aligned): [offset_, offset_ + size_) is all this maps.
  void* base =
      ::mmap(nullptr, mapped, prot, MAP_SHARED, fd_, static_cast<off_t>(offset_ + start));
  if (base == MAP_FAILED) return errno_error(errno, "namespace " + name_ + ": mmap");
  ClientMapping mapping(base, mapped, static_cast<std::byte*>(base) + delta, length);
  if (access_ == Access::ReadWrite && protection_ != nullptr) {
    auto key = protection_->add(base, mapped);
    if (!key) return key.error().with_context("namespace " + name_ + ": ");  // unmapped
    mapping.protection_ = protection_;
    mapping.key_ = *key;
  }
  return mapping;
}

// --- Client ---

// Threads: the caller of call()/wait_event() and the reader thread, which
// owns the LineReader once start() ran. The reader hands the reply to the
// one request in flight (call_mu_ keeps it to one) through reply_, queues
// events, and handles FREEZE/THAW itself, sending the ack under write_mu_.
// Ordering: mu_ guards everything the two share; cv_ wakes the caller
// (reply, event, or broken_). write_mu_ keeps lines whole between the caller
// and the reader's acks; it is never held while taking mu_.
class Client::Impl {
 public:
  explicit Impl(internal::UniqueFd socket) : socket_(std::move(socket)) {}

  ~Impl() {
    // Wakes the reader's recvmsg (it sees end of stream) and fails its sends.
    ::shutdown(socket_.get(), SHUT_RDWR);
    if (reader_thread_.joinable()) reader_thread_.join();
    release_protections();  // the reader did, unless it never started
  }

  Status read_greeting() {
    // A daemon too wedged to greet must not hang its clients: bound this
    // one read (replies have no bound; a snapshot may take long).
    timeval bound{10, 0}, none{0, 0};
    ::setsockopt(socket_.get(), SOL_SOCKET, SO_RCVTIMEO, &bound, sizeof bound);
    auto line = reader_.read_line(socket_.get());
    ::setsockopt(socket_.get(), SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
    if (!line) return line.error();
    json greeting = json::parse(*line, nullptr, false);
    if (greeting.is_discarded() || !greeting.is_object() || !greeting.contains("rawdax")) {
      // A refusal (too many connections) arrives as an error line instead.
      if (greeting.is_object() && greeting.contains("error") && greeting["error"].is_object()) {
        return control::reply_result(greeting).error();
      }
      return protocol_error("no rawdax greeting");
    }
    greeting_ = dump(greeting["rawdax"]);
    return ok();
  }

  // After the greeting: from here only the reader thread reads the socket.
  void start() { reader_thread_ = std::thread(&Impl::read_loop, this); }

  const std::string& greeting() const { return greeting_; }

  // Sends a request and waits for its reply; the "return" value, or the
  // daemon's error. With fd_out, the reply's passed fd is moved there.
  Result<json> call(std::string_view command, json arguments, internal::UniqueFd* fd_out) {
    std::lock_guard<std::mutex> call_lock(call_mu_);
    uint64_t id;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (broken_) return *broken_;
      id = next_id_++;
      awaited_id_ = id;
      reply_.reset();
    }
    json request = {{"execute", command}, {"arguments", std::move(arguments)}, {"id", id}};
    Status sent = send(dump(request));
    std::unique_lock<std::mutex> lock(mu_);
    if (!sent) {
      awaited_id_ = 0;
      return fail_transport_locked(sent.error());
    }
    cv_.wait(lock, [&] { return reply_.has_value() || broken_.has_value(); });
    awaited_id_ = 0;
    if (!reply_) return *broken_;
    PendingReply reply = std::move(*reply_);
    reply_.reset();
    Result<json> ret = control::reply_result(reply.message);
    if (!ret) {
      // The daemon's error; a reply that is neither breaks the connection.
      if (reply.message.contains("error")) return ret.error();
      return fail_transport_locked(ret.error());
    }
    if (fd_out != nullptr) {
      if (reply.fds.empty()) return fail_transport_locked(protocol_error("reply carried no fd"));
      *fd_out = std::move(reply.fds.front());
    }
    return *ret;
  }

  std::vector<ClientEvent> take_events() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<ClientEvent> out(std::make_move_iterator(events_.begin()),
                                 std::make_move_iterator(events_.end()));
    events_.clear();
    return out;
  }

  Result<ClientEvent> wait_event(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return !events_.empty() || broken_.has_value(); });
    if (!events_.empty()) {
      ClientEvent e = std::move(events_.front());
      events_.pop_front();
      return e;
    }
    if (broken_) return *broken_;
    return Error(std::errc::timed_out, "no event from the daemon");
  }

  void set_freeze_handler(FreezeHandler handler) {
    std::lock_guard<std::mutex> lock(mu_);
    freeze_handler_ = std::move(handler);
  }

  // The protection of `name`'s mappings in this process, made on first use
  // (a FREEZE may come before the open-namespace reply that names it).
  std::shared_ptr<detail::NamespaceProtection> protection(const std::string& name) {
    std::lock_guard<std::mutex> lock(mu_);
    auto& p = protections_[name];
    if (p == nullptr) p = std::make_shared<detail::NamespaceProtection>();
    return p;
  }

 private:
  struct PendingReply {
    json message;
    std::deque<internal::UniqueFd> fds;
  };

  Status send(const std::string& line) {
    std::lock_guard<std::mutex> lock(write_mu_);
    return control::send_line(socket_.get(), line);
  }

  void read_loop() {
    for (;;) {
      auto line = reader_.read_line(socket_.get());
      if (!line) {
        {
          std::lock_guard<std::mutex> lock(mu_);
          (void)fail_transport_locked(line.error());
        }
        release_protections();
        return;
      }
      json message = json::parse(*line, nullptr, false);
      if (message.is_discarded() || !message.is_object()) {
        {
          std::lock_guard<std::mutex> lock(mu_);
          (void)fail_transport_locked(protocol_error("malformed line from the daemon"));
        }
        release_protections();
        return;
      }
      try {
        if (auto ev = message.find("event"); ev != message.end() && ev->is_string()) {
          on_event(ev->get<std::string>(), message);
          continue;
        }
      } catch (const json::exception&) {
        continue;  // a malformed event: nothing to act on
      }
      // A reply: an fd it carries arrived with its first byte, so every fd
      // queued now is its.
      std::deque<internal::UniqueFd> fds;
      fds.swap(reader_.fds());
      std::lock_guard<std::mutex> lock(mu_);
      auto rid = message.find("id");
      if (awaited_id_ == 0 || rid == message.end() || *rid != json(awaited_id_)) continue;
      reply_ = PendingReply{std::move(message), std::move(fds)};
      cv_.notify_all();
    }
  }

  // The connection is over: no THAW will come, and the daemon no longer
  // counts this process as a holder, so no mapping stays write-protected.
  void release_protections() {
    std::map<std::string, std::shared_ptr<detail::NamespaceProtection>> all;
    {
      std::lock_guard<std::mutex> lock(mu_);
      all = protections_;
    }
    for (auto& [name, p] : all) p->thaw(std::numeric_limits<uint64_t>::max());
  }

  void on_event(const std::string& name, const json& message) {
    json data = message.contains("data") ? message["data"] : json::object();
    if (name == "FREEZE" || name == "THAW") {
      if (!data.is_object() || !data.contains("name") || !data["name"].is_string() ||
          !data.contains("token") || !data["token"].is_number_unsigned()) {
        return;
      }
      on_freeze(data["name"].get<std::string>(), data["token"].get<uint64_t>(), name == "FREEZE");
      return;
    }
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back({name, dump(data)});
    cv_.notify_all();
  }

  void on_freeze(const std::string& ns, uint64_t token, bool freeze) {
    auto p = protection(ns);
    FreezeHandler handler;
    {
      std::lock_guard<std::mutex> lock(mu_);
      handler = freeze_handler_;
    }
    if (!freeze) {
      p->thaw(token);
      if (handler) handler(ns, false);
      return;
    }
    // No ack unless every mapping is protected: the daemon then fails the
    // freeze naming this pid, and its THAW undoes the part done.
    if (!p->freeze(token)) return;
    if (handler) handler(ns, true);
    json ack = {{"execute", "freeze-ack"},
                {"arguments", {{"name", ns}, {"token", token}}},
                {"id", "freeze-ack"}};  // a string id: its reply is dropped
    (void)send(dump(ack));
  }

  Error fail_transport_locked(Error error) {
    if (!broken_) broken_ = error;
    cv_.notify_all();
    return error;
  }

  internal::UniqueFd socket_;
  control::LineReader reader_{control::kMaxReplyLine};  // the reader thread's (greeting: connect's)
  std::string greeting_;
  std::thread reader_thread_;

  std::mutex call_mu_;   // one request in flight, so replies match in order
  std::mutex write_mu_;  // whole lines on the socket
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t next_id_ = 1;                     // guarded by mu_
  uint64_t awaited_id_ = 0;                  // guarded by mu_: 0 when none
  std::optional<PendingReply> reply_;        // guarded by mu_
  std::deque<ClientEvent> events_;           // guarded by mu_
  std::optional<Error> broken_;              // guarded by mu_
  FreezeHandler freeze_handler_;             // guarded by mu_
  std::map<std::string, std::shared_ptr<detail::NamespaceProtection>> protections_;  // mu_
};

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

Result<std::unique_ptr<Client>> Client::connect(const std::string& socket_path) {
  auto socket = control::connect_unix(socket_path);
  if (!socket) return socket.error();
  auto impl = std::make_unique<Impl>(std::move(*socket));
  RAWDAX_RETURN_IF_ERROR(impl->read_greeting());
  impl->start();
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

const std::string& Client::greeting_json() const { return impl_->greeting(); }

Result<std::string> Client::execute(std::string_view command, std::string_view arguments_json) {
  json args = json::parse(arguments_json.empty() ? std::string_view("{}") : arguments_json,
                          nullptr, false);
  if (args.is_discarded() || !args.is_object()) {
    return Error(std::errc::invalid_argument,
                 std::string(command) + ": arguments are not a JSON object");
  }
  auto ret = impl_->call(command, std::move(args), nullptr);
  if (!ret) return ret.error();
  return dump(*ret);
}

Result<ClientNamespace> Client::open_namespace(std::string_view name, Access access,
                                               bool exclusive) {
  json args = {{"name", name},
               {"access", access == Access::ReadWrite ? "rw" : "ro"},
               {"exclusive", exclusive}};
  internal::UniqueFd fd;
  auto ret = impl_->call("open-namespace", std::move(args), &fd);
  if (!ret) return ret.error();
  ClientNamespace ns;
  ns.name_ = std::string(name);
  auto size = ret->find("size");
  if (size == ret->end() || !size->is_number_unsigned()) {
    return protocol_error("open-namespace reply without a size");
  }
  ns.size_ = size->get<uint64_t>();
  if (auto offset = ret->find("offset"); offset != ret->end() && offset->is_number_unsigned()) {
    ns.offset_ = offset->get<uint64_t>();
  }
  if (auto caps = ret->find("capabilities"); caps != ret->end() && caps->is_object()) {
    if (auto media = caps->find("media"); media != caps->end() && media->is_object()) {
      auto align = media->find("alignment");
      if (align != media->end() && align->is_number_unsigned()) {
        ns.alignment_ = align->get<uint64_t>();
      }
    }
  }
  ns.access_ = access;
  ns.exclusive_ = exclusive;
  ns.fd_ = fd.release();
  ns.reply_json_ = dump(*ret);
  if (access == Access::ReadWrite) {
    ns.protection_ = impl_->protection(ns.name_);
    // Opened while frozen: protect what gets mapped until that freeze's THAW
    // (ignored if the THAW was handled already).
    if (auto token = ret->find("freeze_token");
        token != ret->end() && token->is_number_unsigned()) {
      Status frozen = ns.protection_->freeze(token->get<uint64_t>());
      if (!frozen) return frozen.error();
    }
  }
  return ns;
}

Status Client::release_namespace(std::string_view name) {
  auto ret = impl_->call("release-namespace", json{{"name", name}}, nullptr);
  if (!ret) return ret.error();
  return ok();
}

std::vector<ClientEvent> Client::take_events() { return impl_->take_events(); }

Result<ClientEvent> Client::wait_event(std::chrono::milliseconds timeout) {
  return impl_->wait_event(timeout);
}

void Client::set_freeze_handler(FreezeHandler handler) {
  impl_->set_freeze_handler(std::move(handler));
}

}  // namespace rawdax
