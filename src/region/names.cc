#include "region/names.h"

#include <string>

#include "common/units.h"

namespace rawdax::internal {

Status validate_namespace_name(std::string_view name) {
  auto bad = [&](const std::string& why) {
    return Error(std::errc::invalid_argument, "invalid namespace name '" + std::string(name) +
                                                  "': " + why);
  };
  if (name.empty()) return bad("empty (use 1-63 characters of A-Z a-z 0-9 . _ -)");
  if (name.size() > kMaxNamespaceName) {
    return bad(std::to_string(name.size()) + " characters, the limit is 63");
  }
  if (name == "." || name == "..") return bad("reserved");
  for (char c : name) {
    bool okay = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '.' || c == '_' || c == '-';
    if (!okay) return bad("only A-Z a-z 0-9 . _ - are allowed");
  }
  return ok();
}

Result<uint64_t> validate_namespace_size(std::string_view name, uint64_t size,
                                         uint64_t alignment) {
  if (size == 0) {
    return Error(std::errc::invalid_argument,
                 "namespace " + std::string(name) + ": size must be greater than 0");
  }
  auto rounded = round_up(size, alignment);
  if (!rounded) {
    return Error(std::errc::value_too_large, "namespace " + std::string(name) + ": size " +
                                                 std::to_string(size) + " is too large");
  }
  return *rounded;
}

Status check_aligned(std::string_view what, uint64_t value, const Capabilities& caps) {
  if (value % caps.alignment == 0) return ok();
  return Error(std::errc::invalid_argument,
               std::string(what) + " " + std::to_string(value) + " is not a multiple of the " +
                   caps.filesystem + " alignment " + std::to_string(caps.alignment) + " (" +
                   format_size(caps.alignment) + ")");
}

}  // namespace rawdax::internal
