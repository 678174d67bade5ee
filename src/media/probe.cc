#include "media/probe.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "common/mapped_range.h"
#include "common/unique_fd.h"
#include "media/files.h"
#include "media/pagemap_scan.h"
#include "media/persist.h"
#include "media/uffd_compat.h"
#include "media/userfaultfd.h"

#ifndef MAP_SHARED_VALIDATE
#define MAP_SHARED_VALIDATE 0x03
#endif
#ifndef MAP_SYNC
#define MAP_SYNC 0x80000
#endif
#ifndef HUGETLBFS_MAGIC
#define HUGETLBFS_MAGIC 0x958458f6
#endif

namespace rawdax::internal {
namespace {

std::string filesystem_name(long type) {
  switch (static_cast<unsigned long>(type)) {
    case TMPFS_MAGIC: return "tmpfs";
    case EXT4_SUPER_MAGIC: return "ext4";
    case HUGETLBFS_MAGIC: return "hugetlbfs";
    case XFS_SUPER_MAGIC: return "xfs";
    case BTRFS_SUPER_MAGIC: return "btrfs";
    case RAMFS_MAGIC: return "ramfs";
    case OVERLAYFS_SUPER_MAGIC: return "overlayfs";
    default: {
      char buf[32];
      std::snprintf(buf, sizeof buf, "fs-0x%lx", static_cast<unsigned long>(type));
      return buf;
    }
  }
}

uint64_t read_sysfs_u64(const std::string& path, uint64_t fallback) {
  std::ifstream in(path);
  uint64_t value = 0;
  if (in >> value) return value;
  return fallback;
}

bool shmem_thp_possible() {
  std::ifstream in("/sys/kernel/mm/transparent_hugepage/shmem_enabled");
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return !all.empty() && all.find("[never]") == std::string::npos &&
         all.find("[deny]") == std::string::npos;
}

// True when a fresh userfaultfd with `features` registers [addr, addr+len)
// in write-protect mode.
bool uffd_wp_registers(void* addr, size_t len, uint64_t features) {
  auto uffd = open_userfaultfd(O_CLOEXEC | O_NONBLOCK, features);
  if (!uffd) return false;
  uffdio_register reg{};
  reg.range.start = reinterpret_cast<uint64_t>(addr);
  reg.range.len = len;
  reg.mode = UFFDIO_REGISTER_MODE_WP;
  if (::ioctl(uffd->fd.get(), UFFDIO_REGISTER, &reg) != 0) return false;
  uffdio_range range{reinterpret_cast<uint64_t>(addr), len};
  ::ioctl(uffd->fd.get(), UFFDIO_UNREGISTER, &range);
  return true;
}

// Fills the flags that need a live mapping of the media: MAP_SYNC, uffd-wp.
// The mappings are never touched and reserve nothing (MAP_NORESERVE), so the
// probe needs no free huge page: a hugetlbfs region whose pages all back
// namespaces still opens with its true capabilities.
void probe_mapping(int fd, uint64_t len, Capabilities& caps) {
  void* sync_addr = ::mmap(nullptr, len, PROT_READ | PROT_WRITE,
                           MAP_SHARED_VALIDATE | MAP_SYNC | MAP_NORESERVE, fd, 0);
  caps.map_sync = sync_addr != MAP_FAILED;
  // A kernel without MAP_SYNC refuses the unknown flag with EINVAL; one that
  // knows it refuses media without DAX with EOPNOTSUPP.
  caps.kernel.map_sync = caps.map_sync || errno == EOPNOTSUPP;
  if (caps.map_sync) ::munmap(sync_addr, len);

  void* addr = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
  if (addr == MAP_FAILED) return;
  MappedRange mapping(addr, len);
  caps.uffd_wp_sync = uffd_wp_registers(
      addr, len, UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_HUGETLBFS_SHMEM);
  caps.uffd_wp_async = uffd_wp_registers(
      addr, len, UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED |
                     UFFD_FEATURE_WP_HUGETLBFS_SHMEM);
}

// What the kernel offers and what this process may open, whatever the media.
void probe_kernel(Capabilities& caps) {
  struct utsname names;
  if (::uname(&names) == 0) caps.kernel.release = names.release;
  if (auto uffd = open_userfaultfd(O_CLOEXEC | O_NONBLOCK, 0)) {
    caps.uffd_mode = uffd->mode;
    caps.kernel.uffd_wp_sync = (uffd->offered & UFFD_FEATURE_PAGEFAULT_FLAG_WP) != 0;
    caps.kernel.uffd_wp_async = (uffd->offered & UFFD_FEATURE_WP_ASYNC) != 0;
    caps.kernel.uffd_wp_hugetlbfs_shmem = (uffd->offered & UFFD_FEATURE_WP_HUGETLBFS_SHMEM) != 0;
    caps.kernel.uffd_wp_unpopulated = (uffd->offered & UFFD_FEATURE_WP_UNPOPULATED) != 0;
  }
  caps.kernel.pagemap_scan = open_pagemap_scan().has_value();
}

void finish(Capabilities& caps) {
  probe_kernel(caps);
  caps.flush_instruction = detected_flush_instruction();
  caps.engine = caps.uffd_wp_sync ? ProtectionEngine::kUffd : ProtectionEngine::kMprotect;
}

uint64_t base_page_size() { return static_cast<uint64_t>(::sysconf(_SC_PAGESIZE)); }

}  // namespace

Result<Capabilities> probe_directory(const std::string& dir) {
  struct statfs fs;
  if (::statfs(dir.c_str(), &fs) != 0) return errno_error(errno, "statfs " + dir);
  Capabilities caps;
  caps.kind = MediaKind::kDirectory;
  caps.filesystem = filesystem_name(fs.f_type);
  caps.page_size = base_page_size();
  bool hugetlb = static_cast<unsigned long>(fs.f_type) == HUGETLBFS_MAGIC;
  bool volatile_fs = hugetlb || static_cast<unsigned long>(fs.f_type) == TMPFS_MAGIC ||
                     static_cast<unsigned long>(fs.f_type) == RAMFS_MAGIC;
  if (hugetlb) {
    // Every mapping of a hugetlbfs file is made of huge pages: they are its
    // pages, for mapping lengths, write-protection and dirty tracking alike.
    caps.hugetlb = true;
    caps.huge_page_size = static_cast<uint64_t>(fs.f_bsize);
    caps.page_size = caps.huge_page_size;
  } else if (static_cast<unsigned long>(fs.f_type) == TMPFS_MAGIC && shmem_thp_possible()) {
    caps.huge_page_size =
        read_sysfs_u64("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", 2u << 20);
  }
  caps.alignment = hugetlb ? caps.huge_page_size : caps.page_size;

  // An unnamed file (O_TMPFILE) where the filesystem makes one: a crash
  // during the probe then leaves nothing behind, also beside a file: region,
  // whose directory no orphan cleanup visits. A named one otherwise.
  UniqueFd fd(::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  if (fd.valid()) {
    Status sized = size_file(fd.get(), caps.alignment, /*allocate=*/false, "probe file in " + dir);
    if (!sized) return sized.error().with_context("probing region directory: ");
  } else {
    std::string probe_path = dir + "/.rawdax-probe." + std::to_string(::getpid());
    ::unlink(probe_path.c_str());
    auto named = create_sized_file(probe_path, caps.alignment, /*allocate=*/false);
    if (!named) return named.error().with_context("probing region directory: ");
    ::unlink(probe_path.c_str());  // the open fd keeps it alive for the probe
    fd = std::move(*named);
  }
  probe_mapping(fd.get(), caps.alignment, caps);
  auto punched = punch_hole(fd.get(), 0, caps.alignment);
  caps.punch_hole = punched && *punched;

  if (caps.map_sync) {
    caps.persist = PersistMethod::kCacheFlush;
    caps.huge_page_size = read_sysfs_u64("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size",
                                         2u << 20);
  } else {
    caps.persist = volatile_fs ? PersistMethod::kNone : PersistMethod::kMsync;
  }
  finish(caps);
  return caps;
}

Result<Capabilities> probe_memfd() {
  Capabilities caps;
  caps.kind = MediaKind::kMemfd;
  caps.filesystem = "memfd";
  caps.page_size = base_page_size();
  caps.alignment = caps.page_size;
  if (shmem_thp_possible()) {
    caps.huge_page_size =
        read_sysfs_u64("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", 2u << 20);
  }
  auto fd = create_memfd("rawdax-probe", caps.alignment);
  if (!fd) return fd.error();
  probe_mapping(fd->get(), caps.alignment, caps);
  auto punched = punch_hole(fd->get(), 0, caps.alignment);
  caps.punch_hole = punched && *punched;
  caps.persist = PersistMethod::kNone;
  finish(caps);
  return caps;
}

Result<DevdaxGeometry> read_devdax_geometry(const std::string& device_path) {
  const std::string what = "devdax:" + device_path;
  struct stat st;
  if (::stat(device_path.c_str(), &st) != 0) return errno_error(errno, what);
  if (!S_ISCHR(st.st_mode)) {
    const char* type = S_ISREG(st.st_mode)   ? "a regular file"
                       : S_ISBLK(st.st_mode) ? "a block device"
                       : S_ISDIR(st.st_mode) ? "a directory"
                                             : "a special file";
    return Error(std::errc::no_such_device,
                 what + ": " + device_path + " is " + type +
                     ", not a character device (devdax wants a device-dax instance, /dev/daxX.Y)");
  }
  std::string sysfs = "/sys/dev/char/" + std::to_string(major(st.st_rdev)) + ":" +
                      std::to_string(minor(st.st_rdev));
  // /dev/null and friends are character devices too; only the dax class
  // has the size and align the namespace needs.
  std::error_code ec;
  std::string subsystem =
      std::filesystem::read_symlink(sysfs + "/subsystem", ec).filename().string();
  if (ec || subsystem != "dax") {
    return Error(std::errc::no_such_device,
                 what + ": " + device_path + " is a character device of class " +
                     (ec ? std::string("unknown") : subsystem) + " (" + sysfs +
                     "), not a device-dax instance");
  }
  DevdaxGeometry geometry;
  geometry.size = read_sysfs_u64(sysfs + "/size", 0);
  geometry.align = read_sysfs_u64(sysfs + "/align", 0);
  if (geometry.size == 0 || geometry.align == 0) {
    return Error(std::errc::no_such_device,
                 what + ": no size/align in " + sysfs + " (is it a device-dax instance?)");
  }
  return geometry;
}

Result<Capabilities> probe_devdax(int fd, const DevdaxGeometry& geometry) {
  Capabilities caps;
  caps.kind = MediaKind::kDevdax;
  caps.filesystem = "devdax";
  caps.page_size = base_page_size();
  caps.huge_page_size = geometry.align > caps.page_size ? geometry.align : 0;
  caps.alignment = geometry.align;
  probe_mapping(fd, geometry.align, caps);
  caps.persist = PersistMethod::kCacheFlush;
  caps.map_sync = true;  // device-dax maps the media directly; no page cache to sync
  finish(caps);
  return caps;
}

int shared_map_flags(const Capabilities& caps) {
  if (caps.map_sync && (caps.kind == MediaKind::kDirectory || caps.kind == MediaKind::kFile)) {
    return MAP_SHARED_VALIDATE | MAP_SYNC;
  }
  return MAP_SHARED;
}

}  // namespace rawdax::internal

// The public names of the capability enums (rawdax/capabilities.h).
namespace rawdax {

std::string_view to_string(MediaKind kind) {
  switch (kind) {
    case MediaKind::kDirectory: return "directory";
    case MediaKind::kMemfd: return "memfd";
    case MediaKind::kDevdax: return "devdax";
    case MediaKind::kFile: return "file";
  }
  return "unknown";
}

std::string_view to_string(PersistMethod method) {
  switch (method) {
    case PersistMethod::kNone: return "none";
    case PersistMethod::kMsync: return "msync";
    case PersistMethod::kCacheFlush: return "cache-flush";
  }
  return "unknown";
}

std::string_view to_string(FlushInstruction instruction) {
  switch (instruction) {
    case FlushInstruction::kNone: return "none";
    case FlushInstruction::kClflush: return "clflush";
    case FlushInstruction::kClflushopt: return "clflushopt";
    case FlushInstruction::kClwb: return "clwb";
  }
  return "unknown";
}

std::string_view to_string(UffdMode mode) {
  switch (mode) {
    case UffdMode::kNone: return "none";
    case UffdMode::kUserModeOnly: return "user-mode-only";
    case UffdMode::kFull: return "full";
  }
  return "unknown";
}

std::string_view to_string(ProtectionEngine engine) {
  switch (engine) {
    case ProtectionEngine::kUffd: return "uffd";
    case ProtectionEngine::kMprotect: return "mprotect";
  }
  return "unknown";
}

}  // namespace rawdax
