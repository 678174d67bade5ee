// Reading one RAM block out of a QEMU migration stream: the pages a QEMU
// background snapshot (migrate with the background-snapshot capability)
// sends of the memory backend that maps a namespace.
//
// The stream (QEMU's migration/savevm.c and migration/ram.c, file version 3):
//   be32 0x5145564d ("QEVM"), be32 3
//   [0x07 CONFIGURATION: be32 len + machine name, then 0x05 subsections]
//   sections: u8 type; START (0x01) and FULL (0x04) carry be32 section id,
//     u8 len + idstr, be32 instance, be32 version; PART (0x02) and END (0x03)
//     only the section id; each may be followed by a footer 0x7e + be32 id.
//   the "ram" section's content: records of be64 (offset | flags):
//     MEM_SIZE 0x04   the block list: u8 len + idstr + be64 used_length each,
//                     until their lengths add up to the offset field
//     ZERO 0x02       [u8 len + idstr unless CONTINUE 0x20] u8 fill byte
//     PAGE 0x08       [u8 len + idstr unless CONTINUE 0x20] 4096 bytes
//     EOS 0x10        ends this section's chunk
//   0x1f EOF after the device state.
// In background-snapshot mode the device state (non-iterable sections) is
// sent after the RAM, so reading stops when the "ram" section ends or any
// other section begins; the rest is drained so that QEMU can finish.
//
// A background snapshot sends each page once, with its contents at the
// instant QEMU write-protected the guest's RAM (pages the guest writes later
// are sent from QEMU's write-fault handler before the write goes on). The
// reader checks that every page of the wanted block came.
//
// Not thread-safe; one reader per stream. Does not own the fd.
#ifndef RAWDAX_VM_MIGRATION_STREAM_H_
#define RAWDAX_VM_MIGRATION_STREAM_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <span>
#include <string>

#include "rawdax/result.h"

namespace rawdax::internal {

inline constexpr uint64_t kQemuTargetPageSize = 4096;  // x86's TARGET_PAGE_SIZE

struct RamStreamStats {
  uint64_t block_size = 0;   // used_length of the wanted block
  uint64_t pages = 0;        // data pages of the block
  uint64_t zero_pages = 0;   // zero pages of the block (fill byte 0)
  uint64_t stream_bytes = 0; // everything read, drained bytes included
};

// Called for each page of the wanted block in stream order, with its offset
// in the block and 4096 bytes (a zero record with a non-zero fill byte comes
// as a filled page; one with fill 0 is only counted). An error stops the
// read and is returned.
using RamPageFn = std::function<Status(uint64_t offset, std::span<const std::byte> page)>;

// Reads the stream from `fd` (blocking reads, each bounded by `idle`) up to
// the end of the RAM section, calling `on_page` for the pages of `block`,
// then drains `fd` to its end. Errors: EPROTO naming what is malformed or
// where the stream ended early; ENOTSUP for stream features this reader does
// not parse (compressed or XBZRLE pages, other iterable sections, unknown
// configuration subsections); ENOENT when the stream has no block `block`;
// EIO when some page of the block never came; ETIMEDOUT after `idle` without
// data.
Result<RamStreamStats> read_ram_block(int fd, const std::string& block, const RamPageFn& on_page,
                                      std::chrono::milliseconds idle = std::chrono::seconds(30));

}  // namespace rawdax::internal

#endif  // RAWDAX_VM_MIGRATION_STREAM_H_
