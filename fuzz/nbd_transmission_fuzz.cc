// Fuzz target: the NBD transmission phase. The first input byte picks a
// valid handshake, which the harness sends before the rest of the input:
//   bit 0  structured replies          bit 1  base:allocation (needs bit 0)
//   bit 2  GO asks for block sizes     bit 3  EXPORT_NAME instead of GO
//   bit 4  NO_ZEROES                   bit 5  read-only server
//   bit 6  export "small" (64 KiB) instead of "default" (1 MiB)
// The rest is the request stream: every command, with any flags, offsets
// and lengths (up to 4 GiB - 1 in the length field), and write payloads.
// Any input must end the session cleanly: no crash, no hang, no unbounded
// allocation.
#include <cstdint>
#include <string>
#include <string_view>

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

std::string handshake(uint8_t config) {
  const bool structured = config & 1, meta = config & 2, block_sizes = config & 4,
             export_name = config & 8, no_zeroes = config & 16;
  const std::string name = (config & 64) ? "small" : "default";
  std::string s;
  put_u32(s, nbd::kClientFixedNewstyle | (no_zeroes ? nbd::kClientNoZeroes : 0));
  if (structured) put_option(s, nbd::kOptStructuredReply, "");
  if (structured && meta) {
    std::string data;
    put_u32(data, static_cast<uint32_t>(name.size()));
    data += name;
    put_u32(data, 1);
    put_u32(data, static_cast<uint32_t>(std::string_view(nbd::kBaseAllocation).size()));
    data += nbd::kBaseAllocation;
    put_option(s, nbd::kOptSetMetaContext, data);
  }
  if (export_name) {
    put_option(s, nbd::kOptExportName, name);
  } else {
    std::string data;
    put_u32(data, static_cast<uint32_t>(name.size()));
    data += name;
    put_u16(data, block_sizes ? 1 : 0);
    if (block_sizes) put_u16(data, nbd::kInfoBlockSize);
    put_option(s, nbd::kOptGo, data);
  }
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  // Two servers, as one process would run one: read-write and read-only.
  static nbd::ServerContext contexts[2];
  contexts[0].region = contexts[1].region = &rawdax::fuzz::nbd_region();
  contexts[1].read_only = true;
  const uint8_t config = data[0];
  std::string input = handshake(config);
  input.append(reinterpret_cast<const char*>(data + 1), size - 1);
  rawdax::fuzz::serve_session(contexts[(config & 32) ? 1 : 0], input);
  return 0;
}
