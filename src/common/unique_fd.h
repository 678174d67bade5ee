// UniqueFd: sole owner of a file descriptor; closes it on destruction.
// Not thread-safe; move it between threads like any value.
#ifndef RAWDAX_COMMON_UNIQUE_FD_H_
#define RAWDAX_COMMON_UNIQUE_FD_H_

#include <unistd.h>

#include <utility>

namespace rawdax::internal {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(std::exchange(other.fd_, -1));
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

}  // namespace rawdax::internal

#endif  // RAWDAX_COMMON_UNIQUE_FD_H_
