// Opening a userfaultfd in the most capable mode this process is allowed.
//
// The kernel gives a userfaultfd one of two reaches:
//  - full: it handles faults from user-mode accesses and from the kernel
//    copying into user memory on the process's behalf (read(2) into a
//    mapping, recv(2), ...). The userfaultfd(2) syscall grants it to
//    CAP_SYS_PTRACE, or to anyone when vm.unprivileged_userfaultfd=1;
//    /dev/userfaultfd (Linux 6.1+) grants it to whoever may open that node.
//  - user-mode-only (UFFD_USER_MODE_ONLY, Linux 5.11+): allowed to anyone;
//    a kernel-mode fault on a registered range is not delivered, and the
//    kernel's copy fails with EFAULT at once.
// open_userfaultfd() is the one place the project opens userfaultfds: full
// through the syscall, then through the device node, then user-mode-only,
// and it reports which one it got. Async write-protect (WP_ASYNC) faults are
// resolved inside the kernel and never reach that check, so for them the
// mode makes no difference.
//
// Thread-safe; each call opens its own descriptors, owned by the result.
#ifndef RAWDAX_MEDIA_USERFAULTFD_H_
#define RAWDAX_MEDIA_USERFAULTFD_H_

#include <cstdint>
#include <string>

#include "common/unique_fd.h"
#include "rawdax/capabilities.h"
#include "rawdax/result.h"

namespace rawdax::internal {

inline constexpr const char* kUserfaultfdDevice = "/dev/userfaultfd";

struct Userfaultfd {
  UniqueFd fd;
  UffdMode mode = UffdMode::kNone;  // kFull or kUserModeOnly once open
  uint64_t offered = 0;             // every feature bit the kernel offers (UFFDIO_API)
};

// Opens a userfaultfd with `flags` (O_CLOEXEC, O_NONBLOCK) and enables
// `features` with the UFFDIO_API handshake (done here: the kernel takes it
// once per userfaultfd). `device` is the node tried when the syscall refuses
// full mode (tests point it elsewhere).
// Errors: operation_not_supported when the kernel has no userfaultfd, or
// lacks one of `features` (the message names them); EPERM when even
// user-mode-only is refused (seccomp, LSM); other errno errors as the
// kernel gives them.
Result<Userfaultfd> open_userfaultfd(int flags, uint64_t features,
                                     const char* device = kUserfaultfdDevice);

// " WP_ASYNC WP_UNPOPULATED": the names of the known feature bits in `bits`,
// each after a space ("" for none).
std::string uffd_feature_names(uint64_t bits);

}  // namespace rawdax::internal

#endif  // RAWDAX_MEDIA_USERFAULTFD_H_
