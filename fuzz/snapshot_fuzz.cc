// Fuzz target: snapshot files and base chains, verify against restore. The
// input is one snapshot file, or two split by kSplit: an incremental and the
// base it names as "base.snap". Both are written to a private directory.
// Fuzz builds skip the header, bitmap and table checksums (not the pages'),
// so mutated geometry, bitmaps and chain links reach the logic behind them.
//
// The oracle is differential: verify_snapshot() against
// Region::restore_namespace() (forced) into "target" of a memfd region.
//  * verify accepts: a snapshot whose size is a multiple of the region's
//    alignment must restore, and "target" must then hold exactly the bytes
//    the files store, page by page from the newest file that stores each
//    (zeros for pages none stores), up to the namespace's size, whatever the
//    last page's length. A size off the alignment must be refused (EINVAL)
//    like a verify failure below.
//  * verify refuses: the restore must fail too and change nothing: "target"
//    keeps its uuid, size and bytes, and a restore into a missing namespace
//    creates nothing.
//  * SnapshotImage (what a snapshot export serves) opens exactly the chains
//    verify accepts, and reads the same bytes a restore writes.
// Mutated pages almost never match their checksums, so each input runs twice:
// as given, then "sealed" (each file's page checksum table recomputed from
// its pages, as the writer would), so that geometry and bitmap mutations
// also reach successful restores.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "rawdax/region.h"
#include "rawdax/snapshot.h"
#include "snapshot/snapshot_file.h"
#include "snapshot/snapshot_image.h"

namespace {

namespace fs = std::filesystem;
using rawdax::internal::SnapshotFile;

constexpr std::string_view kSplit = "\n--RAWDAX-FUZZ-BASE--\n";
constexpr uint64_t kTargetSize = 8192;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "fuzz_snapshot: %s\n", what.c_str());
  std::abort();
}

const std::string& scratch() {
  static const std::string dir = [] {
    // tmpfs when there is one: each input is written out up to four times.
    fs::path parent = fs::exists("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
    std::string d = parent / ("rawdax-fuzz-" + std::to_string(::getpid()));
    fs::create_directories(d);
    return d;
  }();
  static const bool cleanup = [] {
    std::atexit([] { fs::remove_all(dir); });
    return true;
  }();
  (void)cleanup;
  return dir;
}

// A memfd region holding "target", created once: restores replace it.
rawdax::Region& region() {
  static std::unique_ptr<rawdax::Region> r = [] {
    auto opened = rawdax::Region::open("memfd:fuzz-snapshot");
    if (!opened) fail("region: " + opened.error().message());
    auto ns = (*opened)->create_namespace({.name = "target", .size = kTargetSize});
    if (!ns) fail("target: " + ns.error().message());
    auto fd = (*opened)->open_backing_fd("target", /*writable=*/true);
    if (!fd) fail("target fd: " + fd.error().message());
    std::string pattern(kTargetSize, '\xa5');  // not zeros: a restore must overwrite it
    if (::pwrite(*fd, pattern.data(), pattern.size(), 0) != static_cast<ssize_t>(kTargetSize)) {
      fail("target write");
    }
    ::close(*fd);
    return std::move(*opened);
  }();
  return *r;
}

void write_file(const std::string& path, std::string_view bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) fail("cannot write " + path);
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
}

std::string read_file(const std::string& path) {
  std::string out;
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return out;
  char buf[16 << 10];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  std::fclose(f);
  return out;
}

struct Target {
  std::string uuid;
  uint64_t size = 0;
  std::string bytes;
};

Target read_target() {
  auto info = region().find("target");
  if (!info) fail("target vanished: " + info.error().message());
  auto fd = region().open_backing_fd("target", /*writable=*/false);
  if (!fd) fail("target fd: " + fd.error().message());
  Target t{info->uuid, info->size, std::string(info->size, '\0')};
  ssize_t n = ::pread(*fd, t.bytes.data(), t.bytes.size(), 0);
  ::close(*fd);
  if (n != static_cast<ssize_t>(t.bytes.size())) fail("short read of target");
  return t;
}

// The image a chain describes, from the files' bytes: each page from the
// newest file that stores it, zeros where none does.
std::string expected_image(const std::vector<SnapshotFile>& chain) {
  const auto& h = chain.front().header();
  std::string image(h.namespace_size, '\0');
  std::vector<bool> done(h.page_count(), false);
  for (const SnapshotFile& file : chain) {
    const std::string bytes = read_file(file.path());
    for (uint64_t p = 0; p < h.page_count(); ++p) {
      if (done[p] || !file.has_page(p)) continue;
      done[p] = true;
      const uint64_t at = file.header().data_offset() + p * h.page_size;
      const uint64_t len = h.page_bytes(p);
      if (at + len > bytes.size()) fail("a verified file is shorter than its pages");
      std::memcpy(image.data() + p * h.page_size, bytes.data() + at, len);
    }
  }
  return image;
}

void check(const std::string& top) {
  rawdax::Region& r = region();
  const Target before = read_target();
  auto verified = rawdax::verify_snapshot(top);
  auto restored = r.restore_namespace("target", top, {.force = true});
  bool must_refuse = !verified;
  if (verified) {
    auto chain = rawdax::internal::open_chain(top);
    if (!chain) fail("verify accepted a chain open_chain refuses: " + chain.error().message());
    const auto& h = chain->front().header();
    // What a snapshot export serves is the same image.
    auto image = rawdax::internal::SnapshotImage::open(top);
    if (!image) fail("verify accepted a chain SnapshotImage refuses: " + image.error().message());
    std::string served((*image)->size(), '\0');
    if (rawdax::Status st = (*image)->read(0, std::as_writable_bytes(std::span<char>(served))); !st) {
      fail("a verified image does not read: " + st.error().message());
    }
    if (served != expected_image(*chain)) fail("the image's bytes differ from the files'");
    if (h.namespace_size % r.capabilities().alignment != 0) {
      must_refuse = true;  // a region holds only whole alignment units
      if (restored) fail("restore accepted a size off the region's alignment");
    } else {
      if (!restored) fail("verify accepted, restore refused: " + restored.error().message());
      const Target after = read_target();
      if (after.size != h.namespace_size) fail("restored size differs from the snapshot's");
      if (after.bytes != expected_image(*chain)) fail("restored bytes differ from the files'");
    }
  }
  if (must_refuse) {
    if (restored) fail("verify refused, restore accepted");
    const Target after = read_target();
    if (after.uuid != before.uuid || after.size != before.size || after.bytes != before.bytes) {
      fail("a refused restore changed the target");
    }
    if (r.restore_namespace("absent", top)) fail("a refused restore created a namespace");
    if (r.find("absent")) fail("a refused restore left a namespace behind");
  }
}

// Recomputes the page checksum table of the snapshot file at `path` from its
// stored pages, as SnapshotWriter does. True when that changed the file.
bool seal(const std::string& path) {
  auto file = SnapshotFile::open(path);
  if (!file) return false;
  const auto& h = file->header();
  std::string bytes = read_file(path);
  const std::string original = bytes;
  for (uint64_t p = 0; p < h.page_count(); ++p) {
    if (!file->has_page(p)) continue;
    const uint64_t at = h.data_offset() + p * h.page_size;
    const uint64_t len = h.page_bytes(p);
    uint64_t sum = rawdax::internal::page_checksum(
        std::as_bytes(std::span<const char>(bytes.data() + at, len)), p, h.page_size);
    std::memcpy(bytes.data() + h.table_offset() + 8 * p, &sum, sizeof sum);
  }
  if (bytes == original) return false;
  write_file(path, bytes);
  return true;
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
  write_file(top, newest);
  if (base.empty()) {
    fs::remove(below);
  } else {
    write_file(below, base);
  }
  check(top);
  bool sealed = seal(top);
  if (!base.empty()) sealed |= seal(below);
  if (sealed) check(top);
  return 0;
}
