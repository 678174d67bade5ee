// The public Client: the protocol of docs/control.md over control/protocol.h.
#include "rawdax/client.h"

#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <deque>
#include <mutex>
#include <optional>
#include <nlohmann/json.hpp>
#include <utility>

#include "common/unique_fd.h"
#include "control/protocol.h"

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
      size_(std::exchange(other.size_, 0)) {}

ClientMapping& ClientMapping::operator=(ClientMapping&& other) noexcept {
  if (this != &other) {
    if (base_ != nullptr) ::munmap(base_, mapped_);
    base_ = std::exchange(other.base_, nullptr);
    mapped_ = std::exchange(other.mapped_, 0);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

ClientMapping::~ClientMapping() {
  if (base_ != nullptr) ::munmap(base_, mapped_);
}

// --- ClientNamespace ---

ClientNamespace::ClientNamespace(ClientNamespace&& other) noexcept
    : name_(std::move(other.name_)),
      size_(other.size_),
      alignment_(other.alignment_),
      access_(other.access_),
      exclusive_(other.exclusive_),
      fd_(std::exchange(other.fd_, -1)),
      reply_json_(std::move(other.reply_json_)) {}

ClientNamespace& ClientNamespace::operator=(ClientNamespace&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    name_ = std::move(other.name_);
    size_ = other.size_;
    alignment_ = other.alignment_;
    access_ = other.access_;
    exclusive_ = other.exclusive_;
    fd_ = std::exchange(other.fd_, -1);
    reply_json_ = std::move(other.reply_json_);
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
  void* base = ::mmap(nullptr, mapped, prot, MAP_SHARED, fd_, static_cast<off_t>(start));
  if (base == MAP_FAILED) return errno_error(errno, "namespace " + name_ + ": mmap");
  return ClientMapping(base, mapped, static_cast<std::byte*>(base) + delta, length);
}

// --- Client ---

class Client::Impl {
 public:
  explicit Impl(UniqueFd socket) : socket_(std::move(socket)) {}

  Status read_greeting() {
    std::lock_guard<std::mutex> lock(mu_);
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
        return reply_error(greeting["error"]);
      }
      return protocol_error("no rawdax greeting");
    }
    greeting_ = dump(greeting["rawdax"]);
    return ok();
  }

  const std::string& greeting() const { return greeting_; }

  // Sends a request and waits for its reply; the "return" value, or the
  // daemon's error. With fd_out, the reply's passed fd is moved there.
  Result<json> call(std::string_view command, json arguments, UniqueFd* fd_out) {
    std::lock_guard<std::mutex> lock(mu_);
    try {
      return call_locked(command, std::move(arguments), fd_out);
    } catch (const json::exception& e) {
      return fail_transport(protocol_error(std::string("bad reply: ") + e.what()));
    }
  }

  Result<json> call_locked(std::string_view command, json arguments, UniqueFd* fd_out) {
    if (broken_) return *broken_;
    uint64_t id = next_id_++;
    json request = {{"execute", command}, {"arguments", std::move(arguments)}, {"id", id}};
    Status sent = control::send_line(socket_.get(), dump(request));
    if (!sent) return fail_transport(sent.error());
    for (;;) {
      auto line = reader_.read_line(socket_.get());
      if (!line) return fail_transport(line.error());
      json message = json::parse(*line, nullptr, false);
      if (message.is_discarded() || !message.is_object()) {
        return fail_transport(protocol_error("malformed line from the daemon"));
      }
      if (queue_if_event(message)) continue;
      auto rid = message.find("id");
      if (rid == message.end() || *rid != json(id)) continue;  // not ours: ignore
      if (auto err = message.find("error"); err != message.end()) return reply_error(*err);
      auto ret = message.find("return");
      if (ret == message.end()) return fail_transport(protocol_error("reply without return"));
      if (fd_out != nullptr) {
        if (reader_.fds().empty()) return fail_transport(protocol_error("reply carried no fd"));
        *fd_out = std::move(reader_.fds().front());
        reader_.fds().pop_front();
      }
      return std::move(*ret);
    }
  }

  std::vector<ClientEvent> take_events() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<ClientEvent> out(std::make_move_iterator(events_.begin()),
                                 std::make_move_iterator(events_.end()));
    events_.clear();
    return out;
  }

  Result<ClientEvent> wait_event(std::chrono::milliseconds timeout) {
    std::lock_guard<std::mutex> lock(mu_);
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (!events_.empty()) {
        ClientEvent e = std::move(events_.front());
        events_.pop_front();
        return e;
      }
      if (broken_) return *broken_;
      if (!reader_.has_line()) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return Error(std::errc::timed_out, "no event from the daemon");
        pollfd p{socket_.get(), POLLIN, 0};
        int n = ::poll(&p, 1, static_cast<int>(left.count()));
        if (n < 0 && errno != EINTR) return fail_transport(errno_error(errno, "poll"));
        if (n <= 0) continue;
      }
      auto line = reader_.read_line(socket_.get());
      if (!line) return fail_transport(line.error());
      json message = json::parse(*line, nullptr, false);
      if (message.is_discarded() || !message.is_object()) {
        return fail_transport(protocol_error("malformed line from the daemon"));
      }
      (void)queue_if_event(message);  // a stray reply with no caller: dropped
    }
  }

 private:
  bool queue_if_event(const json& message) {
    auto ev = message.find("event");
    if (ev == message.end() || !ev->is_string()) return false;
    auto data = message.find("data");
    events_.push_back({ev->get<std::string>(), data == message.end() ? "{}" : dump(*data)});
    return true;
  }

  static Error reply_error(const json& error) {
    auto cls = error.find("class");
    auto desc = error.find("desc");
    return Error(control::error_code_for_class(cls != error.end() && cls->is_string()
                                                   ? cls->get<std::string>()
                                                   : std::string(control::kGenericError)),
                 desc != error.end() && desc->is_string() ? desc->get<std::string>()
                                                          : std::string("daemon error"));
  }

  Error fail_transport(Error error) {
    broken_ = error;
    return error;
  }

  std::mutex mu_;  // serializes calls: one request in flight, replies in order
  UniqueFd socket_;
  control::LineReader reader_{control::kMaxReplyLine};
  std::string greeting_;
  std::deque<ClientEvent> events_;
  uint64_t next_id_ = 1;
  std::optional<Error> broken_;
};

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

Result<std::unique_ptr<Client>> Client::connect(const std::string& socket_path) {
  auto socket = control::connect_unix(socket_path);
  if (!socket) return socket.error();
  auto impl = std::make_unique<Impl>(std::move(*socket));
  RAWDAX_RETURN_IF_ERROR(impl->read_greeting());
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
  UniqueFd fd;
  auto ret = impl_->call("open-namespace", std::move(args), &fd);
  if (!ret) return ret.error();
  ClientNamespace ns;
  ns.name_ = std::string(name);
  auto size = ret->find("size");
  if (size == ret->end() || !size->is_number_unsigned()) {
    return protocol_error("open-namespace reply without a size");
  }
  ns.size_ = size->get<uint64_t>();
  if (auto caps = ret->find("capabilities"); caps != ret->end() && caps->is_object()) {
    auto align = caps->find("alignment");
    if (align != caps->end() && align->is_number_unsigned()) ns.alignment_ = align->get<uint64_t>();
  }
  ns.access_ = access;
  ns.exclusive_ = exclusive;
  ns.fd_ = fd.release();
  ns.reply_json_ = dump(*ret);
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

}  // namespace rawdax
