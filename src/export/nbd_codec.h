// NBD codec: pure functions that parse what clients send (option headers and
// payloads, request headers), validate requests against what was negotiated,
// encode what the server sends (option replies, info blocks, simple and
// structured replies), and map rawdax errors to NBD error values.
//
// Nothing here does I/O or keeps state, so every function is thread-safe and
// unit-testable on byte strings. Parsers never read past the bytes they are
// given and report malformed input as values (std::nullopt or an Error with
// a message for the log); nothing throws.
#ifndef RAWDAX_EXPORT_NBD_CODEC_H_
#define RAWDAX_EXPORT_NBD_CODEC_H_

#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "export/nbd_protocol.h"
#include "rawdax/result.h"

namespace rawdax::nbd {

// A growable byte buffer whose append() hands out uninitialised space, so a
// read reply's data can be copied straight from the device into it.
// Not thread-safe; one owner.
class OutBuffer {
 public:
  OutBuffer() = default;
  OutBuffer(const OutBuffer&) = delete;
  OutBuffer& operator=(const OutBuffer&) = delete;

  // Returns n writable bytes at the end; they count as appended.
  char* append(size_t n);
  // Drops the last n bytes (undoes part of an append()).
  void shrink_by(size_t n) { size_ -= n; }
  void put_u16(uint16_t v);
  void put_u32(uint32_t v);
  void put_u64(uint64_t v);
  void put_bytes(std::string_view bytes);

  const char* data() const { return data_.get(); }
  size_t size() const { return size_; }
  void clear() { size_ = 0; }

 private:
  std::unique_ptr<char[]> data_;
  size_t size_ = 0;
  size_t capacity_ = 0;
};

// Big-endian loads from a byte string; once a load runs past the end, ok()
// turns false and every later load yields zero.
class WireReader {
 public:
  explicit WireReader(std::string_view bytes) : bytes_(bytes) {}
  uint16_t u16();
  uint32_t u32();
  uint64_t u64();
  std::string string(size_t n);
  bool ok() const { return ok_; }
  size_t left() const { return bytes_.size() - pos_; }

 private:
  bool take(size_t n, const char** at);
  std::string_view bytes_;
  size_t pos_ = 0;
  bool ok_ = true;
};

uint64_t load_u64(const char* p);
uint32_t load_u32(const char* p);
uint16_t load_u16(const char* p);

// --- Handshake ---

// The 18 bytes the server opens with: NBDMAGIC, IHAVEOPT, handshake flags.
std::string encode_greeting();

struct OptionHeader {
  uint32_t option = 0;
  uint32_t length = 0;
};
// Parses 16 bytes; nullopt when the magic is wrong (protocol corruption).
std::optional<OptionHeader> parse_option_header(const char* p);

// The payload of NBD_OPT_INFO and NBD_OPT_GO.
struct InfoRequest {
  std::string name;
  std::vector<uint16_t> infos;  // the NBD_INFO_* types the client asked for
};
Result<InfoRequest> parse_info_request(std::string_view payload);

// The payload of NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT.
struct MetaContextRequest {
  std::string export_name;
  std::vector<std::string> queries;
};
Result<MetaContextRequest> parse_meta_context_request(std::string_view payload);

// Whether one query selects the context `context`: the context's full name,
// or a prefix of it that ends in ':' (a namespace, "base:" or "qemu:", or
// QEMU's "qemu:dirty-bitmap:" for every dirty bitmap). Matching is exact, as
// the spec's context names are case-sensitive.
bool query_selects(std::string_view query, std::string_view context);

// One option reply: magic, option, type, length, data.
void put_option_reply(OutBuffer& out, uint32_t option, uint32_t type, std::string_view data = {});

// Payloads of NBD_REP_INFO.
std::string info_export(uint64_t size, uint16_t transmission_flags);
std::string info_name(std::string_view name);
std::string info_description(std::string_view text);
std::string info_block_size(uint32_t minimum, uint32_t preferred, uint32_t maximum);
// The NBD_REP_SERVER payload for NBD_OPT_LIST.
std::string server_entry(std::string_view name, std::string_view description);
// NBD_REP_META_CONTEXT payload.
std::string meta_context_entry(uint32_t id, std::string_view name);
// The reply to NBD_OPT_EXPORT_NAME: size, flags, and 124 zeroes unless
// the client negotiated NO_ZEROES.
std::string export_name_reply(uint64_t size, uint16_t transmission_flags, bool no_zeroes);

// --- Transmission ---

struct RequestHeader {
  uint16_t flags = 0;
  uint16_t type = 0;
  uint64_t cookie = 0;
  uint64_t offset = 0;
  uint32_t length = 0;
};
// Parses 28 bytes; nullopt when the magic is wrong (protocol corruption).
std::optional<RequestHeader> parse_request(const char* p);

// What a connection negotiated, against which requests are checked.
struct ExportLimits {
  uint64_t size = 0;
  bool read_only = false;
  bool structured_replies = false;
  bool base_allocation = false;  // a metadata context (base:allocation or another) was selected
  uint32_t min_block = 1;        // 512 when the client was told so, else 1
  uint32_t max_payload = 0;      // largest READ or WRITE accepted
};

// The outcome of validating a request: error 0, or an NBD error value and
// a reason for the log.
struct Verdict {
  uint32_t error = 0;
  std::string reason;
};
// Checks flags, length, alignment, bounds and read-only, in that order, so
// that one bad request gets one well-defined error: unknown command ENOTSUP;
// unknown flag, zero length, misalignment, BLOCK_STATUS without a context,
// or a read past the end EINVAL; an oversized READ EOVERFLOW (an oversized
// WRITE EINVAL); a write past the end ENOSPC; a write on a read-only export
// EPERM. DISC and FLUSH ignore offset and length.
Verdict check_request(const RequestHeader& request, const ExportLimits& limits);

// Simple reply header: magic, error, cookie (data, if any, follows).
void put_simple_reply(OutBuffer& out, uint64_t cookie, uint32_t error);
// Structured reply chunk header (payload of `length` bytes follows).
void put_chunk_header(OutBuffer& out, uint64_t cookie, uint16_t flags, uint16_t type,
                      uint32_t length);
// A final NBD_REPLY_TYPE_ERROR chunk with a message (cut to fit 16 bits).
void put_error_chunk(OutBuffer& out, uint64_t cookie, uint32_t error, std::string_view message);

// --- Errors ---

// The NBD error value for a rawdax error: ENXIO (device removed) becomes
// ESHUTDOWN, read-only errors EPERM, unknown ones EIO.
uint32_t to_nbd_error(const Error& error);
// "EINVAL", "ENOSPC", ... for logs.
const char* nbd_error_name(uint32_t error);
// "READ", "WRITE", ... ("CMD#9" for unknown ones) for logs.
std::string command_name(uint16_t type);
std::string option_name(uint32_t option);

}  // namespace rawdax::nbd

#endif  // RAWDAX_EXPORT_NBD_CODEC_H_
