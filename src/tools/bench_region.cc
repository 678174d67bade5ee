// `rawdax bench --only region`: what creating and destroying a namespace
// costs, on the region given, against a file of the same size.
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "common/unique_fd.h"
#include "common/units.h"
#include "media/files.h"
#include "tools/bench.h"

namespace rawdax::cli {
namespace {

// Where the anchor's file goes: beside the region's bytes when they are in
// a filesystem, else tmpfs.
std::string anchor_dir(const Region& region) {
  const Capabilities& caps = region.capabilities();
  if (caps.kind == MediaKind::kDirectory) return region.spec();
  if (caps.kind == MediaKind::kFile) {
    std::filesystem::path file(region.spec().substr(std::string_view("file:").size()));
    return file.has_parent_path() ? file.parent_path().string() : ".";
  }
  return "/dev/shm";
}

}  // namespace

Result<std::vector<Pair>> run_region_pairs(Region& region, uint64_t size, int rounds) {
  const double gib = static_cast<double>(size) / (1 << 30);
  const std::string label = internal::format_size(size);
  Pair create{"create-namespace of " + label, "create+size+fsync a file", 0, 0, 0,
              "per create", GoalKind::kReport, gib};
  Pair destroy{"destroy-namespace of " + label, "unlink+fsync dir of that file", 0, 0, 0,
               "per destroy", GoalKind::kReport, gib};
  create.anchor_ns = create.rawdax_ns = destroy.anchor_ns = destroy.rawdax_ns = 1e300;
  const std::string dir = anchor_dir(region);
  const std::string path = dir + "/rawdax-bench-anchor-" + std::to_string(::getpid());
  const std::string name = "bench-region-" + std::to_string(::getpid());
  // Both sides get one written page per MiB, so that a destroy has pages
  // to give back.
  std::vector<std::byte> page(4096, std::byte{0x5a});
  for (int r = 0; r <= rounds; ++r) {  // round 0 warms both sides up
    Status made = ok();
    Result<internal::UniqueFd> fd = Error(std::errc::invalid_argument, "not run");
    double ns = time_ns([&] {
      fd = internal::create_sized_file(path, size, /*allocate=*/false);
      made = fd ? internal::fsync_directory(dir) : Status(fd.error());
    });
    if (!made) return made.error().with_context("bench: anchor: ");
    if (r > 0) create.anchor_ns = std::min(create.anchor_ns, ns);
    for (uint64_t off = 0; off < size; off += 1 << 20) {
      RAWDAX_RETURN_IF_ERROR(internal::pwrite_all(fd->get(), page.data(), page.size(), off, path));
    }
    fd->reset();
    ns = time_ns([&] { made = ::unlink(path.c_str()) == 0 ? internal::fsync_directory(dir) : ok(); });
    if (!made) return made.error().with_context("bench: anchor: ");
    if (r > 0) destroy.anchor_ns = std::min(destroy.anchor_ns, ns);

    Result<NamespaceInfo> info = Error(std::errc::invalid_argument, "not run");
    ns = time_ns([&] { info = region.create_namespace({.name = name, .size = size}); });
    if (!info) return info.error();
    if (r > 0) create.rawdax_ns = std::min(create.rawdax_ns, ns);
    {
      auto dev = region.open_device(name);
      if (!dev) return dev.error();
      for (uint64_t off = 0; off < size; off += 1 << 20) {
        RAWDAX_RETURN_IF_ERROR((*dev)->write(off, page));
      }
    }
    Status gone;
    ns = time_ns([&] { gone = region.destroy_namespace(name); });
    if (!gone) return gone.error();
    if (r > 0) destroy.rawdax_ns = std::min(destroy.rawdax_ns, ns);
  }
  return std::vector<Pair>{create, destroy};
}

}  // namespace rawdax::cli
