// HolderFreezes driven directly: Peers over socketpairs stand for the
// holders' connections (the test reads their FREEZE, THAW and
// NAMESPACE_REVOKED events from the other end and acks for them), and a
// small table under the test's mutex stands for the Dispatcher's.
#include "daemon/holder_freezes.h"

#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <future>
#include <gtest/gtest.h>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "client/protocol.h"

namespace rawdax {
namespace {

using json = nlohmann::json;
using control::HolderFreeze;
using control::HolderFreezes;
using control::Peer;
using Clock = std::chrono::steady_clock;

// How long a test waits for something that must happen; it is never reached
// when the code works.
constexpr auto kLong = std::chrono::seconds(20);
// The deadline of a freeze that is meant to run out (a silent holder).
constexpr auto kShort = std::chrono::milliseconds(300);
// The deadline of one that runs out while another holder acks in time.
constexpr auto kAckTime = std::chrono::seconds(3);

// One holder's connection: the Peer the daemon side writes to, and the
// client's end of its socket.
class TestPeer {
 public:
  TestPeer(uint64_t id, pid_t pid) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      ADD_FAILURE() << "socketpair: " << std::strerror(errno);
      return;
    }
    client_.reset(sv[1]);
    timeval tv{static_cast<time_t>(kLong.count()), 0};  // a missing line fails, never hangs
    ::setsockopt(client_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    peer = std::make_shared<Peer>(id, internal::UniqueFd(sv[0]), pid, ::getuid());
  }

  // The next event line, parsed; discarded on EOF or timeout.
  json read() {
    auto line = reader_.read_line(client_.get());
    if (!line) return json(json::value_t::discarded);
    return json::parse(*line, nullptr, false);
  }
  // Whether a line has been sent and not read yet. Events are sent before
  // the call that sends them returns, so this is exact once it has.
  bool pending() {
    if (reader_.has_line()) return true;
    pollfd p{client_.get(), POLLIN, 0};
    return ::poll(&p, 1, 0) > 0;
  }

  std::shared_ptr<Peer> peer;

 private:
  internal::UniqueFd client_;
  control::LineReader reader_{control::kMaxReplyLine};
};

json event(const char* name, const json& data) { return {{"event", name}, {"data", data}}; }

// Which connections hold which namespace, as the Dispatcher's table would.
// Guarded by the mutex passed to HolderFreezes.
class TestTable : public HolderFreezes::Table {
 public:
  void add(const std::string& name, const std::shared_ptr<Peer>& peer, bool writable) {
    holders_[name].push_back({peer, writable});
  }
  void remove(const std::shared_ptr<Peer>& peer) {
    for (auto& [name, list] : holders_) {
      std::erase_if(list, [&](const Entry& e) { return e.peer == peer; });
    }
  }
  bool holds(const std::string& name, const std::shared_ptr<Peer>& peer) const {
    auto it = holders_.find(name);
    if (it == holders_.end()) return false;
    return std::any_of(it->second.begin(), it->second.end(),
                       [&](const Entry& e) { return e.peer == peer; });
  }
  std::vector<std::shared_ptr<Peer>> writable_holders_locked(const std::string& name) override {
    std::vector<std::shared_ptr<Peer>> out;
    for (const Entry& e : holders_[name]) {
      if (e.writable) out.push_back(e.peer);
    }
    return out;
  }
  void revoke_locked(const std::string& name, const std::shared_ptr<Peer>& peer) override {
    std::erase_if(holders_[name], [&](const Entry& e) { return e.peer == peer; });
  }

 private:
  struct Entry {
    std::shared_ptr<Peer> peer;
    bool writable;
  };
  std::map<std::string, std::vector<Entry>> holders_;
};

class HolderFreezesTest : public ::testing::Test {
 protected:
  HolderFreezesTest()
      : freezes_(mu_, table_, [this](const std::string& line) {
          std::lock_guard<std::mutex> lock(log_mu_);
          log_.push_back(line);
        }) {}

  std::unique_ptr<TestPeer> holder(const std::string& name, bool writable, pid_t pid = 0) {
    uint64_t id = next_id_++;
    auto p = std::make_unique<TestPeer>(id, pid != 0 ? pid : 40000 + static_cast<pid_t>(id));
    std::lock_guard<std::mutex> lock(mu_);
    table_.add(name, p->peer, writable);
    return p;
  }
  // A connection that ends: it leaves the table and the protocol at once,
  // as Dispatcher::end_session does.
  void end_connection(const std::shared_ptr<Peer>& peer) {
    std::lock_guard<std::mutex> lock(mu_);
    freezes_.connection_ended_locked(peer);
    table_.remove(peer);
  }
  std::future<Result<HolderFreeze>> freeze_async(const std::string& name,
                                                 const std::shared_ptr<Peer>& self,
                                                 Clock::duration limit, bool force = false,
                                                 std::vector<pid_t>* revoked = nullptr) {
    return std::async(std::launch::async, [=, this] {
      std::vector<pid_t> ignored;
      return freezes_.freeze(name, self, Clock::now() + limit, force,
                             revoked != nullptr ? revoked : &ignored);
    });
  }
  Result<HolderFreeze> freeze_now(const std::string& name, const std::shared_ptr<Peer>& self) {
    std::vector<pid_t> revoked;
    auto f = freezes_.freeze(name, self, Clock::now() + kLong, false, &revoked);
    EXPECT_TRUE(revoked.empty());
    return f;
  }
  bool logged(const std::string& line) {
    std::lock_guard<std::mutex> lock(log_mu_);
    return std::find(log_.begin(), log_.end(), line) != log_.end();
  }

  std::mutex mu_;
  TestTable table_;
  std::mutex log_mu_;
  std::vector<std::string> log_;
  HolderFreezes freezes_;
  uint64_t next_id_ = 1;
};

// The token of a FREEZE event for `name`; 0 (and a failure) for any other line.
uint64_t freeze_token(const json& e, const std::string& name) {
  EXPECT_TRUE(e.is_object() && e.value("event", "") == "FREEZE" &&
              e["data"].value("name", "") == name && e["data"]["token"].is_number_unsigned())
      << e;
  if (!e.is_object() || !e.contains("data") || !e["data"].contains("token")) return 0;
  return e["data"]["token"].get<uint64_t>();
}

bool ready(std::future<Result<HolderFreeze>>& f) {
  return f.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
}

TEST_F(HolderFreezesTest, AsksEveryWritableHolderButItselfAndBusyOnesAndReturnsOnceAllAck) {
  auto self = holder("ns", true);
  auto a = holder("ns", true);
  auto b = holder("ns", true);
  auto reader = holder("ns", false);
  auto busy = holder("ns", true);
  auto elsewhere = holder("other", true);
  // Busy only for "ns": a mark on "other" does not spare it here.
  HolderFreezes::BusyMark mark(freezes_, "ns", busy->peer->id());
  HolderFreezes::BusyMark other_mark(freezes_, "other", a->peer->id());

  auto f = freeze_async("ns", self->peer, kLong);
  uint64_t token = freeze_token(a->read(), "ns");
  ASSERT_NE(token, 0u);
  EXPECT_EQ(freeze_token(b->read(), "ns"), token);
  ASSERT_TRUE(freezes_.ack(a->peer, "ns", token));
  EXPECT_FALSE(ready(f)) << "returned with b's ack outstanding";
  ASSERT_TRUE(freezes_.ack(b->peer, "ns", token));
  auto share = f.get();
  ASSERT_TRUE(share) << share.error().message();
  for (TestPeer* p : {self.get(), reader.get(), busy.get(), elsewhere.get()}) {
    EXPECT_FALSE(p->pending()) << "pid " << p->peer->pid() << " was sent " << p->read();
  }

  share->end();
  json thaw = event("THAW", {{"name", "ns"}, {"token", token}});
  EXPECT_EQ(a->read(), thaw);
  EXPECT_EQ(b->read(), thaw);
  for (TestPeer* p : {self.get(), reader.get(), busy.get(), elsewhere.get(), a.get(), b.get()}) {
    EXPECT_FALSE(p->pending()) << "pid " << p->peer->pid() << " was sent " << p->read();
  }
  // Ended: nothing is frozen, and the next outermost freeze has a new token.
  {
    std::lock_guard<std::mutex> lock(mu_);
    EXPECT_EQ(freezes_.holder_opened_locked("ns", a->peer), std::nullopt);
  }
  auto again = freeze_async("ns", self->peer, kLong);
  uint64_t next = freeze_token(a->read(), "ns");
  EXPECT_GT(next, token);
  EXPECT_TRUE(freezes_.ack(a->peer, "ns", next));
  EXPECT_EQ(freeze_token(b->read(), "ns"), next);
  EXPECT_TRUE(freezes_.ack(b->peer, "ns", next));
  EXPECT_TRUE(again.get());
}

TEST_F(HolderFreezesTest, AnAckWithAWrongTokenOrFromAnotherConnectionIsRefused) {
  auto self = holder("ns", true);
  auto a = holder("ns", true);
  auto reader = holder("ns", false);
  auto f = freeze_async("ns", self->peer, kLong);
  uint64_t token = freeze_token(a->read(), "ns");
  ASSERT_NE(token, 0u);

  Status wrong = freezes_.ack(a->peer, "ns", token + 1);
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code(), std::errc::invalid_argument);
  EXPECT_EQ(wrong.error().message(), "freeze-ack: no freeze of namespace ns with token " +
                                         std::to_string(token + 1) +
                                         " waits for this connection's ack");
  EXPECT_FALSE(freezes_.ack(reader->peer, "ns", token));  // not asked
  EXPECT_FALSE(freezes_.ack(self->peer, "ns", token));    // the one freezing
  EXPECT_FALSE(freezes_.ack(a->peer, "other", token));    // nothing frozen there
  EXPECT_FALSE(ready(f)) << "a refused ack counted";

  EXPECT_TRUE(freezes_.ack(a->peer, "ns", token));
  auto share = f.get();
  ASSERT_TRUE(share) << share.error().message();
  EXPECT_FALSE(freezes_.ack(a->peer, "ns", token)) << "acked twice";
}

TEST_F(HolderFreezesTest, AHolderThatNeverAcksFailsTheFreezeAndEveryoneAskedIsThawed) {
  auto self = holder("ns", true);
  auto a = holder("ns", true);
  auto silent = holder("ns", true);
  auto f = freeze_async("ns", self->peer, kAckTime);
  uint64_t token = freeze_token(a->read(), "ns");
  ASSERT_TRUE(freezes_.ack(a->peer, "ns", token));
  EXPECT_EQ(freeze_token(silent->read(), "ns"), token);

  auto share = f.get();
  ASSERT_FALSE(share);
  EXPECT_EQ(share.error().code(), std::errc::device_or_resource_busy);
  const std::string what = "freeze of namespace ns: pid(s) " +
                           std::to_string(silent->peer->pid()) +
                           " did not acknowledge FREEZE in time";
  EXPECT_EQ(share.error().message(), what + "; force revokes them");
  EXPECT_TRUE(logged(what));
  json thaw = event("THAW", {{"name", "ns"}, {"token", token}});
  EXPECT_EQ(a->read(), thaw);
  EXPECT_EQ(silent->read(), thaw);
  EXPECT_FALSE(self->pending());
  // Nothing is left frozen, and the silent holder was not revoked.
  std::lock_guard<std::mutex> lock(mu_);
  EXPECT_TRUE(table_.holds("ns", silent->peer));
  EXPECT_EQ(freezes_.holder_opened_locked("ns", a->peer), std::nullopt);
}

TEST_F(HolderFreezesTest, AHolderWhoseConnectionEndsWhileAwaitedLetsTheFreezeComplete) {
  auto self = holder("ns", true);
  auto a = holder("ns", true);
  auto gone = holder("ns", true);
  auto f = freeze_async("ns", self->peer, kLong);
  uint64_t token = freeze_token(a->read(), "ns");
  ASSERT_TRUE(freezes_.ack(a->peer, "ns", token));
  EXPECT_EQ(freeze_token(gone->read(), "ns"), token);
  EXPECT_FALSE(ready(f));
  end_connection(gone->peer);
  auto share = f.get();
  ASSERT_TRUE(share) << share.error().message();
  // An ended connection is sent nothing more.
  share->end();
  EXPECT_EQ(a->read(), event("THAW", {{"name", "ns"}, {"token", token}}));
  EXPECT_FALSE(gone->pending()) << gone->read();
}

TEST_F(HolderFreezesTest, NestedFreezesSendOneFreezeAndOneThawOnTheLastEnd) {
  auto first = holder("ns", true);
  auto second = holder("ns", true);
  auto a = holder("ns", true);
  auto f = freeze_async("ns", first->peer, kLong);
  // Asked: `second` and `a`.
  uint64_t token = freeze_token(a->read(), "ns");
  EXPECT_EQ(freeze_token(second->read(), "ns"), token);
  // A nested freeze while the outermost settles waits for its outcome...
  auto nested = freeze_async("ns", second->peer, kLong);
  ASSERT_TRUE(freezes_.ack(a->peer, "ns", token));
  EXPECT_FALSE(ready(nested)) << "nested before the outermost settled";
  ASSERT_TRUE(freezes_.ack(second->peer, "ns", token));
  auto outer = f.get();
  ASSERT_TRUE(outer) << outer.error().message();
  // ...and then nests: it asks no one.
  auto inner = nested.get();
  ASSERT_TRUE(inner) << inner.error().message();
  auto third = freeze_now("ns", a->peer);
  ASSERT_TRUE(third) << third.error().message();
  for (TestPeer* p : {first.get(), second.get(), a.get()}) EXPECT_FALSE(p->pending());

  // Shares end in any order; only the last sends THAW.
  outer->end();
  third->end();
  for (TestPeer* p : {first.get(), second.get(), a.get()}) EXPECT_FALSE(p->pending());
  HolderFreeze moved = std::move(*inner);
  inner->end();  // moved from: ends nothing
  for (TestPeer* p : {first.get(), second.get(), a.get()}) EXPECT_FALSE(p->pending());
  moved = HolderFreeze();  // assigning ends the share it held
  json thaw = event("THAW", {{"name", "ns"}, {"token", token}});
  EXPECT_EQ(a->read(), thaw);
  EXPECT_EQ(second->read(), thaw);
  EXPECT_FALSE(first->pending());
}

TEST_F(HolderFreezesTest, AFreezeBehindOneThatStillSettlesAtItsDeadlineIsTimedOut) {
  auto self = holder("ns", true);
  auto silent = holder("ns", true);
  auto f = freeze_async("ns", self->peer, kLong);
  uint64_t token = freeze_token(silent->read(), "ns");
  std::vector<pid_t> revoked;
  auto behind = freezes_.freeze("ns", self->peer, Clock::now() + kShort, false, &revoked);
  ASSERT_FALSE(behind);
  EXPECT_EQ(behind.error().code(), std::errc::timed_out);
  EXPECT_EQ(behind.error().message(),
            "freeze of namespace ns: an earlier freeze is still waiting for the holders' acks");
  // The outermost is untouched by it.
  EXPECT_FALSE(silent->pending());
  ASSERT_TRUE(freezes_.ack(silent->peer, "ns", token));
  auto share = f.get();
  ASSERT_TRUE(share) << share.error().message();
  share->end();
  EXPECT_EQ(silent->read(), event("THAW", {{"name", "ns"}, {"token", token}}));
}

TEST_F(HolderFreezesTest, AHolderOpeningWhileFrozenGetsTheTokenAndTheThaw) {
  auto self = holder("ns", true);
  auto a = holder("ns", true);
  {
    std::lock_guard<std::mutex> lock(mu_);
    EXPECT_EQ(freezes_.holder_opened_locked("ns", a->peer), std::nullopt);  // not frozen
  }
  auto f = freeze_async("ns", self->peer, kLong);
  uint64_t token = freeze_token(a->read(), "ns");
  // Opened while the freeze settles: it gets the token, and is not awaited.
  auto early = std::make_unique<TestPeer>(100, 4100);
  {
    std::lock_guard<std::mutex> lock(mu_);
    table_.add("ns", early->peer, true);
    EXPECT_EQ(freezes_.holder_opened_locked("ns", early->peer), token);
  }
  ASSERT_TRUE(freezes_.ack(a->peer, "ns", token));
  auto share = f.get();
  ASSERT_TRUE(share) << share.error().message();
  // Opened while frozen.
  auto late = std::make_unique<TestPeer>(101, 4101);
  {
    std::lock_guard<std::mutex> lock(mu_);
    table_.add("ns", late->peer, true);
    EXPECT_EQ(freezes_.holder_opened_locked("ns", late->peer), token);
    // Told once, even if it opens again.
    EXPECT_EQ(freezes_.holder_opened_locked("ns", late->peer), token);
  }
  EXPECT_FALSE(early->pending());
  EXPECT_FALSE(late->pending());
  share->end();
  json thaw = event("THAW", {{"name", "ns"}, {"token", token}});
  EXPECT_EQ(a->read(), thaw);
  EXPECT_EQ(early->read(), thaw);
  EXPECT_EQ(late->read(), thaw);
  EXPECT_FALSE(late->pending()) << late->read();
}

// A process's state letter from /proc/PID/stat ("pid (comm) S ..."; comm may
// hold spaces and parentheses); 0 if it cannot be read.
char process_state(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t paren = text.rfind(')');
  if (paren == std::string::npos || paren + 2 >= text.size()) return 0;
  return text[paren + 2];
}

// Waits (bounded) until the process is out of the stopped state: SIGCONT
// wakes it, and the state letter changes when it runs.
bool continues(pid_t pid) {
  auto until = Clock::now() + kLong;
  while (process_state(pid) == 'T') {
    if (Clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return process_state(pid) != 0;
}

// A child that only sleeps: it plays a holder's process. Exec'd, so nothing
// of this (multi-threaded) test runs in it; killed if the test dies.
class SleepingChild {
 public:
  SleepingChild() {
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      ::execlp("sleep", "sleep", "600", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    // Wait until it is sleeping in `sleep`, not still in this image.
    auto until = Clock::now() + kLong;
    while (pid_ > 0 && Clock::now() < until) {
      std::ifstream comm("/proc/" + std::to_string(pid_) + "/comm");
      std::string name;
      std::getline(comm, name);
      if (name == "sleep" && process_state(pid_) == 'S') break;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  ~SleepingChild() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status;
    ::waitpid(pid_, &status, 0);
  }
  SleepingChild(const SleepingChild&) = delete;
  SleepingChild& operator=(const SleepingChild&) = delete;
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_;
};

TEST_F(HolderFreezesTest, ForceRevokesASilentHolderAndStopsItUntilEachThawWhileConnected) {
  SleepingChild child;
  ASSERT_GT(child.pid(), 0);
  ASSERT_EQ(process_state(child.pid()), 'S');
  auto self = holder("ns", true);
  auto silent = holder("ns", true, child.pid());

  std::vector<pid_t> revoked;
  auto f = freeze_async("ns", self->peer, kShort, /*force=*/true, &revoked);
  uint64_t token = freeze_token(silent->read(), "ns");
  auto share = f.get();
  ASSERT_TRUE(share) << share.error().message();
  EXPECT_EQ(revoked, std::vector<pid_t>{child.pid()});
  EXPECT_EQ(silent->read(),
            event("NAMESPACE_REVOKED", {{"name", "ns"}, {"reason", "freeze"}}));
  EXPECT_TRUE(logged("freeze of namespace ns: pid(s) " + std::to_string(child.pid()) +
                     " did not acknowledge FREEZE in time; revoked, and stopped until the thaw"));
  {
    std::lock_guard<std::mutex> lock(mu_);
    EXPECT_FALSE(table_.holds("ns", silent->peer));  // its open ended
  }
  // Stopped before the freeze returned, and until it ends.
  EXPECT_EQ(process_state(child.pid()), 'T');
  share->end();
  EXPECT_EQ(silent->read(), event("THAW", {{"name", "ns"}, {"token", token}}));
  EXPECT_TRUE(continues(child.pid()));

  // No longer a holder, so not asked; but stopped again, unasked, by the
  // next freeze of the namespace while its connection lives.
  auto again = freeze_now("ns", self->peer);
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(process_state(child.pid()), 'T');
  EXPECT_FALSE(silent->pending()) << silent->read();
  // Another namespace's freeze does not stop it.
  again->end();
  EXPECT_TRUE(continues(child.pid()));
  auto elsewhere = freeze_now("other", self->peer);
  ASSERT_TRUE(elsewhere);
  EXPECT_NE(process_state(child.pid()), 'T');
  elsewhere->end();

  // Once its connection ends it is left alone.
  end_connection(silent->peer);
  auto after = freeze_now("ns", self->peer);
  ASSERT_TRUE(after) << after.error().message();
  EXPECT_NE(process_state(child.pid()), 'T');
  after->end();
  EXPECT_FALSE(silent->pending()) << silent->read();
}

TEST_F(HolderFreezesTest, AProcessThatCannotBeStoppedFailsTheForcedFreeze) {
  // This process is the daemon: stopping it is refused, so the freeze fails
  // rather than leave a store possible.
  auto self = holder("ns", true);
  auto own = holder("ns", true, ::getpid());
  auto f = freeze_async("ns", self->peer, kShort, /*force=*/true);
  uint64_t token = freeze_token(own->read(), "ns");
  auto share = f.get();
  ASSERT_FALSE(share);
  EXPECT_EQ(share.error().code(), std::errc::device_or_resource_busy);
  EXPECT_NE(share.error().message().find(", and pid " + std::to_string(::getpid()) +
                                         " cannot be revoked: "),
            std::string::npos)
      << share.error().message();
  EXPECT_EQ(own->read(), event("THAW", {{"name", "ns"}, {"token", token}}));
  std::lock_guard<std::mutex> lock(mu_);
  EXPECT_TRUE(table_.holds("ns", own->peer));
}

// Several connections hold two namespaces read-write; each has a reader
// thread that acks every FREEZE, as a Client does. Worker threads freeze
// either namespace (nesting with each other), end connections and open new
// ones (while frozen or not) at once. Every freeze must succeed, and each
// connection must see, per namespace, FREEZE and THAW alternate with
// matching tokens (or a THAW for the token its open was given).
class HolderFreezesStressTest : public HolderFreezesTest {
 protected:
  struct Conn {
    std::unique_ptr<TestPeer> io;
    std::thread reader;
    std::atomic<bool> ended{false};
    std::mutex state_mu;                      // guards the two below
    std::map<std::string, uint64_t> frozen;  // namespace -> token it keeps protected
    std::vector<std::string> errors;
  };

  std::shared_ptr<Conn> connect() {
    auto c = std::make_shared<Conn>();
    uint64_t id = next_id_++;
    c->io = std::make_unique<TestPeer>(id, 50000 + static_cast<pid_t>(id));
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const char* name : {"a", "b"}) {
        table_.add(name, c->io->peer, true);
        // Its open reply: the token to keep protected until its THAW. Noted
        // under mu_, before the THAW can be sent.
        if (auto token = freezes_.holder_opened_locked(name, c->io->peer)) {
          std::lock_guard<std::mutex> state(c->state_mu);
          c->frozen[name] = *token;
        }
      }
    }
    c->reader = std::thread([this, c] { read_events(*c); });
    return c;
  }

  void read_events(Conn& c) {
    for (;;) {
      json e = c.io->read();
      if (e.is_discarded()) return;  // shut down
      std::string name = e["data"].value("name", "");
      uint64_t token = e["data"].value("token", uint64_t{0});
      std::string kind = e.value("event", "");
      {
        std::lock_guard<std::mutex> state(c.state_mu);
        auto it = c.frozen.find(name);
        if (kind == "FREEZE") {
          if (it != c.frozen.end()) c.errors.push_back("FREEZE while frozen: " + e.dump());
          c.frozen[name] = token;
        } else if (kind == "THAW") {
          if (it == c.frozen.end() || it->second != token) {
            c.errors.push_back("THAW without its FREEZE: " + e.dump());
          }
          if (it != c.frozen.end()) c.frozen.erase(it);
        } else {
          c.errors.push_back("unexpected: " + e.dump());
        }
      }
      if (kind == "FREEZE") {
        Status acked = freezes_.ack(c.io->peer, name, token);
        if (!acked && !c.ended.load()) {
          std::lock_guard<std::mutex> state(c.state_mu);
          c.errors.push_back(acked.error().message());
        }
      }
    }
  }

  void disconnect(Conn& c) {
    c.ended.store(true);
    end_connection(c.io->peer);
    c.io->peer->shut_down();
    c.reader.join();
  }
};

TEST_F(HolderFreezesStressTest, FreezesAcksAndConnectionEndsOnTwoNamespaces) {
  constexpr int kConnections = 4;
  constexpr int kWorkers = 4;
  constexpr int kRounds = 400;
  std::mutex conns_mu;
  std::vector<std::shared_ptr<Conn>> conns;  // guarded by conns_mu
  std::vector<std::shared_ptr<Conn>> done;   // ended, guarded by conns_mu
  for (int i = 0; i < kConnections; ++i) conns.push_back(connect());
  std::atomic<int> failures{0};
  std::atomic<int> freezes{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < kWorkers; ++w) {
    workers.emplace_back([&, w] {
      std::mt19937 rng(static_cast<unsigned>(w) + 1);
      // The worker's own connection, which freezes (and holds nothing).
      auto self = std::make_unique<TestPeer>(1000 + static_cast<uint64_t>(w), 60000 + w);
      for (int round = 0; round < kRounds; ++round) {
        const std::string name = rng() % 2 == 0 ? "a" : "b";
        switch (rng() % 4) {
          case 0:
          case 1: {
            // A connection inside a freeze of its own is not asked.
            std::shared_ptr<Conn> marked;
            std::optional<HolderFreezes::BusyMark> busy;
            if (rng() % 2 == 0) {
              std::lock_guard<std::mutex> lock(conns_mu);
              marked = conns[rng() % conns.size()];
              busy.emplace(freezes_, name, marked->io->peer->id());
            }
            std::vector<pid_t> revoked;
            auto share = freezes_.freeze(name, self->peer, Clock::now() + kLong, false, &revoked);
            if (!share || !revoked.empty()) {
              ++failures;
              ADD_FAILURE() << (share ? "revoked" : share.error().message());
              break;
            }
            ++freezes;
            if (rng() % 2 == 0) std::this_thread::yield();
            break;  // the share ends here
          }
          case 2: {
            // Two shares of the same namespace, ended in either order.
            auto one = freeze_now(name, self->peer);
            auto two = freeze_now(name, self->peer);
            if (!one || !two) {
              ++failures;
              break;
            }
            freezes += 2;
            if (rng() % 2 == 0) one->end();
            break;
          }
          case 3: {
            std::shared_ptr<Conn> gone;
            {
              std::lock_guard<std::mutex> lock(conns_mu);
              size_t i = rng() % conns.size();
              gone = conns[i];
              conns[i] = connect();
            }
            disconnect(*gone);
            std::lock_guard<std::mutex> lock(conns_mu);
            done.push_back(gone);
            break;
          }
        }
      }
    });
  }
  for (auto& t : workers) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GT(freezes.load(), 0);
  // Every share has ended, so each live connection has been sent the THAW
  // of each freeze it saw; its reader takes them in. (An ended connection
  // may have been cut off between the two: nothing is sent after its end.)
  for (const auto& c : conns) {
    auto until = Clock::now() + kLong;
    for (;;) {
      {
        std::lock_guard<std::mutex> state(c->state_mu);
        if (c->frozen.empty()) break;
      }
      if (Clock::now() > until) {
        ADD_FAILURE() << "pid " << c->io->peer->pid() << " was never thawed";
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  for (auto& c : conns) disconnect(*c);
  for (const auto* list : {&conns, &done}) {
    for (const auto& c : *list) {
      std::lock_guard<std::mutex> state(c->state_mu);
      for (const auto& error : c->errors) ADD_FAILURE() << error;
    }
  }
  // Nothing is left frozen: a new holder gets no token.
  auto probe = std::make_unique<TestPeer>(9999, 9999);
  std::lock_guard<std::mutex> lock(mu_);
  EXPECT_EQ(freezes_.holder_opened_locked("a", probe->peer), std::nullopt);
  EXPECT_EQ(freezes_.holder_opened_locked("b", probe->peer), std::nullopt);
}

}  // namespace
}  // namespace rawdax
