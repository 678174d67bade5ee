#include "common/units.h"

#include <cctype>
#include <cstdio>
#include <limits>

namespace rawdax::internal {

Result<uint64_t> parse_size(std::string_view text) {
  auto invalid = [&](const char* why) {
    return Error(std::errc::invalid_argument,
                 "invalid size '" + std::string(text) + "': " + why);
  };
  if (text.empty()) return invalid("empty");
  size_t pos = 0;
  uint64_t value = 0;
  while (pos < text.size() && std::isdigit(static_cast<unsigned char>(text[pos]))) {
    uint64_t digit = static_cast<uint64_t>(text[pos] - '0');
    if (value > (std::numeric_limits<uint64_t>::max() - digit) / 10) {
      return invalid("too large");
    }
    value = value * 10 + digit;
    ++pos;
  }
  if (pos == 0) return invalid("expected a decimal number with an optional K, M, G or T suffix");
  std::string suffix;
  for (char c : text.substr(pos)) suffix += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  unsigned shift = 0;
  if (suffix.empty() || suffix == "B") {
    shift = 0;
  } else {
    switch (suffix[0]) {
      case 'K': shift = 10; break;
      case 'M': shift = 20; break;
      case 'G': shift = 30; break;
      case 'T': shift = 40; break;
      default: return invalid("unknown suffix (use K, M, G or T)");
    }
    std::string rest = suffix.substr(1);
    if (!rest.empty() && rest != "B" && rest != "IB") return invalid("unknown suffix (use K, M, G or T)");
  }
  if (shift > 0 && value > (std::numeric_limits<uint64_t>::max() >> shift)) {
    return invalid("too large");
  }
  return value << shift;
}

std::string format_size(uint64_t bytes) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(bytes);
  int unit = 0;
  while (v >= 1024.0 && unit < 6) {
    v /= 1024.0;
    ++unit;
  }
  char buf[48];
  if (unit == 0) {
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  } else {
    std::snprintf(buf, sizeof buf, "%.2f %s", v, kUnits[unit]);
  }
  return buf;
}

std::optional<uint64_t> round_up(uint64_t value, uint64_t align) {
  uint64_t mask = align - 1;
  if (value > std::numeric_limits<uint64_t>::max() - mask) return std::nullopt;
  return (value + mask) & ~mask;
}

}  // namespace rawdax::internal
