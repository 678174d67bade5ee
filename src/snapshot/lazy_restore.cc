#include "snapshot/lazy_restore.h"

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/crash_point.h"

namespace rawdax::internal {
namespace {

// Pages per step of the background pass: 1 MiB of 4 KiB pages.
constexpr uint64_t kBatchPages = 256;

// The image a chain describes: each page from the newest file that stores
// it. SnapshotFile::read_page is a pread plus a checksum check, so this is
// thread-safe, and a page that fails its checksum fails the fill of it.
class ChainSource final : public PageSource {
 public:
  explicit ChainSource(std::vector<SnapshotFile> chain) : chain_(std::move(chain)) {}
  Status read_page(uint64_t page, std::span<std::byte> out) const override {
    for (const SnapshotFile& file : chain_) {
      if (page < file.header().page_count() && file.has_page(page)) {
        return file.read_page(page, out);
      }
    }
    std::memset(out.data(), 0, out.size());
    return ok();
  }
  // One byte per page: 1 where some file of the chain stores the page.
  std::vector<uint8_t> stored() const {
    const SnapshotHeader& newest = chain_.front().header();
    std::vector<uint8_t> out(newest.page_count(), 0);
    for (const SnapshotFile& file : chain_) {
      for (uint64_t p = 0; p < std::min(out.size(), size_t(file.header().page_count())); ++p) {
        if (file.has_page(p)) out[p] = 1;
      }
    }
    return out;
  }
  const SnapshotHeader& newest() const { return chain_.front().header(); }

 private:
  const std::vector<SnapshotFile> chain_;
};

// Clears in `pending` every page that is not wholly inside a hole of `fd`
// (holes are unfilled pages; see the crash rule in the header). ENOTSUP when
// the file cannot report holes.
Status keep_holes_only(int fd, uint64_t size, uint64_t page_size, std::vector<uint8_t>& pending,
                       const std::string& what) {
  std::vector<uint8_t> in_hole(pending.size(), 0);
  uint64_t pos = 0;
  while (pos < size) {
    off_t hole = ::lseek(fd, static_cast<off_t>(pos), SEEK_HOLE);
    if (hole < 0) {
      if (errno == EINVAL) {
        return Error(std::errc::operation_not_supported,
                     what + "the filesystem does not report holes (SEEK_HOLE)");
      }
      return errno_error(errno, what + "lseek SEEK_HOLE");
    }
    if (static_cast<uint64_t>(hole) >= size) break;
    off_t data = ::lseek(fd, hole, SEEK_DATA);
    uint64_t end = size;
    if (data >= 0) {
      end = std::min<uint64_t>(size, static_cast<uint64_t>(data));
    } else if (errno != ENXIO) {
      return errno_error(errno, what + "lseek SEEK_DATA");
    }
    // Pages wholly inside [hole, end).
    const uint64_t first = (static_cast<uint64_t>(hole) + page_size - 1) / page_size;
    // The last page may be short: a hole reaching the end covers it.
    const uint64_t last = end >= size ? pending.size() : end / page_size;
    for (uint64_t p = first; p < last && p < in_hole.size(); ++p) in_hole[p] = 1;
    pos = std::max<uint64_t>(end, static_cast<uint64_t>(hole) + 1);
  }
  for (size_t p = 0; p < pending.size(); ++p) pending[p] = pending[p] && in_hole[p];
  return ok();
}

}  // namespace

Status check_lazy_media(const Catalog& catalog, const std::string& what) {
  const Capabilities& caps = catalog.capabilities();
  const std::string media = "media " + std::string(to_string(caps.kind)) +
                            (caps.filesystem.empty() ? "" : " (" + caps.filesystem + ")");
  auto refuse = [&](const std::string& why) {
    return Error(std::errc::operation_not_supported,
                 what + "a lazy restore needs media that tells filled pages from unfilled ones; " +
                     media + " " + why + " (restore without --lazy)");
  };
  if (catalog.carved() || caps.kind == MediaKind::kDevdax || caps.kind == MediaKind::kFile) {
    return refuse("has no holes to tell them by");
  }
  if (caps.kind == MediaKind::kMemfd) return ok();  // gone with the process: nothing to resume
  if (caps.hugetlb) return refuse("allocates every page when a namespace is made");
  if (!caps.punch_hole) return refuse("cannot make holes");
  // Under Debian 12's 6.1 kernel, ext4 -o dax gave a resumed fill that did
  // not reproduce the image (LazyRestoreTest.ClosingTheRegion...): refused
  // until the hole rule is shown to hold on DAX filesystems.
  if (caps.map_sync) return refuse("is a DAX filesystem, where a resumed fill is not yet sound");
  // A user's write must not make a neighbouring unfilled page look present:
  // the filesystem's allocation unit must not exceed a page.
  struct statvfs vfs;
  if (::statvfs(catalog.spec().c_str(), &vfs) == 0 && vfs.f_frsize > caps.alignment) {
    return refuse("allocates in " + std::to_string(vfs.f_frsize) + "-byte blocks, more than a page");
  }
  return ok();
}

LazyFill::LazyFill(std::shared_ptr<Catalog> catalog, NamespaceInfo ns,
                   std::shared_ptr<PageFill> fill)
    : catalog_(std::move(catalog)), ns_(std::move(ns)), fill_(std::move(fill)) {}

Result<std::unique_ptr<LazyFill>> LazyFill::start(std::shared_ptr<Catalog> catalog,
                                                  const NamespaceInfo& ns, UniqueFd fd,
                                                  std::vector<SnapshotFile> chain) {
  auto source = std::make_shared<ChainSource>(std::move(chain));
  const uint64_t page_size = source->newest().page_size;
  std::vector<uint8_t> pending = source->stored();
  auto fill = std::make_shared<PageFill>(source, std::move(fd), ns.offset, ns.size, page_size,
                                         pending, ns.name);
  std::unique_ptr<LazyFill> out(new LazyFill(std::move(catalog), ns, std::move(fill)));
  out->thread_ = std::thread([self = out.get()] { self->run(); });
  return out;
}

Result<std::unique_ptr<LazyFill>> LazyFill::resume(std::shared_ptr<Catalog> catalog,
                                                   const NamespaceInfo& ns) {
  if (!ns.restore) {
    return Error(std::errc::invalid_argument, "namespace " + ns.name + " has no restore to resume");
  }
  const std::string what = "namespace " + ns.name + ": the lazy restore of " +
                           ns.restore->snapshot + " is incomplete and cannot resume: ";
  // Every refusal says how to get out of it.
  auto refuse = [&](const Error& e) {
    return Error(e.code(), what + e.message() + " (restore it again, or destroy the namespace)");
  };
  auto chain = open_chain(ns.restore->snapshot);
  if (!chain) return refuse(chain.error());
  if (chain->front().header().header_checksum != ns.restore->checksum) {
    return refuse(Error(std::errc::illegal_byte_sequence,
                        "the file's header checksum is " +
                            chain->front().header().header_checksum +
                            ", the restore began from " + ns.restore->checksum));
  }
  if (chain->front().header().namespace_size != ns.size) {
    return refuse(Error(std::errc::illegal_byte_sequence,
                        "the snapshot's size differs from the namespace's"));
  }
  if (Status media = check_lazy_media(*catalog, ""); !media) return refuse(media.error());
  auto fd = catalog->open_backing(ns.name, /*writable=*/true);
  if (!fd) return refuse(fd.error());
  auto source = std::make_shared<ChainSource>(std::move(*chain));
  const uint64_t page_size = source->newest().page_size;
  std::vector<uint8_t> pending = source->stored();
  if (Status holes = keep_holes_only(fd->get(), ns.size, page_size, pending, ""); !holes) {
    return refuse(holes.error());
  }
  auto fill = std::make_shared<PageFill>(source, std::move(*fd), ns.offset, ns.size, page_size,
                                         pending, ns.name);
  std::unique_ptr<LazyFill> out(new LazyFill(std::move(catalog), ns, std::move(fill)));
  out->thread_ = std::thread([self = out.get()] { self->run(); });
  return out;
}

LazyFill::~LazyFill() {
  stop_.store(true, std::memory_order_relaxed);
  if (thread_.joinable()) thread_.join();
}

void LazyFill::run() {
  Status st;
  uint64_t cursor = 0;
  while (st && !stop_.load(std::memory_order_relaxed)) {
    auto more = fill_->fill_next(&cursor, kBatchPages);
    if (!more) {
      st = more.error();
    } else if (!*more) {
      break;
    } else {
      crash_point("lazy restore batch filled");
    }
  }
  const bool stopped = stop_.load(std::memory_order_relaxed);
  // Pages that on-demand fills were writing as the pass went by, or that a
  // failed on-demand fill gave back: this waits for, or retries, them.
  if (st && !stopped) st = fill_->fill(0, fill_->size());
  if (st && !stopped) st = fill_->sync();
  if (st && !stopped) {
    crash_point("lazy restore pages synced");
    st = catalog_->clear_restore(ns_.name, ns_.uuid);
    crash_point("lazy restore marker dropped");
    // Only now may the device punch holes again (see PageFill::settle).
    if (st) fill_->settle();
  }
  std::lock_guard<std::mutex> lock(mu_);
  finished_ = true;
  done_ = st && !stopped;
  result_ = stopped && st ? Status(Error(std::errc::operation_canceled,
                                         "namespace " + ns_.name + ": the lazy restore of " +
                                             ns_.restore->snapshot + " was stopped"))
                          : st;
  cv_.notify_all();
}

bool LazyFill::done() const {
  std::lock_guard<std::mutex> lock(mu_);
  return done_;
}

RestoreState LazyFill::state() const {
  RestoreState out = *ns_.restore;
  out.pages_filled = fill_->pages_filled();
  out.pages_total = fill_->pages_total();
  std::lock_guard<std::mutex> lock(mu_);
  out.filling = !finished_;
  if (finished_ && !result_) out.error = result_.error().message();
  return out;
}

Status LazyFill::wait() const {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return finished_; });
  return result_;
}

}  // namespace rawdax::internal
