/* The C interface of the rawdax control client (see rawdax/client.h and
 * docs/control.md): connect to `rawdax serve`, run commands, receive
 * namespace fds.
 *
 * Errors: functions returning int give 0 on success or a negative errno
 * (-ENOENT for DeviceNotFound, -EBUSY for DeviceBusy, -ENOSYS for
 * CommandNotFound, -EINVAL for GenericError, the socket's errno otherwise);
 * rawdax_client_error() then returns the message, valid until the next call
 * on that client.
 *
 * Ownership: strings returned through `char**` are malloc'd; release them
 * with rawdax_free(). Fds returned are the caller's to close.
 *
 * Thread safety: a client may be shared between threads, but the error text
 * is per client, so read it from the thread that made the failing call. */
#ifndef RAWDAX_CLIENT_C_H_
#define RAWDAX_CLIENT_C_H_

#include <stdint.h>

#include "rawdax/export.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct rawdax_client rawdax_client;

/* Connects to the control socket at `socket_path`. On success *out is a
 * client to close with rawdax_client_close(); on failure *out is NULL. */
RAWDAX_EXPORT int rawdax_client_connect(const char* socket_path, rawdax_client** out);

/* Runs `command` with `arguments_json` (a JSON object, or NULL for none).
 * On success *reply_json (if not NULL) receives the "return" value as JSON. */
RAWDAX_EXPORT int rawdax_client_execute(rawdax_client* client, const char* command,
                                        const char* arguments_json, char** reply_json);

/* open-namespace: *fd receives the backing fd (read-only unless `writable`),
 * *size (if not NULL) the namespace's size. A namespace of a carved region
 * (devdax:, file:) is an extent of its fd, not at offset 0: this call then
 * fails with -ENOTSUP and opens nothing (a mapping at 0 would reach the
 * device's label area); use rawdax_client_open_at(). */
RAWDAX_EXPORT int rawdax_client_open(rawdax_client* client, const char* name, int writable,
                                     int exclusive, int* fd, uint64_t* size);

/* Like rawdax_client_open(), for every region: the namespace is
 * [*offset, *offset + *size) of *fd. Map it with
 * mmap(NULL, len, prot, MAP_SHARED, *fd, *offset + o), `o` a multiple of the
 * media's alignment (docs/control.md, "Fd passing"). */
RAWDAX_EXPORT int rawdax_client_open_at(rawdax_client* client, const char* name, int writable,
                                        int exclusive, int* fd, uint64_t* offset, uint64_t* size);

/* release-namespace. */
RAWDAX_EXPORT int rawdax_client_release(rawdax_client* client, const char* name);

/* Freezes (docs/control.md): while another connection freezes or snapshots
 * a namespace this client holds read-write, the daemon waits for this
 * client's ack, which the library sends from its own thread. The fd from
 * rawdax_client_open() is yours, so the library cannot write-protect what you
 * map from it: set a handler and stop your stores in it. It is called on the
 * library's thread with frozen=1 before the ack (stores must have stopped
 * when it returns) and frozen=0 at the thaw. It must not call into the
 * client. NULL removes it. */
typedef void (*rawdax_freeze_fn)(void* ctx, const char* name, int frozen);
RAWDAX_EXPORT int rawdax_client_set_freeze_handler(rawdax_client* client, rawdax_freeze_fn fn,
                                                   void* ctx);

/* The message of the client's last failure ("" if none). */
RAWDAX_EXPORT const char* rawdax_client_error(const rawdax_client* client);

/* Closes the connection: the daemon releases what it held for it (opens,
 * freezes). NULL is accepted. */
RAWDAX_EXPORT void rawdax_client_close(rawdax_client* client);

RAWDAX_EXPORT void rawdax_free(void* p);

#ifdef __cplusplus
}
#endif

#endif /* RAWDAX_CLIENT_C_H_ */
