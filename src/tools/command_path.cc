#include "tools/command_path.h"

#include <sys/stat.h>
#include <unistd.h>

#include "client/protocol.h"
#include "tools/daemon_record.h"

namespace rawdax::cli {

using json = nlohmann::json;

std::string default_control_path(const std::string& region_spec) {
  if (region_spec.rfind("memfd:", 0) == 0 || region_spec.rfind("devdax", 0) == 0) return "";
  if (region_spec.rfind("file:", 0) == 0) return region_spec.substr(5) + ".control.sock";
  return region_spec + "/control.sock";
}

CommandPath::~CommandPath() {
  if (dispatcher_ && session_) dispatcher_->end_session(*session_);
}

namespace {

bool is_socket(const std::string& path) {
  struct stat st;
  return !path.empty() && ::stat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

}  // namespace

Result<std::unique_ptr<CommandPath>> CommandPath::daemon(const GlobalOptions& options) {
  std::unique_ptr<Client> client;
  if (!options.control.empty()) {
    auto connected = Client::connect(options.control);
    if (!connected) {
      return Error(std::errc::not_connected, "no rawdax serve answers on control socket " +
                                                 options.control + ": " +
                                                 connected.error().message());
    }
    client = std::move(*connected);
  } else {
    // A stale record or socket file (a daemon that died) is no daemon.
    for (const std::string& path :
         {DaemonRecord::find(options.region), default_control_path(options.region)}) {
      if (!is_socket(path)) continue;
      if (auto connected = Client::connect(path)) {
        client = std::move(*connected);
        break;
      }
    }
  }
  if (!client) {
    return Error(std::errc::not_connected, "no rawdax serve runs on region " + options.region);
  }
  std::unique_ptr<CommandPath> path(new CommandPath());
  path->ours_ = options.region;
  path->theirs_ = options.region;
  path->client_ = std::move(client);
  auto region = path->execute("query-region", json::object());
  if (!region) return region.error();
  if (auto spelled = region->find("region"); spelled != region->end() && spelled->is_string()) {
    path->theirs_ = spelled->get<std::string>();
  }
  return path;
}

Result<std::unique_ptr<CommandPath>> CommandPath::open(const GlobalOptions& options,
                                                       PathOptions path_options) {
  auto through = daemon(options);
  if (through || !options.control.empty()) return through;
  std::unique_ptr<CommandPath> path(new CommandPath());
  auto region = path_options.region_free
                    ? Region::open("memfd:", {.create = true})
                    : Region::open(options.region,
                                   {.create = true, .require_dax = options.require_dax});
  if (!region) return region.error();
  path->region_ = std::move(*region);
  path->ours_ = options.region;
  path->theirs_ = path->region_->spec();
  path->dispatcher_ = std::make_unique<control::Dispatcher>(
      *path->region_, control::DispatcherOptions{.log = nullptr,
                                                 .open_every_namespace = false,
                                                 .progress = std::move(path_options.progress)});
  // This process is the one client: nothing is ever sent to it but replies.
  path->session_ = std::make_unique<control::Session>();
  path->session_->peer = std::make_shared<control::Peer>(0, internal::UniqueFd(), ::getpid(), ::getuid());
  return path;
}

Result<json> CommandPath::execute(const std::string& command, const json& arguments) {
  if (client_) {
    // The Client has read the reply line into its "return" value already,
    // by the same parser as below.
    auto reply = client_->execute(command, arguments.dump());
    if (!reply) return Error(reply.error().code(), rebase(reply.error().message()));
    json ret = json::parse(*reply, nullptr, false);
    if (ret.is_discarded()) {
      return Error(std::errc::protocol_error, command + ": malformed reply from the daemon");
    }
    return ret;
  }
  json request = {{"execute", command}, {"arguments", arguments}};
  control::Dispatcher::Reply reply = dispatcher_->handle(*session_, request.dump());
  json message = json::parse(reply.line, nullptr, false);
  auto ret = control::reply_result(message);
  if (!ret) return Error(ret.error().code(), rebase(ret.error().message()));
  return ret;
}

std::string CommandPath::rebase(std::string text) const {
  if (theirs_.empty() || theirs_ == ours_) return text;
  size_t pos = 0;
  while ((pos = text.find(theirs_, pos)) != std::string::npos) {
    size_t end = pos + theirs_.size();
    bool starts = pos == 0 || text[pos - 1] == ' ' || text[pos - 1] == '=' || text[pos - 1] == ',';
    bool ends = end == text.size() || text[end] == '/' || text[end] == ' ' || text[end] == ':' ||
                text[end] == ',';
    if (starts && ends) {
      text.replace(pos, theirs_.size(), ours_);
      pos += ours_.size();
    } else {
      pos = end;
    }
  }
  return text;
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
  return Error(std::errc::protocol_error, std::string("malformed ") + what + " in a reply");
}

}  // namespace

Result<NamespaceInfo> CommandPath::namespace_info(const json& reply) const {
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
  if (auto restore = reply.find("restore"); restore != reply.end()) {
    RestoreState r;
    std::string state;
    if (!restore->is_object() || !take(*restore, "state", state) ||
        !take(*restore, "snapshot", r.snapshot) || !take(*restore, "checksum", r.checksum) ||
        !take(*restore, "pages_filled", r.pages_filled) ||
        !take(*restore, "pages_total", r.pages_total) || !take(*restore, "error", r.error)) {
      return bad_reply("namespace");
    }
    r.filling = state == "filling";
    ns.restore = std::move(r);
  }
  ns.path = rebase(ns.path);
  return ns;
}

Result<SnapshotInfo> CommandPath::snapshot_info(const json& reply) const {
  SnapshotInfo s;
  if (!reply.is_object() || !take(reply, "path", s.path) || !take(reply, "id", s.id) ||
      !take(reply, "base_id", s.base_id) || !take(reply, "base_path", s.base_path) ||
      !take(reply, "source_uuid", s.source_uuid) ||
      !take(reply, "namespace_size", s.namespace_size) ||
      !take(reply, "page_size", s.page_size) || !take(reply, "pages", s.pages) ||
      !take(reply, "bytes_written", s.bytes_written)) {
    return bad_reply("snapshot");
  }
  // Only a snapshot just taken has them (json_forms.h).
  if (reply.contains("duration_ns") && (!take(reply, "duration_ns", s.duration_ns) ||
                                        !take(reply, "max_writer_stall_ns", s.max_writer_stall_ns))) {
    return bad_reply("snapshot");
  }
  if (reply.contains("vm_snapshot") && (!take(reply, "vm_snapshot", s.vm_snapshot) ||
                                        !take(reply, "vm_pause_ns", s.vm_pause_ns))) {
    return bad_reply("snapshot");
  }
  return s;
}

}  // namespace rawdax::cli
