// Validation of namespace names and sizes. Pure functions; thread-safe.
#ifndef RAWDAX_REGION_NAMES_H_
#define RAWDAX_REGION_NAMES_H_

#include <cstdint>
#include <string_view>

#include "rawdax/result.h"

namespace rawdax {

inline constexpr size_t kMaxNamespaceName = 63;

// 1-63 characters of [A-Za-z0-9._-], not "." or "..". The error says which
// rule the name breaks.
Status validate_namespace_name(std::string_view name);

// Checks size > 0 and rounds it up to `alignment` (a power of two). The error
// names the namespace and the size asked for.
Result<uint64_t> validate_namespace_size(std::string_view name, uint64_t size,
                                         uint64_t alignment);

}  // namespace rawdax

#endif  // RAWDAX_REGION_NAMES_H_
