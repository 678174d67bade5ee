// The snapshot file format (docs/snapshot.md): writing and reading one file.
//
//   [0, 4096)              header: "RAWDAXSNAP 2\n" + JSON (padded with zeros)
//   [4096, …)              page bitmap: one bit per page of the namespace
//   then, 8-aligned        page checksum table: XXH3-64 of each stored page, by page
//   then, page-aligned     data area: page i at data_offset + i * page_size;
//                          pages not in the bitmap are holes (not stored)
//
// The header's JSON holds the geometry, ids, the base's id/checksum/path,
// XXH3-64 of the bitmap and of the checksum table, and header_checksum: XXH3-64
// of the JSON without that field. header_checksum identifies the whole file:
// it covers the bitmap and table checksums, which cover every stored page.
//
// SnapshotWriter writes to PATH.tmp.<pid> and renames it over PATH only in
// finish(), after an fsync, so a crash never leaves a complete-looking file.
// SnapshotWriter::write_pages may be called in any page order, and from
// several threads at once for disjoint pages; the rest of both classes is
// not thread-safe.
#ifndef RAWDAX_SNAPSHOT_SNAPSHOT_FILE_H_
#define RAWDAX_SNAPSHOT_SNAPSHOT_FILE_H_

#include <algorithm>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "rawdax/result.h"
#include "rawdax/snapshot.h"

namespace rawdax::internal {

struct SnapshotHeader {
  uint64_t version = 2;
  std::string id;
  std::string source_uuid;
  uint64_t namespace_size = 0;
  uint64_t page_size = 0;
  std::string base_id;
  std::string base_checksum;  // hex; empty for a full snapshot
  std::string base_path;
  uint64_t stored_pages = 0;
  std::string bitmap_checksum;
  std::string table_checksum;
  std::string header_checksum;
  // Written since the exportable snapshots: the name of the namespace the
  // snapshot was taken of, and when (UTC, ISO 8601: 2026-12-05T11:12:48Z).
  // Empty in older files; the JSON then has no such member, so their
  // header_checksum still matches.
  std::string namespace_name;
  std::string taken_at;

  uint64_t page_count() const { return (namespace_size + page_size - 1) / page_size; }
  // The namespace bytes page `page` holds: page_size, less for a short last page.
  uint64_t page_bytes(uint64_t page) const {
    return std::min(page_size, namespace_size - page * page_size);
  }
  uint64_t bitmap_offset() const { return 4096; }
  uint64_t bitmap_bytes() const { return (page_count() + 7) / 8; }
  uint64_t table_offset() const { return (bitmap_offset() + bitmap_bytes() + 7) & ~uint64_t{7}; }
  uint64_t data_offset() const {
    uint64_t end = table_offset() + 8 * page_count();
    return (end + page_size - 1) / page_size * page_size;
  }
  uint64_t file_size() const { return data_offset() + page_count() * page_size; }
};

class SnapshotWriter {
 public:
  static Result<SnapshotWriter> create(const std::string& path, SnapshotHeader header);
  SnapshotWriter(SnapshotWriter&&) = default;
  SnapshotWriter& operator=(SnapshotWriter&&) = default;
  ~SnapshotWriter();  // removes the temporary file unless finish() succeeded

  // Stores consecutive pages starting at first_page (the last may be short).
  Status write_pages(uint64_t first_page, std::span<const std::byte> data);
  // Writes bitmap, table and header, fsyncs, renames into place.
  Result<SnapshotHeader> finish();

 private:
  SnapshotWriter() = default;
  std::string path_, tmp_path_;
  UniqueFd fd_;
  SnapshotHeader header_;
  bool has_page(uint64_t page) const { return (bitmap_[page / 8] >> (page % 8)) & 1; }

  std::unique_ptr<std::mutex> mu_ = std::make_unique<std::mutex>();  // movable
  std::vector<uint8_t> bitmap_;      // guarded by *mu_ until finish()
  std::vector<uint64_t> checksums_;  // likewise
  bool done_ = false;
};

class SnapshotFile {
 public:
  // Reads and checks the header, bitmap and checksum table (not the pages).
  static Result<SnapshotFile> open(const std::string& path);
  const SnapshotHeader& header() const { return header_; }
  const std::string& path() const { return path_; }
  // The open file, read-only; valid for this object's life (pread on it is
  // thread-safe).
  int fd() const { return fd_.get(); }
  bool has_page(uint64_t page) const { return (bitmap_[page / 8] >> (page % 8)) & 1; }
  // The stored page's checksum (page_checksum() of its contents).
  uint64_t stored_checksum(uint64_t page) const { return checksums_[page]; }
  // Reads a stored page's header().page_bytes(page) bytes into `out`, which
  // must be that long, and checks its checksum (page_checksum(), so a short
  // last page is checked zero-padded, as it was written). Bytes the file holds
  // past the namespace's end are not part of the image and are not read.
  Status read_page(uint64_t page, std::span<std::byte> out) const;
  // Reads every stored page and checks its checksum, exactly as read_page()
  // does for a restore: what verifies is what a restore writes.
  Status verify_pages() const;
  // The base's path, resolved against this file's directory when relative.
  std::string resolved_base_path() const;
  SnapshotInfo info() const;

 private:
  SnapshotFile() = default;
  std::string path_;
  UniqueFd fd_;
  SnapshotHeader header_;
  std::vector<uint8_t> bitmap_;
  std::vector<uint64_t> checksums_;
};

// Opens `path` and its base chain, checking that each base has the recorded
// id and checksum. Returns the chain newest first. Does not read pages.
Result<std::vector<SnapshotFile>> open_chain(const std::string& path);

std::string hex64(uint64_t value);

// The header of a new full snapshot of namespace `name`, taken now: a fresh
// id, no base.
SnapshotHeader new_snapshot_header(const std::string& name, const std::string& source_uuid,
                                   uint64_t namespace_size, uint64_t page_size);
// What a snapshot at `path` with header `h` reports (no timings).
SnapshotInfo snapshot_info_of(const std::string& path, const SnapshotHeader& h);

// Now, in the form of SnapshotHeader::taken_at.
std::string utc_timestamp_now();
// A file's mtime in that form ("" when it cannot be read): the time of a
// snapshot written before taken_at was recorded.
std::string utc_timestamp_of_mtime(int fd);

// The checksum a snapshot records for page `index`: XXH3-64 seeded with the
// index, over the page zero-padded to `page_size` (the namespace's last page
// may be short).
uint64_t page_checksum(std::span<const std::byte> data, uint64_t index, uint64_t page_size);

}  // namespace rawdax::internal

#endif  // RAWDAX_SNAPSHOT_SNAPSHOT_FILE_H_
