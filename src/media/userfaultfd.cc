#include "media/userfaultfd.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "media/uffd_compat.h"

namespace rawdax::internal {
namespace {

int open_through_syscall(int flags) { return static_cast<int>(::syscall(SYS_userfaultfd, flags)); }

// -1 with errno set when the node is missing or not ours to open.
int open_through_device(const char* device, int flags) {
  UniqueFd node(::open(device, O_RDWR | O_CLOEXEC));
  if (!node.valid()) return -1;
  return ::ioctl(node.get(), USERFAULTFD_IOC_NEW, flags);
}

Result<Userfaultfd> open_plain(int flags, const char* device) {
  Userfaultfd uffd;
  uffd.mode = UffdMode::kFull;
  uffd.fd.reset(open_through_syscall(flags));
  if (!uffd.fd.valid() && (errno == EPERM || errno == ENOSYS)) {
    // The sysctl or the missing capability refuses full mode to the syscall;
    // the device node may still grant it.
    int syscall_errno = errno;
    uffd.fd.reset(open_through_device(device, flags));
    if (!uffd.fd.valid()) {
      errno = syscall_errno;
      if (syscall_errno == EPERM) {
        uffd.mode = UffdMode::kUserModeOnly;
        uffd.fd.reset(open_through_syscall(flags | UFFD_USER_MODE_ONLY));
      }
    }
  }
  if (!uffd.fd.valid()) {
    int err = errno;
    if (err == ENOSYS) {
      return Error(std::errc::operation_not_supported, "the kernel has no userfaultfd");
    }
    if (err == EINVAL && uffd.mode == UffdMode::kUserModeOnly) {
      return Error(std::errc::operation_not_supported,
                   "userfaultfd needs privilege here and the kernel has no user-mode-only "
                   "userfaultfd (Linux 5.11+)");
    }
    return errno_error(err, "userfaultfd");
  }
  return uffd;
}

}  // namespace

Result<Userfaultfd> open_userfaultfd(int flags, uint64_t features, const char* device) {
  auto uffd = open_plain(flags, device);
  if (!uffd) return uffd.error();
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = features;
  if (::ioctl(uffd->fd.get(), UFFDIO_API, &api) != 0) {
    int err = errno;
    // A refused feature fails without naming it: ask a throwaway descriptor
    // what the kernel offers.
    if (err == EINVAL && features != 0) {
      auto plain = open_userfaultfd(flags, 0, device);
      if (plain && (features & ~plain->offered) != 0) {
        return Error(std::errc::operation_not_supported,
                     "the kernel's userfaultfd lacks" +
                         uffd_feature_names(features & ~plain->offered));
      }
    }
    return errno_error(err, "UFFDIO_API");
  }
  uffd->offered = api.features;
  return uffd;
}

std::string uffd_feature_names(uint64_t bits) {
  static constexpr struct {
    uint64_t bit;
    const char* name;
  } kNames[] = {
      {UFFD_FEATURE_PAGEFAULT_FLAG_WP, "PAGEFAULT_FLAG_WP"},
      {UFFD_FEATURE_WP_HUGETLBFS_SHMEM, "WP_HUGETLBFS_SHMEM"},
      {UFFD_FEATURE_WP_UNPOPULATED, "WP_UNPOPULATED"},
      {UFFD_FEATURE_WP_ASYNC, "WP_ASYNC"},
      {UFFD_FEATURE_SIGBUS, "SIGBUS"},
  };
  std::string out;
  for (const auto& [bit, name] : kNames) {
    if (bits & bit) {
      out += ' ';
      out += name;
      bits &= ~bit;
    }
  }
  if (bits != 0) {
    char rest[24];
    std::snprintf(rest, sizeof rest, " 0x%llx", static_cast<unsigned long long>(bits));
    out += rest;
  }
  return out;
}

}  // namespace rawdax::internal
