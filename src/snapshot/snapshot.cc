#include "snapshot/snapshot.h"

#include <chrono>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <thread>
#include <atomic>
#include <vector>

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
// first; a background thread copies the rest. Each page is copied once, under
// mu_, from the device's view, which write-protection or the copier hook
// keeps unchanged until then.
class LiveCopy : public PageCopier {
 public:
  LiveCopy(DeviceCore& core, SnapshotWriter& writer, std::vector<uint8_t> todo, bool skip_zero)
      : core_(core), writer_(writer), todo_(std::move(todo)), skip_zero_(skip_zero),
        buffer_(kBatchPages * core.page_size()) {}

  void before_write(uint64_t first_page, uint64_t count) override {
    auto start = std::chrono::steady_clock::now();
    waiting_.fetch_add(1);
    std::lock_guard<std::mutex> lock(mu_);
    waiting_.fetch_sub(1);
    for (uint64_t p = first_page; p < first_page + count && p < todo_.size(); ++p) {
      copy_run_locked(p, p + 1);
    }
    uint64_t ns = elapsed_ns(start);
    if (ns > max_stall_ns_) max_stall_ns_ = ns;
  }

  // Copies every page not copied yet, in order, a short run at a time so a
  // writer waiting on mu_ waits for one run at most.
  void copy_rest(const std::function<void(uint64_t, uint64_t)>& progress) {
    uint64_t reported = 0;
    for (uint64_t p = 0; p < todo_.size();) {
      if (progress && p - reported >= kProgressPages) progress(reported = p, todo_.size());
      {
        std::lock_guard<std::mutex> lock(mu_);
        while (p < todo_.size() && !todo_[p]) ++p;
        uint64_t end = p;
        while (end < todo_.size() && todo_[end] && end - p < kBatchPages) ++end;
        copy_run_locked(p, end);
        p = end;
      }
      // std::mutex is not fair: without this a waiting writer could watch the
      // copier take the lock back run after run, and stall for the whole copy.
      while (waiting_.load() > 0) std::this_thread::yield();
    }
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
  // Copies pages [first, end), all still to do, in one read; stores the runs
  // of them that are not all zeros (or all of them, for an incremental).
  void copy_run_locked(uint64_t first, uint64_t end) {
    if (first >= end || !todo_[first] || !status_) return;
    const uint64_t ps = core_.page_size(), size = core_.size();
    if (first * ps >= size) return;
    end = std::min(end, (size + ps - 1) / ps);
    std::span<std::byte> run(buffer_.data(), std::min((end - first) * ps, size - first * ps));
    status_ = core_.read(first * ps, run);
    for (uint64_t p = first; p < end; ++p) todo_[p] = 0;
    auto page_of = [&](uint64_t p) {
      uint64_t at = (p - first) * ps;
      return run.subspan(at, std::min(ps, run.size() - at));
    };
    for (uint64_t p = first; p < end && status_;) {
      if (skip_zero_ && all_zero(page_of(p))) {
        ++p;
        continue;
      }
      uint64_t q = p + 1;
      while (q < end && !(skip_zero_ && all_zero(page_of(q)))) ++q;
      uint64_t at = (p - first) * ps;
      status_ = writer_.write_pages(p, run.subspan(at, std::min((q - p) * ps, run.size() - at)));
      p = q;
    }
  }

  static constexpr uint64_t kBatchPages = 16;
  static constexpr uint64_t kProgressPages = 4096;

  DeviceCore& core_;
  SnapshotWriter& writer_;
  std::mutex mu_;
  std::vector<uint8_t> todo_;  // guarded by mu_
  const bool skip_zero_;
  std::vector<std::byte> buffer_;  // guarded by mu_
  std::atomic<int> waiting_{0};     // writers waiting for mu_
  Status status_;                // guarded by mu_
  uint64_t max_stall_ns_ = 0;    // guarded by mu_
};

Result<SnapshotInfo> take_locked(DeviceCore& core, Protector& engine, const std::string& path,
                                 const SnapshotOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  const bool incremental = !options.base.empty();
  const std::string what = "namespace " + core.name() + ": snapshot " + path + ": ";
  SnapshotHeader header;
  header.id = new_uuid();
  header.source_uuid = core.info().uuid;
  header.namespace_size = core.size();
  header.page_size = core.page_size();
  if (incremental) {
    if (core.snapshot_dirty() == nullptr) {
      return Error(std::errc::invalid_argument,
                   what + "an incremental snapshot needs a device opened with track_dirty");
    }
    auto base = SnapshotFile::open(options.base);
    if (!base) return base.error().with_context(what + "base: ");
    DeviceCore::SnapshotRef last = core.last_snapshot();
    if (base->header().id != last.id || base->header().header_checksum != last.checksum) {
      return Error(std::errc::invalid_argument,
                   what + "base " + options.base + " (id " + base->header().id +
                       ") is not the last snapshot taken of this device" +
                       (last.id.empty() ? " (there is none): take a full snapshot"
                                        : " (that is " + last.id + ")"));
    }
    if (base->header().namespace_size != header.namespace_size) {
      return Error(std::errc::invalid_argument,
                   what + "the namespace was resized since base " + options.base);
    }
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

  // From here the tracking epoch is consumed: a failure must not leave a
  // base that the next incremental could wrongly build on.
  core.set_last_snapshot({});
  auto frozen_at = std::chrono::steady_clock::now();
  RAWDAX_RETURN_IF_ERROR(engine.freeze(std::chrono::nanoseconds::max()));
  struct Thaw {
    Protector& engine;
    bool frozen = true;
    void now() {
      if (frozen) engine.thaw();
      frozen = false;
    }
    ~Thaw() { now(); }
  } thaw{engine};
  RAWDAX_RETURN_IF_ERROR(engine.collect_dirty());

  const uint64_t ps = header.page_size;
  uint64_t stall = 0;
  if (engine.supports_live_copy()) {
    // Live: the pages to copy are fixed now; a copier keeps each one until it
    // is copied, and the device thaws at once.
    std::vector<uint8_t> todo(header.page_count(), incremental ? 0 : 1);
    if (incremental) {
      core.snapshot_dirty()->take([&](uint64_t first, uint64_t count) {
        for (uint64_t i = first; i < first + count && i < todo.size(); ++i) todo[i] = 1;
      });
    } else if (core.snapshot_dirty() != nullptr) {
      core.snapshot_dirty()->take([](uint64_t, uint64_t) {});
    }
    LiveCopy live(core, *writer, std::move(todo), /*skip_zero=*/!incremental);
    core.set_copier(&live);
    stall = elapsed_ns(frozen_at);
    thaw.now();
    live.copy_rest(options.progress);
    core.set_copier(nullptr);
    RAWDAX_RETURN_IF_ERROR(engine.unprotect_all_if_untracked());
    if (Status st = live.status(); !st) return st.error().with_context(what);
    stall = std::max(stall, live.max_stall_ns());
  } else {
    // Frozen copy: writers wait until every page is copied.
    std::vector<std::byte> page(ps);
    Status copied;
    auto copy = [&](uint64_t index, bool skip_zero) {
      if (!copied) return;
      uint64_t offset = index * ps;
      if (offset >= header.namespace_size) return;
      std::span<std::byte> buf(page.data(), std::min(ps, header.namespace_size - offset));
      copied = core.read(offset, buf);
      if (copied && !(skip_zero && all_zero(buf))) copied = writer->write_pages(index, buf);
    };
    if (incremental) {
      core.snapshot_dirty()->take([&](uint64_t first, uint64_t count) {
        for (uint64_t i = first; i < first + count; ++i) copy(i, /*skip_zero=*/false);
      });
    } else {
      if (core.snapshot_dirty() != nullptr) core.snapshot_dirty()->take([](uint64_t, uint64_t) {});
      for (uint64_t i = 0; i < header.page_count(); ++i) {
        if (options.progress && i % 4096 == 0) options.progress(i, header.page_count());
        copy(i, /*skip_zero=*/true);
      }
    }
    if (!copied) return copied.error().with_context(what);
    stall = elapsed_ns(frozen_at);
    thaw.now();
  }
  if (options.progress) options.progress(header.page_count(), header.page_count());
  auto done = writer->finish();
  if (!done) return done.error().with_context(what);
  core.set_last_snapshot({done->id, done->header_checksum});

  SnapshotInfo info;
  info.path = path;
  info.id = done->id;
  info.base_id = done->base_id;
  info.base_path = done->base_path;
  info.source_uuid = done->source_uuid;
  info.namespace_size = done->namespace_size;
  info.page_size = done->page_size;
  info.pages = done->stored_pages;
  info.bytes_written = done->stored_pages * ps;
  info.duration_ns = elapsed_ns(start);
  info.max_writer_stall_ns = stall;
  return info;
}

}  // namespace

Result<SnapshotInfo> take_snapshot(DeviceCore& core, Protector& engine, const std::string& path,
                                   const SnapshotOptions& options) {
  static std::mutex one_at_a_time;  // per process; snapshots are rare and long
  std::lock_guard<std::mutex> lock(one_at_a_time);
  return take_locked(core, engine, path, options);
}

}  // namespace rawdax::internal
