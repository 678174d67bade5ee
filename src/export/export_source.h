// What an NBD export serves, whatever it is: a namespace (through its
// Device) or a snapshot chain (a read-only SnapshotImage). NbdConnection
// runs every command, INFO reply and metadata context through this one
// interface, so it has one path for both kinds.
//
// Metadata contexts: each source offers a fixed list (contexts()); a
// context's id on the wire is its index in that list plus one, so ids are
// distinct and stable for an export. base:allocation is always first.
//
// Thread safety: a source is used by the one session thread that opened it.
// Errors: ENXIO means the export is gone (namespace removed, snapshot
// unexported) and goes on the wire as ESHUTDOWN; EIO/EILSEQ the data cannot
// be read (media error, a deleted or corrupt snapshot file).
#ifndef RAWDAX_EXPORT_EXPORT_SOURCE_H_
#define RAWDAX_EXPORT_EXPORT_SOURCE_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "rawdax/result.h"

namespace rawdax::nbd {

// One block status descriptor: a run and its flags in the context's terms
// (base:allocation: HOLE|ZERO; qemu:dirty-bitmap: 1 = dirty).
struct StatusExtent {
  uint64_t length = 0;
  uint32_t flags = 0;
};

class ExportSource {
 public:
  virtual ~ExportSource() = default;

  virtual uint64_t size() const = 0;
  // Whatever the server's options: snapshot exports always are.
  virtual bool read_only() const = 0;
  // NBD_INFO_DESCRIPTION's text.
  virtual std::string description() const = 0;
  // The metadata contexts offered, by id - 1.
  virtual const std::vector<std::string>& contexts() const = 0;

  virtual Status read(uint64_t offset, std::span<std::byte> out) = 0;
  // Whether a read of the range would succeed, before a reply promises data.
  virtual Status check_readable(uint64_t offset, uint64_t length) = 0;
  // Whether the whole range reads as zeros without being stored.
  virtual Result<bool> is_hole(uint64_t offset, uint64_t length) = 0;
  // Block status of context `index` (into contexts()): at most `max` runs
  // from `offset`, within the range.
  virtual Result<std::vector<StatusExtent>> block_status(size_t index, uint64_t offset,
                                                         uint64_t length, size_t max) = 0;

  // Writes: EPERM on a read-only source (check_request refuses them first).
  virtual Status write(uint64_t offset, std::span<const std::byte> data, bool fua) = 0;
  virtual Status write_zeroes(uint64_t offset, uint64_t length, bool no_hole) = 0;
  virtual Status discard(uint64_t offset, uint64_t length) = 0;
  virtual Status flush() = 0;

  // The file whose bytes [backing_offset(), + size()) are the export's, for
  // sendfile(2); "" when there is none (a snapshot: its pages are checked
  // on every read, and unstored ones are not in any file).
  virtual std::string backing_path() const { return ""; }
  virtual uint64_t backing_offset() const { return 0; }
};

}  // namespace rawdax::nbd

#endif  // RAWDAX_EXPORT_EXPORT_SOURCE_H_
