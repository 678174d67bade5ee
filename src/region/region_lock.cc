#include "region/region_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <string_view>

#include "media/files.h"

namespace rawdax::internal {

Result<RegionLock> RegionLock::acquire(const std::string& dir) {
  std::string path = dir + "/rawdax.lock";
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd.valid()) return errno_error(errno, "cannot open lock file " + path);
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK) return errno_error(errno, "flock " + path);
    char buf[32] = {};
    ssize_t n = ::pread(fd.get(), buf, sizeof buf - 1, 0);
    std::string holder = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
    // The pid ends at a newline, or at the NUL padding of a filesystem
    // without write(2) (see write_file_contents).
    holder = holder.substr(0, holder.find_first_of(std::string_view("\n\0", 2)));
    while (!holder.empty() && holder.back() == ' ') holder.pop_back();
    return Error(std::errc::device_or_resource_busy,
                 "region " + dir + " is in use by " +
                     (holder.empty() ? std::string("another process") : "pid " + holder) +
                     " (it holds " + path + ")");
  }
  Status recorded = write_file_contents(fd.get(), std::to_string(::getpid()) + "\n", path);
  if (!recorded) return recorded.error().with_context("cannot record pid: ");
  return RegionLock(std::move(fd));
}

}  // namespace rawdax::internal
