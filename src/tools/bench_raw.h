// The raw kernel mechanisms `rawdax bench` measures rawdax against: a
// populated memfd mapping, and a userfaultfd in write-protect mode on it.
#ifndef RAWDAX_TOOLS_BENCH_RAW_H_
#define RAWDAX_TOOLS_BENCH_RAW_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "common/mapped_range.h"
#include "common/unique_fd.h"
#include "rawdax/result.h"

namespace rawdax::cli {

// A populated shared memfd mapping: the anchor's own copy of the same work.
struct RawMapping {
  internal::UniqueFd fd;
  internal::MappedRange range;
};

// With `huge`, the mapping is 2 MiB-aligned and advised for shmem THP; with
// `hugetlb` too, the memfd is of the default huge page size (MFD_HUGETLB).
Result<RawMapping> raw_mapping(uint64_t size, uint64_t huge = 0, bool hugetlb = false);

// Who answers a write fault on a page RawUffd protected.
enum class RawFaults {
  kNobody,            // sync WP and no handler: the caller must not store
  kHandlerThread,     // sync WP; a thread unprotects each faulting page
  kKernel,            // async WP: the kernel unprotects the page itself
};

// A userfaultfd registered in WP mode on one range.
// Thread safety: protect() may be called from any thread; the handler thread
// (kHandlerThread) is joined by the destructor.
class RawUffd {
 public:
  static Result<std::unique_ptr<RawUffd>> create(std::byte* addr, uint64_t len, RawFaults faults);
  ~RawUffd();
  void protect(std::byte* addr, uint64_t len, bool on) const;

 private:
  RawUffd() = default;
  void serve();

  internal::UniqueFd fd_;
  std::thread handler_;
  std::atomic<bool> stop_{false};
};

// Turns shmem THP to "advise" for its lifetime when it is off and
// `allowed` (root), then restores it.
class ShmemThpForBench {
 public:
  explicit ShmemThpForBench(bool allowed);
  ~ShmemThpForBench();
  ShmemThpForBench(const ShmemThpForBench&) = delete;
  ShmemThpForBench& operator=(const ShmemThpForBench&) = delete;
  bool on() const;
  const std::string& before() const { return before_; }

 private:
  std::string before_;
  bool changed_ = false;
};

// Adds `pages` 2 MiB pages to the hugetlb pool and mounts hugetlbfs on a
// fresh directory for its lifetime (root only), then unmounts and gives back
// what it added, whatever others did to the pool meanwhile. on() false and
// why() says why when any step failed.
class HugetlbfsForBench {
 public:
  explicit HugetlbfsForBench(uint64_t pages);
  ~HugetlbfsForBench();
  HugetlbfsForBench(const HugetlbfsForBench&) = delete;
  HugetlbfsForBench& operator=(const HugetlbfsForBench&) = delete;
  bool on() const { return mounted_; }
  const std::string& dir() const { return dir_; }
  const std::string& why() const { return why_; }

 private:
  uint64_t added_ = 0;
  std::string dir_, why_;
  bool mounted_ = false;
};

}  // namespace rawdax::cli

#endif  // RAWDAX_TOOLS_BENCH_RAW_H_
