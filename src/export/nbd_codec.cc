#include "export/nbd_codec.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>

namespace rawdax::nbd {

char* OutBuffer::append(size_t n) {
  if (size_ + n > capacity_) {
    size_t capacity = std::max<size_t>({capacity_ * 2, size_ + n, 4096});
    std::unique_ptr<char[]> grown(new char[capacity]);
    if (size_ > 0) std::memcpy(grown.get(), data_.get(), size_);
    data_ = std::move(grown);
    capacity_ = capacity;
  }
  char* at = data_.get() + size_;
  size_ += n;
  return at;
}

void OutBuffer::put_u16(uint16_t v) {
  char* p = append(2);
  p[0] = static_cast<char>(v >> 8);
  p[1] = static_cast<char>(v);
}

void OutBuffer::put_u32(uint32_t v) {
  char* p = append(4);
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>(v >> (24 - 8 * i));
}

void OutBuffer::put_u64(uint64_t v) {
  char* p = append(8);
  for (int i = 0; i < 8; ++i) p[i] = static_cast<char>(v >> (56 - 8 * i));
}

void OutBuffer::put_bytes(std::string_view bytes) {
  if (!bytes.empty()) std::memcpy(append(bytes.size()), bytes.data(), bytes.size());
}

uint16_t load_u16(const char* p) {
  auto b = reinterpret_cast<const unsigned char*>(p);
  return static_cast<uint16_t>((b[0] << 8) | b[1]);
}

uint32_t load_u32(const char* p) {
  auto b = reinterpret_cast<const unsigned char*>(p);
  return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | b[3];
}

uint64_t load_u64(const char* p) { return (uint64_t{load_u32(p)} << 32) | load_u32(p + 4); }

bool WireReader::take(size_t n, const char** at) {
  if (!ok_ || n > left()) {
    ok_ = false;
    return false;
  }
  *at = bytes_.data() + pos_;
  pos_ += n;
  return true;
}

uint16_t WireReader::u16() {
  const char* p;
  return take(2, &p) ? load_u16(p) : 0;
}

uint32_t WireReader::u32() {
  const char* p;
  return take(4, &p) ? load_u32(p) : 0;
}

uint64_t WireReader::u64() {
  const char* p;
  return take(8, &p) ? load_u64(p) : 0;
}

std::string WireReader::string(size_t n) {
  const char* p;
  return take(n, &p) ? std::string(p, n) : std::string();
}

namespace {

std::string to_bytes(const OutBuffer& out) { return std::string(out.data(), out.size()); }

Error invalid(std::string message) {
  return Error(std::errc::invalid_argument, std::move(message));
}

// Reads a length-prefixed string, refusing over-long or truncated ones.
Result<std::string> read_string(WireReader& in, const char* what) {
  uint32_t len = in.u32();
  if (!in.ok()) return invalid(std::string(what) + " length is missing");
  if (len > kMaxString) {
    return invalid(std::string(what) + " is " + std::to_string(len) + " bytes (at most " +
                   std::to_string(kMaxString) + ")");
  }
  if (len > in.left()) return invalid(std::string(what) + " runs past the option data");
  return in.string(len);
}

}  // namespace

std::string encode_greeting() {
  OutBuffer out;
  out.put_u64(kNbdMagic);
  out.put_u64(kOptMagic);
  out.put_u16(kFlagFixedNewstyle | kFlagNoZeroes);
  return to_bytes(out);
}

std::optional<OptionHeader> parse_option_header(const char* p) {
  if (load_u64(p) != kOptMagic) return std::nullopt;
  return OptionHeader{load_u32(p + 8), load_u32(p + 12)};
}

Result<InfoRequest> parse_info_request(std::string_view payload) {
  WireReader in(payload);
  auto name = read_string(in, "export name");
  if (!name) return name.error();
  uint16_t count = in.u16();
  if (!in.ok()) return invalid("the number of information requests is missing");
  if (in.left() != size_t{count} * 2) {
    return invalid("option data holds " + std::to_string(in.left()) + " bytes for " +
                   std::to_string(count) + " information requests");
  }
  InfoRequest request;
  request.name = std::move(*name);
  for (uint16_t i = 0; i < count; ++i) request.infos.push_back(in.u16());
  return request;
}

Result<MetaContextRequest> parse_meta_context_request(std::string_view payload) {
  WireReader in(payload);
  auto name = read_string(in, "export name");
  if (!name) return name.error();
  uint32_t count = in.u32();
  if (!in.ok()) return invalid("the number of queries is missing");
  MetaContextRequest request;
  request.export_name = std::move(*name);
  for (uint32_t i = 0; i < count; ++i) {
    auto query = read_string(in, "query");
    if (!query) return query.error();
    request.queries.push_back(std::move(*query));
  }
  if (in.left() != 0) {
    return invalid(std::to_string(in.left()) + " bytes of option data follow the queries");
  }
  return request;
}

bool query_selects(std::string_view query, std::string_view context) {
  if (query == context) return true;
  return !query.empty() && query.back() == ':' && context.starts_with(query);
}

void put_option_reply(OutBuffer& out, uint32_t option, uint32_t type, std::string_view data) {
  out.put_u64(kOptReplyMagic);
  out.put_u32(option);
  out.put_u32(type);
  out.put_u32(static_cast<uint32_t>(data.size()));
  out.put_bytes(data);
}

std::string info_export(uint64_t size, uint16_t transmission_flags) {
  OutBuffer out;
  out.put_u16(kInfoExport);
  out.put_u64(size);
  out.put_u16(transmission_flags);
  return to_bytes(out);
}

std::string info_name(std::string_view name) {
  OutBuffer out;
  out.put_u16(kInfoName);
  out.put_bytes(name);
  return to_bytes(out);
}

std::string info_description(std::string_view text) {
  OutBuffer out;
  out.put_u16(kInfoDescription);
  out.put_bytes(text);
  return to_bytes(out);
}

std::string info_block_size(uint32_t minimum, uint32_t preferred, uint32_t maximum) {
  OutBuffer out;
  out.put_u16(kInfoBlockSize);
  out.put_u32(minimum);
  out.put_u32(preferred);
  out.put_u32(maximum);
  return to_bytes(out);
}

std::string server_entry(std::string_view name, std::string_view description) {
  OutBuffer out;
  out.put_u32(static_cast<uint32_t>(name.size()));
  out.put_bytes(name);
  out.put_bytes(description);
  return to_bytes(out);
}

std::string meta_context_entry(uint32_t id, std::string_view name) {
  OutBuffer out;
  out.put_u32(id);
  out.put_bytes(name);
  return to_bytes(out);
}

std::string export_name_reply(uint64_t size, uint16_t transmission_flags, bool no_zeroes) {
  OutBuffer out;
  out.put_u64(size);
  out.put_u16(transmission_flags);
  if (!no_zeroes) std::memset(out.append(124), 0, 124);
  return to_bytes(out);
}

std::optional<RequestHeader> parse_request(const char* p) {
  if (load_u32(p) != kRequestMagic) return std::nullopt;
  RequestHeader r;
  r.flags = load_u16(p + 4);
  r.type = load_u16(p + 6);
  r.cookie = load_u64(p + 8);
  r.offset = load_u64(p + 16);
  r.length = load_u32(p + 24);
  return r;
}

namespace {

// The flags each command may carry. FUA is valid on every command once
// SEND_FUA is negotiated (the spec asks servers to accept it anywhere).
uint16_t allowed_flags(uint16_t type, const ExportLimits& limits) {
  switch (type) {
    case kCmdRead: return kCmdFlagFua | (limits.structured_replies ? kCmdFlagDf : 0);
    case kCmdWriteZeroes: return kCmdFlagFua | kCmdFlagNoHole | kCmdFlagFastZero;
    case kCmdBlockStatus: return kCmdFlagFua | kCmdFlagReqOne;
    default: return kCmdFlagFua;
  }
}

bool is_write_command(uint16_t type) {
  return type == kCmdWrite || type == kCmdTrim || type == kCmdWriteZeroes;
}

char* hex(char (&buf)[16], unsigned v) {
  std::snprintf(buf, sizeof buf, "0x%x", v);
  return buf;
}

}  // namespace

Verdict check_request(const RequestHeader& r, const ExportLimits& limits) {
  char buf[16];
  if (r.type > kCmdBlockStatus) return {kEnotsup, "unknown command " + std::to_string(r.type)};
  if (r.type == kCmdDisc) return {};
  uint16_t unknown = r.flags & ~allowed_flags(r.type, limits);
  if (unknown != 0) {
    return {kEinval, std::string("flags ") + hex(buf, unknown) + " are not valid for " +
                         command_name(r.type)};
  }
  if (r.type == kCmdFlush) return {};
  if (r.length == 0) return {kEinval, "zero length"};
  if (r.type == kCmdBlockStatus && !limits.base_allocation) {
    return {kEinval, "BLOCK_STATUS without a negotiated base:allocation context"};
  }
  if ((r.type == kCmdRead || r.type == kCmdWrite) && r.length > limits.max_payload) {
    return {r.type == kCmdRead ? kEoverflow : kEinval,
            "length exceeds the maximum block size " + std::to_string(limits.max_payload)};
  }
  if (r.type != kCmdBlockStatus && limits.min_block > 1 &&
      (r.offset % limits.min_block != 0 || r.length % limits.min_block != 0)) {
    return {kEinval, "not aligned to the minimum block size " + std::to_string(limits.min_block)};
  }
  if (is_write_command(r.type) && limits.read_only) return {kEperm, "the export is read-only"};
  if (r.offset > limits.size || r.length > limits.size - r.offset) {
    return {is_write_command(r.type) ? kEnospc : kEinval,
            "past the end of the export (size " + std::to_string(limits.size) + ")"};
  }
  return {};
}

void put_simple_reply(OutBuffer& out, uint64_t cookie, uint32_t error) {
  char* p = out.append(kSimpleReplyHeaderSize);
  // Hand-rolled stores: this is the hot path of every simple reply.
  auto store32 = [](char* at, uint32_t v) {
    for (int i = 0; i < 4; ++i) at[i] = static_cast<char>(v >> (24 - 8 * i));
  };
  store32(p, kSimpleReplyMagic);
  store32(p + 4, error);
  store32(p + 8, static_cast<uint32_t>(cookie >> 32));
  store32(p + 12, static_cast<uint32_t>(cookie));
}

void put_chunk_header(OutBuffer& out, uint64_t cookie, uint16_t flags, uint16_t type,
                      uint32_t length) {
  out.put_u32(kStructuredReplyMagic);
  out.put_u16(flags);
  out.put_u16(type);
  out.put_u64(cookie);
  out.put_u32(length);
}

void put_error_chunk(OutBuffer& out, uint64_t cookie, uint32_t error, std::string_view message) {
  message = message.substr(0, std::min<size_t>(message.size(), kMaxString));
  put_chunk_header(out, cookie, kReplyFlagDone, kReplyTypeError,
                   static_cast<uint32_t>(6 + message.size()));
  out.put_u32(error);
  out.put_u16(static_cast<uint16_t>(message.size()));
  out.put_bytes(message);
}

uint32_t to_nbd_error(const Error& error) {
  if (error.code().category() != std::generic_category() &&
      error.code().category() != std::system_category()) {
    return kEio;
  }
  switch (error.code().value()) {
    case ENXIO:
    case ESHUTDOWN: return kEshutdown;
    case EROFS:
    case EACCES:
    case EPERM: return kEperm;
    case EINVAL: return kEinval;
    case ENOSPC: return kEnospc;
    case ENOMEM: return kEnomem;
    case EOVERFLOW: return kEoverflow;
    case ENOTSUP: return kEnotsup;
    default: return kEio;
  }
}

const char* nbd_error_name(uint32_t error) {
  switch (error) {
    case 0: return "OK";
    case kEperm: return "EPERM";
    case kEio: return "EIO";
    case kEnomem: return "ENOMEM";
    case kEinval: return "EINVAL";
    case kEnospc: return "ENOSPC";
    case kEoverflow: return "EOVERFLOW";
    case kEnotsup: return "ENOTSUP";
    case kEshutdown: return "ESHUTDOWN";
    default: return "E?";
  }
}

std::string command_name(uint16_t type) {
  static const char* const kNames[] = {"READ", "WRITE",        "DISC",        "FLUSH",
                                       "TRIM", "CACHE",        "WRITE_ZEROES", "BLOCK_STATUS"};
  if (type <= kCmdBlockStatus) return kNames[type];
  return "CMD#" + std::to_string(type);
}

std::string option_name(uint32_t option) {
  switch (option) {
    case kOptExportName: return "EXPORT_NAME";
    case kOptAbort: return "ABORT";
    case kOptList: return "LIST";
    case kOptStartTls: return "STARTTLS";
    case kOptInfo: return "INFO";
    case kOptGo: return "GO";
    case kOptStructuredReply: return "STRUCTURED_REPLY";
    case kOptListMetaContext: return "LIST_META_CONTEXT";
    case kOptSetMetaContext: return "SET_META_CONTEXT";
    default: return "OPT#" + std::to_string(option);
  }
}

}  // namespace rawdax::nbd
