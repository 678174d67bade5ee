// Fuzz target: the NBD transmission phase. The first input byte picks a
// valid handshake, which the harness sends before the rest of the input:
//   bit 0  structured replies          bit 1  base:allocation (needs bit 0)
//   bit 2  GO asks for block sizes     bit 3  EXPORT_NAME instead of GO
//   bit 4  NO_ZEROES                   bit 5  read-only server
//   bit 6  export "small" (64 KiB) instead of "default" (1 MiB)
// The rest is the request stream: every command, with any flags, offsets
// and lengths (up to 4 GiB - 1 in the length field), and write payloads.
//
// Every reply is checked against a model of the export (ReplyChecker):
//  * the handshake succeeds and reports the namespace's size;
//  * each complete request gets exactly one reply, in order (the server
//    documents in-order replies), carrying the request's cookie; the
//    session ends only where the request stream does: a bad magic, DISC,
//    or a header or write payload cut short by the end of the input;
//  * simple replies: a successful read carries exactly the requested length;
//    structured ones: well-formed chunks, a read never answered by a simple
//    reply, data and hole chunks inside the request and not overlapping,
//    covering it on success (one data chunk under DF), block status with the
//    negotiated context id, non-empty descriptors inside the export (one
//    under REQ_ONE);
//  * errors are the NBD protocol's values (EPERM, EIO, ENOMEM, EINVAL,
//    ENOSPC, EOVERFLOW, ENOTSUP, ESHUTDOWN); a request the protocol makes
//    valid for the advertised flags and block sizes succeeds; one past the
//    export's end, of an unknown command, or BLOCK_STATUS without the
//    context fails; a write command to a read-only export fails (with EPERM
//    when nothing else is wrong with it);
//  * read data, hole chunks and zero block-status extents agree with the
//    model: the namespace's bytes at the session's start, then every
//    successful write, write-zeroes and trim (which the Device reads back as
//    zeros) in order.
// Any input must also end the session cleanly: no crash, no hang, no
// unbounded allocation.
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "export/export_registry.h"
#include "export/nbd_protocol.h"
#include "nbd_session.h"

namespace {

namespace nbd = rawdax::nbd;

void put_u16(std::string& s, uint16_t v) {
  s += static_cast<char>(v >> 8);
  s += static_cast<char>(v);
}
void put_u32(std::string& s, uint32_t v) {
  put_u16(s, static_cast<uint16_t>(v >> 16));
  put_u16(s, static_cast<uint16_t>(v));
}
void put_u64(std::string& s, uint64_t v) {
  put_u32(s, static_cast<uint32_t>(v >> 32));
  put_u32(s, static_cast<uint32_t>(v));
}
void put_option(std::string& s, uint32_t option, std::string_view data) {
  put_u64(s, nbd::kOptMagic);
  put_u32(s, option);
  put_u32(s, static_cast<uint32_t>(data.size()));
  s += data;
}

uint16_t get_u16(const char* p) {
  return static_cast<uint16_t>(static_cast<uint8_t>(p[0]) << 8 | static_cast<uint8_t>(p[1]));
}
uint32_t get_u32(const char* p) {
  return static_cast<uint32_t>(get_u16(p)) << 16 | get_u16(p + 2);
}
uint64_t get_u64(const char* p) { return static_cast<uint64_t>(get_u32(p)) << 32 | get_u32(p + 4); }

struct Config {
  bool structured, meta, block_sizes, export_name, no_zeroes, read_only;
  std::string name;
};

Config config_of(uint8_t byte) {
  return {(byte & 1) != 0, (byte & 1) != 0 && (byte & 2) != 0, (byte & 4) != 0,
          (byte & 8) != 0, (byte & 16) != 0, (byte & 32) != 0,
          (byte & 64) ? "small" : "default"};
}

std::string handshake(const Config& c) {
  std::string s;
  put_u32(s, nbd::kClientFixedNewstyle | (c.no_zeroes ? nbd::kClientNoZeroes : 0));
  if (c.structured) put_option(s, nbd::kOptStructuredReply, "");
  if (c.meta) {
    std::string data;
    put_u32(data, static_cast<uint32_t>(c.name.size()));
    data += c.name;
    put_u32(data, 1);
    put_u32(data, static_cast<uint32_t>(std::string_view(nbd::kBaseAllocation).size()));
    data += nbd::kBaseAllocation;
    put_option(s, nbd::kOptSetMetaContext, data);
  }
  if (c.export_name) {
    put_option(s, nbd::kOptExportName, c.name);
  } else {
    std::string data;
    put_u32(data, static_cast<uint32_t>(c.name.size()));
    data += c.name;
    put_u16(data, c.block_sizes ? 1 : 0);
    if (c.block_sizes) put_u16(data, nbd::kInfoBlockSize);
    put_option(s, nbd::kOptGo, data);
  }
  return s;
}

struct Request {
  uint16_t flags = 0, type = 0;
  uint64_t cookie = 0, offset = 0;
  uint32_t length = 0;
  std::string_view payload;  // a write's
};

// The requests the server must answer: the stream up to its end, a bad
// magic, a DISC, or a header or write payload the input cuts short. The
// session must end exactly there.
std::vector<Request> parse_requests(std::string_view s) {
  std::vector<Request> out;
  while (s.size() >= nbd::kRequestHeaderSize) {
    const char* p = s.data();
    if (get_u32(p) != nbd::kRequestMagic) break;
    Request r;
    r.flags = get_u16(p + 4);
    r.type = get_u16(p + 6);
    r.cookie = get_u64(p + 8);
    r.offset = get_u64(p + 16);
    r.length = get_u32(p + 24);
    if (r.type == nbd::kCmdDisc) break;
    s.remove_prefix(nbd::kRequestHeaderSize);
    if (r.type == nbd::kCmdWrite) {
      if (s.size() < r.length) break;
      r.payload = s.substr(0, r.length);
      s.remove_prefix(r.length);
    }
    out.push_back(r);
  }
  return out;
}

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "fuzz_nbd_transmission: %s\n", what.c_str());
  std::abort();
}

bool is_write_command(uint16_t type) {
  return type == nbd::kCmdWrite || type == nbd::kCmdTrim || type == nbd::kCmdWriteZeroes;
}

bool nbd_error(uint32_t e) {
  return e == nbd::kEperm || e == nbd::kEio || e == nbd::kEnomem || e == nbd::kEinval ||
         e == nbd::kEnospc || e == nbd::kEoverflow || e == nbd::kEnotsup || e == nbd::kEshutdown;
}

// Parses the server's byte stream as it arrives and checks each reply.
class ReplyChecker {
 public:
  ReplyChecker(Config config, std::vector<Request> requests, std::string model)
      : config_(std::move(config)), requests_(std::move(requests)), model_(std::move(model)) {
    if (config_.structured) options_.push_back(nbd::kOptStructuredReply);
    if (config_.meta) options_.push_back(nbd::kOptSetMetaContext);
    if (!config_.export_name) options_.push_back(nbd::kOptGo);
  }

  // Called on the client thread with the bytes in order.
  void feed(std::string_view bytes) {
    buf_.append(bytes);
    while (step()) {
    }
    if (pos_ > (1u << 20)) {  // keep the buffer small
      buf_.erase(0, pos_);
      pos_ = 0;
    }
  }

  // After the session: every request answered, nothing left over.
  void finish() const {
    if (phase_ != Phase::kTransmission) fail("the handshake did not complete");
    if (next_ != requests_.size()) {
      fail("the server closed the connection after " + std::to_string(next_) + " of " +
           std::to_string(requests_.size()) + " valid requests");
    }
    if (pos_ != buf_.size()) fail("the server sent bytes after the last reply");
  }

 private:
  enum class Phase { kGreeting, kOptions, kExportName, kTransmission };

  // Per request, while its structured chunks arrive.
  struct Pending {
    bool error = false;
    uint32_t error_value = 0;
    bool status = false;                              // a block status chunk came
    size_t data_chunks = 0, hole_chunks = 0;
    std::vector<std::pair<uint64_t, uint64_t>> ranges;  // [start, end) of data and holes
  };

  size_t avail() const { return buf_.size() - pos_; }
  const char* at() const { return buf_.data() + pos_; }

  bool step() {
    switch (phase_) {
      case Phase::kGreeting: return greeting();
      case Phase::kOptions: return option_reply();
      case Phase::kExportName: return export_name_reply();
      case Phase::kTransmission: return reply();
    }
    return false;
  }

  bool greeting() {
    if (avail() < 18) return false;
    if (get_u64(at()) != nbd::kNbdMagic || get_u64(at() + 8) != nbd::kOptMagic) {
      fail("bad greeting");
    }
    pos_ += 18;
    phase_ = !options_.empty() ? Phase::kOptions : Phase::kExportName;
    return true;
  }

  bool option_reply() {
    if (avail() < 20) return false;
    const uint32_t len = get_u32(at() + 16);
    if (avail() < 20 + uint64_t{len}) return false;
    if (get_u64(at()) != nbd::kOptReplyMagic) fail("bad option reply magic");
    const uint32_t option = get_u32(at() + 8), type = get_u32(at() + 12);
    const char* data = at() + 20;
    if (option != options_[option_index_]) fail("option reply for another option");
    if (type & 0x80000000u) fail("the handshake's option " + std::to_string(option) + " refused");
    if (type == nbd::kRepInfo && len == 12 && get_u16(data) == nbd::kInfoExport) {
      size_ = get_u64(data + 2);
      tflags_ = get_u16(data + 10);
    } else if (type == nbd::kRepMetaContext && len >= 4) {
      meta_id_ = get_u32(data);
    }
    pos_ += 20 + len;
    if (type == nbd::kRepAck && ++option_index_ == options_.size()) {
      if (config_.export_name) {
        phase_ = Phase::kExportName;
      } else {
        start_transmission();
      }
    }
    return true;
  }

  bool export_name_reply() {
    const size_t len = config_.no_zeroes ? 10 : 134;
    if (avail() < len) return false;
    size_ = get_u64(at());
    tflags_ = get_u16(at() + 8);
    if (std::string_view(at() + 10, len - 10).find_first_not_of('\0') != std::string_view::npos) {
      fail("nonzero padding after EXPORT_NAME");
    }
    pos_ += len;
    start_transmission();
    return true;
  }

  void start_transmission() {
    if (size_ != model_.size()) fail("the export's size is not the namespace's");
    if (((tflags_ & nbd::kFlagReadOnly) != 0) != config_.read_only) fail("wrong read-only flag");
    if (config_.meta && meta_id_ == 0) fail("base:allocation not selected");
    phase_ = Phase::kTransmission;
  }

  // --- What the protocol says of a request, from the advertised flags ---

  bool in_export(const Request& r) const {
    return r.length > 0 && r.offset <= size_ && r.length <= size_ - r.offset;
  }

  // Valid in every respect but possibly the export being read-only.
  bool valid_but_read_only(const Request& r) const {
    const bool fua = tflags_ & nbd::kFlagSendFua;
    uint16_t allowed = fua ? nbd::kCmdFlagFua : 0;
    bool advertised = true;
    switch (r.type) {
      case nbd::kCmdRead:
        if (config_.structured && (tflags_ & nbd::kFlagSendDf)) allowed |= nbd::kCmdFlagDf;
        break;
      case nbd::kCmdWrite: break;
      case nbd::kCmdFlush: advertised = tflags_ & nbd::kFlagSendFlush; break;
      case nbd::kCmdTrim: advertised = tflags_ & nbd::kFlagSendTrim; break;
      case nbd::kCmdCache: advertised = tflags_ & nbd::kFlagSendCache; break;
      case nbd::kCmdWriteZeroes:
        advertised = tflags_ & nbd::kFlagSendWriteZeroes;
        allowed |= nbd::kCmdFlagNoHole;
        if (tflags_ & nbd::kFlagSendFastZero) allowed |= nbd::kCmdFlagFastZero;
        break;
      case nbd::kCmdBlockStatus:
        advertised = meta_id_ != 0;
        allowed |= nbd::kCmdFlagReqOne;
        break;
      default: return false;
    }
    if (!advertised || (r.flags & ~allowed) != 0) return false;
    if (r.type == nbd::kCmdFlush) return r.offset == 0 && r.length == 0;
    if (!in_export(r)) return false;
    // Block sizes bind only a client that asked for them (GO with
    // NBD_INFO_BLOCK_SIZE): minimum 512, maximum payload 32 MiB.
    const uint64_t min_block = (!config_.export_name && config_.block_sizes) ? 512 : 1;
    if (r.type != nbd::kCmdBlockStatus &&
        (r.offset % min_block != 0 || r.length % min_block != 0)) {
      return false;
    }
    if ((r.type == nbd::kCmdRead || r.type == nbd::kCmdWrite) && r.length > (32u << 20)) {
      return false;
    }
    return true;
  }

  // Checks a request's outcome (0: success) and applies it to the model.
  void settle(const Request& r, uint32_t error) {
    const std::string what = "command " + std::to_string(r.type) + " flags " +
                             std::to_string(r.flags) + " offset " + std::to_string(r.offset) +
                             " length " + std::to_string(r.length);
    const bool valid = valid_but_read_only(r);
    const bool refused_write = is_write_command(r.type) && config_.read_only;
    const bool must_fail = refused_write || r.type > nbd::kCmdBlockStatus ||
                           (r.type == nbd::kCmdBlockStatus && meta_id_ == 0) ||
                           (r.type != nbd::kCmdFlush && r.length > 0 && !in_export(r));
    if (error != 0) {
      if (!nbd_error(error)) fail(what + ": error " + std::to_string(error) + " is not NBD's");
      if (valid && !refused_write) fail(what + ": a valid request failed");
      if (valid && refused_write && error != nbd::kEperm) {
        fail(what + ": a write to a read-only export failed without EPERM");
      }
      return;
    }
    if (must_fail) fail(what + ": succeeded");
    if (r.type == nbd::kCmdWrite) {
      std::memcpy(model_.data() + r.offset, r.payload.data(), r.length);
    } else if (r.type == nbd::kCmdTrim || r.type == nbd::kCmdWriteZeroes) {
      std::memset(model_.data() + r.offset, 0, r.length);
    }
  }

  bool model_zero(uint64_t offset, uint64_t length) const {
    return std::string_view(model_.data() + offset, length).find_first_not_of('\0') ==
           std::string_view::npos;
  }

  // --- Transmission replies ---

  bool reply() {
    if (avail() < 4) return false;
    if (next_ == requests_.size()) fail("a reply with no request left to answer");
    const Request& r = requests_[next_];
    const uint32_t magic = get_u32(at());
    if (magic == nbd::kSimpleReplyMagic) return simple_reply(r);
    if (magic == nbd::kStructuredReplyMagic) return chunk(r);
    fail("bad reply magic");
  }

  bool simple_reply(const Request& r) {
    if (avail() < nbd::kSimpleReplyHeaderSize) return false;
    const uint32_t error = get_u32(at() + 4);
    const uint64_t cookie = get_u64(at() + 8);
    if (cookie != r.cookie) fail("a simple reply's cookie is not its request's");
    if (config_.structured && r.type == nbd::kCmdRead) {
      fail("a simple reply to a read after structured replies were negotiated");
    }
    const bool data = error == 0 && r.type == nbd::kCmdRead;
    if (data && avail() < nbd::kSimpleReplyHeaderSize + uint64_t{r.length}) return false;
    settle(r, error);
    if (data) {
      std::string_view got(at() + nbd::kSimpleReplyHeaderSize, r.length);
      if (got != std::string_view(model_.data() + r.offset, r.length)) {
        fail("read data differs from the model");
      }
      pos_ += r.length;
    }
    pos_ += nbd::kSimpleReplyHeaderSize;
    ++next_;
    return true;
  }

  bool chunk(const Request& r) {
    if (avail() < nbd::kStructuredReplyHeaderSize) return false;
    const uint16_t flags = get_u16(at() + 4), type = get_u16(at() + 6);
    const uint64_t cookie = get_u64(at() + 8);
    const uint32_t len = get_u32(at() + 16);
    if (avail() < nbd::kStructuredReplyHeaderSize + uint64_t{len}) return false;
    if (!config_.structured) fail("a structured reply that was not negotiated");
    if (cookie != r.cookie) fail("a chunk's cookie is not its request's");
    if (flags & ~nbd::kReplyFlagDone) fail("unknown chunk flags");
    const char* p = at() + nbd::kStructuredReplyHeaderSize;
    const uint64_t end = r.offset + r.length;  // no overflow: checked before use
    switch (type) {
      case nbd::kReplyTypeNone:
        if (len != 0 || !(flags & nbd::kReplyFlagDone)) fail("a bad NONE chunk");
        break;
      case nbd::kReplyTypeOffsetData:
      case nbd::kReplyTypeOffsetHole: {
        if (r.type != nbd::kCmdRead) fail("a data or hole chunk to a command other than read");
        if (!in_export(r)) fail("a data or hole chunk to a read outside the export");
        const bool hole = type == nbd::kReplyTypeOffsetHole;
        if (hole ? len != 12 : len <= 8) fail("a data or hole chunk of a bad length");
        const uint64_t from = get_u64(p);
        const uint64_t n = hole ? get_u32(p + 8) : len - 8;
        if (n == 0 || from < r.offset || from > end || n > end - from) {
          fail("a data or hole chunk outside its request");
        }
        if (hole ? !model_zero(from, n)
                 : std::string_view(p + 8, n) != std::string_view(model_.data() + from, n)) {
          fail(hole ? "a hole where the model has data" : "read data differs from the model");
        }
        ++(hole ? pending_.hole_chunks : pending_.data_chunks);
        pending_.ranges.emplace_back(from, from + n);
        break;
      }
      case nbd::kReplyTypeBlockStatus: {
        if (r.type != nbd::kCmdBlockStatus) fail("block status for another command");
        if (pending_.status) fail("two block status chunks for one context");
        if (len < 12 || (len - 4) % 8 != 0) fail("a block status chunk of a bad length");
        if (get_u32(p) != meta_id_) fail("block status for a context not negotiated");
        if (!in_export(r)) fail("block status for a range outside the export");
        const uint32_t count = (len - 4) / 8;
        if ((r.flags & nbd::kCmdFlagReqOne) && count != 1) fail("REQ_ONE got several extents");
        uint64_t cur = r.offset;
        for (uint32_t i = 0; i < count; ++i) {
          const uint32_t n = get_u32(p + 4 + 8 * i), state = get_u32(p + 8 + 8 * i);
          if (n == 0) fail("an empty extent");
          if (cur >= end) fail("an extent after the one that reached the request's end");
          if (n > size_ - cur) fail("an extent past the export's end");
          if ((state & nbd::kStateZero) && !model_zero(cur, n)) {
            fail("an extent said zero where the model has data");
          }
          cur += n;
        }
        pending_.status = true;
        break;
      }
      case nbd::kReplyTypeError:
      case nbd::kReplyTypeError + 1: {  // NBD_REPLY_TYPE_ERROR_OFFSET
        const uint32_t extra = type == nbd::kReplyTypeError ? 0 : 8;
        if (len < 6 + extra || get_u16(p + 4) != len - 6 - extra) fail("a bad error chunk");
        const uint32_t error = get_u32(p);
        if (error == 0) fail("an error chunk with error 0");
        pending_.error = true;
        pending_.error_value = error;
        break;
      }
      default: fail("an unknown chunk type " + std::to_string(type));
    }
    pos_ += nbd::kStructuredReplyHeaderSize + len;
    if (flags & nbd::kReplyFlagDone) {
      finish_chunks(r);
      pending_ = Pending();
      ++next_;
    }
    return true;
  }

  void finish_chunks(const Request& r) {
    if (pending_.error) {
      settle(r, pending_.error_value);
      return;
    }
    settle(r, 0);
    if (r.type == nbd::kCmdRead) {
      auto ranges = pending_.ranges;
      std::sort(ranges.begin(), ranges.end());
      uint64_t cur = r.offset;
      for (const auto& [from, to] : ranges) {
        if (from != cur) fail("read chunks overlap or leave a gap");
        cur = to;
      }
      if (cur != r.offset + r.length) fail("read chunks do not cover the request");
      if ((r.flags & nbd::kCmdFlagDf) && (pending_.data_chunks != 1 || pending_.hole_chunks != 0)) {
        fail("a DF read in more than one data chunk");
      }
    }
    if (r.type == nbd::kCmdBlockStatus && !pending_.status) fail("block status without extents");
  }

  const Config config_;
  const std::vector<Request> requests_;
  std::string model_;  // the export's bytes, as the replies so far leave them

  std::string buf_;  // received bytes; [pos_, size) not yet parsed
  size_t pos_ = 0;
  Phase phase_ = Phase::kGreeting;
  std::vector<uint32_t> options_;  // the options whose replies end with ACK
  size_t option_index_ = 0;
  uint64_t size_ = 0;
  uint16_t tflags_ = 0;
  uint32_t meta_id_ = 0;
  size_t next_ = 0;  // the request the next reply answers
  Pending pending_;
};

// The namespace's bytes now.
std::string read_namespace(rawdax::Region& region, const std::string& name) {
  auto info = region.find(name);
  auto fd = region.open_backing_fd(name, /*writable=*/false);
  if (!info || !fd) fail("cannot read namespace " + name);
  std::string bytes(info->size, '\0');
  ssize_t n = ::pread(*fd, bytes.data(), bytes.size(), 0);
  ::close(*fd);
  if (n != static_cast<ssize_t>(bytes.size())) fail("short read of namespace " + name);
  return bytes;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  // Two servers, as one process would run one: read-write and read-only.
  static nbd::ServerContext contexts[2];
  rawdax::Region& region = rawdax::fuzz::nbd_region();
  static nbd::ExportRegistry exports[2] = {{region, false}, {region, true}};
  contexts[0].region = contexts[1].region = &region;
  contexts[0].exports = &exports[0];
  contexts[1].exports = &exports[1];
  contexts[1].read_only = true;
  const Config config = config_of(data[0]);
  std::string_view stream(reinterpret_cast<const char*>(data + 1), size - 1);
  std::string input = handshake(config);
  input.append(stream);
  ReplyChecker checker(config, parse_requests(stream), read_namespace(region, config.name));
  rawdax::fuzz::serve_session(contexts[config.read_only ? 1 : 0], input,
                              [&checker](std::string_view bytes) { checker.feed(bytes); });
  checker.finish();
  return 0;
}
