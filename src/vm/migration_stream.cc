#include "vm/migration_stream.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <vector>

namespace rawdax::internal {
namespace {

constexpr uint32_t kFileMagic = 0x5145564d;
constexpr uint32_t kFileVersion = 3;

enum : uint8_t {
  kSectionStart = 0x01,
  kSectionPart = 0x02,
  kSectionEnd = 0x03,
  kSectionFull = 0x04,
  kSubsection = 0x05,
  kConfiguration = 0x07,
  kCommand = 0x08,
  kEof = 0x1f,
  kFooter = 0x7e,
};

enum : uint64_t {
  kFlagZero = 0x02,
  kFlagMemSize = 0x04,
  kFlagPage = 0x08,
  kFlagEos = 0x10,
  kFlagContinue = 0x20,
  kFlagXbzrle = 0x40,
  kFlagHook = 0x80,
  kFlagCompressPage = 0x100,
  kFlagMultifdFlush = 0x200,  // QEMU 8.1+: nothing for a reader to do
};

Error malformed(const std::string& what) {
  return Error(std::errc::protocol_error, "QEMU migration stream: " + what);
}

// Buffered, blocking reads of the stream with an idle bound.
class Reader {
 public:
  Reader(int fd, std::chrono::milliseconds idle) : fd_(fd), idle_(idle), buf_(1 << 20) {}

  Status read(void* out, size_t n) {
    auto* dst = static_cast<std::byte*>(out);
    while (n > 0) {
      if (pos_ == end_) {
        auto got = fill();
        if (!got) return got.error();
        if (*got == 0) return malformed("ended early (QEMU closed it)");
      }
      size_t take = std::min(n, end_ - pos_);
      std::memcpy(dst, buf_.data() + pos_, take);
      pos_ += take;
      dst += take;
      n -= take;
    }
    return ok();
  }
  Result<uint8_t> u8() {
    uint8_t v;
    RAWDAX_RETURN_IF_ERROR(read(&v, 1));
    return v;
  }
  Result<uint32_t> be32() {
    uint8_t b[4];
    RAWDAX_RETURN_IF_ERROR(read(b, 4));
    return uint32_t{b[0]} << 24 | uint32_t{b[1]} << 16 | uint32_t{b[2]} << 8 | b[3];
  }
  Result<uint64_t> be64() {
    auto hi = be32();
    if (!hi) return hi.error();
    auto lo = be32();
    if (!lo) return lo.error();
    return uint64_t{*hi} << 32 | *lo;
  }
  Result<std::string> short_string() {  // u8 len + bytes
    auto len = u8();
    if (!len) return len.error();
    std::string s(*len, '\0');
    RAWDAX_RETURN_IF_ERROR(read(s.data(), s.size()));
    return s;
  }
  // The next byte without consuming it; nullopt at the end of the stream.
  Result<std::optional<uint8_t>> peek() {
    if (pos_ == end_) {
      auto got = fill();
      if (!got) return got.error();
      if (*got == 0) return std::optional<uint8_t>();
    }
    return std::optional<uint8_t>(static_cast<uint8_t>(buf_[pos_]));
  }
  // Reads and drops everything up to the end of the stream.
  Status drain() {
    pos_ = end_;
    for (;;) {
      auto got = fill();
      if (!got) return got.error();
      if (*got == 0) return ok();
      pos_ = end_;
    }
  }
  uint64_t total() const { return total_; }

 private:
  // Refills the (consumed) buffer; 0 at the end of the stream.
  Result<size_t> fill() {
    pos_ = end_ = 0;
    for (;;) {
      pollfd pfd{fd_, POLLIN, 0};
      int ready = ::poll(&pfd, 1, static_cast<int>(idle_.count()));
      if (ready < 0 && errno == EINTR) continue;
      if (ready < 0) return errno_error(errno, "QEMU migration stream: poll");
      if (ready == 0) {
        return Error(std::errc::timed_out, "QEMU migration stream: nothing for " +
                                               std::to_string(idle_.count()) + " ms");
      }
      ssize_t n = ::read(fd_, buf_.data(), buf_.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return errno_error(errno, "QEMU migration stream: read");
      end_ = static_cast<size_t>(n);
      total_ += end_;
      return end_;
    }
  }

  int fd_;
  std::chrono::milliseconds idle_;
  std::vector<std::byte> buf_;
  size_t pos_ = 0, end_ = 0;
  uint64_t total_ = 0;
};

// The configuration section (after its type byte): the machine name, then
// the subsections QEMU sends when needed.
Status skip_configuration(Reader& in) {
  auto len = in.be32();
  if (!len) return len.error();
  if (*len > 4096) return malformed("configuration name of " + std::to_string(*len) + " bytes");
  std::string name(*len, '\0');
  RAWDAX_RETURN_IF_ERROR(in.read(name.data(), name.size()));
  for (;;) {
    auto next = in.peek();
    if (!next) return next.error();
    if (*next != kSubsection) return ok();
    RAWDAX_RETURN_IF_ERROR(in.u8());
    auto sub = in.short_string();
    if (!sub) return sub.error();
    RAWDAX_RETURN_IF_ERROR(in.be32());  // its version
    if (*sub == "configuration/target-page-bits") {
      RAWDAX_RETURN_IF_ERROR(in.be32());
    } else if (*sub == "configuration/capabilities") {
      auto count = in.be32();
      if (!count) return count.error();
      for (uint32_t i = 0; i < *count; ++i) RAWDAX_RETURN_IF_ERROR(in.short_string());
    } else if (*sub == "configuration/uuid") {
      uint8_t uuid[16];
      RAWDAX_RETURN_IF_ERROR(in.read(uuid, sizeof uuid));
    } else {
      return Error(std::errc::operation_not_supported,
                   "QEMU migration stream: unknown configuration subsection " + *sub);
    }
  }
}

// The RAM section's content up to its EOS record.
class RamParser {
 public:
  RamParser(Reader& in, const std::string& block, const RamPageFn& on_page)
      : in_(in), block_(block), on_page_(on_page) {}

  Status chunk() {
    std::vector<std::byte> page(kQemuTargetPageSize);
    for (;;) {
      auto word = in_.be64();
      if (!word) return word.error();
      const uint64_t flags = *word & (kQemuTargetPageSize - 1);
      const uint64_t addr = *word & ~(kQemuTargetPageSize - 1);
      if (flags & (kFlagXbzrle | kFlagCompressPage | kFlagHook)) {
        return Error(std::errc::operation_not_supported,
                     "QEMU migration stream: compressed, XBZRLE or RDMA pages (flags " +
                         std::to_string(flags) + ") are not read");
      }
      if (flags & kFlagMemSize) {
        RAWDAX_RETURN_IF_ERROR(block_list(addr));
        continue;
      }
      if (flags & (kFlagZero | kFlagPage)) {
        if (!(flags & kFlagContinue)) {
          auto id = in_.short_string();
          if (!id) return id.error();
          current_ = *id;
        } else if (current_.empty()) {
          return malformed("a page continues no block");
        }
        const bool ours = current_ == block_;
        if (ours && (addr >= size_ || addr % kQemuTargetPageSize != 0)) {
          return malformed("page at " + std::to_string(addr) + " outside block " + block_);
        }
        bool filled = false;
        if (flags & kFlagZero) {
          auto fill = in_.u8();
          if (!fill) return fill.error();
          if (*fill != 0) {
            std::memset(page.data(), *fill, page.size());
            filled = true;
          }
        } else {
          RAWDAX_RETURN_IF_ERROR(in_.read(page.data(), page.size()));
          filled = true;
        }
        if (ours) {
          mark(addr / kQemuTargetPageSize);
          if (filled) {
            ++stats_.pages;
            RAWDAX_RETURN_IF_ERROR(on_page_(addr, page));
          } else {
            ++stats_.zero_pages;
          }
        }
        continue;
      }
      if (flags & kFlagEos) return ok();
      if (flags & ~kFlagMultifdFlush) {
        return malformed("RAM record with unknown flags " + std::to_string(flags));
      }
    }
  }

  // Every page of the block came.
  Status check_complete() const {
    if (!found_) {
      return Error(std::errc::no_such_file_or_directory,
                   "QEMU migration stream: no RAM block " + block_);
    }
    if (seen_count_ != seen_.size()) {
      return Error(std::errc::io_error, "QEMU migration stream: " +
                                            std::to_string(seen_.size() - seen_count_) +
                                            " pages of block " + block_ + " never came");
    }
    return ok();
  }
  RamStreamStats stats() const { return stats_; }

 private:
  Status block_list(uint64_t total) {
    uint64_t sum = 0;
    while (sum < total) {
      auto id = in_.short_string();
      if (!id) return id.error();
      auto length = in_.be64();
      if (!length) return length.error();
      sum += *length;
      if (*id == block_) {
        found_ = true;
        size_ = *length;
        stats_.block_size = size_;
        seen_.assign(size_ / kQemuTargetPageSize, false);
        seen_count_ = 0;
      }
    }
    if (sum != total) return malformed("RAM block lengths do not add up to the total");
    return ok();
  }
  void mark(uint64_t page) {
    if (!seen_[page]) {
      seen_[page] = true;
      ++seen_count_;
    }
  }

  Reader& in_;
  const std::string& block_;
  const RamPageFn& on_page_;
  std::string current_;
  bool found_ = false;
  uint64_t size_ = 0;
  std::vector<bool> seen_;
  uint64_t seen_count_ = 0;
  RamStreamStats stats_;
};

}  // namespace

Result<RamStreamStats> read_ram_block(int fd, const std::string& block, const RamPageFn& on_page,
                                      std::chrono::milliseconds idle) {
  Reader in(fd, idle);
  auto magic = in.be32();
  if (!magic) return magic.error();
  auto version = in.be32();
  if (!version) return version.error();
  if (*magic != kFileMagic || *version != kFileVersion) {
    return malformed("not a version 3 QEMU migration stream");
  }
  RamParser ram(in, block, on_page);
  std::optional<uint32_t> ram_section;
  bool done = false;
  while (!done) {
    auto type = in.u8();
    if (!type) return type.error();
    switch (*type) {
      case kConfiguration:
        RAWDAX_RETURN_IF_ERROR(skip_configuration(in));
        continue;
      case kCommand: {  // be16 command, be16 length, payload
        uint8_t head[4];
        RAWDAX_RETURN_IF_ERROR(in.read(head, sizeof head));
        std::vector<uint8_t> payload(size_t{head[2]} << 8 | head[3]);
        RAWDAX_RETURN_IF_ERROR(in.read(payload.data(), payload.size()));
        continue;
      }
      case kSectionStart:
      case kSectionFull: {
        auto id = in.be32();
        if (!id) return id.error();
        auto name = in.short_string();
        if (!name) return name.error();
        RAWDAX_RETURN_IF_ERROR(in.be32());  // instance
        RAWDAX_RETURN_IF_ERROR(in.be32());  // version
        if (*type == kSectionFull) {  // device state: the RAM is over
          done = true;
          break;
        }
        if (*name != "ram") {
          return Error(std::errc::operation_not_supported,
                       "QEMU migration stream: iterable section " + *name + " is not read");
        }
        ram_section = *id;
        RAWDAX_RETURN_IF_ERROR(ram.chunk());
        break;
      }
      case kSectionPart:
      case kSectionEnd: {
        auto id = in.be32();
        if (!id) return id.error();
        if (!ram_section || *id != *ram_section) {
          return malformed("part of section " + std::to_string(*id) + ", not the RAM's");
        }
        RAWDAX_RETURN_IF_ERROR(ram.chunk());
        if (*type == kSectionEnd) done = true;
        break;
      }
      case kEof:
        done = true;
        continue;
      default:
        return malformed("unknown section type " + std::to_string(*type));
    }
    if (*type == kSectionFull) break;
    // A section's optional footer.
    auto next = in.peek();
    if (!next) return next.error();
    if (*next == kFooter) {
      RAWDAX_RETURN_IF_ERROR(in.u8());
      auto id = in.be32();
      if (!id) return id.error();
      if (!ram_section || *id != *ram_section) {
        return malformed("footer of section " + std::to_string(*id) + " after the RAM's");
      }
    }
  }
  RAWDAX_RETURN_IF_ERROR(ram.check_complete());
  RAWDAX_RETURN_IF_ERROR(in.drain());
  RamStreamStats stats = ram.stats();
  stats.stream_bytes = in.total();
  return stats;
}

}  // namespace rawdax::internal
