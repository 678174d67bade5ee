// Fuzz target: the control socket's request handling. The input is what a
// client sends: request lines, framed by the server's LineReader from a
// socketpair and executed by the Dispatcher, exactly as a control connection
// does, against a region on tmpfs holding "default" (64 KiB) and "small"
// (16 KiB). Every line must get one reply and nothing may crash or hang.
//
// Each reply is checked (check_reply): one line of valid JSON, an object
// with exactly one of "return" and "error" (whose "class" is one of the four
// of docs/control.md); it carries the request's "id" exactly when the request
// line was a JSON object with a non-null "id", and that id is equal to it;
// and a well-formed request naming an unknown command gets CommandNotFound,
// which no known command ever gets.
//
// The harness keeps the fuzzer inside its scratch directory and bounded:
//  * path arguments ("file", "base", "qmp") are taken as relative to a
//    private files directory (an absolute "/a.snap" means FILES/a.snap); a
//    line whose path leaves that directory ("..") is not sent;
//  * a "size" between 16 MiB and 1 PiB is not sent: such a namespace is
//    sparse and legal, but snapshotting it only measures copy speed. Sizes
//    from 1 PiB up still go through, so the refusal of impossible sizes and
//    rounding overflows stay covered.
// After each input the session ends (its opens are released and freezes
// thawed, as on a disconnect) and the region is put back as it was: extra
// namespaces destroyed, the two originals recreated at their sizes, written
// files removed. A fresh Dispatcher per input keeps runs independent.
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/dispatcher.h"
#include "daemon/peer.h"
#include "client/protocol.h"
#include "rawdax/region.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr uint64_t kMaxSentSize = uint64_t{16} << 20;
constexpr uint64_t kHugeSize = uint64_t{1} << 50;
// Longer inputs are cut: the whole input is written before it is read, so it
// must fit in the socket's buffer.
constexpr size_t kMaxInput = 64 << 10;

struct Original {
  const char* name;
  uint64_t size;
};
// Small: a snapshot reads every page, and most inputs take one.
constexpr Original kOriginals[] = {{"default", uint64_t{64} << 10}, {"small", uint64_t{16} << 10}};

struct Scratch {
  fs::path root, region_dir, files;
  std::unique_ptr<rawdax::Region> region;
  // A Device of each original namespace, held so that each input's
  // Dispatcher attaches to the open namespace instead of mapping it anew.
  std::vector<std::unique_ptr<rawdax::Device>> held;
  uint64_t clean_generation = 0;
};

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "fuzz: %s\n", what.c_str());
  std::abort();
}

// Puts the region back to its two original namespaces (their contents
// cannot change: no control command writes data).
void reset_region(Scratch& s) {
  if (s.region->generation() == s.clean_generation) return;
  s.held.clear();
  for (const auto& ns : s.region->list()) {
    bool original = false;
    for (const Original& o : kOriginals) original |= ns.name == o.name && ns.size == o.size;
    if (!original) {
      rawdax::Status st = s.region->destroy_namespace(ns.name, {.force = true});
      if (!st) die("reset: destroy " + ns.name + ": " + st.error().message());
    }
  }
  for (const Original& o : kOriginals) {
    if (!s.region->find(o.name)) {
      auto ns = s.region->create_namespace({.name = o.name, .size = o.size});
      if (!ns) die(std::string("reset: create ") + o.name + ": " + ns.error().message());
    }
    auto dev = s.region->open_device(o.name);
    if (!dev) die(std::string("reset: open ") + o.name + ": " + dev.error().message());
    s.held.push_back(std::move(*dev));
  }
  s.clean_generation = s.region->generation();
}

Scratch& scratch() {
  static Scratch s = [] {
    Scratch t;
    fs::path parent = fs::exists("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
    t.root = parent / ("rawdax-fuzz-control-" + std::to_string(::getpid()));
    t.region_dir = t.root / "region";
    t.files = t.root / "files";
    fs::remove_all(t.root);
    fs::create_directories(t.files);
    auto r = rawdax::Region::open(t.region_dir.string(), {.create = true});
    if (!r) die("region: " + r.error().message());
    t.region = std::move(*r);
    return t;
  }();
  static bool cleanup_registered = [] {
    std::atexit([] { fs::remove_all(s.root); });
    return true;
  }();
  (void)cleanup_registered;
  return s;
}

// Maps a path argument into the files directory; false when it escapes.
bool confine(json& value, const fs::path& files) {
  if (!value.is_string()) return true;
  std::string path = value.get<std::string>();
  if (path.empty()) return true;  // "no base" / refused as an empty file name
  fs::path mapped = (files / fs::path(path).relative_path()).lexically_normal();
  auto rel = mapped.lexically_relative(files);
  if (rel.empty() || *rel.begin() == "..") return false;
  value = mapped.string();
  return true;
}

// The line to send for `line`, or nullopt when the harness withholds it.
std::optional<std::string> bound(std::string_view line, const fs::path& files) {
  json request = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (request.is_discarded() || !request.is_object()) return std::string(line);
  auto args = request.find("arguments");
  if (args == request.end() || !args->is_object()) return std::string(line);
  bool changed = false;
  for (const char* key : {"file", "base", "qmp"}) {
    auto it = args->find(key);
    if (it == args->end()) continue;
    if (!confine(*it, files)) return std::nullopt;
    changed = true;
  }
  if (auto it = args->find("size"); it != args->end() && it->is_number_unsigned()) {
    uint64_t size = it->get<uint64_t>();
    if (size > kMaxSentSize && size < kHugeSize) return std::nullopt;
  }
  if (!changed) return std::string(line);
  return request.dump(-1, ' ', false, json::error_handler_t::replace);
}

// The commands of docs/control.md; any other name is unknown.
constexpr std::string_view kCommands[] = {
    "query-namespaces", "query-region",      "create-namespace", "destroy-namespace",
    "resize-namespace", "open-namespace",    "release-namespace", "freeze",
    "freeze-ack",       "thaw",              "snapshot",          "query-stats",
    "attach-vm",        "detach-vm",         "restore-namespace", "verify-snapshot",
    "vm-args",          "export-snapshot",   "unexport",          "query-exports"};

// A request the dispatcher reaches the command table with: an object whose
// "execute" is a string, with no members but execute/arguments/id, and
// "arguments" (if any) an object.
bool well_formed(const json& request) {
  if (!request.is_object()) return false;
  auto execute = request.find("execute");
  if (execute == request.end() || !execute->is_string()) return false;
  for (const auto& [key, value] : request.items()) {
    if (key != "execute" && key != "arguments" && key != "id") return false;
  }
  auto args = request.find("arguments");
  return args == request.end() || args->is_object();
}

void check_reply(std::string_view request_line, const std::string& reply_line) {
  auto bad = [&](const std::string& why) {
    die("reply " + reply_line + " to " + std::string(request_line) + ": " + why);
  };
  if (reply_line.find('\n') != std::string::npos) bad("more than one line");
  json reply = json::parse(reply_line, nullptr, /*allow_exceptions=*/false);
  if (reply.is_discarded() || !reply.is_object()) bad("not a JSON object");
  const bool returned = reply.contains("return"), failed = reply.contains("error");
  if (returned == failed) bad("needs exactly one of return and error");
  std::string error_class;
  if (failed) {
    const json& error = reply["error"];
    if (!error.is_object() || !error.contains("class") || !error["class"].is_string() ||
        !error.contains("desc") || !error["desc"].is_string()) {
      bad("a malformed error");
    }
    error_class = error["class"].get<std::string>();
    if (error_class != rawdax::control::kCommandNotFound &&
        error_class != rawdax::control::kGenericError &&
        error_class != rawdax::control::kDeviceNotFound &&
        error_class != rawdax::control::kDeviceBusy) {
      bad("an unknown error class");
    }
  }
  json request = json::parse(request_line, nullptr, /*allow_exceptions=*/false);
  json id;  // null: the request had none (or not as an object)
  if (!request.is_discarded() && request.is_object() && request.contains("id")) {
    id = request["id"];
  }
  if (id.is_null() ? reply.contains("id") : (!reply.contains("id") || reply["id"] != id)) {
    bad("the id is not the request's");
  }
  if (!well_formed(request)) return;
  const std::string command = request["execute"].get<std::string>();
  const bool known = std::find(std::begin(kCommands), std::end(kCommands), command) !=
                     std::end(kCommands);
  if (!known && error_class != rawdax::control::kCommandNotFound) {
    bad("an unknown command without CommandNotFound");
  }
  if (known && error_class == rawdax::control::kCommandNotFound) {
    bad("CommandNotFound for a known command");
  }
}

void drain(int fd) {
  char sink[16 << 10];
  while (::recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Scratch& s = scratch();
  reset_region(s);
  size = std::min(size, kMaxInput);
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) die("socketpair");
  rawdax::internal::UniqueFd client(sv[1]);
  auto peer = std::make_shared<rawdax::control::Peer>(1, rawdax::internal::UniqueFd(sv[0]), ::getpid(),
                                                      ::getuid());
  if (size > 0 && ::send(client.get(), data, size, MSG_NOSIGNAL) != static_cast<ssize_t>(size)) {
    die("send");
  }
  ::shutdown(client.get(), SHUT_WR);
  {
    rawdax::control::Dispatcher dispatcher(*s.region, {});
    {
      rawdax::control::Session session{peer, {}};
      // What ControlServer::serve does with each line.
      rawdax::control::LineReader reader(rawdax::control::kMaxRequestLine);
      while (true) {
        auto line = reader.read_line(peer->socket());
        reader.fds().clear();
        if (!line) break;
        if (line->find_first_not_of(" \t\r") == std::string::npos) continue;
        auto sent = bound(*line, s.files);
        if (!sent) continue;
        rawdax::control::Dispatcher::Reply reply = dispatcher.handle(session, *sent);
        if (reply.line.empty()) std::abort();  // every request gets a reply
        check_reply(*sent, reply.line);
        (void)peer->send(reply.line, reply.fd.get());
        drain(client.get());
      }
      dispatcher.end_session(session);
    }  // thaws the session's freezes
  }
  reset_region(s);
  std::error_code ec;
  if (!fs::is_empty(s.files, ec)) {
    for (const auto& entry : fs::directory_iterator(s.files, ec)) fs::remove_all(entry.path(), ec);
  }
  return 0;
}
