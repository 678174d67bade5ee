// Validation of namespace names and sizes. Pure functions; thread-safe.
#ifndef RAWDAX_REGION_NAMES_H_
#define RAWDAX_REGION_NAMES_H_

#include <cstdint>
#include <string_view>

#include "rawdax/capabilities.h"
#include "rawdax/result.h"

namespace rawdax::internal {

inline constexpr size_t kMaxNamespaceName = 63;

// 1-63 characters of [A-Za-z0-9._-], not "." or "..". The error says which
// rule the name breaks.
Status validate_namespace_name(std::string_view name);

// Checks size > 0 and rounds it up to `alignment` (a power of two). The error
// names the namespace and the size asked for.
Result<uint64_t> validate_namespace_size(std::string_view name, uint64_t size,
                                         uint64_t alignment);

// EINVAL when `value`, an offset or length the caller must not round, is not
// a multiple of the media's alignment: "<what> <value> is not a multiple of
// the <media> alignment <A>". Callers prefix the namespace.
Status check_aligned(std::string_view what, uint64_t value, const Capabilities& caps);

}  // namespace rawdax::internal

#endif  // RAWDAX_REGION_NAMES_H_
