#include "device/device_core.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/safe_copy.h"
#include "common/units.h"
#include "media/files.h"
#include "media/persist.h"
#include "media/probe.h"
#include "region/bad_ranges.h"
#include "region/names.h"

namespace rawdax::internal {
namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;
constexpr uint64_t kMinViewCapacity = uint64_t{1} << 30;
using RefAccess = LiveRef::Access;

// A zero-length memory object. A shared mapping of it keeps an address range
// reserved while raising SIGBUS on every access, like a truncated file.
int revoked_backing_fd() {
  static const int fd = ::memfd_create("rawdax-revoked", MFD_CLOEXEC);
  return fd;
}

// How much of the backing object a block-face view maps for a namespace of
// `size` bytes: room to grow, except on hugetlbfs, where a writable mapping
// past EOF extends the file (hugetlbfs_file_mmap), so a view covers exactly
// the size and every grow maps a new one.
uint64_t view_capacity(uint64_t size, const Capabilities& caps) {
  if (caps.hugetlb) return size;
  return *round_up(std::max(size * 2, kMinViewCapacity), caps.alignment);
}

// mmap()s `len` bytes of `fd` at `offset`, placed so that the address is
// congruent to the offset modulo `huge`: the kernel can then map whole huge
// pages with one PMD each (shmem THP, DAX). huge == 0 maps anywhere.
void* map_huge_aligned(int fd, uint64_t offset, size_t len, int prot, int flags, uint64_t huge) {
  if (huge == 0 || len < huge) {
    return ::mmap(nullptr, len, prot, flags, fd, static_cast<off_t>(offset));
  }
  size_t span = len + 2 * huge;
  void* reserved = ::mmap(nullptr, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                          -1, 0);
  if (reserved == MAP_FAILED) return MAP_FAILED;
  uintptr_t base = reinterpret_cast<uintptr_t>(reserved);
  uintptr_t at = ((base + huge - 1) & ~(huge - 1)) + (offset & (huge - 1));
  // MAP_FIXED only ever lands inside our own reservation.
  void* addr = ::mmap(reinterpret_cast<void*>(at), len, prot, flags | MAP_FIXED, fd,
                      static_cast<off_t>(offset));
  if (addr == MAP_FAILED) {
    ::munmap(reserved, span);
    return MAP_FAILED;
  }
  if (at > base) ::munmap(reserved, at - base);
  if (base + span > at + len) ::munmap(reinterpret_cast<void*>(at + len), base + span - at - len);
  return addr;
}

// Splits the hole runs that overlap a bad range: the bad part is data (its
// reads fail; it must not read as zeros), as nbdkit reports bad blocks.
std::vector<Extent> with_bad_as_data(std::vector<Extent> runs, const std::vector<BadRange>& bad) {
  std::vector<Extent> out;
  for (const Extent& run : runs) {
    if (!run.hole) {
      out.push_back(run);
      continue;
    }
    uint64_t at = run.offset;
    const uint64_t end = run.offset + run.length;
    for (const BadRange& r : bad) {
      const uint64_t from = std::max(at, r.offset), to = std::min(end, r.offset + r.length);
      if (from >= to) continue;
      if (from > at) out.push_back({at, from - at, true});
      out.push_back({from, to - from, false});
      at = to;
    }
    if (at < end) out.push_back({at, end - at, true});
  }
  // Merge neighbours of one kind, so the answer stays minimal.
  std::vector<Extent> merged;
  for (const Extent& e : out) {
    if (!merged.empty() && merged.back().hole == e.hole &&
        merged.back().offset + merged.back().length == e.offset) {
      merged.back().length += e.length;
    } else {
      merged.push_back(e);
    }
  }
  return merged;
}

}  // namespace

Result<std::unique_ptr<DeviceCore>> DeviceCore::open(std::shared_ptr<Catalog> catalog,
                                                     std::string_view name,
                                                     const DeviceOptions& options) {
  auto info = catalog->find(name);
  if (!info) return info.error();
  auto fd = catalog->open_backing(name, /*writable=*/true);
  if (!fd) return fd.error();
  std::unique_ptr<DeviceCore> core(new DeviceCore(catalog));
  core->name_ = info->name;
  core->info_ = *info;
  core->fd_ = std::move(*fd);
  core->size_.store(info->size);
  core->bad_ = info->badblocks;
  core->any_bad_.store(!core->bad_.empty(), std::memory_order_release);
  // Now rather than at the first copy: a failure is an error here.
  RAWDAX_RETURN_IF_ERROR(SafeCopy::install());
  const Capabilities& caps = core->capabilities();
  // A carved namespace's view covers exactly its extent (and every grow maps
  // a new one), so no pointer into the block face can reach a neighbour.
  uint64_t capacity = info->size;
  if (!catalog->carved() && caps.kind != MediaKind::kDevdax) {
    auto actual = file_size(core->fd_.get());
    if (!actual) return actual.error();
    if (*actual < info->size) {
      return Error(std::errc::illegal_byte_sequence,
                   "namespace " + info->name + ": backing " + info->path + " has " +
                       std::to_string(*actual) + " bytes, metadata says " +
                       std::to_string(info->size));
    }
    // A larger file is what a crash in the middle of a resize leaves behind.
    if (*actual > info->size && ::ftruncate(core->fd_.get(), static_cast<off_t>(info->size)) != 0) {
      return errno_error(errno, "namespace " + info->name + ": cannot trim " + info->path);
    }
    capacity = view_capacity(info->size, caps);
  }
  auto view = core->map_view(capacity);
  if (!view) return view.error();
  core->view_.store(view->data());
  core->view_capacity_ = capacity;
  core->views_.push_back(std::move(*view));
  // Held once a view exists: release_media() gives it back with the views.
  if (catalog->carved()) catalog->hold_view(info->uuid, info->offset, capacity);
  if (options.track_dirty) {
    core->dirty_ = std::make_unique<DirtyBitmap>();
    core->snapshot_dirty_ = std::make_unique<DirtyBitmap>();
  }
  return core;
}

void DeviceCore::set_observer(MappingObserver* observer) {
  std::lock_guard<std::mutex> lock(maps_mu_);
  observer_ = observer;
}

Status DeviceCore::freeze_block_writes(std::chrono::nanoseconds timeout) {
  Status st = ref_.freeze(timeout);
  if (!st) return st.error().with_context("namespace " + name_ + ": freeze: ");
  // A resize that began before our depth was counted runs to its end before
  // the freeze is granted: the frozen image never changes size under it.
  // Ordering: resize() holds lifecycle_mu_ from before it counts its own
  // depth until it is done, and refuses when it sees another depth; we count
  // ours first, then take lifecycle_mu_. Either it saw our depth (and
  // refused), or it is inside lifecycle_mu_ and we wait for it here.
  std::lock_guard<std::mutex> settled(lifecycle_mu_);
  return st;
}

void DeviceCore::thaw_block_writes() { ref_.unfreeze(); }

Status DeviceCore::persist(uint64_t offset, uint64_t length) {
  auto hold = ref_.hold(RefAccess::kRead);
  if (!hold) return removed_error("persist");
  return persist_guarded("persist", offset, length);
}

DeviceCore::~DeviceCore() { release_media(); }

NamespaceInfo DeviceCore::info() const {
  NamespaceInfo out = info_;
  out.size = size();
  out.badblocks = badblocks();
  return out;
}

std::vector<BadRange> DeviceCore::badblocks() const {
  std::lock_guard<std::mutex> lock(bad_mu_);
  return bad_;
}

Error DeviceCore::listed_error(const char* op, uint64_t offset, uint64_t length,
                               const BadRange& bad) const {
  return Error(std::errc::io_error,
               "namespace " + name_ + ": " + op + " at offset " + std::to_string(offset) +
                   " length " + std::to_string(length) + ": media error: offset " +
                   std::to_string(bad.offset) + " length " + std::to_string(bad.length) +
                   " is in the bad-block list (write the whole range to clear it)");
}

Error DeviceCore::media_error(const char* op, uint64_t offset, uint64_t length,
                              uint64_t bad_offset, uint64_t granule, const std::string& why) {
  media_errors_.fetch_add(1, kRelaxed);
  const uint64_t size = this->size();
  const uint64_t begin = bad_offset / granule * granule;
  const uint64_t end = std::min(size, begin + granule);
  std::string recorded;
  if (begin < end) {
    std::lock_guard<std::mutex> lock(bad_mu_);
    if (add_bad_range(bad_, begin, end - begin)) {
      any_bad_.store(true, std::memory_order_release);
      Status kept = catalog_->set_badblocks(name_, bad_);
      if (!kept) recorded = " (not recorded in the region: " + kept.error().message() + ")";
    }
  }
  return Error(std::errc::io_error,
               "namespace " + name_ + ": " + op + " at offset " + std::to_string(offset) +
                   " length " + std::to_string(length) + ": media error at offset " +
                   std::to_string(bad_offset) + ": " + why + "; offset " +
                   std::to_string(begin) + " length " + std::to_string(end - begin) +
                   " is now in the bad-block list" + recorded);
}

Error DeviceCore::fault_error(const char* op, uint64_t offset, uint64_t length,
                              const std::byte* base, const MediaFault& fault) {
  const uint64_t at = fault.addr - reinterpret_cast<uintptr_t>(base);
  uint64_t granule = page_size();
  // The kernel's poison unit, when it says (a huge page on devdax).
  if (fault.poison() && fault.lsb > 0 && fault.lsb < 40) {
    granule = std::max<uint64_t>(granule, uint64_t{1} << fault.lsb);
  }
  return media_error(op, offset, length, at, granule, fault.describe());
}

void DeviceCore::drop_bad_pages(uint64_t offset, uint64_t length) {
  const Capabilities& caps = capabilities();
  // Only where a punched page is simply gone (the page cache, a DAX file's
  // blocks): not devdax, and not hugetlbfs, whose pages come from a pool.
  if (!caps.punch_hole || caps.hugetlb || caps.kind == MediaKind::kDevdax) return;
  const uint64_t page = page_size();
  const uint64_t begin = *round_up(offset, page), end = (offset + length) / page * page;
  if (begin >= end) return;
  std::byte* view = view_.load(std::memory_order_acquire);
  std::lock_guard<std::mutex> lock(bad_mu_);
  for (const BadRange& r : bad_) {
    const uint64_t from = std::max(begin, r.offset), to = std::min(end, r.offset + r.length);
    if (from >= to) continue;
    // Best effort: if either fails, the write itself tells whether the page
    // works. The punch drops a poisoned page from the file; the view's page
    // table entry for it is then a hwpoison marker that a hole punch leaves
    // in place (the kernel keeps those for shared mappings), which
    // MADV_DONTNEED zaps, so the write faults in the new page.
    (void)punch_hole(fd_.get(), info_.offset + from, to - from);
    (void)::madvise(view + from, to - from, MADV_DONTNEED);
  }
}

void DeviceCore::clear_bad_pages(uint64_t offset, uint64_t length) {
  const uint64_t page = page_size();
  const uint64_t begin = *round_up(offset, page), end = (offset + length) / page * page;
  if (begin >= end) return;
  std::lock_guard<std::mutex> lock(bad_mu_);
  if (!remove_bad_range(bad_, begin, end - begin)) return;
  any_bad_.store(!bad_.empty(), std::memory_order_release);
  // Best effort: a stale record lists a range that reads fine, which the
  // next write over it clears.
  (void)catalog_->set_badblocks(name_, bad_);
}

Status DeviceCore::persist_guarded(const char* op, uint64_t offset, uint64_t length) {
  std::byte* view = view_.load(std::memory_order_acquire);
  struct Call {
    PersistMethod method;
    const std::byte* at;
    uint64_t length;
    Status result;
  } call{capabilities().persist, view + offset, length, ok()};
  // A cache-line flush is an access too: on a poisoned DAX page it faults.
  auto fault = SafeCopy::run(view + offset, length, [](void* arg) {
    auto* c = static_cast<Call*>(arg);
    c->result = persist_range(c->method, c->at, c->length);
  }, &call);
  if (fault) return fault_error(op, offset, length, view, *fault);
  return call.result;
}

Result<MappedRange> DeviceCore::map_view(uint64_t capacity) const {
  // A view past EOF reserves nothing (MAP_NORESERVE). A hugetlbfs view ends
  // at EOF, over pages allocated at create, and is made without it: should a
  // page be missing after all, the mapping's reservation fails here with
  // ENOMEM rather than a later fault with SIGBUS.
  int noreserve = capabilities().hugetlb ? 0 : MAP_NORESERVE;
  void* addr = ::mmap(nullptr, capacity, PROT_READ | PROT_WRITE,
                      shared_map_flags(capabilities()) | noreserve, fd_.get(),
                      static_cast<off_t>(info_.offset));
  if (addr == MAP_FAILED) {
    return errno_error(errno, "namespace " + name_ + ": cannot map " + std::to_string(capacity) +
                                  " bytes of " + info_.path);
  }
  return MappedRange(addr, capacity);
}

Error DeviceCore::removed_error(const char* op) const {
  return Error(std::errc::no_such_device_or_address,
               "namespace " + name_ + ": " + op + " after the device was removed");
}

Status DeviceCore::check_range(const char* op, uint64_t offset, uint64_t length, uint64_t size,
                               bool is_write, bool read_only) const {
  if (is_write && read_only) {
    return Error(std::errc::read_only_file_system,
                 "namespace " + name_ + ": " + op + " on a read-only device");
  }
  if (range_fits(offset, length, size)) return ok();
  bool overflow = length > UINT64_MAX - offset;
  std::errc code = (is_write && !overflow) ? std::errc::no_space_on_device
                                           : std::errc::invalid_argument;
  return Error(code, "namespace " + name_ + ": " + op + " at offset " + std::to_string(offset) +
                         " length " + std::to_string(length) +
                         (overflow ? " overflows" : " is outside the namespace") + " (size " +
                         std::to_string(size) + ")");
}

Status DeviceCore::fill_range(const char* op, uint64_t offset, uint64_t length) {
  if (fill_ == nullptr || fill_->complete()) [[likely]] return ok();
  Status st = fill_->fill(offset, length);
  if (!st) return st.error().with_context(std::string(op) + ": ");
  return st;
}

Status DeviceCore::read(uint64_t offset, std::span<std::byte> out) {
  auto hold = ref_.hold(RefAccess::kRead);
  if (!hold) return removed_error("read");
  RAWDAX_RETURN_IF_ERROR(check_range("read", offset, out.size(), size(), false, false));
  RAWDAX_RETURN_IF_ERROR(refuse_listed("read", offset, out.size()));
  RAWDAX_RETURN_IF_ERROR(fill_range("read", offset, out.size()));
  std::byte* view = view_.load(std::memory_order_acquire);
  if (auto fault = SafeCopy::copy_from(out.data(), view + offset, out.size())) {
    return fault_error("read", offset, out.size(), view, *fault);
  }
  reads_.fetch_add(1, kRelaxed);
  bytes_read_.fetch_add(out.size(), kRelaxed);
  return ok();
}

Status DeviceCore::refuse_listed(const char* op, uint64_t offset, uint64_t length) {
  if (!any_bad_.load(std::memory_order_acquire)) return ok();
  std::lock_guard<std::mutex> lock(bad_mu_);
  if (auto bad = first_bad_overlap(bad_, offset, length)) {
    media_errors_.fetch_add(1, kRelaxed);
    return listed_error(op, offset, length, *bad);
  }
  return ok();
}

Status DeviceCore::check_readable(uint64_t offset, uint64_t length) {
  auto hold = ref_.hold(RefAccess::kRead);
  if (!hold) return removed_error("read");
  RAWDAX_RETURN_IF_ERROR(check_range("read", offset, length, size(), false, false));
  RAWDAX_RETURN_IF_ERROR(refuse_listed("read", offset, length));
  RAWDAX_RETURN_IF_ERROR(fill_range("read", offset, length));
  // A backing file cut short by someone else: read() would fault, sendfile
  // would stop short.
  if (capabilities().kind != MediaKind::kDevdax && length > 0) {
    auto actual = file_size(fd_.get());
    if (actual && *actual < info_.offset + offset + length) {
      const uint64_t eof = *actual > info_.offset ? *actual - info_.offset : 0;
      return media_error("read", offset, length, std::max(offset, eof), page_size(),
                         "the backing file ends at offset " + std::to_string(eof) +
                             " (cut short under the device)");
    }
  }
  return ok();
}

Status DeviceCore::read_for_copy(uint64_t offset, std::span<std::byte> out) {
  auto hold = ref_.hold(RefAccess::kRead);
  if (!hold) return removed_error("read");
  RAWDAX_RETURN_IF_ERROR(check_range("read", offset, out.size(), size(), false, false));
  RAWDAX_RETURN_IF_ERROR(refuse_listed("read", offset, out.size()));
  RAWDAX_RETURN_IF_ERROR(fill_range("read", offset, out.size()));
  for (size_t done = 0; done < out.size();) {
    ssize_t n = ::pread(fd_.get(), out.data() + done, out.size() - done,
                        static_cast<off_t>(info_.offset + offset + done));
    if (n > 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EIO) {
      // The kernel met poison (a hwpoisoned page-cache page, a DAX block
      // that failed copy_mc): after a short read, at offset+done itself.
      return media_error("read", offset, out.size(), offset + done, page_size(),
                         "read(2) of the backing file failed with EIO");
    }
    if (n < 0 && errno != EINVAL && errno != ENODEV && errno != ESPIPE) {
      return errno_error(errno, "namespace " + name_ + ": read at offset " +
                                    std::to_string(offset + done));
    }
    // No read() on this media, or a file cut short under us: copy from the
    // view, which faults (and fails the copy) on what is really missing.
    std::byte* view = view_.load(std::memory_order_acquire);
    if (auto fault = SafeCopy::copy_from(out.data() + done, view + offset + done,
                                         out.size() - done)) {
      return fault_error("read", offset, out.size(), view, *fault);
    }
    break;
  }
  reads_.fetch_add(1, kRelaxed);
  bytes_read_.fetch_add(out.size(), kRelaxed);
  return ok();
}

std::optional<LiveRef::Hold> DeviceCore::hold_for_write() {
  if (ref_.freeze_depth() == 0) [[likely]] return ref_.hold(RefAccess::kWrite);
  // Frozen: the hold parks until thaw; account for the stall.
  auto start = std::chrono::steady_clock::now();
  auto hold = ref_.hold(RefAccess::kWrite);
  auto ns = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                      std::chrono::steady_clock::now() - start)
                                      .count());
  block_stall_total_ns_.fetch_add(ns, kRelaxed);
  uint64_t max = block_stall_max_ns_.load(kRelaxed);
  while (ns > max && !block_stall_max_ns_.compare_exchange_weak(max, ns, kRelaxed)) {
  }
  return hold;
}

void DeviceCore::set_copier(PageCopier* copier) {
  copier_.store(copier, std::memory_order_release);
  if (copier == nullptr) {
    // A writer that loaded the old copier holds a writer ref: drain them.
    if (ref_.freeze()) ref_.unfreeze();
  }
}

// Before a block write changes pages, a live snapshot copies them.
void DeviceCore::before_block_write(uint64_t offset, uint64_t length) {
  PageCopier* copier = copier_.load(std::memory_order_acquire);
  if (copier == nullptr || length == 0) [[likely]] return;
  uint64_t page = page_size();
  copier->before_write(offset / page, (offset + length - 1) / page - offset / page + 1);
}

void DeviceCore::mark_dirty(uint64_t offset, uint64_t length) {
  if (dirty_ == nullptr || length == 0) return;
  uint64_t page = page_size();
  mark_pages(offset / page, (offset + length - 1) / page - offset / page + 1);
}

void DeviceCore::reserve_marks(uint64_t first_page, uint64_t count) {
  if (dirty_ == nullptr) return;
  dirty_->reserve(first_page, count);
  snapshot_dirty_->reserve(first_page, count);
}

void DeviceCore::mark_pages(uint64_t first_page, uint64_t count) {
  if (dirty_ == nullptr) return;
  dirty_->set_range(first_page, count);
  snapshot_dirty_->set_range(first_page, count);
}

Status DeviceCore::write(uint64_t offset, std::span<const std::byte> data, WriteOptions options,
                         bool read_only) {
  auto hold = hold_for_write();
  if (!hold) return removed_error("write");
  RAWDAX_RETURN_IF_ERROR(check_range("write", offset, data.size(), size(), true, read_only));
  RAWDAX_RETURN_IF_ERROR(fill_range("write", offset, data.size()));
  before_block_write(offset, data.size());
  const bool had_bad = any_bad_.load(std::memory_order_acquire);
  if (had_bad) drop_bad_pages(offset, data.size());
  std::byte* view = view_.load(std::memory_order_acquire);
  auto fault = SafeCopy::copy_to(view + offset, data.data(), data.size());
  // After the stores (a sync that takes the bit persists them), and also
  // when the copy stopped midway: some bytes may have landed.
  mark_dirty(offset, data.size());
  if (fault) return fault_error("write", offset, data.size(), view, *fault);
  writes_.fetch_add(1, kRelaxed);
  bytes_written_.fetch_add(data.size(), kRelaxed);
  if (options.fua) RAWDAX_RETURN_IF_ERROR(persist_guarded("write", offset, data.size()));
  if (had_bad) clear_bad_pages(offset, data.size());
  return ok();
}

Status DeviceCore::write_zeroes(uint64_t offset, uint64_t length, ZeroOptions options,
                                bool is_discard, bool read_only) {
  const char* op = is_discard ? "discard" : "write-zeroes";
  auto hold = hold_for_write();
  if (!hold) return removed_error(op);
  RAWDAX_RETURN_IF_ERROR(check_range(op, offset, length, size(), true, read_only));
  // Filled first, then zeroed without a hole: a resumed fill takes a hole
  // for a page not filled yet.
  RAWDAX_RETURN_IF_ERROR(fill_range(op, offset, length));
  const bool allow_hole = !options.no_hole && !filling();
  before_block_write(offset, length);
  mark_dirty(offset, length);
  (is_discard ? discards_ : write_zeroes_).fetch_add(1, kRelaxed);
  const bool had_bad = any_bad_.load(std::memory_order_acquire);
  if (had_bad) drop_bad_pages(offset, length);
  RAWDAX_RETURN_IF_ERROR(zero_range(offset, length, allow_hole));
  if (had_bad) clear_bad_pages(offset, length);
  return ok();
}

// Punches the aligned interior where the media can; memsets the rest.
Status DeviceCore::zero_range(uint64_t offset, uint64_t length, bool allow_hole) {
  std::byte* base = view_.load(std::memory_order_acquire);
  const Capabilities& caps = capabilities();
  uint64_t hole_begin = *round_up(offset, caps.alignment);
  uint64_t hole_end = (offset + length) & ~(caps.alignment - 1);
  bool punched = false;
  // A hugetlbfs namespace keeps its pages: a punched page goes back to the
  // shared pool, and a later store to it would raise SIGBUS if the pool were
  // empty by then.
  if (allow_hole && caps.punch_hole && !caps.hugetlb && caps.kind != MediaKind::kDevdax &&
      hole_begin < hole_end) {
    auto done = punch_hole(fd_.get(), info_.offset + hole_begin, hole_end - hole_begin);
    if (!done) return done.error().with_context("namespace " + name_ + ": ");
    punched = *done;
  }
  auto fill = [&](uint64_t at, uint64_t n) -> Status {
    if (auto fault = SafeCopy::fill(base + at, 0, n)) {
      return fault_error("write-zeroes", offset, length, base, *fault);
    }
    return ok();
  };
  if (punched) {
    RAWDAX_RETURN_IF_ERROR(fill(offset, hole_begin - offset));
    RAWDAX_RETURN_IF_ERROR(fill(hole_end, offset + length - hole_end));
  } else {
    RAWDAX_RETURN_IF_ERROR(fill(offset, length));
  }
  return persist_guarded("write-zeroes", offset, length);
}

Status DeviceCore::flush() {
  auto hold = ref_.hold(RefAccess::kRead);
  if (!hold) return removed_error("flush");
  flushes_.fetch_add(1, kRelaxed);
  // Around the listed ranges: flushing a poisoned page's lines would fault
  // on every flush until the range is rewritten.
  Status st;
  uint64_t at = 0;
  const uint64_t size = this->size();
  for (const BadRange& bad : badblocks()) {
    if (bad.offset > at && st) st = persist_guarded("flush", at, bad.offset - at);
    at = std::max(at, bad.offset + bad.length);
  }
  if (at < size && st) st = persist_guarded("flush", at, size - at);
  if (!st) return st.error().with_context("namespace " + name_ + ": flush: ");
  return st;
}

Result<std::vector<Extent>> DeviceCore::extents(uint64_t offset, uint64_t length,
                                                size_t max_extents) {
  auto hold = ref_.hold(RefAccess::kRead);
  if (!hold) return removed_error("extents");
  RAWDAX_RETURN_IF_ERROR(check_range("extents", offset, length, size(), false, false));
  std::vector<Extent> runs;
  const uint64_t end = offset + length;
  if (length == 0 || max_extents == 0) return runs;
  // Unfilled pages are holes in the backing file but not in the image.
  if (capabilities().kind == MediaKind::kDevdax || filling()) {
    runs.push_back({offset, length, false});
    return runs;
  }
  // lseek moves the fd's file position, which nothing else here uses (the
  // block face is mmap, holes are fallocate), so concurrent callers only race
  // on a value nobody reads.
  // Offsets in the backing object are the namespace's plus its extent's.
  const uint64_t base = info_.offset;
  auto seek = [&](uint64_t pos, int whence) -> Result<uint64_t> {
    off_t at = ::lseek(fd_.get(), static_cast<off_t>(base + pos), whence);
    if (at >= 0) return std::min(static_cast<uint64_t>(at) - base, end);
    if (errno == ENXIO) return end;  // no more data (SEEK_DATA) past pos
    return errno_error(errno, "namespace " + name_ + ": lseek at offset " + std::to_string(pos));
  };
  uint64_t pos = offset;
  while (pos < end && runs.size() < max_extents) {
    auto data = seek(pos, SEEK_DATA);
    if (!data) {
      if (data.error().code() != std::errc::invalid_argument) return data.error();
      runs.push_back({pos, end - pos, false});  // no SEEK_DATA here: all data
      break;
    }
    if (*data > pos) {
      runs.push_back({pos, *data - pos, true});
      pos = *data;
      continue;
    }
    auto hole = seek(pos, SEEK_HOLE);
    if (!hole) return hole.error();
    uint64_t stop = *hole > pos ? *hole : end;  // defensive: always progress
    runs.push_back({pos, stop - pos, false});
    pos = stop;
  }
  if (any_bad_.load(std::memory_order_acquire)) {
    runs = with_bad_as_data(std::move(runs), badblocks());
    if (runs.size() > max_extents) runs.resize(max_extents);
  }
  return runs;
}

Result<bool> DeviceCore::is_hole(uint64_t offset, uint64_t length) {
  auto hold = ref_.hold(RefAccess::kRead);
  if (!hold) return removed_error("is_hole");
  RAWDAX_RETURN_IF_ERROR(check_range("is_hole", offset, length, size(), false, false));
  if (length == 0 || capabilities().kind == MediaKind::kDevdax || filling()) return false;
  // A bad range is never a hole, even where the file has none (cut short):
  // its reads fail, as nbdkit reports it.
  if (any_bad_.load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> lock(bad_mu_);
    if (first_bad_overlap(bad_, offset, length)) return false;
  }
  off_t data = ::lseek(fd_.get(), static_cast<off_t>(info_.offset + offset), SEEK_DATA);
  if (data < 0) {
    if (errno == ENXIO) return true;      // no data at or after offset
    if (errno == EINVAL) return false;    // no SEEK_DATA here: all data
    return errno_error(errno, "namespace " + name_ + ": lseek at offset " + std::to_string(offset));
  }
  return static_cast<uint64_t>(data) >= info_.offset + offset + length;
}

Result<MappingRecord*> DeviceCore::map(uint64_t offset, uint64_t length, Access access,
                                       bool read_only) {
  auto hold = ref_.hold(RefAccess::kRead);
  if (!hold) return removed_error("map");
  const Capabilities& caps = capabilities();
  if (length == 0) {
    return Error(std::errc::invalid_argument, "namespace " + name_ + ": map of length 0 at offset " +
                                                  std::to_string(offset));
  }
  // device-dax refuses a mapping, or a split of one (mprotect, munmap), at
  // an address or length that is not a multiple of its align: asking for
  // whole aligned units keeps every later split on the engine's aligned
  // pages.
  const std::string where = "media " + std::string(to_string(caps.kind)) + ", namespace " + name_;
  if (caps.kind == MediaKind::kDevdax &&
      (offset % caps.alignment != 0 || length % caps.alignment != 0)) {
    return Error(std::errc::invalid_argument,
                 where + ": map offset " + std::to_string(offset) + " length " +
                     std::to_string(length) + " is misaligned: both must be multiples of the " +
                     "device alignment " + std::to_string(caps.alignment));
  }
  if (Status aligned = check_aligned("map offset", offset, caps); !aligned) {
    return aligned.error().with_context(where + ": ");
  }
  // Read-then-map: a mapping only ever covers filled pages (see the header),
  // unless the observer fills the pages its faults miss.
  if (offset < size() && filling() && !observer_fills_missing_pages()) {
    RAWDAX_RETURN_IF_ERROR(
        fill_range("map", offset, std::min<uint64_t>(length, size() - offset)));
  }
  // The size is checked under maps_mu_, which a shrink holds while it checks
  // for mappings in the cut, so no mapping can slip into a cut.
  std::lock_guard<std::mutex> lock(maps_mu_);
  // remove() kills the ref before it revokes under maps_mu_: a map() that got
  // its hold earlier but the lock later must not register a live mapping.
  if (ref_.killed()) return removed_error("map");
  RAWDAX_RETURN_IF_ERROR(check_range("map", offset, length, size(), access == Access::ReadWrite,
                                     read_only));
  // Whole pages; the namespace size is aligned, so this stays inside it.
  size_t mapped = static_cast<size_t>(*round_up(length, caps.page_size));
  int prot = PROT_READ | (access == Access::ReadWrite ? PROT_WRITE : 0);
  // hugetlbfs places its mappings itself; elsewhere ask for huge alignment.
  uint64_t huge = caps.hugetlb ? 0 : caps.huge_page_size;
  // Mapped at the extent's offset in the device: a mapping of a carved
  // namespace covers its own bytes only.
  void* addr = map_huge_aligned(fd_.get(), info_.offset + offset, mapped, prot,
                                shared_map_flags(caps), huge);
  if (addr == MAP_FAILED) {
    return errno_error(errno, "namespace " + name_ + ": mmap offset " + std::to_string(offset) +
                                  " length " + std::to_string(length));
  }
  if (huge != 0 && caps.persist == PersistMethod::kNone) {
    ::madvise(addr, mapped, MADV_HUGEPAGE);  // shmem THP in "advise" mode needs it
  }
  MappingRecord& record = mappings_.emplace_back();
  record.addr = static_cast<std::byte*>(addr);
  record.mapped_len = mapped;
  record.offset = offset;
  record.length = length;
  record.access = access;
  if (observer_ != nullptr) {
    Status observed = observer_->on_map(record);
    if (!observed) {
      ::munmap(addr, mapped);
      mappings_.pop_back();
      return observed.error();
    }
  }
  maps_.fetch_add(1, kRelaxed);
  return &record;
}

void DeviceCore::unmap(MappingRecord* record) {
  std::lock_guard<std::mutex> lock(maps_mu_);
  if (observer_ != nullptr) observer_->on_unmap(*record);
  ::munmap(record->addr, record->mapped_len);
  mappings_.remove_if([&](const MappingRecord& r) { return &r == record; });
}

bool DeviceCore::observer_fills_missing_pages() const {
  std::lock_guard<std::mutex> lock(maps_mu_);
  return observer_ != nullptr && observer_->fills_missing_pages();
}

Status DeviceCore::fault_in(uint64_t offset, uint64_t length) {
  if (fill_ == nullptr) return ok();
  return fill_->fault_in(offset, length);
}

void DeviceCore::fail_pages(std::byte* addr, size_t len) const {
  // MAP_FIXED over part of the mapping: the rest keeps its pages (and its
  // userfaultfd registration); an access here raises SIGBUS, as poison does.
  if (::mmap(addr, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, revoked_backing_fd(), 0) ==
      MAP_FAILED) {
    ::mprotect(addr, len, PROT_NONE);  // SIGSEGV instead, but no access
  }
}

bool DeviceCore::is_revoked(const MappingRecord* record) const {
  std::lock_guard<std::mutex> lock(maps_mu_);
  return record->revoked;
}

void DeviceCore::revoke_locked(MappingRecord& record) {
  if (record.revoked) return;
  int prot = PROT_READ | (record.access == Access::ReadWrite ? PROT_WRITE : 0);
  // MAP_FIXED replaces the pages atomically: the range is never unmapped, so
  // nothing else can be placed there before the Mapping is destroyed.
  void* addr = ::mmap(record.addr, record.mapped_len, prot, MAP_SHARED | MAP_FIXED,
                      revoked_backing_fd(), 0);
  if (addr == MAP_FAILED) {
    // Out of mappings or memory: still cut access off, at the cost of SIGSEGV
    // instead of SIGBUS.
    ::mprotect(record.addr, record.mapped_len, PROT_NONE);
  }
  record.revoked = true;
  revoked_.fetch_add(1, kRelaxed);
  if (observer_ != nullptr) observer_->on_revoked(record);
}

Status DeviceCore::resize(uint64_t new_size, ResizeOptions options) {
  const Capabilities& caps = capabilities();
  const bool carved = catalog_->carved();
  if (caps.kind == MediaKind::kDevdax && !carved) {
    return Error(std::errc::operation_not_supported,
                 "namespace " + name_ + ": a devdax-whole namespace has the device's fixed size");
  }
  // Rounding up to a huge page could add (or keep) up to a whole huge page
  // of a scarce pool that nobody asked for: hugetlbfs wants exact sizes, and
  // so does a carved extent (2 MiB units on devdax).
  if ((caps.hugetlb || carved) && new_size != 0) {
    if (Status aligned = check_aligned("resize to size", new_size, caps); !aligned) {
      return aligned.error().with_context("namespace " + name_ + ": ");
    }
  }
  auto rounded = validate_namespace_size(name_, new_size, caps.alignment);
  if (!rounded) return rounded.error();
  if (filling()) {
    return Error(std::errc::device_or_resource_busy,
                 "namespace " + name_ + ": cannot resize while a lazy restore fills it (" +
                     std::to_string(fill_->pages_filled()) + " of " +
                     std::to_string(fill_->pages_total()) + " pages); wait for it to complete");
  }
  std::lock_guard<std::mutex> lifecycle(lifecycle_mu_);
  auto hold = ref_.hold(RefAccess::kRead);
  if (!hold) return removed_error("resize");
  // Block writes wait while the size moves; block reads go on.
  Status frozen = ref_.freeze();
  if (!frozen) return frozen.error().with_context("namespace " + name_ + ": resize: ");
  struct Thaw {
    LiveRef& ref;
    ~Thaw() { ref.unfreeze(); }
  } thaw{ref_};
  // A freeze promises a stable image, its size included (see
  // freeze_block_writes for why this check cannot miss one).
  if (ref_.freeze_depth() > 1) {
    return Error(std::errc::device_or_resource_busy,
                 "namespace " + name_ + ": cannot resize to " + std::to_string(new_size) +
                     " while the namespace is frozen; thaw it first");
  }

  const uint64_t old_size = size();
  const uint64_t target = *rounded;
  if (target == old_size) return ok();
  if (target > old_size && carved) {
    // In place or not at all; the catalog zeroes the grown bytes before the
    // label covers them, and only then does a view reach them.
    RAWDAX_RETURN_IF_ERROR(catalog_->set_size(name_, target));
    if (target > view_capacity_) {
      auto view = map_view(target);
      if (!view) return view.error();
      catalog_->hold_view(info_.uuid, info_.offset, target);
      view_.store(view->data(), std::memory_order_release);
      view_capacity_ = target;
      views_.push_back(std::move(*view));
    }
    size_.store(target, std::memory_order_release);
    return ok();
  }
  if (target > old_size) {
    RAWDAX_RETURN_IF_ERROR(catalog_->check_space(name_, target - old_size));
    Status grown = size_file(fd_.get(), target, caps.hugetlb, info_.path);
    if (!grown) return grown.error().with_context("namespace " + name_ + ": cannot grow: ");
    if (target > view_capacity_) {
      uint64_t capacity = view_capacity(target, caps);
      auto view = map_view(capacity);
      if (!view) return view.error();
      view_.store(view->data(), std::memory_order_release);
      view_capacity_ = capacity;
      views_.push_back(std::move(*view));
    }
    // Metadata first: a crash before it leaves a longer file, trimmed at open.
    RAWDAX_RETURN_IF_ERROR(catalog_->set_size(name_, target));
    size_.store(target, std::memory_order_release);
    return ok();
  }
  {
    std::lock_guard<std::mutex> lock(maps_mu_);
    std::vector<MappingRecord*> cut;
    for (auto& record : mappings_) {
      if (!record.revoked && record.offset + record.length > target) cut.push_back(&record);
    }
    if (!cut.empty() && !options.force) {
      return Error(std::errc::device_or_resource_busy,
                   "namespace " + name_ + ": cannot shrink to " + std::to_string(target) +
                       ": a mapping at offset " + std::to_string(cut.front()->offset) +
                       " length " + std::to_string(cut.front()->length) +
                       " covers the cut (" + std::to_string(cut.size()) +
                       " in all; force revokes them)");
    }
    RAWDAX_RETURN_IF_ERROR(catalog_->set_size(name_, target));
    for (MappingRecord* record : cut) revoke_locked(*record);
    size_.store(target, std::memory_order_release);
  }
  // The cut stays mapped and in the file until the media is released, so a
  // late reader cannot fault; zeroing it frees its space and means a later
  // grow exposes zeros. A carved cut stays held by this device's views (no
  // neighbour gets it before they go), and a grow zeroes it again anyway.
  if (carved) return ok();
  return zero_range(target, old_size - target, /*allow_hole=*/true);
}

Status DeviceCore::remove() {
  std::lock_guard<std::mutex> lifecycle(lifecycle_mu_);
  if (ref_.killed()) return ok();
  ref_.kill();  // from here on, new I/O and map() fail with ENXIO
  {
    std::lock_guard<std::mutex> lock(maps_mu_);
    for (auto& record : mappings_) revoke_locked(record);
  }
  Status drained = ref_.wait_for_zero();
  if (!drained) return drained.error().with_context("namespace " + name_ + ": remove: ");
  release_media();
  return ok();
}

void DeviceCore::release_media() {
  if (views_.empty()) return;
  if (catalog_->carved()) {
    view_.store(nullptr, std::memory_order_release);
    views_.clear();
    fd_.reset();
    // Only now can no pointer of ours reach the extent's cut-off bytes.
    catalog_->release_view(info_.uuid);
    return;
  }
  if (capabilities().kind != MediaKind::kDevdax) {
    auto actual = file_size(fd_.get());
    if (actual && *actual > size()) {
      // Best effort: a failure leaves a longer file, which the next open trims.
      (void)::ftruncate(fd_.get(), static_cast<off_t>(size()));
    }
  }
  view_.store(nullptr, std::memory_order_release);
  views_.clear();
  fd_.reset();
}

DeviceStats DeviceCore::stats() const {
  DeviceStats s;
  s.reads = reads_.load(kRelaxed);
  s.writes = writes_.load(kRelaxed);
  s.bytes_read = bytes_read_.load(kRelaxed);
  s.bytes_written = bytes_written_.load(kRelaxed);
  s.write_zeroes = write_zeroes_.load(kRelaxed);
  s.discards = discards_.load(kRelaxed);
  s.flushes = flushes_.load(kRelaxed);
  s.maps = maps_.load(kRelaxed);
  s.revoked_mappings = revoked_.load(kRelaxed);
  s.media_errors = media_errors_.load(kRelaxed);
  {
    std::lock_guard<std::mutex> lock(bad_mu_);
    s.bad_ranges = bad_.size();
  }
  s.stall_total_ns = block_stall_total_ns_.load(kRelaxed);
  s.stall_max_ns = block_stall_max_ns_.load(kRelaxed);
  s.parked_writers = static_cast<uint64_t>(ref_.parked_writers());
  if (dirty_ != nullptr) s.dirty_pages = dirty_->count();
  std::lock_guard<std::mutex> lock(maps_mu_);
  s.live_mappings = static_cast<uint64_t>(
      std::count_if(mappings_.begin(), mappings_.end(), [](auto& r) { return !r.revoked; }));
  return s;
}

}  // namespace rawdax::internal
