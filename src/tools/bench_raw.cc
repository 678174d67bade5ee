#include "tools/bench_raw.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "media/uffd_compat.h"
#include "media/userfaultfd.h"

namespace rawdax::cli {

namespace {

constexpr const char* kShmemThp = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";
constexpr const char* kHugetlbPool = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";

// The bracketed word of the shmem THP setting, e.g. "never".
std::string shmem_thp_mode() {
  FILE* f = std::fopen(kShmemThp, "r");
  if (f == nullptr) return "";
  char buf[256] = {};
  size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  std::string all(buf, n);
  auto open = all.find('['), close = all.find(']');
  if (open == std::string::npos || close == std::string::npos) return "";
  return all.substr(open + 1, close - open - 1);
}

bool set_shmem_thp_mode(const std::string& mode) {
  FILE* f = std::fopen(kShmemThp, "w");
  if (f == nullptr) return false;
  bool ok = std::fputs(mode.c_str(), f) >= 0;
  return std::fclose(f) == 0 && ok;
}

uint64_t read_pool() {
  FILE* f = std::fopen(kHugetlbPool, "r");
  if (f == nullptr) return 0;
  unsigned long long n = 0;
  if (std::fscanf(f, "%llu", &n) != 1) n = 0;
  std::fclose(f);
  return n;
}

bool write_pool(uint64_t pages) {
  FILE* f = std::fopen(kHugetlbPool, "w");
  if (f == nullptr) return false;
  bool ok = std::fprintf(f, "%llu", static_cast<unsigned long long>(pages)) > 0;
  return std::fclose(f) == 0 && ok;
}

}  // namespace

ShmemThpForBench::ShmemThpForBench(bool allowed) : before_(shmem_thp_mode()) {
  if (allowed && (before_ == "never" || before_ == "deny")) changed_ = set_shmem_thp_mode("advise");
}

ShmemThpForBench::~ShmemThpForBench() {
  if (changed_) set_shmem_thp_mode(before_);
}

bool ShmemThpForBench::on() const {
  std::string now = shmem_thp_mode();
  return !now.empty() && now != "never" && now != "deny";
}

HugetlbfsForBench::HugetlbfsForBench(uint64_t pages) {
  if (::geteuid() != 0) {
    why_ = "needs root (it mounts hugetlbfs and sizes the pool)";
    return;
  }
  const uint64_t before = read_pool();
  if (!write_pool(before + pages)) {
    why_ = std::string("cannot write ") + kHugetlbPool;
    return;
  }
  const uint64_t now = read_pool();
  added_ = now > before ? now - before : 0;
  if (added_ < pages) {
    why_ = "asked the kernel for " + std::to_string(pages) + " more 2 MiB pages, got " +
           std::to_string(added_);
    return;
  }
  char dir[] = "/tmp/rawdax-bench-hugetlbfs.XXXXXX";
  if (::mkdtemp(dir) == nullptr) {
    why_ = std::string("mkdtemp: ") + std::strerror(errno);
    return;
  }
  dir_ = dir;
  if (::mount("none", dir, "hugetlbfs", 0, "pagesize=2M,mode=0700") != 0) {
    why_ = std::string("mount hugetlbfs: ") + std::strerror(errno);
    return;
  }
  mounted_ = true;
}

HugetlbfsForBench::~HugetlbfsForBench() {
  if (mounted_ && ::umount(dir_.c_str()) != 0) ::umount2(dir_.c_str(), MNT_DETACH);
  if (!dir_.empty()) ::rmdir(dir_.c_str());
  if (added_ > 0) {
    const uint64_t now = read_pool();
    write_pool(now > added_ ? now - added_ : 0);
  }
}

Result<RawMapping> raw_mapping(uint64_t size, uint64_t huge, bool hugetlb) {
  RawMapping m;
  m.fd.reset(::memfd_create("rawdax-bench-raw", MFD_CLOEXEC | (hugetlb ? MFD_HUGETLB : 0)));
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
  if (huge && !hugetlb) ::madvise(p, size, MADV_HUGEPAGE);
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
