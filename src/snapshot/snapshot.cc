#include "snapshot/snapshot.h"

#include <chrono>
#include <cstring>
#include <filesystem>
#include <mutex>
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
  std::vector<std::byte> page(ps);
  Status copied;
  auto copy = [&](uint64_t index, bool skip_zero) {
    if (!copied) return;
    uint64_t offset = index * ps;
    if (offset >= header.namespace_size) return;
    std::span<std::byte> buf(page.data(), std::min(ps, header.namespace_size - offset));
    copied = core.read(offset, buf);
    if (copied && !(skip_zero && all_zero(buf))) copied = writer->write_page(index, buf);
  };
  if (incremental) {
    core.snapshot_dirty()->take([&](uint64_t first, uint64_t count) {
      for (uint64_t i = first; i < first + count; ++i) copy(i, /*skip_zero=*/false);
    });
  } else {
    if (core.snapshot_dirty() != nullptr) core.snapshot_dirty()->take([](uint64_t, uint64_t) {});
    for (uint64_t i = 0; i < header.page_count(); ++i) copy(i, /*skip_zero=*/true);
  }
  if (!copied) return copied.error().with_context(what);
  uint64_t stall = elapsed_ns(frozen_at);
  thaw.now();
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
