// File and memory-object primitives the region layer builds on: backing
// files, memfds, crash-consistent whole-file replacement, hole punching.
// Every function reports failures with the path in the message.
// Thread-safe (they share no state).
#ifndef RAWDAX_MEDIA_FILES_H_
#define RAWDAX_MEDIA_FILES_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "common/unique_fd.h"
#include "rawdax/result.h"

namespace rawdax {

// Creates a new file (O_EXCL) of `size` bytes and fsyncs it. The caller
// fsyncs the directory when it makes the file reachable.
Result<UniqueFd> create_sized_file(const std::string& path, uint64_t size);

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
Status replace_file_atomically(const std::string& path, std::string_view contents);

Result<std::string> read_whole_file(const std::string& path);

// pwrite(2) until all `len` bytes are written; the error names `what`.
Status pwrite_all(int fd, const void* data, size_t len, uint64_t offset, const std::string& what);

// Deallocates [offset, offset+len) keeping the size; reads then return zero.
// Returns false (not an error) when the filesystem cannot punch holes.
Result<bool> punch_hole(int fd, uint64_t offset, uint64_t len);

}  // namespace rawdax

#endif  // RAWDAX_MEDIA_FILES_H_
