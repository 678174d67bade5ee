#include "media/files.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "common/crash_point.h"

namespace rawdax {

Result<UniqueFd> create_sized_file(const std::string& path, uint64_t size) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd.valid()) return errno_error(errno, "cannot create " + path);
  crash_point("file created");
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0 || ::fsync(fd.get()) != 0) {
    int err = errno;
    ::unlink(path.c_str());
    return errno_error(err, "cannot size " + path + " to " + std::to_string(size) + " bytes");
  }
  crash_point("file sized and fsynced");
  return fd;
}

Result<UniqueFd> open_file(const std::string& path, bool writable) {
  UniqueFd fd(::open(path.c_str(), (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC));
  if (!fd.valid()) return errno_error(errno, "cannot open " + path);
  return fd;
}

Result<UniqueFd> create_memfd(const std::string& name, uint64_t size) {
  UniqueFd fd(::memfd_create(name.c_str(), MFD_CLOEXEC));
  if (!fd.valid()) return errno_error(errno, "memfd_create " + name);
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
    return errno_error(errno, "cannot size memfd " + name + " to " + std::to_string(size));
  }
  return fd;
}

Result<uint64_t> file_size(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return errno_error(errno, "fstat");
  return static_cast<uint64_t>(st.st_size);
}

Status fsync_directory(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return errno_error(errno, "cannot open directory " + dir);
  if (::fsync(fd.get()) != 0) return errno_error(errno, "fsync " + dir);
  crash_point("directory fsynced");
  return ok();
}

static std::string parent_of(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

Status replace_file_atomically(const std::string& path, std::string_view contents) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd.valid()) return errno_error(errno, "cannot create " + tmp);
  size_t done = 0;
  while (done < contents.size()) {
    ssize_t n = ::write(fd.get(), contents.data() + done, contents.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::unlink(tmp.c_str());
      return errno_error(err, "cannot write " + tmp);
    }
    done += static_cast<size_t>(n);
  }
  crash_point("replacement written");
  if (::fsync(fd.get()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return errno_error(err, "fsync " + tmp);
  }
  crash_point("replacement fsynced");
  fd.reset();
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return errno_error(err, "cannot rename " + tmp + " to " + path);
  }
  crash_point("replacement renamed");
  return fsync_directory(parent_of(path));
}

Status pwrite_all(int fd, const void* data, size_t len, uint64_t offset, const std::string& what) {
  auto p = static_cast<const char*>(data);
  while (len > 0) {
    ssize_t n = ::pwrite(fd, p, len, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return errno_error(n < 0 ? errno : EIO, "cannot write " + what);
    p += n;
    len -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return ok();
}

Result<std::string> read_whole_file(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return errno_error(errno, "cannot open " + path);
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error(errno, "cannot read " + path);
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

Result<bool> punch_hole(int fd, uint64_t offset, uint64_t len) {
  if (len == 0) return true;
  if (::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                  static_cast<off_t>(len)) == 0) {
    return true;
  }
  if (errno == EOPNOTSUPP || errno == ENOSYS || errno == ENODEV) return false;
  return errno_error(errno, "punch hole at offset " + std::to_string(offset) + " length " +
                                std::to_string(len));
}

}  // namespace rawdax
