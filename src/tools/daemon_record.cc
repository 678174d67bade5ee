#include "tools/daemon_record.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

namespace rawdax::cli {
namespace {

// The file or directory that is the region: "" for memfd:.
std::string region_object(const std::string& spec) {
  if (spec.rfind("memfd:", 0) == 0) return "";
  if (spec.rfind("file:", 0) == 0) return spec.substr(5);
  if (spec.rfind("devdax:", 0) == 0) return spec.substr(7);
  return spec;
}

// A directory of this user's own, mode 0700 (made if missing and `create`).
bool private_directory(const std::string& dir, bool create) {
  if (create && ::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return false;
  struct stat st;
  return ::lstat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == ::geteuid() &&
         (st.st_mode & 0777) == 0700;
}

Result<std::string> runtime_directory(bool create) {
  std::vector<std::string> candidates;
  if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg != nullptr && *xdg == '/') {
    candidates.push_back(std::string(xdg) + "/rawdax");
  }
  if (::geteuid() == 0) candidates.push_back("/run/rawdax");
  candidates.push_back("/tmp/rawdax-" + std::to_string(::geteuid()));
  for (const std::string& dir : candidates) {
    if (private_directory(dir, create)) return dir;
  }
  return Error(std::errc::permission_denied,
               "no private runtime directory for the daemon record (tried " +
                   candidates.back() + ")");
}

// <runtime>/region-DEV-INO for the region's object.
Result<std::string> record_path(const std::string& region_spec, bool create) {
  std::string object = region_object(region_spec);
  if (object.empty()) {
    return Error(std::errc::invalid_argument, "a memfd: region has no daemon record");
  }
  struct stat st;
  if (::stat(object.c_str(), &st) != 0) return errno_error(errno, "stat " + object);
  auto dir = runtime_directory(create);
  if (!dir) return dir.error();
  std::ostringstream name;
  name << *dir << "/region-" << std::hex << st.st_dev << "-" << st.st_ino;
  return name.str();
}

std::string read_record(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

}  // namespace

Result<DaemonRecord> DaemonRecord::write(const std::string& region_spec,
                                         const std::string& control_path) {
  auto path = record_path(region_spec, /*create=*/true);
  if (!path) return path.error();
  std::error_code ec;
  std::string socket = std::filesystem::absolute(control_path, ec).string();
  // Written aside and renamed, so a reader sees a whole record or none.
  std::string temporary = *path + ".tmp" + std::to_string(::getpid());
  {
    std::ofstream out(temporary, std::ios::trunc);
    out << socket << "\n";
    if (!out.flush()) return errno_error(errno, "cannot write " + temporary);
  }
  if (::rename(temporary.c_str(), path->c_str()) != 0) {
    int err = errno;
    ::unlink(temporary.c_str());
    return errno_error(err, "cannot write " + *path);
  }
  return DaemonRecord(*path);
}

std::string DaemonRecord::find(const std::string& region_spec) {
  auto path = record_path(region_spec, /*create=*/false);
  return path ? read_record(*path) : "";
}

DaemonRecord::~DaemonRecord() {
  if (!path_.empty()) ::unlink(path_.c_str());
}

}  // namespace rawdax::cli
