// HolderFreezes: the holder side of the freezes the control socket takes
// (docs/control.md, "Freezes and the holders' mappings"). A holder's stores
// through its own mapping of the passed fd never go through the daemon, so a
// `freeze` or `snapshot` first has every other connection that holds the
// namespace read-write write-protect its mappings, and keeps them so until
// the freeze ends.
//
// The protocol, per namespace:
// - The outermost freeze (none in effect) takes a new token, sends
//   {"event":"FREEZE","data":{"name","token"}} to every holder the Table
//   lists as writable, except the connection freezing (`self`) and the
//   connections marked busy (BusyMark: inside a freeze or snapshot of the
//   namespace themselves, their thread cannot ack), stops the processes a
//   forced freeze revoked earlier (without asking), and waits until each
//   asked connection has acked (ack()) or ended (connection_ended_locked()),
//   or the deadline passes. While it waits the namespace is `settling`.
// - A freeze that comes while another is in effect only counts depth; one
//   that comes while the outermost is settling waits for its outcome first
//   (up to its own deadline: ETIMEDOUT), then nests or, if it failed, is the
//   outermost itself.
// - At the deadline, without `force`, the freeze fails with EBUSY naming the
//   pids that did not ack, and is undone: THAW goes to everyone asked. With
//   `force` they are revoked: each process is stopped (ProcessStops: every
//   thread stopped) before the freeze returns, its open ends
//   (Table::revoke_locked), it is sent {"event":"NAMESPACE_REVOKED",
//   "data":{"name","reason":"freeze"}}, and its pid is returned. While its
//   connection lives, every later outermost freeze of the namespace stops it
//   again, unasked.
// - A connection that opens the namespace read-write while it is frozen
//   (settling included) joins the asked (holder_opened_locked()): it gets the
//   token with its open and the THAW.
// - The last HolderFreeze share of the namespace to end sends
//   {"event":"THAW","data":{"name","token"}} to every connection asked and
//   continues the processes stopped for it.
// - A connection's end (connection_ended_locked()) counts as its ack, and it
//   is sent nothing more and stopped no more.
//
// Thread safety and lock order: all state is guarded by ONE mutex, `mu`,
// which the owner passes in and which also guards the owner's holder table
// (the Dispatcher's namespace table). Methods named *_locked must be called
// with `mu` held; all others take it themselves, so they must not be called
// with it held. Table methods and the log function are called with `mu` held
// and must not take it or call back into this object. Under `mu`, events go
// out through Peer::send() (which takes only the peer's write lock) and
// processes are stopped and continued through ProcessStops (its own mutex;
// a stop waits at most 2 s for the process's threads). So the order is
//   mu -> Peer write lock,   mu -> ProcessStops' mutex,
// and neither of those is ever held while taking `mu`. Why one lock: the
// holders a freeze asks must be exactly those in the table when it starts,
// and a holder that opens afterwards must join the asked in the same
// critical section in which it joins the table; with the table under `mu`
// too, both are atomic without a second lock to order. The waits (for a
// settling freeze, for acks) release `mu` on a condition variable; every
// state change they wait for (an ack, a connection's end, a freeze settling
// or undone) happens under `mu` and notifies it, and each wait rechecks its
// predicate, so no wake-up is lost.
//
// Ownership: the owner keeps `mu`, the Table and this object alive for as
// long as any HolderFreeze share or BusyMark of it exists (the Dispatcher
// destroys its connections' Sessions first). This object keeps a reference
// (shared_ptr) to every Peer asked or revoked until the THAW or the end of
// its connection. Destroying it continues every process still stopped.
//
// What may fail: freeze() (EBUSY: holders that did not ack without `force`,
// or a holder that could not be stopped; ETIMEDOUT: an earlier freeze still
// settling at the deadline), ack() (EINVAL: no such freeze waits for this
// connection's ack). A failed send is logged and otherwise ignored: that
// holder cannot ack, and the freeze waits for its connection's end or the
// deadline. Nothing else fails.
#ifndef RAWDAX_DAEMON_HOLDER_FREEZES_H_
#define RAWDAX_DAEMON_HOLDER_FREEZES_H_

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "daemon/peer.h"
#include "daemon/process_stops.h"
#include "rawdax/result.h"

namespace rawdax::control {

// One log line per event (the daemon's log); may be empty where a log is
// optional. Called from any thread: it must be thread-safe.
using LogFn = std::function<void(const std::string&)>;

class HolderFreezes;

// One share of the holder freeze of a namespace: the holders stay
// write-protected while any share lives. Move-only; ending it (destruction
// or end()) ends this share, and the last one sends THAW. Must end before
// its HolderFreezes is destroyed; end() takes the HolderFreezes' mutex.
class HolderFreeze {
 public:
  HolderFreeze() = default;
  HolderFreeze(HolderFreeze&& other) noexcept
      : owner_(std::exchange(other.owner_, nullptr)), name_(std::move(other.name_)) {}
  HolderFreeze& operator=(HolderFreeze&& other) noexcept {
    if (this != &other) {
      end();
      owner_ = std::exchange(other.owner_, nullptr);
      name_ = std::move(other.name_);
    }
    return *this;
  }
  HolderFreeze(const HolderFreeze&) = delete;
  HolderFreeze& operator=(const HolderFreeze&) = delete;
  ~HolderFreeze() { end(); }
  void end();

 private:
  friend class HolderFreezes;
  HolderFreeze(HolderFreezes* owner, std::string name) : owner_(owner), name_(std::move(name)) {}
  HolderFreezes* owner_ = nullptr;
  std::string name_;
};

class HolderFreezes {
 public:
  // The owner's holder table, read and changed with `mu` held.
  class Table {
   public:
    // The connections holding `name` read-write now, in open order.
    virtual std::vector<std::shared_ptr<Peer>> writable_holders_locked(
        const std::string& name) = 0;
    // Ends `peer`'s open of `name` (a forced freeze revoked it); nothing if
    // it holds none (the namespace may be gone meanwhile).
    virtual void revoke_locked(const std::string& name, const std::shared_ptr<Peer>& peer) = 0;

   protected:
    ~Table() = default;
  };

  // How long a revoked holder's process may take to stop (all its threads).
  static constexpr std::chrono::milliseconds kStopLimit{2000};

  // `mu` guards `table` and this object (see the lock order above); both
  // must outlive it. `log` may be empty.
  HolderFreezes(std::mutex& mu, Table& table, LogFn log);
  ~HolderFreezes();
  HolderFreezes(const HolderFreezes&) = delete;
  HolderFreezes& operator=(const HolderFreezes&) = delete;

  // Marks connection `peer_id` as inside a freeze or snapshot of `name` for
  // its lifetime: its thread cannot ack, so no freeze asks it. Takes `mu` in
  // its constructor and destructor.
  class BusyMark {
   public:
    BusyMark(HolderFreezes& owner, const std::string& name, uint64_t peer_id);
    ~BusyMark();
    BusyMark(const BusyMark&) = delete;
    BusyMark& operator=(const BusyMark&) = delete;

   private:
    HolderFreezes& owner_;
    std::multimap<std::string, uint64_t, std::less<>>::iterator it_;
  };

  // Freezes the holders of `name` other than `self` (see the protocol
  // above), waiting on `mu` until `deadline`; returns this freeze's share.
  // `revoked` receives the pids revoked by `force`. Errors: EBUSY naming the
  // pids that did not ack ("...; force revokes them"), or a pid that could
  // not be stopped; ETIMEDOUT if an earlier freeze still settles at the
  // deadline. A failed freeze leaves nothing frozen by it.
  Result<HolderFreeze> freeze(const std::string& name, const std::shared_ptr<Peer>& self,
                              std::chrono::steady_clock::time_point deadline, bool force,
                              std::vector<pid_t>* revoked);

  // `peer`'s freeze-ack of `name` with `token`. EINVAL unless the freeze of
  // `name` with that token waits for this connection's ack.
  Status ack(const std::shared_ptr<Peer>& peer, const std::string& name, uint64_t token);

  // `peer` opened `name` read-write (and joined the table, under the same
  // hold of `mu`). While the namespace is frozen it joins the asked, to be
  // sent THAW, and the freeze's token is returned for its open reply.
  std::optional<uint64_t> holder_opened_locked(const std::string& name,
                                               const std::shared_ptr<Peer>& peer);

  // `peer`'s connection ended: it acks nothing more, is sent nothing more,
  // and is no longer stopped for later freezes. Wakes the waiting freezes.
  void connection_ended_locked(const std::shared_ptr<Peer>& peer);

 private:
  friend class HolderFreeze;
  // The holder side of the freezes of one namespace, while any is in effect.
  struct NamespaceState {
    int depth = 0;          // freezes in effect, the one settling included
    bool settling = false;  // the outermost freeze is waiting for acks
    uint64_t token = 0;     // of the outermost freeze: FREEZE, acks and THAW carry it
    std::vector<std::shared_ptr<Peer>> asked;  // sent FREEZE (or opened while frozen)
    std::set<uint64_t> waiting;                // peer ids whose ack is due
    std::vector<pid_t> stopped;                // stopped for this freeze
  };

  // Ends one share of `name`'s freeze; the last sends THAW.
  void thaw(const std::string& name);
  // Sends THAW for `state` and continues its stopped processes. mu held.
  void release_locked(const std::string& name, NamespaceState& state);

  std::mutex& mu_;
  Table& table_;
  LogFn log_;
  std::condition_variable cv_;  // with mu_: acks, ended connections, settled freezes
  std::map<std::string, NamespaceState, std::less<>> namespaces_;  // guarded by mu_
  // Connections inside a freeze or snapshot of a namespace (BusyMark), by
  // namespace. Guarded by mu_.
  std::multimap<std::string, uint64_t, std::less<>> busy_;
  // Connections revoked by a forced freeze, stopped during each later freeze
  // of the namespace until their connection ends. Guarded by mu_.
  std::multimap<std::string, std::shared_ptr<Peer>, std::less<>> revoked_;
  uint64_t next_token_ = 1;  // guarded by mu_
  ProcessStops stops_;       // thread-safe itself; used under mu_
};

}  // namespace rawdax::control

#endif  // RAWDAX_DAEMON_HOLDER_FREEZES_H_
