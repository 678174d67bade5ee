// The C interface (rawdax/client_c.h) over the C++ Client.
#include "rawdax/client_c.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>

#include "rawdax/client.h"

struct rawdax_client {
  std::unique_ptr<rawdax::Client> client;
  std::string error;
};

namespace {

int fail(rawdax_client* c, const rawdax::Error& error) {
  c->error = error.message();
  int code = error.code().value();
  return code > 0 ? -code : -EIO;
}

char* copy_string(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out != nullptr) std::memcpy(out, s.c_str(), s.size() + 1);
  return out;
}

}  // namespace

extern "C" {

int rawdax_client_connect(const char* socket_path, rawdax_client** out) {
  if (out == nullptr) return -EINVAL;
  *out = nullptr;
  if (socket_path == nullptr) return -EINVAL;
  auto client = rawdax::Client::connect(socket_path);
  if (!client) {
    int code = client.error().code().value();
    return code > 0 ? -code : -EIO;
  }
  auto* c = new (std::nothrow) rawdax_client;
  if (c == nullptr) return -ENOMEM;
  c->client = std::move(*client);
  *out = c;
  return 0;
}

int rawdax_client_execute(rawdax_client* c, const char* command, const char* arguments_json,
                          char** reply_json) {
  if (c == nullptr || command == nullptr) return -EINVAL;
  if (reply_json != nullptr) *reply_json = nullptr;
  auto reply = c->client->execute(command, arguments_json != nullptr ? arguments_json : "{}");
  if (!reply) return fail(c, reply.error());
  c->error.clear();
  if (reply_json != nullptr) {
    *reply_json = copy_string(*reply);
    if (*reply_json == nullptr) return -ENOMEM;
  }
  return 0;
}

int rawdax_client_open_at(rawdax_client* c, const char* name, int writable, int exclusive,
                          int* fd, uint64_t* offset, uint64_t* size) {
  if (c == nullptr || name == nullptr || fd == nullptr) return -EINVAL;
  *fd = -1;
  auto ns = c->client->open_namespace(
      name, writable ? rawdax::Access::ReadWrite : rawdax::Access::ReadOnly, exclusive != 0);
  if (!ns) return fail(c, ns.error());
  if (offset == nullptr && ns->offset() != 0) {
    // A caller that cannot learn the offset would map the label area.
    rawdax::Status released = c->client->release_namespace(name);
    (void)released;
    return fail(c, rawdax::Error(std::errc::operation_not_supported,
                                 "namespace " + std::string(name) + " is the extent at offset " +
                                     std::to_string(ns->offset()) +
                                     " of its device: open it with rawdax_client_open_at()"));
  }
  c->error.clear();
  if (offset != nullptr) *offset = ns->offset();
  if (size != nullptr) *size = ns->size();
  *fd = ns->release_fd();
  return 0;
}

int rawdax_client_open(rawdax_client* c, const char* name, int writable, int exclusive, int* fd,
                       uint64_t* size) {
  return rawdax_client_open_at(c, name, writable, exclusive, fd, nullptr, size);
}

int rawdax_client_release(rawdax_client* c, const char* name) {
  if (c == nullptr || name == nullptr) return -EINVAL;
  rawdax::Status st = c->client->release_namespace(name);
  if (!st) return fail(c, st.error());
  c->error.clear();
  return 0;
}

int rawdax_client_set_freeze_handler(rawdax_client* c, rawdax_freeze_fn fn, void* ctx) {
  if (c == nullptr) return -EINVAL;
  if (fn == nullptr) {
    c->client->set_freeze_handler(nullptr);
  } else {
    c->client->set_freeze_handler(
        [fn, ctx](const std::string& name, bool frozen) { fn(ctx, name.c_str(), frozen ? 1 : 0); });
  }
  return 0;
}

const char* rawdax_client_error(const rawdax_client* c) {
  return c == nullptr ? "" : c->error.c_str();
}

void rawdax_client_close(rawdax_client* c) { delete c; }

void rawdax_free(void* p) { std::free(p); }

}  // extern "C"
