#include "daemon/holder_freezes.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <utility>

namespace rawdax::control {
namespace {

using json = nlohmann::json;

// An event line. Never throws: a name may be invalid UTF-8.
std::string event_line(const char* event, const json& data) {
  return json{{"event", event}, {"data", data}}.dump(-1, ' ', false,
                                                     json::error_handler_t::replace);
}

std::string pid_text(const std::vector<pid_t>& pids) {
  std::string out;
  for (pid_t p : pids) out += (out.empty() ? "" : ", ") + std::to_string(p);
  return out;
}

}  // namespace

void HolderFreeze::end() {
  if (owner_ != nullptr) std::exchange(owner_, nullptr)->thaw(name_);
}

HolderFreezes::HolderFreezes(std::mutex& mu, Table& table, LogFn log)
    : mu_(mu), table_(table), log_(std::move(log)) {
  if (!log_) log_ = [](const std::string&) {};
}

HolderFreezes::~HolderFreezes() = default;

HolderFreezes::BusyMark::BusyMark(HolderFreezes& owner, const std::string& name,
                                  uint64_t peer_id)
    : owner_(owner) {
  std::lock_guard<std::mutex> lock(owner_.mu_);
  it_ = owner_.busy_.emplace(name, peer_id);
}

HolderFreezes::BusyMark::~BusyMark() {
  std::lock_guard<std::mutex> lock(owner_.mu_);
  owner_.busy_.erase(it_);
}

Result<HolderFreeze> HolderFreezes::freeze(const std::string& name,
                                           const std::shared_ptr<Peer>& self,
                                           std::chrono::steady_clock::time_point deadline,
                                           bool force, std::vector<pid_t>* revoked) {
  std::unique_lock<std::mutex> lock(mu_);
  // An outermost freeze still collecting acks decides whether this one nests.
  for (;;) {
    auto it = namespaces_.find(name);
    if (it == namespaces_.end() || !it->second.settling) break;
    if (cv_.wait_until(lock, deadline) == std::cv_status::timeout) {
      it = namespaces_.find(name);
      if (it != namespaces_.end() && it->second.settling) {
        return Error(std::errc::timed_out, "freeze of namespace " + name +
                                               ": an earlier freeze is still waiting for the "
                                               "holders' acks");
      }
    }
  }
  NamespaceState& st = namespaces_[name];
  if (st.depth > 0) {
    ++st.depth;
    return HolderFreeze(this, name);
  }
  st.depth = 1;
  st.settling = true;
  st.token = next_token_++;
  // `st` stays valid while mu_ is released in the waits below: only the
  // outermost freeze (this one) or its last share erases the entry, and
  // other freezes of `name` wait for `settling` to end first.
  auto fail = [&](Error error) -> Result<HolderFreeze> {
    release_locked(name, st);
    namespaces_.erase(name);
    cv_.notify_all();
    return error;
  };

  auto [busy_begin, busy_end] = busy_.equal_range(name);
  for (const auto& peer : table_.writable_holders_locked(name)) {
    if (peer == self) continue;
    bool busy = std::any_of(busy_begin, busy_end,
                            [&](const auto& entry) { return entry.second == peer->id(); });
    if (busy) continue;
    st.asked.push_back(peer);
    st.waiting.insert(peer->id());
  }
  const std::string event = event_line("FREEZE", {{"name", name}, {"token", st.token}});
  for (const auto& peer : st.asked) {
    Status sent = peer->send(event);
    // That holder cannot ack: the wait ends with its connection or the timeout.
    if (!sent) log_("FREEZE to pid " + std::to_string(peer->pid()) + " failed: " +
                    sent.error().message());
  }
  // Holders revoked earlier are stopped without asking. (Under mu_: a stop
  // takes microseconds unless the process is slow to stop, bounded by
  // kStopLimit.)
  auto [rb, re] = revoked_.equal_range(name);
  for (auto it = rb; it != re; ++it) {
    pid_t pid = it->second->pid();
    Status stopped = stops_.stop(pid, kStopLimit);
    if (!stopped) {
      return fail(Error(std::errc::device_or_resource_busy,
                        "freeze of namespace " + name + ": revoked pid " + std::to_string(pid) +
                            " could not be stopped: " + stopped.error().message()));
    }
    st.stopped.push_back(pid);
  }

  // Each ack (or a connection's end) notifies; the predicate rechecks.
  cv_.wait_until(lock, deadline, [&] { return st.waiting.empty(); });
  if (!st.waiting.empty()) {
    std::vector<std::shared_ptr<Peer>> late;
    for (const auto& peer : st.asked) {
      if (st.waiting.count(peer->id()) != 0) late.push_back(peer);
    }
    std::vector<pid_t> late_pids;
    for (const auto& peer : late) late_pids.push_back(peer->pid());
    const std::string what = "freeze of namespace " + name + ": pid(s) " + pid_text(late_pids) +
                             " did not acknowledge FREEZE in time";
    if (!force) {
      log_(what);
      return fail(Error(std::errc::device_or_resource_busy, what + "; force revokes them"));
    }
    // Revoke: stop the process first, so that its stores have ended when the
    // freeze returns; then its open ends and it hears why.
    for (const auto& peer : late) {
      Status stopped = stops_.stop(peer->pid(), kStopLimit);
      if (!stopped) {
        return fail(Error(std::errc::device_or_resource_busy,
                          what + ", and pid " + std::to_string(peer->pid()) +
                              " cannot be revoked: " + stopped.error().message()));
      }
      st.stopped.push_back(peer->pid());
    }
    const std::string revoked_event =
        event_line("NAMESPACE_REVOKED", {{"name", name}, {"reason", "freeze"}});
    for (const auto& peer : late) {
      // mu_ was released while waiting: the namespace may be gone (destroyed).
      table_.revoke_locked(name, peer);
      revoked_.emplace(name, peer);
      (void)peer->send(revoked_event);
      revoked->push_back(peer->pid());
    }
    st.waiting.clear();
    log_(what + "; revoked, and stopped until the thaw");
  }
  st.settling = false;
  cv_.notify_all();
  return HolderFreeze(this, name);
}

void HolderFreezes::thaw(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = namespaces_.find(name);
  if (it == namespaces_.end() || --it->second.depth > 0) return;
  release_locked(name, it->second);
  namespaces_.erase(it);
}

void HolderFreezes::release_locked(const std::string& name, NamespaceState& st) {
  const std::string event = event_line("THAW", {{"name", name}, {"token", st.token}});
  for (const auto& peer : st.asked) (void)peer->send(event);
  for (pid_t pid : st.stopped) stops_.resume(pid);
  st.asked.clear();
  st.stopped.clear();
  st.waiting.clear();
}

Status HolderFreezes::ack(const std::shared_ptr<Peer>& peer, const std::string& name,
                          uint64_t token) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = namespaces_.find(name);
  if (it == namespaces_.end() || it->second.token != token ||
      it->second.waiting.erase(peer->id()) == 0) {
    return Error(std::errc::invalid_argument,
                 "freeze-ack: no freeze of namespace " + name + " with token " +
                     std::to_string(token) + " waits for this connection's ack");
  }
  cv_.notify_all();
  return ok();
}

std::optional<uint64_t> HolderFreezes::holder_opened_locked(const std::string& name,
                                                            const std::shared_ptr<Peer>& peer) {
  auto frozen = namespaces_.find(name);
  if (frozen == namespaces_.end()) return std::nullopt;
  auto& asked = frozen->second.asked;
  if (std::find(asked.begin(), asked.end(), peer) == asked.end()) asked.push_back(peer);
  return frozen->second.token;
}

void HolderFreezes::connection_ended_locked(const std::shared_ptr<Peer>& peer) {
  for (auto& [name, st] : namespaces_) {
    st.waiting.erase(peer->id());
    std::erase(st.asked, peer);
  }
  std::erase_if(revoked_, [&](const auto& entry) { return entry.second == peer; });
  cv_.notify_all();
}

}  // namespace rawdax::control
