// Freezes through the daemon reach the client processes that hold the
// namespace read-write: their mappings are write-protected before the freeze
// returns (FREEZE / freeze-ack / THAW), a holder that does not ack fails the
// freeze naming its pid or is revoked with force, and a holder that dies with
// an ack outstanding never wedges the daemon.
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <gtest/gtest.h>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "daemon/control_test_util.h"
#include "daemon/process_stops.h"
#include "rawdax/client_c.h"
#include "test_util.h"

namespace rawdax {
namespace {

using ::rawdax::testing::eventually;

using namespace std::chrono_literals;
using ::rawdax::testing::DaemonFixture;
using ::rawdax::testing::json;
using ::rawdax::testing::RawConnection;
using ::rawdax::testing::TestMedia;
using ::rawdax::testing::wait_child;

constexpr int kWriters = 4;  // two processes, two threads each
constexpr uint64_t kNsSize = 1 << 20;

// Counters the helper processes publish to the test through a shared memfd
// page (inherited across exec).
struct Shared {
  std::atomic<uint64_t> acked[kWriters];
  std::atomic<uint64_t> ready;
  std::atomic<uint64_t> stop;
};
static_assert(std::atomic<uint64_t>::is_always_lock_free);

class SharedPage {
 public:
  SharedPage() {
    fd_.reset(::memfd_create("freeze-test-shared", 0));  // no CLOEXEC: helpers inherit it
    if (!fd_.valid() || ::ftruncate(fd_.get(), 4096) != 0) {
      ADD_FAILURE() << "memfd: " << std::strerror(errno);
      return;
    }
    void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
    if (p == MAP_FAILED) {
      ADD_FAILURE() << "mmap: " << std::strerror(errno);
      return;
    }
    shared_ = new (p) Shared{};
  }
  ~SharedPage() {
    if (shared_ != nullptr) ::munmap(shared_, 4096);
  }
  Shared* operator->() const { return shared_; }
  int fd() const { return fd_.get(); }

 private:
  internal::UniqueFd fd_;
  Shared* shared_ = nullptr;
};

uint64_t slot_offset(int writer) { return static_cast<uint64_t>(writer + 1) * 64 * 1024 + 8; }

// --- Helper processes -------------------------------------------------------
// The test binary re-executes itself with RAWDAX_FREEZE_HELPER set; this
// static initializer then runs the helper and exits before main(). (Exec, not
// just fork: a child of a multi-threaded process must not start threads,
// and the Client starts one.)

Shared* helper_shared() {
  const char* fd = std::getenv("RAWDAX_FREEZE_SHARED");
  if (fd == nullptr) return nullptr;
  void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, std::atoi(fd), 0);
  return p == MAP_FAILED ? nullptr : static_cast<Shared*>(p);
}

// Opens vm1 read-write through a Client and runs two writer threads storing
// sequence numbers into its mapping, publishing each stored number.
int helper_client_writers(const char* socket, int first, Shared* shared) {
  auto client = Client::connect(socket);
  if (!client) return 10;
  auto ns = (*client)->open_namespace("vm1", Access::ReadWrite);
  if (!ns) return 11;
  auto m = ns->map(0, kNsSize);
  if (!m) return 12;
  auto writer = [&](int w) {
    auto* word = reinterpret_cast<volatile uint64_t*>(m->data() + slot_offset(w));
    for (uint64_t seq = 1; shared->stop.load(std::memory_order_relaxed) == 0; ++seq) {
      *word = seq;
      shared->acked[w].store(seq, std::memory_order_release);
    }
  };
  std::thread a(writer, first), b(writer, first + 1);
  shared->ready.fetch_add(1);
  a.join();
  b.join();
  return 0;
}

// Opens vm1 read-write over a raw connection, never reads it again (so it
// never acks), and stores a counter into its mapping.
int helper_silent_writer(const char* socket, int w, Shared* shared) {
  auto fd = control::connect_unix(socket);
  if (!fd) return 10;
  control::LineReader reader(control::kMaxReplyLine);
  if (!reader.read_line(fd->get())) return 11;  // greeting
  if (!control::send_line(fd->get(), R"({"execute":"open-namespace","arguments":{"name":"vm1"}})")) {
    return 12;
  }
  auto reply = reader.read_line(fd->get());
  if (!reply || reader.fds().empty()) return 13;
  // The namespace starts at the reply's offset of the fd (a carved extent).
  auto offset = ::rawdax::testing::open_reply_offset(*reply);
  if (!offset) return 13;
  void* p = ::mmap(nullptr, kNsSize, PROT_READ | PROT_WRITE, MAP_SHARED,
                   reader.fds().front().get(), static_cast<off_t>(*offset));
  if (p == MAP_FAILED) return 14;
  auto* word = reinterpret_cast<volatile uint64_t*>(static_cast<std::byte*>(p) + slot_offset(w));
  shared->ready.fetch_add(1);
  for (uint64_t seq = 1; shared->stop.load(std::memory_order_relaxed) == 0; ++seq) {
    *word = seq;
    shared->acked[w].store(seq, std::memory_order_release);
  }
  return 0;
}

[[maybe_unused]] const bool kHelperRan = [] {
  const char* mode = std::getenv("RAWDAX_FREEZE_HELPER");
  if (mode == nullptr) return false;
  Shared* shared = helper_shared();
  const char* socket = std::getenv("RAWDAX_FREEZE_SOCKET");
  const char* writer = std::getenv("RAWDAX_FREEZE_WRITER");
  if (shared == nullptr || socket == nullptr || writer == nullptr) ::_exit(2);
  int w = std::atoi(writer);
  ::_exit(std::string(mode) == "silent" ? helper_silent_writer(socket, w, shared)
                                        : helper_client_writers(socket, w, shared));
}();

class ControlFreezeTest : public ::testing::TestWithParam<TestMedia> {
 protected:
  ControlFreezeTest() {
    auto dev = daemon_.region().open_device("vm1");
    if (!dev) {
      ADD_FAILURE() << dev.error().message();
      return;
    }
    dev_ = std::move(*dev);
  }
  ~ControlFreezeTest() override {
    for (pid_t pid : children_) {
      ::kill(pid, SIGKILL);
      ::kill(pid, SIGCONT);
      wait_child(pid);
    }
  }

  uint64_t read_u64(uint64_t offset) {
    uint64_t v = 0;
    EXPECT_TRUE(dev_->read(offset, std::as_writable_bytes(std::span(&v, 1))));
    return v;
  }

  // Starts this binary as a helper process (see kHelperRan).
  pid_t spawn_helper(const char* mode, int writer) {
    pid_t pid = ::rawdax::testing::spawn_self(
        {std::string("RAWDAX_FREEZE_HELPER=") + mode,
         "RAWDAX_FREEZE_SOCKET=" + daemon_.socket_path(),
         "RAWDAX_FREEZE_SHARED=" + std::to_string(shared_.fd()),
         "RAWDAX_FREEZE_WRITER=" + std::to_string(writer)},
        "RAWDAX_FREEZE_");
    if (pid > 0) children_.push_back(pid);
    return pid;
  }
  pid_t spawn_client_writers(int first_writer) { return spawn_helper("clients", first_writer); }
  pid_t spawn_silent_writer(int writer) { return spawn_helper("silent", writer); }

  DaemonFixture daemon_{GetParam(), kNsSize};
  std::unique_ptr<Device> dev_;
  SharedPage shared_;
  std::vector<pid_t> children_;
};

// The cross-process version of FreezeTest.EveryFreezeIsOneStableCut: two
// client processes store through their mappings while the daemon is frozen
// again and again; each frozen image holds every store acknowledged before
// the freeze returned, and does not move while frozen.
TEST_P(ControlFreezeTest, EveryFreezeIsOneStableCutAcrossTwoClientProcesses) {
  ASSERT_GT(spawn_client_writers(0), 0);
  ASSERT_GT(spawn_client_writers(2), 0);
  ASSERT_TRUE(eventually([&] { return shared_->ready.load() == 2; }, 20s));
  ASSERT_TRUE(eventually([&] {
    for (int w = 0; w < kWriters; ++w) {
      if (shared_->acked[w].load() == 0) return false;
    }
    return true;
  }));
  auto freezer = Client::connect(daemon_.socket_path());
  ASSERT_TRUE(freezer);

  auto deadline = std::chrono::steady_clock::now() + 4s;
  int freezes = 0;
  uint64_t last[kWriters] = {};
  for (; freezes < 150 && std::chrono::steady_clock::now() < deadline; ++freezes) {
    auto frozen = (*freezer)->execute("freeze", R"({"name":"vm1","timeout":5})");
    ASSERT_TRUE(frozen) << frozen.error().message();
    EXPECT_EQ(*frozen, R"({"revoked":[]})");
    uint64_t image[kWriters];
    for (int w = 0; w < kWriters; ++w) {
      uint64_t ack = shared_->acked[w].load(std::memory_order_acquire);
      image[w] = read_u64(slot_offset(w));
      ASSERT_GE(image[w], ack) << "freeze " << freezes << " writer " << w
                               << ": an acknowledged store is missing from the image";
    }
    std::this_thread::sleep_for(2ms);
    for (int w = 0; w < kWriters; ++w) {
      ASSERT_EQ(read_u64(slot_offset(w)), image[w])
          << "freeze " << freezes << " writer " << w << ": the image changed while frozen";
      ASSERT_GE(image[w], last[w]);
      last[w] = image[w];
    }
    ASSERT_TRUE((*freezer)->execute("thaw", R"({"name":"vm1"})"));
    if (freezes % 25 == 0) {  // writers resume after the thaw
      for (int w = 0; w < kWriters; ++w) {
        uint64_t before = shared_->acked[w].load();
        ASSERT_TRUE(eventually([&] { return shared_->acked[w].load() > before; }))
            << "writer " << w << " did not resume after freeze " << freezes;
      }
    }
  }
  shared_->stop.store(1);
  for (pid_t pid : children_) EXPECT_EQ(wait_child(pid), 0);
  children_.clear();
  for (int w = 0; w < kWriters; ++w) {
    EXPECT_EQ(read_u64(slot_offset(w)), shared_->acked[w].load()) << "writer " << w;
  }
  EXPECT_GE(freezes, 20);
  std::printf("%d freezes across 2 client processes\n", freezes);
}

// A holder that never acks: the freeze fails within its timeout naming the
// pid and leaves the namespace unfrozen. With force it is revoked and its
// process stopped for the freeze, and stopped again by later freezes.
TEST_P(ControlFreezeTest, SilentHolderFailsTheFreezeOrIsRevokedWithForce) {
  pid_t child = spawn_silent_writer(0);
  ASSERT_GT(child, 0);
  ASSERT_TRUE(eventually([&] { return shared_->acked[0].load() > 0; }, 10s));
  auto freezer = Client::connect(daemon_.socket_path());
  ASSERT_TRUE(freezer);

  auto start = std::chrono::steady_clock::now();
  auto refused = (*freezer)->execute("freeze", R"({"name":"vm1","timeout":0.5})");
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), std::errc::device_or_resource_busy);
  EXPECT_NE(refused.error().message().find("pid(s) " + std::to_string(child)), std::string::npos)
      << refused.error().message();
  EXPECT_LT(took, 3s);
  EXPECT_GE(took, 400ms);
  // Rolled back: not frozen (a block write lands, thaw has nothing to thaw),
  // and the holder still stores.
  uint64_t one = 1;
  EXPECT_TRUE(dev_->write(0, std::as_bytes(std::span(&one, 1))));
  EXPECT_FALSE((*freezer)->execute("thaw", R"({"name":"vm1"})"));
  uint64_t before = shared_->acked[0].load();
  EXPECT_TRUE(eventually([&] { return shared_->acked[0].load() > before; }));

  auto forced = (*freezer)->execute("freeze", R"({"name":"vm1","timeout":0.5,"force":true})");
  ASSERT_TRUE(forced) << forced.error().message();
  EXPECT_EQ(json::parse(*forced)["revoked"], json::array({child}));
  EXPECT_TRUE(control::ProcessStops::all_threads_stopped(child));
  uint64_t image = read_u64(slot_offset(0));
  EXPECT_GE(image, shared_->acked[0].load());
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(read_u64(slot_offset(0)), image) << "a revoked holder stored while frozen";
  // Its open ended.
  auto list = (*freezer)->execute("query-namespaces");
  ASSERT_TRUE(list);
  EXPECT_EQ(json::parse(*list)[0]["holders"], json::array());
  ASSERT_TRUE((*freezer)->execute("thaw", R"({"name":"vm1"})"));
  before = shared_->acked[0].load();
  EXPECT_TRUE(eventually([&] { return shared_->acked[0].load() > before; }))
      << "the revoked holder was not continued at the thaw";

  // No longer asked, but stopped again by the next freeze while its
  // connection lives: no force needed, nothing to wait for.
  auto again = (*freezer)->execute("freeze", R"({"name":"vm1","timeout":0.5})");
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_TRUE(control::ProcessStops::all_threads_stopped(child));
  image = read_u64(slot_offset(0));
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(read_u64(slot_offset(0)), image);
  ASSERT_TRUE((*freezer)->execute("thaw", R"({"name":"vm1"})"));
  before = shared_->acked[0].load();
  EXPECT_TRUE(eventually([&] { return shared_->acked[0].load() > before; }));
  EXPECT_TRUE(daemon_.logged("did not acknowledge FREEZE"));
}

// A holder killed while the daemon waits for its ack: its connection ends,
// so the wait ends at once instead of at the timeout, and the daemon serves.
TEST_P(ControlFreezeTest, HolderKilledWithAnAckOutstandingDoesNotWedgeTheDaemon) {
  pid_t child = spawn_silent_writer(0);
  ASSERT_GT(child, 0);
  ASSERT_TRUE(eventually([&] { return shared_->acked[0].load() > 0; }, 10s));
  auto freezer = Client::connect(daemon_.socket_path());
  ASSERT_TRUE(freezer);
  auto start = std::chrono::steady_clock::now();
  Result<std::string> frozen = Error(std::errc::operation_in_progress, "not done");
  std::thread freezing([&] {
    frozen = (*freezer)->execute("freeze", R"({"name":"vm1","timeout":30})");
  });
  std::this_thread::sleep_for(200ms);
  ::kill(child, SIGKILL);
  EXPECT_EQ(wait_child(child), 128 + SIGKILL);
  children_.clear();
  freezing.join();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
  ASSERT_TRUE(frozen) << frozen.error().message();
  ASSERT_TRUE((*freezer)->execute("thaw", R"({"name":"vm1"})"));
  // Serving: another client opens exclusively (the dead one's open is gone),
  // and freezes and thaws.
  auto other = Client::connect(daemon_.socket_path());
  ASSERT_TRUE(other);
  EXPECT_TRUE((*other)->open_namespace("vm1", Access::ReadWrite, true));
  EXPECT_TRUE((*other)->execute("freeze", R"({"name":"vm1","timeout":1})"));
  EXPECT_TRUE((*other)->execute("thaw", R"({"name":"vm1"})"));
}

INSTANTIATE_TEST_SUITE_P(Media, ControlFreezeTest, RAWDAX_ALL_MEDIA,
                         ::rawdax::testing::param_name);

// In one process (the protection is per mapping, not per process): a
// holder's stores park while another connection holds a freeze, also for a
// mapping made after the freeze and a namespace opened after it, and the
// handler hears both edges.
class ControlFreezeLocalTest : public ::testing::Test {
 protected:
  DaemonFixture daemon_{TestMedia::kTmpfs, kNsSize};
};

TEST_F(ControlFreezeLocalTest, HolderMappingsParkUntilThawAndTheHandlerHearsBoth) {
  auto freezer = Client::connect(daemon_.socket_path());
  auto holder = Client::connect(daemon_.socket_path());
  ASSERT_TRUE(freezer && holder);
  std::mutex mu;
  std::vector<std::pair<std::string, bool>> heard;
  (*holder)->set_freeze_handler([&](const std::string& name, bool frozen) {
    std::lock_guard<std::mutex> lock(mu);
    heard.emplace_back(name, frozen);
  });
  auto ns = (*holder)->open_namespace("vm1", Access::ReadWrite);
  ASSERT_TRUE(ns);
  auto before = ns->map(4096, 4096);
  ASSERT_TRUE(before);
  ASSERT_TRUE((*freezer)->execute("freeze", R"({"name":"vm1","timeout":5})"));
  {
    std::lock_guard<std::mutex> lock(mu);
    ASSERT_EQ(heard.size(), 1u);
    EXPECT_EQ(heard[0], std::make_pair(std::string("vm1"), true));
  }
  auto after = ns->map(8192, 4096);  // made while frozen: born protected
  ASSERT_TRUE(after);
  std::atomic<int> stored{0};
  std::thread w1([&] {
    *reinterpret_cast<volatile uint64_t*>(before->data()) = 11;
    stored.fetch_add(1);
  });
  std::thread w2([&] {
    *reinterpret_cast<volatile uint64_t*>(after->data()) = 22;
    stored.fetch_add(1);
  });
  std::this_thread::sleep_for(150ms);
  EXPECT_EQ(stored.load(), 0) << "a store landed in a frozen holder's mapping";
  auto dev = daemon_.region().open_device("vm1");
  ASSERT_TRUE(dev);
  uint64_t v = 1;
  ASSERT_TRUE((*dev)->read(4096, std::as_writable_bytes(std::span(&v, 1))));
  EXPECT_EQ(v, 0u);
  ASSERT_TRUE((*freezer)->execute("thaw", R"({"name":"vm1"})"));
  EXPECT_TRUE(eventually([&] { return stored.load() == 2; }));
  w1.join();
  w2.join();
  ASSERT_TRUE((*dev)->read(8192, std::as_writable_bytes(std::span(&v, 1))));
  EXPECT_EQ(v, 22u);
  EXPECT_TRUE(eventually([&] {
    std::lock_guard<std::mutex> lock(mu);
    return heard.size() == 2;
  }));
  {
    std::lock_guard<std::mutex> lock(mu);
    ASSERT_EQ(heard.size(), 2u);
    EXPECT_EQ(heard[1], std::make_pair(std::string("vm1"), false));
  }
  // FREEZE and THAW are handled, not queued.
  EXPECT_TRUE((*holder)->take_events().empty());
}

TEST_F(ControlFreezeLocalTest, NamespaceOpenedWhileFrozenMapsProtected) {
  auto freezer = Client::connect(daemon_.socket_path());
  auto holder = Client::connect(daemon_.socket_path());
  ASSERT_TRUE(freezer && holder);
  ASSERT_TRUE((*freezer)->execute("freeze", R"({"name":"vm1","timeout":5})"));
  auto ns = (*holder)->open_namespace("vm1", Access::ReadWrite);
  ASSERT_TRUE(ns);
  EXPECT_NE(ns->reply_json().find("freeze_token"), std::string::npos) << ns->reply_json();
  auto m = ns->map(0, 4096);
  ASSERT_TRUE(m);
  std::atomic<bool> stored{false};
  std::thread w([&] {
    *reinterpret_cast<volatile uint64_t*>(m->data() + 64) = 5;
    stored = true;
  });
  std::this_thread::sleep_for(150ms);
  EXPECT_FALSE(stored.load()) << "a store landed while frozen";
  ASSERT_TRUE((*freezer)->execute("thaw", R"({"name":"vm1"})"));
  EXPECT_TRUE(eventually([&] { return stored.load(); }));
  w.join();
}

// Once the connection is gone no THAW can come, and the daemon no longer
// counts the process: its mappings must not stay protected.
TEST_F(ControlFreezeLocalTest, ClosingTheClientUnprotectsItsMappings) {
  auto freezer = Client::connect(daemon_.socket_path());
  auto holder = Client::connect(daemon_.socket_path());
  ASSERT_TRUE(freezer && holder);
  auto ns = (*holder)->open_namespace("vm1", Access::ReadWrite);
  ASSERT_TRUE(ns);
  auto m = ns->map(0, 4096);
  ASSERT_TRUE(m);
  ASSERT_TRUE((*freezer)->execute("freeze", R"({"name":"vm1","timeout":5})"));
  std::atomic<bool> stored{false};
  std::thread w([&] {
    *reinterpret_cast<volatile uint64_t*>(m->data()) = 3;
    stored = true;
  });
  std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(stored.load());
  holder->reset();  // still frozen in the daemon
  EXPECT_TRUE(eventually([&] { return stored.load(); }));
  w.join();
  ASSERT_TRUE((*freezer)->execute("thaw", R"({"name":"vm1"})"));
}

TEST_F(ControlFreezeLocalTest, AckErrorsAndReadOnlyHoldersAreNotAsked) {
  RawConnection raw(daemon_.socket_path());
  json r = raw.execute("freeze-ack", {{"name", "vm1"}, {"token", 1}});
  EXPECT_EQ(::rawdax::testing::error_class(r), "GenericError") << r;
  EXPECT_EQ(::rawdax::testing::error_class(raw.execute("freeze-ack", {{"name", "vm1"}})),
            "GenericError");
  // A read-only holder that never reads its socket does not hold up a freeze.
  ASSERT_TRUE(raw.execute("open-namespace", {{"name", "vm1"}, {"access", "ro"}})
                  .contains("return"));
  auto freezer = Client::connect(daemon_.socket_path());
  ASSERT_TRUE(freezer);
  auto frozen = (*freezer)->execute("freeze", R"({"name":"vm1","timeout":0.5})");
  EXPECT_TRUE(frozen) << frozen.error().message();
  EXPECT_TRUE((*freezer)->execute("thaw", R"({"name":"vm1"})"));
}

// The C interface's handler runs before the ack and at the thaw.
struct CHandlerLog {
  std::atomic<int> frozen{0}, thawed{0};
};

void c_handler(void* ctx, const char* name, int frozen) {
  auto* log = static_cast<CHandlerLog*>(ctx);
  if (std::strcmp(name, "vm1") != 0) return;
  (frozen ? log->frozen : log->thawed).fetch_add(1);
}

TEST_F(ControlFreezeLocalTest, CHandlerHearsFreezeAndThaw) {
  rawdax_client* c = nullptr;
  ASSERT_EQ(rawdax_client_connect(daemon_.socket_path().c_str(), &c), 0);
  CHandlerLog log;
  ASSERT_EQ(rawdax_client_set_freeze_handler(c, c_handler, &log), 0);
  int fd = -1;
  ASSERT_EQ(rawdax_client_open(c, "vm1", 1, 0, &fd, nullptr), 0);
  auto freezer = Client::connect(daemon_.socket_path());
  ASSERT_TRUE(freezer);
  ASSERT_TRUE((*freezer)->execute("freeze", R"({"name":"vm1","timeout":5})"));
  EXPECT_EQ(log.frozen.load(), 1);  // before the ack, so before the freeze returned
  ASSERT_TRUE((*freezer)->execute("thaw", R"({"name":"vm1"})"));
  EXPECT_TRUE(eventually([&] { return log.thawed.load() == 1; }));
  ::close(fd);
  rawdax_client_close(c);
}

}  // namespace
}  // namespace rawdax
