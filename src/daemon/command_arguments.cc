#include "daemon/command_arguments.h"

#include <algorithm>
#include <cmath>

namespace rawdax::control {

using json = nlohmann::json;

Result<Arguments> parse_arguments(std::string_view command, const std::vector<ArgSpec>& schema,
                                  const json& given) {
  auto fail = [&](std::string_view key, const std::string& what) {
    return Error(std::errc::invalid_argument, std::string(command) + ": argument '" + std::string(key) + "' " + what);
  };
  for (const auto& item : given.items()) {
    const std::string& key = item.key();
    bool known = std::any_of(schema.begin(), schema.end(),
                             [&](const ArgSpec& spec) { return spec.name == key; });
    if (!known) return fail(key, "is not an argument of this command");
  }
  Arguments out;
  for (const ArgSpec& spec : schema) {
    auto it = given.find(std::string(spec.name));
    using Type = ArgSpec::Type;
    if (it == given.end()) {
      if (spec.required) return fail(spec.name, "is missing");
      switch (spec.type) {
        case Type::kString:
        case Type::kChoice: out.values_.emplace(spec.name, std::string(spec.default_text)); break;
        case Type::kSize:
        case Type::kCount: out.values_.emplace(spec.name, spec.default_number); break;
        case Type::kFlag: out.values_.emplace(spec.name, spec.default_flag); break;
        case Type::kSeconds: out.values_.emplace(spec.name, spec.default_seconds); break;
      }
      continue;
    }
    const json& v = *it;
    switch (spec.type) {
      case Type::kString:
        if (!v.is_string()) return fail(spec.name, "must be a string");
        out.values_.emplace(spec.name, v.get<std::string>());
        break;
      case Type::kChoice: {
        if (!v.is_string()) return fail(spec.name, "must be a string");
        std::string s = v.get<std::string>();
        if (std::find(spec.choices.begin(), spec.choices.end(), s) == spec.choices.end()) {
          std::string alternatives;
          for (size_t i = 0; i < spec.choices.size(); ++i) {
            if (i > 0) alternatives += i + 1 == spec.choices.size() ? " or " : ", ";
            alternatives += "\"" + std::string(spec.choices[i]) + "\"";
          }
          return fail(spec.name, "must be " + alternatives);
        }
        out.values_.emplace(spec.name, std::move(s));
        break;
      }
      case Type::kSize:
        if (!v.is_number_unsigned()) return fail(spec.name, "must be a non-negative integer");
        out.values_.emplace(spec.name, v.get<uint64_t>());
        break;
      case Type::kCount:
        if (!v.is_number_unsigned() || v.get<uint64_t>() > spec.max) {
          return fail(spec.name, "must be an integer from 0 to " + std::to_string(spec.max));
        }
        out.values_.emplace(spec.name, v.get<uint64_t>());
        break;
      case Type::kFlag:
        if (!v.is_boolean()) return fail(spec.name, "must be true or false");
        out.values_.emplace(spec.name, v.get<bool>());
        break;
      case Type::kSeconds: {
        if (!v.is_number()) return fail(spec.name, "must be a number of seconds");
        double s = v.get<double>();
        if (!std::isfinite(s) || s < 0 || s > ArgSpec::kMaxSeconds) {
          return fail(spec.name, "must be between 0 and " +
                                     std::to_string(static_cast<int>(ArgSpec::kMaxSeconds)));
        }
        out.values_.emplace(spec.name, s);
        break;
      }
    }
  }
  for (const ArgSpec& spec : schema) {
    if (spec.non_empty && out.text(spec.name).empty()) return fail(spec.name, "is empty");
  }
  return out;
}


}  // namespace rawdax::control
