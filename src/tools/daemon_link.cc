#include "tools/daemon_link.h"

#include <sys/stat.h>

namespace rawdax::cli {

using json = nlohmann::json;

std::string default_control_path(const std::string& region_spec) {
  if (region_spec.rfind("memfd:", 0) == 0 || region_spec.rfind("devdax", 0) == 0) return "";
  if (region_spec.rfind("file:", 0) == 0) return region_spec.substr(5) + ".control.sock";
  return region_spec + "/control.sock";
}

std::unique_ptr<DaemonLink> DaemonLink::connect(const std::string& region_spec) {
  std::string path = default_control_path(region_spec);
  struct stat st;
  if (path.empty() || ::stat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) return nullptr;
  auto client = Client::connect(path);
  if (!client) return nullptr;
  auto region = (*client)->execute("query-region");
  if (!region) return nullptr;
  json parsed = json::parse(*region, nullptr, false);
  std::string theirs = region_spec;
  if (parsed.is_object() && parsed.contains("region") && parsed["region"].is_string()) {
    theirs = parsed["region"].get<std::string>();
  }
  return std::unique_ptr<DaemonLink>(new DaemonLink(std::move(*client), region_spec, theirs));
}

std::string DaemonLink::rebase(std::string text) const {
  if (theirs_.empty() || theirs_ == ours_) return text;
  // Only whole path spellings: at the start or after a space, and followed
  // by '/', a space, ':' or the end.
  size_t pos = 0;
  while ((pos = text.find(theirs_, pos)) != std::string::npos) {
    size_t end = pos + theirs_.size();
    bool starts = pos == 0 || text[pos - 1] == ' ';
    bool ends = end == text.size() || text[end] == '/' || text[end] == ' ' || text[end] == ':';
    if (starts && ends) {
      text.replace(pos, theirs_.size(), ours_);
      pos += ours_.size();
    } else {
      pos = end;
    }
  }
  return text;
}

Result<json> DaemonLink::execute(const std::string& command, const json& arguments) {
  auto reply = client_->execute(command, arguments.dump());
  if (!reply) return Error(reply.error().code(), rebase(reply.error().message()));
  json parsed = json::parse(*reply, nullptr, false);
  if (parsed.is_discarded()) {
    return Error(std::errc::protocol_error, command + ": malformed reply from the daemon");
  }
  return parsed;
}

namespace {

template <typename T>
bool take(const json& j, const char* key, T& out) {
  auto it = j.find(key);
  if (it == j.end()) return false;
  if constexpr (std::is_same_v<T, std::string>) {
    if (!it->is_string()) return false;
  } else {
    if (!it->is_number_unsigned()) return false;
  }
  out = it->get<T>();
  return true;
}

Error bad_reply(const char* what) {
  return Error(std::errc::protocol_error, std::string("malformed ") + what + " from the daemon");
}

}  // namespace

Result<NamespaceInfo> DaemonLink::namespace_info(const json& reply) const {
  NamespaceInfo ns;
  if (!reply.is_object() || !take(reply, "name", ns.name) || !take(reply, "uuid", ns.uuid) ||
      !take(reply, "size", ns.size) || !take(reply, "mode", ns.mode) ||
      !take(reply, "path", ns.path) || !take(reply, "offset", ns.offset)) {
    return bad_reply("namespace");
  }
  // Optional: a daemon from before bad-block lists sends none.
  if (auto bad = reply.find("badblocks"); bad != reply.end()) {
    if (!bad->is_array()) return bad_reply("namespace");
    for (const json& r : *bad) {
      BadRange range;
      if (!r.is_object() || !take(r, "offset", range.offset) || !take(r, "length", range.length)) {
        return bad_reply("namespace");
      }
      ns.badblocks.push_back(range);
    }
  }
  ns.path = rebase(ns.path);
  return ns;
}

Result<SnapshotInfo> DaemonLink::snapshot_info(const json& reply) const {
  SnapshotInfo s;
  if (!reply.is_object() || !take(reply, "path", s.path) || !take(reply, "id", s.id) ||
      !take(reply, "base_id", s.base_id) || !take(reply, "base_path", s.base_path) ||
      !take(reply, "source_uuid", s.source_uuid) ||
      !take(reply, "namespace_size", s.namespace_size) ||
      !take(reply, "page_size", s.page_size) || !take(reply, "pages", s.pages) ||
      !take(reply, "bytes_written", s.bytes_written) ||
      !take(reply, "duration_ns", s.duration_ns) ||
      !take(reply, "max_writer_stall_ns", s.max_writer_stall_ns)) {
    return bad_reply("snapshot");
  }
  return s;
}

}  // namespace rawdax::cli
