#include "snapshot/snapshot_image.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>

namespace rawdax::internal {

Result<std::unique_ptr<SnapshotImage>> SnapshotImage::open(const std::string& path) {
  auto chain = open_chain(path);
  if (!chain) return chain.error();
  std::unique_ptr<SnapshotImage> image(new SnapshotImage());
  for (SnapshotFile& file : *chain) {
    RAWDAX_RETURN_IF_ERROR(file.verify_pages());
    struct stat st;
    if (::fstat(file.fd(), &st) != 0) return errno_error(errno, "fstat " + file.path());
    image->identities_.push_back({st.st_dev, st.st_ino});
  }
  image->chain_ = std::move(*chain);
  return image;
}

Status SnapshotImage::check() const {
  for (size_t i = 0; i < chain_.size(); ++i) {
    const SnapshotFile& file = chain_[i];
    struct stat st;
    if (::fstat(file.fd(), &st) == 0 && st.st_nlink == 0) {
      return Error(std::errc::io_error,
                   "snapshot file " + file.path() + " was deleted while exported");
    }
    if (::stat(file.path().c_str(), &st) != 0 || st.st_dev != identities_[i].dev ||
        st.st_ino != identities_[i].ino) {
      return Error(std::errc::io_error, "snapshot file " + file.path() +
                                            " no longer names the file exported (deleted, "
                                            "moved or replaced)");
    }
  }
  return ok();
}

size_t SnapshotImage::owner(uint64_t page) const {
  for (size_t i = 0; i < chain_.size(); ++i) {
    if (chain_[i].has_page(page)) return i;
  }
  return chain_.size();
}

Status SnapshotImage::read(uint64_t offset, std::span<std::byte> out) const {
  if (offset > size() || out.size() > size() - offset) {
    return Error(std::errc::invalid_argument,
                 "snapshot " + newest().path() + ": read of " + std::to_string(out.size()) +
                     " bytes at " + std::to_string(offset) + " is past its end (" +
                     std::to_string(size()) + ")");
  }
  RAWDAX_RETURN_IF_ERROR(check());
  const SnapshotHeader& h = newest().header();
  const uint64_t ps = h.page_size;
  std::vector<std::byte> bounce;  // a page read only in part
  uint64_t done = 0;
  while (done < out.size()) {
    const uint64_t at = offset + done;
    const uint64_t page = at / ps;
    const uint64_t in_page = at % ps;
    const uint64_t take = std::min<uint64_t>(h.page_bytes(page) - in_page, out.size() - done);
    std::span<std::byte> dst = out.subspan(done, take);
    const size_t file = owner(page);
    if (file == chain_.size()) {
      std::memset(dst.data(), 0, dst.size());
    } else if (in_page == 0 && take == h.page_bytes(page)) {
      RAWDAX_RETURN_IF_ERROR(chain_[file].read_page(page, dst));
    } else {
      bounce.resize(h.page_bytes(page));
      RAWDAX_RETURN_IF_ERROR(chain_[file].read_page(page, bounce));
      std::memcpy(dst.data(), bounce.data() + in_page, take);
    }
    done += take;
  }
  return ok();
}

bool SnapshotImage::unstored(uint64_t offset, uint64_t length) const {
  if (length == 0 || offset >= size()) return true;
  const uint64_t ps = page_size();
  const uint64_t end = std::min(size(), offset + length);
  for (uint64_t page = offset / ps; page * ps < end; ++page) {
    if (owner(page) != chain_.size()) return false;
  }
  return true;
}

template <typename Pred>
std::vector<ImageExtent> SnapshotImage::runs(uint64_t offset, uint64_t length, size_t max,
                                             Pred set) const {
  std::vector<ImageExtent> out;
  if (max == 0 || offset >= size()) return out;
  const uint64_t ps = page_size();
  const uint64_t end = std::min(size(), offset + std::min(length, size()));
  uint64_t at = offset;
  while (at < end) {
    const uint64_t page = at / ps;
    const bool state = set(page);
    // This page's bytes from `at`, then whole pages of the same state.
    uint64_t run_end = std::min(end, (page + 1) * ps);
    while (run_end < end && set(run_end / ps) == state) run_end = std::min(end, run_end + ps);
    if (!out.empty() && out.back().set == state) {
      out.back().length += run_end - at;
    } else {
      if (out.size() == max) break;
      out.push_back({run_end - at, state});
    }
    at = run_end;
  }
  return out;
}

std::vector<ImageExtent> SnapshotImage::allocation(uint64_t offset, uint64_t length,
                                                   size_t max) const {
  return runs(offset, length, max, [this](uint64_t page) { return owner(page) != chain_.size(); });
}

std::vector<ImageExtent> SnapshotImage::dirty(uint64_t offset, uint64_t length, size_t max) const {
  return runs(offset, length, max, [this](uint64_t page) { return newest().has_page(page); });
}

}  // namespace rawdax::internal
