#include "media/files.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "common/crash_point.h"
#include "common/mapped_range.h"
#include "common/units.h"

namespace rawdax::internal {
namespace {

// write(2) and pwrite(2) fail with EINVAL on a filesystem that has no write
// method (hugetlbfs).
constexpr int kWriteRefused = EINVAL;

// hugetlbfs says ENOMEM when its pool has too few free pages to allocate or
// reserve: for a file, that is no space.
int space_errno(int err) { return err == ENOMEM ? ENOSPC : err; }

// The unit such a file is sized and mapped in: its block size, which is the
// huge page on hugetlbfs.
uint64_t mapping_block(const struct stat& st) {
  return st.st_blksize > 0 ? static_cast<uint64_t>(st.st_blksize)
                           : static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
}

// Copies `len` bytes to `offset` through a shared mapping of the blocks that
// cover them. The mapping is made without MAP_NORESERVE: on hugetlbfs it
// reserves its huge pages, so a short pool fails here with ENOMEM instead of
// raising SIGBUS in the memcpy. Bytes past EOF are refused: on hugetlbfs a
// writable mapping past EOF would extend the file.
Status copy_through_mapping(int fd, const void* data, size_t len, uint64_t offset,
                            const std::string& what) {
  if (len == 0) return ok();
  struct stat st;
  if (::fstat(fd, &st) != 0) return errno_error(errno, "fstat " + what);
  const uint64_t block = mapping_block(st);
  const uint64_t begin = offset / block * block;
  auto end = offset + len < offset ? std::nullopt : round_up(offset + len, block);
  if (!end || *end > static_cast<uint64_t>(st.st_size)) {
    return Error(std::errc::invalid_argument,
                 "cannot write " + std::to_string(len) + " bytes at offset " +
                     std::to_string(offset) + " of " + what + ": its filesystem has no write(2), "
                     "and a mapping may not pass its end (" + std::to_string(st.st_size) +
                     " bytes)");
  }
  void* addr = ::mmap(nullptr, *end - begin, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                      static_cast<off_t>(begin));
  if (addr == MAP_FAILED) {
    return errno_error(space_errno(errno), "cannot map " + std::to_string(*end - begin) + " bytes of " +
                                  what + " to write them (its filesystem has no write(2))");
  }
  MappedRange mapping(addr, *end - begin);
  std::memcpy(mapping.data() + (offset - begin), data, len);
  return ok();
}

}  // namespace

Result<UniqueFd> create_sized_file(const std::string& path, uint64_t size, bool allocate) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd.valid()) return errno_error(errno, "cannot create " + path);
  crash_point("file created");
  Status sized = size_file(fd.get(), size, allocate, path);
  if (sized && ::fsync(fd.get()) != 0) sized = errno_error(errno, "fsync " + path);
  if (!sized) {
    ::unlink(path.c_str());
    return sized.error();
  }
  crash_point("file sized and fsynced");
  return fd;
}

Status size_file(int fd, uint64_t size, bool allocate, const std::string& what) {
  auto current = file_size(fd);
  if (!current) return current.error().with_context(what + ": ");
  if (allocate) {
    // fallocate both allocates and extends; pages already there are kept.
    if (::fallocate(fd, 0, 0, static_cast<off_t>(size)) != 0) {
      int err = errno;
      // A failed fallocate keeps the pages it got past the old end until the
      // file is truncated there.
      (void)::ftruncate(fd, static_cast<off_t>(*current));
      return errno_error(space_errno(err), "cannot allocate " + std::to_string(size) + " bytes (" +
                                  format_size(size) + ") for " + what);
    }
    return ok();
  }
  if (*current >= size) return ok();
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    return errno_error(errno, "cannot size " + what + " to " + std::to_string(size) + " bytes");
  }
  return ok();
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
  // Read-write: a filesystem without write(2) is written through a mapping.
  UniqueFd fd(::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd.valid()) return errno_error(errno, "cannot create " + tmp);
  if (Status written = write_file_contents(fd.get(), contents, tmp); !written) {
    ::unlink(tmp.c_str());
    return written.error();
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
  bool first = true;
  while (len > 0) {
    ssize_t n = ::pwrite(fd, p, len, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == kWriteRefused && first) {
      return copy_through_mapping(fd, p, len, offset, what);
    }
    if (n <= 0) return errno_error(n < 0 ? errno : EIO, "cannot write " + what);
    first = false;
    p += n;
    len -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return ok();
}

Status write_file_contents(int fd, std::string_view contents, const std::string& what) {
  if (::ftruncate(fd, 0) != 0) return errno_error(errno, "cannot truncate " + what);
  if (contents.empty()) return ok();
  ssize_t n;
  do {
    n = ::pwrite(fd, contents.data(), contents.size(), 0);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && errno == kWriteRefused) {
    // Whole blocks (huge pages on hugetlbfs), fresh after the truncation to
    // zero, so whatever follows `contents` reads as NULs.
    struct stat st;
    if (::fstat(fd, &st) != 0) return errno_error(errno, "fstat " + what);
    const uint64_t block = mapping_block(st);
    auto padded = round_up(contents.size(), block);
    if (!padded || ::ftruncate(fd, static_cast<off_t>(*padded)) != 0) {
      return errno_error(padded ? errno : EFBIG, "cannot size " + what + " to whole blocks of " +
                                                     std::to_string(block) + " bytes");
    }
    return copy_through_mapping(fd, contents.data(), contents.size(), 0, what);
  }
  if (n < 0) return errno_error(errno, "cannot write " + what);
  return pwrite_all(fd, contents.data() + n, contents.size() - static_cast<size_t>(n),
                    static_cast<uint64_t>(n), what);
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

}  // namespace rawdax::internal
