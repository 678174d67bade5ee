#include "region/carved_media.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "common/units.h"
#include "media/files.h"
#include "media/persist.h"
#include "media/probe.h"
#include "region/label_area.h"

namespace rawdax::internal {
namespace {

constexpr std::string_view kDevdaxPrefix = "devdax:";
constexpr std::string_view kFilePrefix = "file:";
constexpr uint64_t kScanChunk = uint64_t{64} << 20;

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// The pid holding a flock on the inode `st` names, from /proc/locks; empty
// when it cannot be told.
std::string flock_holder(const struct stat& st) {
  std::ifstream in("/proc/locks");
  char want[64];
  std::snprintf(want, sizeof want, "%02x:%02x:%llu", major(st.st_dev), minor(st.st_dev),
                static_cast<unsigned long long>(st.st_ino));
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string id, type, mode, access, pid, inode;
    fields >> id >> type;
    if (type == "->") continue;  // a waiter, not the holder
    fields >> mode >> access >> pid >> inode;
    if (type == "FLOCK" && inode == want) return pid;
  }
  return "";
}

bool all_zero(const std::byte* p, size_t n, size_t* at) {
  static const std::byte zeros[4096] = {};
  for (size_t done = 0; done < n;) {
    size_t step = std::min(n - done, sizeof zeros);
    if (std::memcmp(p + done, zeros, step) != 0) {
      for (size_t i = 0; i < step; ++i) {
        if (p[done + i] != std::byte{0}) {
          *at = done + i;
          return false;
        }
      }
    }
    done += step;
  }
  return true;
}

}  // namespace

bool CarvedMedia::is_carved_spec(std::string_view spec) {
  return starts_with(spec, kDevdaxPrefix) || starts_with(spec, kFilePrefix);
}

Result<std::unique_ptr<CarvedMedia>> CarvedMedia::open(const std::string& spec, Options options) {
  std::unique_ptr<CarvedMedia> media(new CarvedMedia());
  media->spec_ = spec;
  if (starts_with(spec, kDevdaxPrefix)) {
    media->path_ = spec.substr(kDevdaxPrefix.size());
    RAWDAX_RETURN_IF_ERROR(media->open_devdax());
  } else if (starts_with(spec, kFilePrefix)) {
    media->path_ = spec.substr(kFilePrefix.size());
    if (media->path_.empty()) return Error(std::errc::invalid_argument, "region " + spec + ": no path");
    RAWDAX_RETURN_IF_ERROR(media->open_backing_file(options));
  } else {
    return Error(std::errc::invalid_argument, "region " + spec + " is not devdax: or file:");
  }
  RAWDAX_RETURN_IF_ERROR(media->lock());
  uint64_t area = label_area_bytes(media->align());
  if (media->size_ < area + media->align()) {
    return Error(std::errc::no_space_on_device,
                 "region " + spec + ": " + std::to_string(media->size_) + " bytes (" +
                     format_size(media->size_) + ") cannot hold the label area (" +
                     format_size(area) + ") and one extent of " + format_size(media->align()));
  }
  auto mapped = media->map(0, area);
  if (!mapped) return mapped.error().with_context("region " + spec + ": label area: ");
  media->label_area_ = std::move(*mapped);
  return media;
}

Status CarvedMedia::open_devdax() {
  auto geometry = read_devdax_geometry(path_);
  if (!geometry) return geometry.error();
  fd_.reset(::open(path_.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd_.valid()) return errno_error(errno, "region " + spec_ + ": cannot open " + path_);
  auto caps = probe_devdax(fd_.get(), *geometry);
  if (!caps) return caps.error();
  caps_ = *caps;
  size_ = geometry->size - geometry->size % geometry->align;
  return ok();
}

Status CarvedMedia::open_backing_file(const Options& options) {
  std::filesystem::path file(path_);
  std::string dir = file.has_parent_path() ? file.parent_path().string() : ".";
  auto caps = probe_directory(dir);
  if (!caps) return caps.error().with_context("region " + spec_ + ": ");
  caps_ = *caps;
  caps_.kind = MediaKind::kFile;
  // Extents aligned to the huge page let the kernel map them with PMDs
  // (hugetlbfs requires it; DAX filesystems use it when their blocks are).
  if (caps_.map_sync && caps_.huge_page_size > caps_.alignment) {
    caps_.alignment = caps_.huge_page_size;
  }
  if (options.require_dax && !caps_.map_sync) {
    return Error(std::errc::operation_not_supported,
                 "region " + spec_ + ": DAX required, but " + dir + " is on " + caps_.filesystem +
                     " without DAX (a MAP_SYNC mapping is refused; mount it with -o dax)");
  }
  struct stat st;
  if (::stat(path_.c_str(), &st) != 0) {
    if (errno != ENOENT || !options.create) {
      return errno_error(errno, "region " + spec_ +
                                    (errno == ENOENT ? " (init-region makes it, with --size)" : ""));
    }
    uint64_t want = options.file_size != 0 ? options.file_size : kDefaultFileSize;
    auto rounded = round_up(want, caps_.alignment);
    if (!rounded) return Error(std::errc::value_too_large, "region " + spec_ + ": size too large");
    // Every block is allocated now where a store could otherwise find the
    // media full (SIGBUS); tmpfs stays sparse, as its namespaces do.
    bool allocate = caps_.hugetlb || caps_.persist != PersistMethod::kNone;
    auto fd = create_sized_file(path_, *rounded, allocate);
    if (!fd) return fd.error().with_context("region " + spec_ + ": ");
    RAWDAX_RETURN_IF_ERROR(fsync_directory(dir));
    fd_ = std::move(*fd);
  } else {
    if (!S_ISREG(st.st_mode)) {
      return Error(std::errc::invalid_argument,
                   "region " + spec_ + ": " + path_ + " is not a regular file");
    }
    auto fd = open_file(path_, /*writable=*/true);
    if (!fd) return fd.error().with_context("region " + spec_ + ": ");
    fd_ = std::move(*fd);
  }
  auto size = file_size(fd_.get());
  if (!size) return size.error();
  size_ = *size - *size % caps_.alignment;
  return ok();
}

Status CarvedMedia::lock() {
  if (::flock(fd_.get(), LOCK_EX | LOCK_NB) == 0) return ok();
  if (errno != EWOULDBLOCK) return errno_error(errno, "region " + spec_ + ": flock " + path_);
  struct stat st;
  std::string holder;
  if (::fstat(fd_.get(), &st) == 0) holder = flock_holder(st);
  return Error(std::errc::device_or_resource_busy,
               "region " + spec_ + " is in use by " +
                   (holder.empty() ? std::string("another process") : "pid " + holder) +
                   " (it holds an exclusive lock on " + path_ + ")");
}

Result<MappedRange> CarvedMedia::map(uint64_t offset, uint64_t length) const {
  void* addr = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, shared_map_flags(caps_), fd_.get(),
                      static_cast<off_t>(offset));
  if (addr == MAP_FAILED) {
    return errno_error(errno, "region " + spec_ + ": cannot map offset " + std::to_string(offset) +
                                  " length " + std::to_string(length));
  }
  return MappedRange(addr, length);
}

Status CarvedMedia::persist(const std::byte* addr, size_t length) const {
  return persist_range(caps_.persist, addr, length);
}

Status CarvedMedia::zero(uint64_t offset, uint64_t length) const {
  if (length == 0) return ok();
  const std::string what = "region " + spec_ + ": zeroing offset " + std::to_string(offset) +
                           " length " + std::to_string(length);
  if (caps_.kind == MediaKind::kFile && !caps_.hugetlb) {
    // ZERO_RANGE keeps the blocks allocated (ext4, xfs); tmpfs has only
    // PUNCH_HOLE, which frees its pages (they come back zeroed on demand).
    int done = ::fallocate(fd_.get(), FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                           static_cast<off_t>(offset), static_cast<off_t>(length));
    if (done != 0 && (errno == EOPNOTSUPP || errno == EINVAL)) {
      done = ::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                         static_cast<off_t>(offset), static_cast<off_t>(length));
    }
    if (done == 0) {
      if (caps_.persist != PersistMethod::kNone && ::fdatasync(fd_.get()) != 0) {
        return errno_error(errno, what + ": fdatasync");
      }
      return ok();
    }
    if (errno != EOPNOTSUPP && errno != EINVAL) return errno_error(errno, what);
  }
  // Through a mapping, a bounded piece at a time.
  for (uint64_t done = 0; done < length;) {
    uint64_t step = std::min<uint64_t>(length - done, std::max(kScanChunk, align()));
    auto piece = map(offset + done, step);
    if (!piece) return piece.error();
    std::memset(piece->data(), 0, step);
    RAWDAX_RETURN_IF_ERROR(persist(piece->data(), step));
    done += step;
  }
  return ok();
}

Result<std::optional<uint64_t>> CarvedMedia::first_nonzero(uint64_t begin, uint64_t end) const {
  size_t at = 0;
  if (caps_.kind == MediaKind::kFile) {
    std::vector<std::byte> buf(kScanChunk);
    for (uint64_t pos = begin; pos < end;) {
      off_t data = ::lseek(fd_.get(), static_cast<off_t>(pos), SEEK_DATA);
      if (data < 0 && errno == ENXIO) break;  // only holes from here
      if (data >= 0) pos = static_cast<uint64_t>(data);
      if (pos >= end) break;
      size_t step = static_cast<size_t>(std::min<uint64_t>(end - pos, buf.size()));
      ssize_t n = ::pread(fd_.get(), buf.data(), step, static_cast<off_t>(pos));
      if (n <= 0) return errno_error(n < 0 ? errno : EIO, "region " + spec_ + ": read");
      if (!all_zero(buf.data(), static_cast<size_t>(n), &at)) return pos + at;
      pos += static_cast<uint64_t>(n);
    }
    return std::optional<uint64_t>();
  }
  for (uint64_t pos = begin; pos < end;) {
    uint64_t step = std::min<uint64_t>(end - pos, std::max(kScanChunk, align()));
    auto piece = map(pos, step);
    if (!piece) return piece.error();
    if (!all_zero(piece->data(), step, &at)) return pos + at;
    pos += step;
  }
  return std::optional<uint64_t>();
}

}  // namespace rawdax::internal
