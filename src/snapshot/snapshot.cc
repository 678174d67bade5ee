#include "snapshot/snapshot.h"

#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <thread>
#include <atomic>
#include <vector>

#include "common/mapped_range.h"
#include "common/safe_copy.h"
#include "common/uuid.h"
#include "snapshot/snapshot_file.h"

namespace rawdax::internal {
namespace {

bool all_zero(std::span<const std::byte> data) {
  const std::byte* p = data.data();
  size_t n = data.size();
  for (size_t i = 0; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    if (w != 0) return false;
  }
  for (size_t i = n & ~size_t{7}; i < n; ++i) {
    if (p[i] != std::byte{0}) return false;
  }
  return true;
}

// The pages of a live snapshot still to be copied, and the copying itself.
// A writer about to change a page (write fault or block write) copies it
// first; a background thread copies the rest, a run at a time, and lets the
// mappings take stores on each run once it is safe.
//
// Ordering: each page moves kTodo -> kCopying -> kDone under mu_, exactly
// once, and is copied by whoever moved it to kCopying, outside mu_. The
// device's view cannot change a page before kDone: stores to it fault
// (write-protection) and block writes call before_write(), which returns only
// when every page it names is kDone. So a writer waits for at most its own
// pages' copy, or for the one run in flight that holds its page. A writer's
// copy may go to an in-memory stash slot instead of the file: the page is
// kDone once the slot holds it, the slot is reused only after the background
// pass stored it, and the file is finished only after the pass's last store.
class LiveCopy : public PageCopier {
 public:
  // `unchanged(page, data)`: the page need not be stored (a zero page of a
  // full snapshot, a page equal to the base's); may be empty.
  using Unchanged = std::function<bool(uint64_t page, std::span<const std::byte> data)>;
  LiveCopy(DeviceCore& core, Protector& engine, SnapshotWriter& writer, std::vector<uint8_t> todo,
           Unchanged unchanged)
      : core_(core), engine_(engine), writer_(writer), state_(std::move(todo)),
        unchanged_(std::move(unchanged)),
        stash_(make_stash(std::min<uint64_t>(std::max<uint64_t>(kStashBytes / core.page_size(), 1),
                                             state_.size()),
                          core.page_size())),
        batch_pages_(std::max<uint64_t>(kBatchBytes / core.page_size(), 1)),
        progress_pages_(std::max<uint64_t>(kProgressBytes / core.page_size(), 1)) {
    for (uint32_t s = 0; s < stash_.size() / core.page_size(); ++s) free_slots_.push_back(s);
    stashed_.reserve(free_slots_.size());  // push_back never allocates (before_write)
  }

  void before_write(uint64_t first_page, uint64_t count) override {
    copy_before(first_page, count, nullptr);
  }
  void before_store(uint64_t page, const std::byte* mapped) override {
    copy_before(page, 1, mapped);
  }

  // before_write(), reading a lone page from `mapped` (its address in a
  // mapping) when given, instead of through the device.
  void copy_before(uint64_t first_page, uint64_t count, const std::byte* mapped) {
    auto start = std::chrono::steady_clock::now();
    std::unique_lock<std::mutex> lock(mu_);
    if (count <= Slots().size() && stash_.size() > 0) {
      // A store's copy goes to the stash, waiting for a slot if none is free,
      // and never to a buffer: the uffd engine's faulting-thread mode calls
      // this from a SIGBUS handler, which must not allocate. Slots free as
      // the background pass stores them, after each chunk; waiting before
      // claiming any page holds nobody up.
      done_.wait(lock, [&] {
        return free_slots_.size() >= count || !any_todo_locked(first_page, first_page + count);
      });
      std::vector<std::byte> unused;  // empty: the stash takes the run
      copy_range_locked(lock, first_page, first_page + count, unused, /*stash=*/true, mapped);
    } else {
      // Per thread, reused: block writes of many pages.
      thread_local std::vector<std::byte> buffer;
      copy_range_locked(lock, first_page, first_page + count, buffer, /*stash=*/true);
    }
    uint64_t ns = elapsed_ns(start);
    if (ns > max_stall_ns_) max_stall_ns_ = ns;
  }

  // Copies every page not copied yet, a chunk at a time, on `threads`
  // threads (this one included), in order except that chunks stores are
  // parked on go first; makes each chunk writable again once copied, and
  // writes out the pages writers stashed meanwhile.
  void copy_rest(const std::function<void(uint64_t, uint64_t)>& progress, unsigned threads) {
    const uint64_t chunk = engine_.live_chunk_pages();
    const uint64_t chunks = (state_.size() + chunk - 1) / chunk;
    // Chunks are handed out in order; copy_range_locked() already lets
    // several threads claim pages, so the pass threads share nothing else.
    std::atomic<uint64_t> next{0};
    auto pass = [&](bool reports) {
      std::vector<std::byte> buffer;
      uint32_t demand_seen = 0;
      uint64_t reported = 0;
      for (;;) {
        if (engine_.demand_changed(&demand_seen)) {
          for (uint64_t page : engine_.take_demanded_pages()) {
            copy_chunk(page / chunk, chunk, buffer);
          }
        }
        const uint64_t c = next.fetch_add(1, std::memory_order_relaxed);
        if (c >= chunks) return;
        if (reports && progress && c * chunk - reported >= progress_pages_) {
          progress(reported = c * chunk, state_.size());
        }
        if (!copy_chunk(c, chunk, buffer)) return;
      }
    };
    {
      std::vector<std::jthread> helpers;
      for (unsigned t = 1; t < threads; ++t) {
        helpers.emplace_back([&] {
          // Helpers run niced: they take CPU the application leaves idle,
          // and yield it to the writers (and to the fault handler serving
          // them) otherwise. The calling thread keeps the pass going.
          (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), kHelperNice);
          pass(false);
        });
      }
      pass(true);
    }
    // Every page is kDone now, so nothing more can be stashed.
    write_stashed();
  }

  // Pages [first, +count) are to be copied too (before the copier is installed).
  void add_todo(uint64_t first, uint64_t count) {
    std::lock_guard<std::mutex> lock(mu_);
    for (uint64_t p = first; p < first + count && p < state_.size(); ++p) state_[p] = kTodo;
  }

  Status status() {
    std::lock_guard<std::mutex> lock(mu_);
    return status_;
  }
  uint64_t max_stall_ns() {
    std::lock_guard<std::mutex> lock(mu_);
    return max_stall_ns_;
  }

 private:
  enum : uint8_t { kDone = 0, kTodo = 1, kCopying = 2 };
  using Slots = std::array<uint32_t, 8>;

  // Claims the pages of [first, end) still to do, copies them in runs
  // outside the lock, then waits for those another thread is copying. With
  // `stash`, short runs go to the stash while it has room, so that a writer
  // never waits for the snapshot file: on tmpfs a write holds the file's
  // lock for the whole of the background pass's 256 KiB write.
  void copy_range_locked(std::unique_lock<std::mutex>& lock, uint64_t first, uint64_t end,
                         std::vector<std::byte>& buffer, bool stash,
                         const std::byte* mapped = nullptr) {
    end = std::min<uint64_t>(end, state_.size());
    for (uint64_t p = first; p < end && status_;) {
      if (state_[p] != kTodo) {
        ++p;
        continue;
      }
      uint64_t q = p;
      while (q < end && state_[q] == kTodo && q - p < batch_pages_) state_[q++] = kCopying;
      Status copied;
      if (stash && q - p <= Slots().size() && q - p <= free_slots_.size()) {
        Slots slots;
        for (uint64_t i = 0; i < q - p; ++i) {
          slots[i] = free_slots_.back();
          free_slots_.pop_back();
        }
        lock.unlock();
        copied = mapped != nullptr && q - p == 1 && p == first ? stash_mapped(p, slots[0], mapped)
                                                             : stash_run(p, q, slots);
        lock.lock();
        for (uint64_t i = 0; i < q - p; ++i) {
          if (copied) {
            stashed_.push_back({p + i, slots[i]});
          } else {
            free_slots_.push_back(slots[i]);
          }
        }
      } else {
        lock.unlock();
        if (buffer.size() < (q - p) * core_.page_size()) buffer.resize((q - p) * core_.page_size());
        copied = copy_run(p, q, buffer);
        lock.lock();
      }
      for (uint64_t i = p; i < q; ++i) state_[i] = kDone;
      if (!copied && status_) status_ = copied;
      done_.notify_all();
      p = q;
    }
    done_.wait(lock, [&] {
      for (uint64_t p = first; p < end; ++p) {
        if (state_[p] == kCopying) return false;
      }
      return true;
    });
  }

  bool any_todo_locked(uint64_t first, uint64_t end) const {
    for (uint64_t p = first; p < std::min<uint64_t>(end, state_.size()); ++p) {
      if (state_[p] == kTodo) return true;
    }
    return false;
  }

  // Copies what is left of chunk c and releases it. False once copying failed.
  bool copy_chunk(uint64_t c, uint64_t chunk, std::vector<std::byte>& buffer) {
    std::unique_lock<std::mutex> lock(mu_);
    copy_range_locked(lock, c * chunk, (c + 1) * chunk, buffer, /*stash=*/false);
    if (!status_) return false;
    lock.unlock();
    if (c * chunk < state_.size()) {
      Status released = engine_.release_copied(c * chunk, chunk);
      if (!released) {
        lock.lock();
        if (status_) status_ = released;
        return false;
      }
    }
    write_stashed();
    return true;
  }

  // Page p's bytes starting at `at`, clipped to the namespace's end.
  std::span<std::byte> page_in(std::byte* at, uint64_t p) const {
    const uint64_t ps = core_.page_size(), size = core_.size();
    return {at, p * ps >= size ? 0 : std::min(ps, size - p * ps)};
  }
  std::byte* slot(uint32_t s) const { return stash_.data() + uint64_t{s} * core_.page_size(); }

  // Reads pages [first, end) into their stash slots.
  Status stash_run(uint64_t first, uint64_t end, const Slots& slots) {
    for (uint64_t p = first; p < end; ++p) {
      RAWDAX_RETURN_IF_ERROR(core_.read_for_copy(p * core_.page_size(),
                                                 page_in(slot(slots[p - first]), p)));
    }
    return ok();
  }

  // Copies page p into stash slot s from `mapped`, its address in a mapping
  // (guarded: a poisoned page fails the copy as a read would).
  Status stash_mapped(uint64_t p, uint32_t s, const std::byte* mapped) {
    std::span<std::byte> out = page_in(slot(s), p);
    if (auto fault = SafeCopy::copy_from(out.data(), mapped, out.size())) {
      return Error(std::errc::io_error, "namespace " + core_.name() + ": page " +
                                            std::to_string(p) + " could not be read for the "
                                            "snapshot: " + fault->describe());
    }
    return ok();
  }

  // Stores the stashed pages in the snapshot file and frees their slots.
  // Only the background pass's threads call it; each takes what is stashed
  // under mu_, so each stashed page is written once.
  void write_stashed() {
    std::vector<std::pair<uint64_t, uint32_t>> batch;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stashed_.empty()) return;
      // Copied out, not swapped: stashed_ keeps its reserved capacity.
      batch.assign(stashed_.begin(), stashed_.end());
      stashed_.clear();
    }
    Status written;
    for (auto [page, s] : batch) {
      std::span<std::byte> data = page_in(slot(s), page);
      if (!written || data.empty() || (unchanged_ && unchanged_(page, data))) continue;
      written = writer_.write_pages(page, data);
    }
    std::lock_guard<std::mutex> lock(mu_);
    for (auto [page, s] : batch) free_slots_.push_back(s);
    if (!written && status_) status_ = written;
    done_.notify_all();  // a store may wait for a slot
  }

  // Copies pages [first, end) in one read; stores the runs of them that are
  // not unchanged.
  Status copy_run(uint64_t first, uint64_t end, std::vector<std::byte>& buffer) {
    const uint64_t ps = core_.page_size(), size = core_.size();
    if (first * ps >= size) return ok();
    std::span<std::byte> run(buffer.data(), std::min((end - first) * ps, size - first * ps));
    end = first + (run.size() + ps - 1) / ps;
    RAWDAX_RETURN_IF_ERROR(core_.read_for_copy(first * ps, run));
    auto page_of = [&](uint64_t p) { return page_in(run.data() + (p - first) * ps, p); };
    for (uint64_t p = first; p < end;) {
      if (unchanged_ && unchanged_(p, page_of(p))) {
        ++p;
        continue;
      }
      uint64_t q = p + 1;
      while (q < end && !(unchanged_ && unchanged_(q, page_of(q)))) ++q;
      uint64_t at = (p - first) * ps;
      RAWDAX_RETURN_IF_ERROR(
          writer_.write_pages(p, run.subspan(at, std::min((q - p) * ps, run.size() - at))));
      p = q;
    }
    return ok();
  }

  // An anonymous buffer of `pages` page slots, populated now so that a
  // writer never takes a page fault on it; empty if that fails.
  static MappedRange make_stash(uint64_t pages, uint64_t page_size) {
    void* p = ::mmap(nullptr, pages * page_size, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    return p == MAP_FAILED ? MappedRange() : MappedRange(p, pages * page_size);
  }

  // Pages per read and write: 64 of 4 KiB, one of 2 MiB. In bytes, because a
  // writer whose page is in a run waits for the whole run.
  static constexpr uint64_t kBatchBytes = 256 << 10;
  static constexpr int kHelperNice = 10;
  static constexpr uint64_t kProgressBytes = 16 << 20;  // between progress reports
  static constexpr uint64_t kStashBytes = 4 << 20;  // 1024 slots of 4 KiB, 2 of 2 MiB

  DeviceCore& core_;
  Protector& engine_;
  SnapshotWriter& writer_;
  std::mutex mu_;
  std::condition_variable done_;   // a run became kDone
  std::vector<uint8_t> state_;     // per page; guarded by mu_
  const Unchanged unchanged_;
  // Pages writers copied and the background pass has not yet stored: a slot
  // is in free_slots_, or owned by the writer filling it, or in stashed_.
  const MappedRange stash_;
  std::vector<uint32_t> free_slots_;                    // guarded by mu_
  std::vector<std::pair<uint64_t, uint32_t>> stashed_;  // {page, slot}; guarded by mu_
  const uint64_t batch_pages_;
  const uint64_t progress_pages_;
  Status status_;                  // guarded by mu_
  uint64_t max_stall_ns_ = 0;      // guarded by mu_
};

Result<SnapshotInfo> take_locked(DeviceCore& core, Protector& engine, SnapshotState& state,
                                 const std::string& path, const SnapshotOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  const bool incremental = !options.base.empty();
  const std::string what = "namespace " + core.name() + ": snapshot " + path + ": ";
  if (options.copy_threads > kMaxSnapshotCopyThreads) {
    return Error(std::errc::invalid_argument,
                 what + "copy_threads " + std::to_string(options.copy_threads) +
                     " is more than " + std::to_string(kMaxSnapshotCopyThreads));
  }
  SnapshotHeader header =
      new_snapshot_header(core.name(), core.info().uuid, core.size(), core.page_size());
  // An incremental stores the pages written since its base: from dirty
  // tracking when the base is this device's last snapshot, else by comparing
  // every page with the base chain's checksums (a fresh process, such as the
  // CLI without a daemon, has no tracking history).
  bool by_tracking = false;
  std::vector<SnapshotFile> chain;
  if (incremental) {
    auto opened = open_chain(options.base);
    if (!opened) return opened.error().with_context(what + "base: ");
    chain = std::move(*opened);
    const SnapshotFile* base = &chain.front();
    if (base->header().namespace_size != header.namespace_size ||
        base->header().page_size != header.page_size) {
      return Error(std::errc::invalid_argument,
                   what + "base " + options.base + " is of a namespace of " +
                       std::to_string(base->header().namespace_size) + " bytes, this one has " +
                       std::to_string(header.namespace_size) + " (resized since?)");
    }
    by_tracking = core.snapshot_dirty() != nullptr && base->header().id == state.last_id &&
                  base->header().header_checksum == state.last_checksum;
    header.base_id = base->header().id;
    header.base_checksum = base->header().header_checksum;
    // Recorded relative to the new file's directory, so that a directory of
    // snapshots can be moved as a whole.
    std::error_code ec;
    auto from = std::filesystem::absolute(path, ec).parent_path();
    auto rel = std::filesystem::relative(std::filesystem::absolute(options.base, ec), from, ec);
    header.base_path = ec || rel.empty() ? std::filesystem::absolute(options.base).string()
                                         : rel.string();
  }
  auto writer = SnapshotWriter::create(path, header);
  if (!writer) return writer.error();

  // Everything that allocates (the page states, the stash) is ready before
  // the freeze, which only fixes the set of pages to copy.
  LiveCopy::Unchanged unchanged;
  if (!incremental) {
    unchanged = [](uint64_t, std::span<const std::byte> data) { return all_zero(data); };
  } else if (!by_tracking) {
    const uint64_t ps = header.page_size;
    unchanged = [&chain, ps](uint64_t page, std::span<const std::byte> data) {
      for (const SnapshotFile& file : chain) {
        if (file.has_page(page)) return page_checksum(data, page, ps) == file.stored_checksum(page);
      }
      return all_zero(data);  // stored nowhere in the chain: zeros
    };
  }
  std::vector<uint8_t> todo(header.page_count(), by_tracking ? 0 : 1);
  LiveCopy live(core, engine, *writer, std::move(todo), std::move(unchanged));

  // From here the tracking epoch is consumed: a failure must not leave a
  // base that the next incremental could wrongly build on.
  state.last_id.clear();
  state.last_checksum.clear();
  // Stores go on while this protects what the freeze would (with tracking),
  // so the stall timed from here is the freeze's own.
  if (Status ahead = engine.protect_ahead(); !ahead) return ahead.error().with_context(what);
  auto frozen_at = std::chrono::steady_clock::now();
  RAWDAX_RETURN_IF_ERROR(engine.freeze(std::chrono::nanoseconds::max(), /*persist=*/false));
  struct Thaw {
    Protector& engine;
    bool frozen = true;
    void now() {
      if (frozen) engine.thaw();
      frozen = false;
    }
    ~Thaw() { now(); }
  } thaw{engine};
  // With tracking on the uffd engine the freeze protected the dirty pages
  // only (the rest stayed protected by tracking); this is then a no-op.
  RAWDAX_RETURN_IF_ERROR(engine.collect_dirty());

  // The pages to copy are fixed now; the copier keeps each one unchanged
  // until it is copied, and the device thaws at once.
  if (core.snapshot_dirty() != nullptr) {
    core.snapshot_dirty()->take([&](uint64_t first, uint64_t count) {
      if (by_tracking) live.add_todo(first, count);
    });
  }
  core.set_copier(&live);
  thaw.now();
  const uint64_t freeze_ns = elapsed_ns(frozen_at);
  uint64_t stall = freeze_ns;
  unsigned threads = options.copy_threads;
  if (threads == 0) threads = std::clamp(std::thread::hardware_concurrency(), 1u, 2u);
  live.copy_rest(options.progress, threads);
  core.set_copier(nullptr);
  RAWDAX_RETURN_IF_ERROR(engine.end_live_copy());
  if (Status st = live.status(); !st) return st.error().with_context(what);
  stall = std::max(stall, live.max_stall_ns());
  if (options.progress) options.progress(header.page_count(), header.page_count());
  auto done = writer->finish();
  if (!done) return done.error().with_context(what);
  state.last_id = done->id;
  state.last_checksum = done->header_checksum;

  SnapshotInfo info = snapshot_info_of(path, *done);
  info.duration_ns = elapsed_ns(start);
  info.max_writer_stall_ns = stall;
  info.freeze_ns = freeze_ns;
  return info;
}

}  // namespace

Result<SnapshotInfo> take_snapshot(DeviceCore& core, Protector& engine, SnapshotState& state,
                                   const std::string& path, const SnapshotOptions& options) {
  // Per namespace: one engine's live copy and one tracking epoch at a time.
  // Another namespace's snapshot shares nothing with this one.
  std::lock_guard<std::mutex> lock(state.serial);
  return take_locked(core, engine, state, path, options);
}

}  // namespace rawdax::internal
