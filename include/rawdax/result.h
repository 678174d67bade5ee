// Result<T>, Status and Error: how every rawdax call reports failure.
//
// Contract: no rawdax API throws. A call that can fail returns Result<T>
// (or Status, which is Result<void>). Result<T> follows the interface of
// C++23 std::expected: has_value(), operator bool, operator*, operator->,
// value() and error(). Calling value()/operator* on an error, or error() on a
// value, is a programming error and aborts (it is checked, not UB).
//
// Thread safety: these are plain values; share them like any value type.
#ifndef RAWDAX_RESULT_H_
#define RAWDAX_RESULT_H_

#include <cstdio>
#include <cstdlib>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

namespace rawdax {

// An error: a portable code (compare with std::errc values) and one line of
// human text naming what failed, e.g. the namespace, offset and size.
class Error {
 public:
  Error(std::error_code code, std::string message)
      : code_(code), message_(std::move(message)) {}
  Error(std::errc code, std::string message)
      : Error(std::make_error_code(code), std::move(message)) {}

  const std::error_code& code() const { return code_; }
  const std::string& message() const { return message_; }

  // Prefixes context ("namespace vm1: ") onto the message.
  Error with_context(const std::string& prefix) const {
    return Error(code_, prefix + message_);
  }

 private:
  std::error_code code_;
  std::string message_;
};

// Builds an Error from an errno value.
inline Error errno_error(int err, std::string message) {
  return Error(std::error_code(err, std::generic_category()),
               std::move(message) + ": " + std::generic_category().message(err));
}

namespace detail {
[[noreturn]] inline void bad_result_access(const char* what) {
  std::fprintf(stderr, "rawdax: %s\n", what);
  std::abort();
}
}  // namespace detail

template <typename T>
class [[nodiscard]] Result {
 public:
  using value_type = T;

  template <typename U = T,
            typename = std::enable_if_t<std::is_constructible_v<T, U&&> &&
                                        !std::is_same_v<std::decay_t<U>, Error> &&
                                        !std::is_same_v<std::decay_t<U>, Result>>>
  Result(U&& value) : state_(std::in_place_index<0>, std::forward<U>(value)) {}
  Result(Error error) : state_(std::in_place_index<1>, std::move(error)) {}

  bool has_value() const { return state_.index() == 0; }
  explicit operator bool() const { return has_value(); }

  T& value() & { check_value(); return std::get<0>(state_); }
  const T& value() const& { check_value(); return std::get<0>(state_); }
  T&& value() && { check_value(); return std::get<0>(std::move(state_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const {
    if (has_value()) detail::bad_result_access("Result::error() on a value");
    return std::get<1>(state_);
  }

 private:
  void check_value() const {
    if (!has_value())
      detail::bad_result_access(("Result::value() on an error: " +
                                 std::get<1>(state_).message()).c_str());
  }
  std::variant<T, Error> state_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}

  bool has_value() const { return ok_; }
  explicit operator bool() const { return ok_; }
  void value() const {
    if (!ok_) detail::bad_result_access(("Status::value() on an error: " + error_.message()).c_str());
  }
  const Error& error() const {
    if (ok_) detail::bad_result_access("Status::error() on success");
    return error_;
  }

 private:
  Error error_{std::error_code(), std::string()};
  bool ok_ = true;
};

using Status = Result<void>;

inline Status ok() { return Status(); }

}  // namespace rawdax

// Propagates an error from an expression that yields Status or Result<T>.
#define RAWDAX_RETURN_IF_ERROR(expr)                \
  do {                                              \
    auto rawdax_status_ = (expr);                   \
    if (!rawdax_status_) return rawdax_status_.error(); \
  } while (0)

#endif  // RAWDAX_RESULT_H_
