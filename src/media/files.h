// File and memory-object primitives the region layer builds on: backing
// files, memfds, crash-consistent whole-file replacement, hole punching.
// Every function reports failures with the path in the message.
// Thread-safe (they share no state).
//
// Filesystems without write(2) (hugetlbfs: write and pwrite fail with EINVAL,
// and sizes must be whole huge pages) are written through a shared mapping
// instead, in one place (pwrite_all, write_file_contents). The mapping
// reserves its huge pages when it is made, so a short pool fails the call
// with ENOMEM instead of raising SIGBUS on the copy.
#ifndef RAWDAX_MEDIA_FILES_H_
#define RAWDAX_MEDIA_FILES_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "common/unique_fd.h"
#include "rawdax/result.h"

namespace rawdax::internal {

// Creates a new file (O_EXCL) of `size` bytes and fsyncs it. The caller
// fsyncs the directory when it makes the file reachable. With `allocate`,
// every page is allocated now (see size_file); on failure no file is left.
Result<UniqueFd> create_sized_file(const std::string& path, uint64_t size, bool allocate);

// Makes an open file at least `size` bytes long (never shorter). With
// `allocate`, every page of [0, size) is also allocated now (fallocate), so
// that no later store needs a free page: ENOSPC when the media has too few.
// On failure the size is unchanged and pages allocated past it are freed.
// `what` names the file in errors.
Status size_file(int fd, uint64_t size, bool allocate, const std::string& what);

// Opens an existing file read-write (or read-only).
Result<UniqueFd> open_file(const std::string& path, bool writable);

// An anonymous shared memory object of `size` bytes.
Result<UniqueFd> create_memfd(const std::string& name, uint64_t size);

// Size of an open file.
Result<uint64_t> file_size(int fd);

Status fsync_directory(const std::string& dir);

// Replaces `path` with `contents` so that a crash leaves either the old or the
// new file: write a temporary file beside it, fsync, rename, fsync the dir.
// Temporary names start with `path` + ".tmp." so callers can clean them up.
// Written by write_file_contents: NUL padding follows `contents` where the
// filesystem has no write(2).
Status replace_file_atomically(const std::string& path, std::string_view contents);

Result<std::string> read_whole_file(const std::string& path);

// pwrite(2) until all `len` bytes are written; the error names `what`.
// Where the filesystem refuses write(2), the bytes are copied through a
// shared mapping of the blocks that cover them, which the file must already
// hold (EINVAL otherwise: a mapping would extend a hugetlbfs file).
Status pwrite_all(int fd, const void* data, size_t len, uint64_t offset, const std::string& what);

// Makes `contents` the whole contents of an open read-write file. Where the
// filesystem refuses write(2), the file is instead sized to whole blocks
// (st_blksize: one huge page on hugetlbfs) and the bytes after `contents`
// read as NULs, so readers must stop at a length or a terminator.
Status write_file_contents(int fd, std::string_view contents, const std::string& what);

// Deallocates [offset, offset+len) keeping the size; reads then return zero.
// Returns false (not an error) when the filesystem cannot punch holes.
Result<bool> punch_hole(int fd, uint64_t offset, uint64_t len);

}  // namespace rawdax::internal

#endif  // RAWDAX_MEDIA_FILES_H_
