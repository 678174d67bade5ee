#include "media/hugetlb_pool.h"

#include <fstream>
#include <optional>
#include <sstream>
#include <string>

namespace rawdax::internal {
namespace {

std::optional<uint64_t> read_count(const std::string& path) {
  std::ifstream in(path);
  uint64_t value = 0;
  if (in >> value) return value;
  return std::nullopt;
}

// The value after `key` in /proc/meminfo ("HugePages_Free:  12").
std::optional<uint64_t> meminfo(const std::string& text, const std::string& key) {
  auto at = text.find("\n" + key + ":");
  if (at == std::string::npos) return std::nullopt;
  std::istringstream in(text.substr(at + key.size() + 2));
  uint64_t value = 0;
  if (in >> value) return value;
  return std::nullopt;
}

}  // namespace

Result<uint64_t> hugetlb_free_bytes(uint64_t page_size) {
  const std::string sysfs =
      "/sys/kernel/mm/hugepages/hugepages-" + std::to_string(page_size / 1024) + "kB/";
  auto free_pages = read_count(sysfs + "free_hugepages");
  auto reserved = read_count(sysfs + "resv_hugepages");
  if (!free_pages || !reserved) {
    std::ifstream in("/proc/meminfo");
    std::string text = "\n" + std::string(std::istreambuf_iterator<char>(in),
                                          std::istreambuf_iterator<char>());
    auto default_kb = meminfo(text, "Hugepagesize");
    if (default_kb && *default_kb * 1024 == page_size) {
      free_pages = meminfo(text, "HugePages_Free");
      reserved = meminfo(text, "HugePages_Rsvd");
    }
  }
  if (!free_pages || !reserved) {
    return Error(std::errc::no_such_file_or_directory,
                 "no hugetlb pool of " + std::to_string(page_size) + "-byte pages in " + sysfs +
                     " or /proc/meminfo");
  }
  // Reserved pages are counted as free until a fault takes them.
  return (*free_pages > *reserved ? *free_pages - *reserved : 0) * page_size;
}

}  // namespace rawdax::internal
