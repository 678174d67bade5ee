// TLS for the NBD export, with GnuTLS, the way the protocol's STARTTLS
// (NBD_OPT_STARTTLS) wants it: the connection starts in clear text, the
// client asks for TLS during option haggling, and from the handshake on every
// byte of the session goes through a TlsSession.
//
//   auto creds = TlsCredentials::load(options);        // once, at server start
//   if (*creds) session = (*creds)->new_session(fd);   // per connection
//   session->handshake(remaining_handshake_time);
//   session->recv(...) / session->send(...) / session->bye();
//
// Credentials are either pre-shared keys (a psktool file: one
// "username:hexkey" line per client) or X.509 (a directory with
// server-cert.pem and server-key.pem, plus ca-cert.pem, which verifying
// client certificates needs). Everything is read, parsed and checked in
// load(): a server never starts with material it would fail on later, and
// editing the files while it runs changes nothing.
//
// Thread safety: a TlsCredentials is immutable after load() and shared by
// every connection thread (GnuTLS allows credentials and priorities to be
// used by many sessions at once; the PSK lookup only reads the parsed keys).
// A TlsSession belongs to one connection thread; none of its calls may run
// concurrently. Another thread may still shutdown(2) the socket under it (a
// server stop): the blocked call then returns an error or end of file.
//
// Ownership: the credentials must outlive every session made from them. A
// session does not own its socket; the connection closes it after the
// session is gone.
#ifndef RAWDAX_EXPORT_NBD_TLS_H_
#define RAWDAX_EXPORT_NBD_TLS_H_

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

#include "rawdax/nbd_server.h"
#include "rawdax/result.h"

namespace rawdax::nbd {

class TlsSession;

class TlsCredentials {
 public:
  // The TLS settings of `options` (tls, tls_psk_file, tls_certificates_dir,
  // tls_verify_peer), checked and loaded. Null when TLS is off and no
  // material is named. Errors (EINVAL, or the errno of a file that cannot be
  // read) name the file or the flag and what is wrong with it: material
  // named while TLS is off, TLS on without material, both kinds at once,
  // peer verification without certificates, a file missing, unreadable or
  // malformed, a key that does not match its certificate.
  static Result<std::unique_ptr<TlsCredentials>> load(const NbdServerOptions& options);
  ~TlsCredentials();
  TlsCredentials(const TlsCredentials&) = delete;
  TlsCredentials& operator=(const TlsCredentials&) = delete;

  // A server session on `fd`, before its handshake. Fails (ENOMEM, EIO)
  // only when GnuTLS cannot set one up.
  Result<std::unique_ptr<TlsSession>> new_session(int fd) const;

  struct Impl;

 private:
  explicit TlsCredentials(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class TlsSession {
 public:
  ~TlsSession();
  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;

  // The TLS handshake, bounded by `timeout` (at least 1 ms is used), then,
  // when the server verifies peers, the client certificate against the CA.
  // ETIMEDOUT when the time ran out; otherwise ECONNABORTED with GnuTLS's
  // reason (a wrong key, an untrusted certificate, a client that left).
  Status handshake(std::chrono::milliseconds timeout);

  // Up to n decrypted bytes. Waits at most `timeout` for a record to arrive
  // whole; zero waits without limit. Returns the count (> 0), 0 at the end
  // of the stream (close_notify, or the peer closed the socket), or -1 on an
  // error, with *timed_out set if the wait ran out. error() tells why.
  ssize_t recv(char* dst, size_t n, std::chrono::milliseconds timeout, bool* timed_out);
  // Sends all n bytes, in records. False when the socket fails or its send
  // timeout (SO_SNDTIMEO) expires.
  bool send(const char* data, size_t n);
  // Sends close_notify (once; best effort).
  void bye();

  // Who the client is, for logs: "PSK user NAME" or "certificate DN", with
  // the protocol version and cipher.
  std::string describe() const;
  // GnuTLS's reason for the last failure, for logs.
  const std::string& error() const { return error_; }

  struct State;

 private:
  friend class TlsCredentials;
  explicit TlsSession(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
  std::string error_;
  bool said_bye_ = false;
};

}  // namespace rawdax::nbd

#endif  // RAWDAX_EXPORT_NBD_TLS_H_
