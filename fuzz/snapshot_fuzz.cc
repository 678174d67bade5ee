// Fuzz target: snapshot files and base chains. The input is one snapshot
// file, or two split by kSplit: an incremental and the base it names as
// "base.snap". Both are written to a private directory and opened through
// open_chain(), then every stored page is verified: any input must give a
// clean error or a chain, never a crash, a hang or an out-of-range read.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

#include "snapshot/snapshot_file.h"

namespace {

constexpr std::string_view kSplit = "\n--RAWDAX-FUZZ-BASE--\n";

const std::string& scratch() {
  static const std::string dir = [] {
    // tmpfs when there is one: each input is written out twice.
    std::filesystem::path parent = std::filesystem::exists("/dev/shm")
                                       ? std::filesystem::path("/dev/shm")
                                       : std::filesystem::temp_directory_path();
    std::string d = parent / ("rawdax-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  static const bool cleanup = [] {
    std::atexit([] { std::filesystem::remove_all(dir); });
    return true;
  }();
  (void)cleanup;
  return dir;
}

void write(const std::string& path, std::string_view bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return;
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string_view newest = input, base;
  if (size_t at = input.find(kSplit); at != std::string_view::npos) {
    newest = input.substr(0, at);
    base = input.substr(at + kSplit.size());
  }
  const std::string top = scratch() + "/top.snap", below = scratch() + "/base.snap";
  write(top, newest);
  if (base.empty()) {
    std::filesystem::remove(below);
  } else {
    write(below, base);
  }
  auto chain = rawdax::internal::open_chain(top);
  if (chain) {
    for (const auto& file : *chain) (void)file.verify_pages();
  }
  return 0;
}
