// Client: talks to a running `rawdax serve` over its control socket.
//
//   auto client = rawdax::Client::connect("./rawdax-data/control.sock");
//   auto list = (*client)->execute("query-namespaces");          // JSON text
//   auto ns = (*client)->open_namespace("vm1", rawdax::Access::ReadWrite);
//   auto m = ns->map(0, 4096);                                   // MAP_SHARED of the passed fd
//   m->data()[0] = std::byte{1};                                 // the daemon sees it at once
//   (*client)->release_namespace("vm1");
//
// The protocol (docs/control.md) is one JSON object per line, QMP style.
// This header takes and returns JSON as text so that users need no JSON
// library; parse the text with whichever one you use.
//
// Errors: every call returns Result<T>/Status and never throws. A daemon
// error reply keeps its description as the message and maps its class to a
// code: DeviceNotFound -> ENOENT, DeviceBusy -> EBUSY, CommandNotFound ->
// ENOSYS, GenericError -> EINVAL. Transport failures carry the errno
// (ECONNRESET, EPIPE, ...); after one the Client is unusable.
//
// Freezes: when a freeze or snapshot is taken through the daemon (by another
// connection), the daemon sends FREEZE to every connection holding the
// namespace read-write. The Client's own reader thread handles it without
// the application calling in: it write-protects every live ClientMapping of
// that namespace in this process (stores to them park until thaw; they do
// not crash), calls the freeze handler if one is set, and then acks. THAW
// undoes it, and so does the end of the connection (the Client destroyed, or
// the daemon gone): nothing stays protected without a daemon freeze behind
// it. Protection uses mprotect and a process-wide SIGSEGV handler
// that chains faults it does not own; an application that installs its own
// SIGSEGV handler later replaces it. Kernel-mode writes into a frozen mapping
// (read(2) into it) fail with EFAULT. Mappings the application makes itself
// from fd() are not protected: stop their stores in the freeze handler.
//
// Thread safety: a Client may be used from several threads; calls are
// serialized. ClientNamespace and ClientMapping are move-only owners: use
// each from one thread at a time (the reader thread protects mappings on its
// own; that is safe).
#ifndef RAWDAX_CLIENT_H_
#define RAWDAX_CLIENT_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "rawdax/export.h"
#include "rawdax/mapping.h"
#include "rawdax/result.h"

namespace rawdax {

namespace detail {
class NamespaceProtection;
}

// An asynchronous message from the daemon, e.g. NAMESPACE_REVOKED.
struct ClientEvent {
  std::string name;       // "NAMESPACE_REVOKED", ...
  std::string data_json;  // the event's "data" object as JSON text
};

// A shared mapping of a namespace's fd in this process. Move-only; unmaps in
// its destructor (no thread may store into it meanwhile). A read-write one is
// write-protected while the daemon freezes the namespace. After the daemon
// revokes the namespace, accesses raise SIGBUS (the backing file was
// truncated), as with any truncated file.
class RAWDAX_EXPORT ClientMapping {
 public:
  ClientMapping(ClientMapping&& other) noexcept;
  ClientMapping& operator=(ClientMapping&& other) noexcept;
  ClientMapping(const ClientMapping&) = delete;
  ClientMapping& operator=(const ClientMapping&) = delete;
  ~ClientMapping();

  std::byte* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  friend class ClientNamespace;
  ClientMapping(void* base, size_t mapped, std::byte* data, size_t size)
      : base_(base), mapped_(mapped), data_(data), size_(size) {}
  void reset();
  void* base_ = nullptr;  // page-aligned start of the mmap
  size_t mapped_ = 0;
  std::byte* data_ = nullptr;
  size_t size_ = 0;
  // Set for a read-write mapping: it owns the unmap (key_).
  std::shared_ptr<detail::NamespaceProtection> protection_;
  uint64_t key_ = 0;
};

// A namespace opened through the daemon: owns the backing fd it passed
// (closed in the destructor). The daemon counts this process as a holder
// until release_namespace() or the control connection closes, whatever
// happens to this object.
class RAWDAX_EXPORT ClientNamespace {
 public:
  ClientNamespace(ClientNamespace&& other) noexcept;
  ClientNamespace& operator=(ClientNamespace&& other) noexcept;
  ClientNamespace(const ClientNamespace&) = delete;
  ClientNamespace& operator=(const ClientNamespace&) = delete;
  ~ClientNamespace();

  const std::string& name() const { return name_; }
  uint64_t size() const { return size_; }  // when it was opened
  // Where the namespace starts in fd(): its extent's offset on a carved
  // region (devdax:, file:), where fd() is the whole device; else 0.
  uint64_t offset() const { return offset_; }
  Access access() const { return access_; }
  bool exclusive() const { return exclusive_; }
  int fd() const { return fd_; }  // still owned by this object
  // The open-namespace reply's "return" object (capabilities included).
  const std::string& reply_json() const { return reply_json_; }

  // mmap(MAP_SHARED) of [offset, offset+length): read-write for a ReadWrite
  // open, read-only otherwise. Any offset works (the mapping starts on the
  // page below it). EINVAL for an empty or out-of-range request. A read-write
  // mapping made while the namespace is frozen is born write-protected.
  Result<ClientMapping> map(uint64_t offset, size_t length) const;

  // Gives up the fd: the caller closes it.
  int release_fd();

 private:
  friend class Client;
  ClientNamespace() = default;
  std::string name_;
  uint64_t size_ = 0;
  uint64_t offset_ = 0;
  uint64_t alignment_ = 0;  // the media's mmap granularity
  Access access_ = Access::ReadOnly;
  bool exclusive_ = false;
  int fd_ = -1;
  std::string reply_json_;
  std::shared_ptr<detail::NamespaceProtection> protection_;  // shared with the Client
};

// Told about freezes of namespaces this connection holds read-write: called
// on the Client's reader thread with frozen=true after the library's own
// mappings are protected and before the ack, and with frozen=false after
// they are writable again. It must not call into the Client (its replies are
// read by that same thread); the daemon waits for the ack up to the freeze's
// timeout.
using FreezeHandler = std::function<void(const std::string& name, bool frozen)>;

class RAWDAX_EXPORT Client {
 public:
  // Connects and reads the greeting. Socket paths longer than sun_path are
  // fine. ECONNREFUSED/ENOENT when no daemon listens there.
  static Result<std::unique_ptr<Client>> connect(const std::string& socket_path);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // The greeting's "rawdax" object: {"version":…, "capabilities":[…]}.
  const std::string& greeting_json() const;

  // Runs one command; `arguments_json` is a JSON object (text). Returns the
  // reply's "return" value as JSON text. Events that arrive meanwhile are
  // queued for take_events()/wait_event().
  Result<std::string> execute(std::string_view command, std::string_view arguments_json = "{}");

  // open-namespace: receives the backing fd (O_RDONLY for ReadOnly).
  // EBUSY when another holder has it exclusively, or when `exclusive` and
  // anyone holds it.
  Result<ClientNamespace> open_namespace(std::string_view name, Access access,
                                         bool exclusive = false);
  Status release_namespace(std::string_view name);

  // Events received so far, oldest first; the queue is emptied. FREEZE and
  // THAW are handled by the Client and not queued (see FreezeHandler).
  std::vector<ClientEvent> take_events();
  // The oldest queued event, or waits up to `timeout` for one. ETIMEDOUT.
  Result<ClientEvent> wait_event(std::chrono::milliseconds timeout);

  // Replaces the freeze handler (none by default).
  void set_freeze_handler(FreezeHandler handler);

 private:
  class RAWDAX_NO_EXPORT Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace rawdax

#endif  // RAWDAX_CLIENT_H_
