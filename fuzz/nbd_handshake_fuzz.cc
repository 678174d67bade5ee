// Fuzz target: the NBD server's handshake and option haggling. The input is
// the whole byte stream a client sends after the server's greeting (client
// flags, options, and whatever follows a successful GO or EXPORT_NAME), fed
// to a real session on a socketpair against a small tmpfs region. Any input
// must end the session cleanly: no crash, no hang, no unbounded allocation
// (run with -rss_limit_mb and -malloc_limit_mb to catch the last).
#include <cstdint>
#include <string_view>

#include "export/export_registry.h"
#include "nbd_session.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // One context per process, like one server; sessions only bump its counters.
  static rawdax::nbd::ServerContext context;
  static rawdax::nbd::ExportRegistry exports(rawdax::fuzz::nbd_region(), /*read_only=*/false);
  context.region = &rawdax::fuzz::nbd_region();
  context.exports = &exports;
  rawdax::fuzz::serve_session(context,
                              std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
