// SnapshotImage: the read-only block image a snapshot file and its base
// chain describe (docs/snapshot.md), for exporting it (docs/export.md,
// "Point-in-time exports").
//
// A page reads from the newest file of the chain that stores it; a page no
// file stores reads as zeros (it was all zeros when the full snapshot was
// taken, or unchanged since a base that did not store it either). Every page
// read is checked against its file's checksum table, so a page corrupted
// after the export was registered fails with EILSEQ (an EIO on the wire)
// naming the file and the offset.
//
// Broken: a file of the chain removed while the image is open (its link
// count is 0, or its path no longer names the inode that was opened) makes
// check(), and so every read, fail with EIO: what the path names now is not
// the image that was verified, and a backup must not silently read a
// half-deleted chain. Extents stay answerable (they come from the bitmaps
// read at open).
//
// Thread safety: after open() the object is immutable; every method is
// const and may run concurrently (reads are pread(2) on the files' own
// descriptors). Ownership: the image owns the files' descriptors.
#ifndef RAWDAX_SNAPSHOT_SNAPSHOT_IMAGE_H_
#define RAWDAX_SNAPSHOT_SNAPSHOT_IMAGE_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "rawdax/result.h"
#include "snapshot/snapshot_file.h"

namespace rawdax::internal {

// A run of pages that share one state: stored (allocation) or dirty.
struct ImageExtent {
  uint64_t length = 0;
  bool set = false;
};

class SnapshotImage {
 public:
  // Opens `path` and its base chain (open_chain) and verifies every stored
  // page of every file (verify_pages): an image that would fail a restore is
  // refused here, with that error.
  static Result<std::unique_ptr<SnapshotImage>> open(const std::string& path);

  uint64_t size() const { return newest().header().namespace_size; }
  uint64_t page_size() const { return newest().header().page_size; }
  // Newest first; chain().front() is the file the image was opened by.
  const std::vector<SnapshotFile>& chain() const { return chain_; }
  const SnapshotFile& newest() const { return chain_.front(); }
  bool incremental() const { return chain_.size() > 1; }

  // Fills `out` with the image's bytes at `offset`. EINVAL past the end;
  // EIO when broken (check()); EILSEQ when a page fails its checksum.
  Status read(uint64_t offset, std::span<std::byte> out) const;
  // OK, or EIO naming the file of the chain that was deleted or replaced.
  Status check() const;
  // Whether no file stores any page of [offset, offset + length).
  bool unstored(uint64_t offset, uint64_t length) const;
  // [offset, offset + length) clipped to the image, as at most `max` runs
  // (the last one may end before the range does): set = stored by some file
  // of the chain.
  std::vector<ImageExtent> allocation(uint64_t offset, uint64_t length, size_t max) const;
  // Likewise, set = stored by the newest file: the pages an incremental says
  // changed since its base (every stored page of a full snapshot).
  std::vector<ImageExtent> dirty(uint64_t offset, uint64_t length, size_t max) const;

 private:
  SnapshotImage() = default;
  // The index in chain_ of the newest file storing `page`; chain_.size() if none.
  size_t owner(uint64_t page) const;
  template <typename Pred>
  std::vector<ImageExtent> runs(uint64_t offset, uint64_t length, size_t max, Pred set) const;

  struct Identity {
    dev_t dev = 0;
    ino_t ino = 0;
  };
  std::vector<SnapshotFile> chain_;
  std::vector<Identity> identities_;  // chain_'s files as opened
};

}  // namespace rawdax::internal

#endif  // RAWDAX_SNAPSHOT_SNAPSHOT_IMAGE_H_
