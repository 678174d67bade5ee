// Parsing and printing of byte sizes ("256M", "1G", "4096") and alignment
// arithmetic that cannot overflow silently. Pure functions; thread-safe.
#ifndef RAWDAX_COMMON_UNITS_H_
#define RAWDAX_COMMON_UNITS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "rawdax/result.h"

namespace rawdax::internal {

// Parses a decimal size with an optional K/M/G/T suffix (binary units,
// case-insensitive, optional trailing "iB"/"B"). Rejects signs, fractions,
// unknown suffixes and values that overflow 64 bits. Zero parses as zero;
// callers decide whether zero is valid.
Result<uint64_t> parse_size(std::string_view text);

// "256.00 MiB" style, for --human output.
std::string format_size(uint64_t bytes);

// Rounds value up to a multiple of align (a power of two); nullopt on overflow.
std::optional<uint64_t> round_up(uint64_t value, uint64_t align);

// True when [offset, offset+length) lies inside [0, size) without overflow.
inline bool range_fits(uint64_t offset, uint64_t length, uint64_t size) {
  return offset <= size && length <= size - offset;
}

}  // namespace rawdax::internal

#endif  // RAWDAX_COMMON_UNITS_H_
