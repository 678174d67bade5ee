#include "tools/bench_raw.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include "media/uffd_compat.h"
#include "media/userfaultfd.h"

namespace rawdax::cli {

Result<RawMapping> raw_mapping(uint64_t size, uint64_t huge) {
  RawMapping m;
  m.fd.reset(::memfd_create("rawdax-bench-raw", MFD_CLOEXEC));
  if (!m.fd.valid() || ::ftruncate(m.fd.get(), static_cast<off_t>(size)) != 0) {
    return errno_error(errno, "bench memfd");
  }
  size_t span = size + huge;
  void* reserved = ::mmap(nullptr, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (reserved == MAP_FAILED) return errno_error(errno, "bench mmap");
  uintptr_t at = huge ? (reinterpret_cast<uintptr_t>(reserved) + huge - 1) & ~(huge - 1)
                      : reinterpret_cast<uintptr_t>(reserved);
  void* p = ::mmap(reinterpret_cast<void*>(at), size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_FIXED, m.fd.get(), 0);
  if (p == MAP_FAILED) return errno_error(errno, "bench mmap");
  if (huge) ::madvise(p, size, MADV_HUGEPAGE);
  std::memset(p, 1, size);
  m.range = internal::MappedRange(p, size);
  return m;
}

Result<std::unique_ptr<RawUffd>> RawUffd::create(std::byte* addr, uint64_t len,
                                                 RawFaults faults) {
  auto u = std::unique_ptr<RawUffd>(new RawUffd());
  auto uffd = internal::open_userfaultfd(O_CLOEXEC | O_NONBLOCK,
                               UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_HUGETLBFS_SHMEM |
                                   (faults == RawFaults::kKernel ? UFFD_FEATURE_WP_ASYNC : 0));
  if (!uffd) return uffd.error();
  u->fd_ = std::move(uffd->fd);
  uffdio_register reg{};
  reg.range = {reinterpret_cast<uint64_t>(addr), len};
  reg.mode = UFFDIO_REGISTER_MODE_WP;
  if (::ioctl(u->fd_.get(), UFFDIO_REGISTER, &reg) != 0) {
    return errno_error(errno, "UFFDIO_REGISTER");
  }
  if (faults == RawFaults::kHandlerThread) {
    u->handler_ = std::thread([p = u.get()] { p->serve(); });
  }
  return u;
}

RawUffd::~RawUffd() {
  stop_.store(true);
  if (handler_.joinable()) handler_.join();
}

void RawUffd::protect(std::byte* addr, uint64_t len, bool on) const {
  uffdio_writeprotect wp{};
  wp.range = {reinterpret_cast<uint64_t>(addr), len};
  wp.mode = on ? UFFDIO_WRITEPROTECT_MODE_WP : 0;
  ::ioctl(fd_.get(), UFFDIO_WRITEPROTECT, &wp);
}

void RawUffd::serve() {
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  pollfd pfd{fd_.get(), POLLIN, 0};
  while (!stop_.load()) {
    if (::poll(&pfd, 1, 10) <= 0) continue;
    uffd_msg msgs[32];
    ssize_t n = ::read(fd_.get(), msgs, sizeof msgs);
    for (ssize_t i = 0; i < n / static_cast<ssize_t>(sizeof(uffd_msg)); ++i) {
      auto* at = reinterpret_cast<std::byte*>(msgs[i].arg.pagefault.address & ~(page - 1));
      protect(at, page, false);
    }
  }
}

}  // namespace rawdax::cli
