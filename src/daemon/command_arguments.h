// Command arguments read from a declared schema. Each control command
// declares its arguments (name, type, required or default, range) in the
// Dispatcher's command table; parse_arguments() checks a request against
// that schema before the command runs, and the command reads typed values.
// The error texts and their order are the protocol's (docs/control.md) and
// tests pin them.
//
// Thread safety: plain values; an Arguments is read by the one thread that
// runs its command.
#ifndef RAWDAX_DAEMON_COMMAND_ARGUMENTS_H_
#define RAWDAX_DAEMON_COMMAND_ARGUMENTS_H_

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "rawdax/result.h"

namespace rawdax::control {

// The declared arguments of a command. Each has a name, a type, and either
// is required or has a default; sizes, flags and counts are JSON values of
// their type, seconds any JSON number. A request's "arguments" are checked
// against the command's schema by parse_arguments() before the command runs,
// and every failure is a GenericError naming the command and the argument.
struct ArgSpec {
  static constexpr double kMaxSeconds = 3600;
  enum class Type {
    kString,   // any string; "is empty" when non_empty and ""
    kSize,     // an unsigned integer (bytes, a token, ...)
    kFlag,     // true or false
    kSeconds,  // a number from 0 to kMaxSeconds
    kCount,    // an unsigned integer from 0 to max
    kChoice,   // one of `choices`
  };
  std::string_view name{};
  Type type = Type::kString;
  bool required = true;
  std::string_view default_text{};          // kString, kChoice
  uint64_t default_number = 0;              // kSize, kCount
  bool default_flag = false;                // kFlag
  double default_seconds = 0;               // kSeconds
  uint64_t max = 0;                         // kCount
  std::vector<std::string_view> choices{};  // kChoice
  bool non_empty = false;                   // kString
};


// The schema's vocabulary, one function per argument type, for command tables.
namespace args {

inline ArgSpec text(std::string_view name) { return {.name = name, .type = ArgSpec::Type::kString}; }
inline ArgSpec text(std::string_view name, std::string_view fallback) {
  return {.name = name,
          .type = ArgSpec::Type::kString,
          .required = false,
          .default_text = fallback};
}
// A path the command writes or reads: required, and not "".
inline ArgSpec path(std::string_view name) {
  return {.name = name, .type = ArgSpec::Type::kString, .non_empty = true};
}
inline ArgSpec size(std::string_view name) { return {.name = name, .type = ArgSpec::Type::kSize}; }
inline ArgSpec flag(std::string_view name, bool fallback) {
  return {.name = name, .type = ArgSpec::Type::kFlag, .required = false, .default_flag = fallback};
}
inline ArgSpec seconds(std::string_view name, double fallback) {
  return {.name = name,
          .type = ArgSpec::Type::kSeconds,
          .required = false,
          .default_seconds = fallback};
}
inline ArgSpec count(std::string_view name, uint64_t fallback, uint64_t max) {
  return {.name = name,
          .type = ArgSpec::Type::kCount,
          .required = false,
          .default_number = fallback,
          .max = max};
}
inline ArgSpec choice(std::string_view name, std::vector<std::string_view> choices,
               std::string_view fallback) {
  return {.name = name,
          .type = ArgSpec::Type::kChoice,
          .required = false,
          .default_text = fallback,
          .choices = std::move(choices)};
}

}  // namespace args

// A request's arguments once checked: every argument of the schema, given or
// defaulted, as its declared type. Reading one the schema does not declare,
// or as another type, is a bug in the command table and aborts.
class Arguments {
 public:
  using Value = std::variant<std::string, uint64_t, bool, double>;

  const std::string& text(std::string_view name) const { return get<std::string>(name); }
  uint64_t number(std::string_view name) const { return get<uint64_t>(name); }
  bool flag(std::string_view name) const { return get<bool>(name); }
  double seconds(std::string_view name) const { return get<double>(name); }

 private:
  friend Result<Arguments> parse_arguments(std::string_view command,
                                           const std::vector<ArgSpec>& schema,
                                           const nlohmann::json& given);
  template <typename T>
  const T& get(std::string_view name) const {
    auto it = values_.find(name);
    const T* value = it == values_.end() ? nullptr : std::get_if<T>(&it->second);
    if (value == nullptr) {
      std::fprintf(stderr, "rawdax: a command reads argument '%.*s' its schema does not give\n",
                   static_cast<int>(name.size()), name.data());
      std::abort();
    }
    return *value;
  }
  std::map<std::string_view, Value, std::less<>> values_;
};

// Checks `given` against `schema`, in this order (clients and tests see which
// error comes first): an argument the schema lacks (the first by name); then
// each declared argument in the schema's order (missing, wrong type, out of
// range); then emptiness, once every argument is well typed.
// Every failure is a GenericError-class error (EINVAL) naming the command and
// the argument.
Result<Arguments> parse_arguments(std::string_view command, const std::vector<ArgSpec>& schema,
                                  const nlohmann::json& given);

}  // namespace rawdax::control

#endif  // RAWDAX_DAEMON_COMMAND_ARGUMENTS_H_
