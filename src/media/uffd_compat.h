// userfaultfd constants newer than Debian 12's 6.1 uapi headers, with the
// kernel's values. Include instead of <linux/userfaultfd.h>.
#ifndef RAWDAX_MEDIA_UFFD_COMPAT_H_
#define RAWDAX_MEDIA_UFFD_COMPAT_H_

#include <linux/userfaultfd.h>

#ifndef UFFD_FEATURE_WP_HUGETLBFS_SHMEM
#define UFFD_FEATURE_WP_HUGETLBFS_SHMEM (1 << 12)
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

#endif  // RAWDAX_MEDIA_UFFD_COMPAT_H_
