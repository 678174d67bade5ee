// The kernel's hugetlb pool, from which hugetlbfs files take their pages.
// Thread-safe: it only reads sysfs and procfs.
#ifndef RAWDAX_MEDIA_HUGETLB_POOL_H_
#define RAWDAX_MEDIA_HUGETLB_POOL_H_

#include <cstdint>

#include "rawdax/result.h"

namespace rawdax::internal {

// Bytes of huge pages of `page_size` that are free and not reserved by some
// mapping: what a new hugetlbfs allocation can still get. From
// /sys/kernel/mm/hugepages/hugepages-<kB>kB/{free,resv}_hugepages, or from
// /proc/meminfo (HugePages_Free, HugePages_Rsvd) when sysfs lacks them and
// `page_size` is the default huge page size. ENOENT when neither has the
// size.
Result<uint64_t> hugetlb_free_bytes(uint64_t page_size);

}  // namespace rawdax::internal

#endif  // RAWDAX_MEDIA_HUGETLB_POOL_H_
