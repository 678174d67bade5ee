// Random (version 4) UUIDs as lowercase text. Thread-safe.
#ifndef RAWDAX_COMMON_UUID_H_
#define RAWDAX_COMMON_UUID_H_

#include <string>

namespace rawdax::internal {

std::string new_uuid();
bool is_uuid(const std::string& text);

}  // namespace rawdax::internal

#endif  // RAWDAX_COMMON_UUID_H_
