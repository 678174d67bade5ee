#include "export/nbd_tls.h"

#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <vector>

#include "common/unique_fd.h"

namespace rawdax::nbd {
namespace {

// GnuTLS's defaults, with the pre-shared key exchanges added for PSK (as
// nbdkit and qemu-nbd do; libnbd and qemu offer the same).
constexpr const char* kPriorityX509 = "NORMAL";
constexpr const char* kPriorityPsk = "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK";

// TLS material is a few KiB; anything past this is not a key file.
constexpr size_t kMaxMaterialFile = 1 << 20;

std::string gnutls_reason(int code) { return gnutls_strerror(code); }

// The whole of a small regular file. The error names the file and what is
// wrong (missing, unreadable, a directory, too large).
Result<std::string> read_material(const std::string& path, const std::string& what) {
  internal::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return errno_error(errno, "cannot read " + what + " " + path);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return errno_error(errno, "cannot read " + what + " " + path);
  if (!S_ISREG(st.st_mode)) {
    return Error(std::errc::invalid_argument, what + " " + path + " is not a regular file");
  }
  if (static_cast<uint64_t>(st.st_size) > kMaxMaterialFile) {
    return Error(std::errc::invalid_argument, what + " " + path + " is too large (" +
                                                  std::to_string(st.st_size) + " bytes)");
  }
  std::string out(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < out.size()) {
    ssize_t n = ::read(fd.get(), out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error(errno, "cannot read " + what + " " + path);
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  out.resize(got);
  return out;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// psktool's format: one "username:hexkey" line per client; blank lines are
// allowed. Every other deviation is an error naming the line.
Result<std::map<std::string, std::string>> parse_psk_file(const std::string& path,
                                                         const std::string& text) {
  std::map<std::string, std::string> keys;
  size_t line_no = 0;
  size_t at = 0;
  while (at < text.size()) {
    size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(at, end - at);
    at = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    const std::string where = "PSK file " + path + " line " + std::to_string(line_no) + ": ";
    size_t colon = line.find(':');
    if (colon == std::string::npos) {
      return Error(std::errc::invalid_argument, where + "no ':' between username and key");
    }
    std::string user = line.substr(0, colon);
    std::string hex = line.substr(colon + 1);
    if (user.empty()) return Error(std::errc::invalid_argument, where + "empty username");
    if (hex.empty()) return Error(std::errc::invalid_argument, where + "empty key");
    if (hex.size() % 2 != 0) {
      return Error(std::errc::invalid_argument, where + "the key has an odd number of hex digits");
    }
    std::string key(hex.size() / 2, '\0');
    for (size_t i = 0; i < key.size(); ++i) {
      int hi = hex_digit(hex[2 * i]), lo = hex_digit(hex[2 * i + 1]);
      if (hi < 0 || lo < 0) {
        return Error(std::errc::invalid_argument, where + "the key is not hexadecimal");
      }
      key[i] = static_cast<char>(hi * 16 + lo);
    }
    if (!keys.emplace(user, std::move(key)).second) {
      return Error(std::errc::invalid_argument, where + "username '" + user + "' appears twice");
    }
  }
  if (keys.empty()) {
    return Error(std::errc::invalid_argument, "PSK file " + path + " holds no key");
  }
  return keys;
}

gnutls_datum_t datum(const std::string& s) {
  return {reinterpret_cast<unsigned char*>(const_cast<char*>(s.data())),
          static_cast<unsigned int>(s.size())};
}

}  // namespace

struct TlsCredentials::Impl {
  ~Impl() {
    if (priority != nullptr) gnutls_priority_deinit(priority);
    if (psk != nullptr) gnutls_psk_free_server_credentials(psk);
    if (x509 != nullptr) gnutls_certificate_free_credentials(x509);
  }

  // GnuTLS asks for a user's key during the handshake; the session's pointer
  // is the credentials' Impl. Read-only: the map never changes after load().
  static int lookup_psk(gnutls_session_t session, const char* username, gnutls_datum_t* key) {
    const auto* self = static_cast<const Impl*>(gnutls_session_get_ptr(session));
    auto it = self->psk_keys.find(username);
    if (it == self->psk_keys.end()) return -1;
    key->data = static_cast<unsigned char*>(gnutls_malloc(it->second.size()));
    if (key->data == nullptr) return -1;
    std::memcpy(key->data, it->second.data(), it->second.size());
    key->size = static_cast<unsigned int>(it->second.size());
    return 0;
  }

  Status load_psk(const std::string& path) {
    auto text = read_material(path, "PSK file");
    if (!text) return text.error();
    auto keys = parse_psk_file(path, *text);
    if (!keys) return keys.error();
    psk_keys = std::move(*keys);
    int rc = gnutls_psk_allocate_server_credentials(&psk);
    if (rc < 0) return Error(std::errc::not_enough_memory, "TLS: " + gnutls_reason(rc));
    gnutls_psk_set_server_credentials_function(psk, &Impl::lookup_psk);
    gnutls_psk_set_server_known_dh_params(psk, GNUTLS_SEC_PARAM_MEDIUM);
    return init_priority(kPriorityPsk);
  }

  Status load_x509(const std::string& dir, bool verify) {
    struct stat st;
    if (::stat(dir.c_str(), &st) != 0) {
      return errno_error(errno, "TLS certificates directory " + dir);
    }
    if (!S_ISDIR(st.st_mode)) {
      return Error(std::errc::not_a_directory,
                   "TLS certificates directory " + dir + " is not a directory");
    }
    const std::string ca_path = dir + "/ca-cert.pem";
    const std::string cert_path = dir + "/server-cert.pem";
    const std::string key_path = dir + "/server-key.pem";
    auto cert = read_material(cert_path, "server certificate");
    if (!cert) return cert.error();
    auto key = read_material(key_path, "server key");
    if (!key) return key.error();
    // Each file parsed on its own first, so that an error names the one
    // that is malformed.
    {
      gnutls_x509_crt_t crt;
      gnutls_x509_crt_init(&crt);
      gnutls_datum_t d = datum(*cert);
      int rc = gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_PEM);
      gnutls_x509_crt_deinit(crt);
      if (rc < 0) {
        return Error(std::errc::invalid_argument,
                     "server certificate " + cert_path + " is not a PEM certificate: " +
                         gnutls_reason(rc));
      }
    }
    {
      gnutls_x509_privkey_t pk;
      gnutls_x509_privkey_init(&pk);
      gnutls_datum_t d = datum(*key);
      int rc = gnutls_x509_privkey_import(pk, &d, GNUTLS_X509_FMT_PEM);
      gnutls_x509_privkey_deinit(pk);
      if (rc < 0) {
        return Error(std::errc::invalid_argument, "server key " + key_path +
                                                      " is not an unencrypted PEM private key: " +
                                                      gnutls_reason(rc));
      }
    }
    int rc = gnutls_certificate_allocate_credentials(&x509);
    if (rc < 0) return Error(std::errc::not_enough_memory, "TLS: " + gnutls_reason(rc));
    gnutls_datum_t cd = datum(*cert), kd = datum(*key);
    rc = gnutls_certificate_set_x509_key_mem(x509, &cd, &kd, GNUTLS_X509_FMT_PEM);
    if (rc == GNUTLS_E_CERTIFICATE_KEY_MISMATCH) {
      return Error(std::errc::invalid_argument,
                   "server key " + key_path + " does not match certificate " + cert_path);
    }
    if (rc < 0) {
      return Error(std::errc::invalid_argument,
                   "server certificate " + cert_path + " with key " + key_path + ": " +
                       gnutls_reason(rc));
    }
    // The CA is needed to verify clients; without verification it is
    // optional, but one that is there must load.
    struct stat ca_st;
    if (verify || ::stat(ca_path.c_str(), &ca_st) == 0) {
      auto ca = read_material(ca_path, "CA certificate");
      if (!ca) return ca.error();
      gnutls_datum_t ad = datum(*ca);
      rc = gnutls_certificate_set_x509_trust_mem(x509, &ad, GNUTLS_X509_FMT_PEM);
      if (rc <= 0) {
        return Error(std::errc::invalid_argument,
                     "CA certificate " + ca_path + " holds no PEM certificate" +
                         (rc < 0 ? ": " + gnutls_reason(rc) : std::string()));
      }
    }
    gnutls_certificate_set_known_dh_params(x509, GNUTLS_SEC_PARAM_MEDIUM);
    verify_peer = verify;
    return init_priority(kPriorityX509);
  }

  Status init_priority(const char* spec) {
    const char* bad = nullptr;
    int rc = gnutls_priority_init(&priority, spec, &bad);
    if (rc < 0) {
      return Error(std::errc::invalid_argument, std::string("TLS priority '") + spec +
                                                    "': " + gnutls_reason(rc));
    }
    return {};
  }

  gnutls_priority_t priority = nullptr;
  gnutls_psk_server_credentials_t psk = nullptr;
  gnutls_certificate_credentials_t x509 = nullptr;
  std::map<std::string, std::string> psk_keys;
  bool verify_peer = false;
};

struct TlsSession::State {
  ~State() {
    if (session != nullptr) gnutls_deinit(session);
  }
  gnutls_session_t session = nullptr;
  bool psk = false;
  bool verify_peer = false;
};

TlsCredentials::TlsCredentials(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TlsCredentials::~TlsCredentials() = default;

Result<std::unique_ptr<TlsCredentials>> TlsCredentials::load(const NbdServerOptions& o) {
  const bool psk = !o.tls_psk_file.empty();
  const bool x509 = !o.tls_certificates_dir.empty();
  if (o.tls == NbdTls::kOff) {
    if (psk || x509 || o.tls_verify_peer) {
      return Error(std::errc::invalid_argument,
                   "TLS material is given (--tls-psk, --tls-certificates or "
                   "--tls-verify-peer) but TLS is off: add --tls on or --tls require");
    }
    return std::unique_ptr<TlsCredentials>();
  }
  if (psk && x509) {
    return Error(std::errc::invalid_argument,
                 "--tls-psk and --tls-certificates exclude each other: give one");
  }
  if (!psk && !x509) {
    return Error(std::errc::invalid_argument,
                 "TLS is on but has no material: give --tls-psk FILE or --tls-certificates DIR");
  }
  if (o.tls_verify_peer && !x509) {
    return Error(std::errc::invalid_argument,
                 "--tls-verify-peer verifies client certificates: it needs --tls-certificates");
  }
  auto impl = std::make_unique<Impl>();
  Status st = psk ? impl->load_psk(o.tls_psk_file)
                  : impl->load_x509(o.tls_certificates_dir, o.tls_verify_peer);
  if (!st) return st.error();
  return std::unique_ptr<TlsCredentials>(new TlsCredentials(std::move(impl)));
}

Result<std::unique_ptr<TlsSession>> TlsCredentials::new_session(int fd) const {
  auto state = std::make_unique<TlsSession::State>();
  // GNUTLS_NO_SIGNAL: its sends use MSG_NOSIGNAL, as the plain path does.
  int rc = gnutls_init(&state->session, GNUTLS_SERVER | GNUTLS_NO_SIGNAL);
  if (rc < 0) {
    state->session = nullptr;
    return Error(std::errc::not_enough_memory, "TLS session: " + gnutls_reason(rc));
  }
  gnutls_session_t s = state->session;
  rc = gnutls_priority_set(s, impl_->priority);
  if (rc >= 0) {
    rc = impl_->psk != nullptr ? gnutls_credentials_set(s, GNUTLS_CRD_PSK, impl_->psk)
                               : gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, impl_->x509);
  }
  if (rc < 0) return Error(std::errc::io_error, "TLS session: " + gnutls_reason(rc));
  if (impl_->verify_peer) gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
  gnutls_session_set_ptr(s, impl_.get());
  // The socket's own pull, push and pull-with-timeout (poll), which the
  // handshake and record timeouts below rely on.
  gnutls_transport_set_int(s, fd);
  state->psk = impl_->psk != nullptr;
  state->verify_peer = impl_->verify_peer;
  return std::unique_ptr<TlsSession>(new TlsSession(std::move(state)));
}

TlsSession::TlsSession(std::unique_ptr<State> state) : state_(std::move(state)) {}
TlsSession::~TlsSession() = default;

Status TlsSession::handshake(std::chrono::milliseconds timeout) {
  gnutls_session_t s = state_->session;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  gnutls_handshake_set_timeout(s, static_cast<unsigned>(std::max<int64_t>(timeout.count(), 1)));
  int rc;
  do {
    rc = gnutls_handshake(s);
    // Non-fatal results (an interrupted call, a warning alert) go round
    // again, within the same deadline.
    if (rc < 0 && std::chrono::steady_clock::now() >= deadline) rc = GNUTLS_E_TIMEDOUT;
  } while (rc < 0 && gnutls_error_is_fatal(rc) == 0);
  if (rc == GNUTLS_E_TIMEDOUT) {
    error_ = "TLS handshake not finished in time";
    return Error(std::errc::timed_out, error_);
  }
  if (rc < 0) {
    error_ = "TLS handshake failed: " + gnutls_reason(rc);
    if (rc == GNUTLS_E_FATAL_ALERT_RECEIVED) {
      error_ += std::string(" (") + gnutls_alert_get_name(gnutls_alert_get(s)) + ")";
    }
    return Error(std::errc::connection_aborted, error_);
  }
  if (state_->verify_peer) {
    unsigned status = 0;
    rc = gnutls_certificate_verify_peers3(s, nullptr, &status);
    if (rc < 0) {
      error_ = "client certificate not verified: " + gnutls_reason(rc);
      return Error(std::errc::connection_aborted, error_);
    }
    if (status != 0) {
      gnutls_datum_t text{};
      error_ = "client certificate not trusted";
      if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &text, 0) == 0) {
        error_ += std::string(": ") + reinterpret_cast<const char*>(text.data);
        gnutls_free(text.data);
      }
      return Error(std::errc::connection_aborted, error_);
    }
  }
  return {};
}

ssize_t TlsSession::recv(char* dst, size_t n, std::chrono::milliseconds timeout,
                         bool* timed_out) {
  gnutls_session_t s = state_->session;
  gnutls_record_set_timeout(s, static_cast<unsigned>(std::max<int64_t>(timeout.count(), 0)));
  while (true) {
    ssize_t got = gnutls_record_recv(s, dst, n);
    if (got >= 0) return got;
    // EINTR; EAGAIN cannot come from a blocking socket without a receive
    // timeout, but would be retried the same way.
    if (got == GNUTLS_E_INTERRUPTED || got == GNUTLS_E_AGAIN) continue;
    // A peer that closes the socket without close_notify: the end, as a
    // plain recv() would report it.
    if (got == GNUTLS_E_PREMATURE_TERMINATION) return 0;
    if (got == GNUTLS_E_TIMEDOUT) *timed_out = true;
    error_ = gnutls_reason(static_cast<int>(got));
    return -1;
  }
}

bool TlsSession::send(const char* data, size_t n) {
  gnutls_session_t s = state_->session;
  size_t sent = 0;
  while (sent < n) {
    ssize_t rc = gnutls_record_send(s, data + sent, n - sent);
    if (rc == GNUTLS_E_INTERRUPTED) continue;  // GnuTLS keeps the record; same call again
    if (rc < 0) {
      // GNUTLS_E_AGAIN on a blocking socket: its send timeout expired.
      error_ = gnutls_reason(static_cast<int>(rc));
      return false;
    }
    sent += static_cast<size_t>(rc);
  }
  return true;
}

void TlsSession::bye() {
  if (said_bye_) return;
  said_bye_ = true;
  gnutls_bye(state_->session, GNUTLS_SHUT_WR);
}

std::string TlsSession::describe() const {
  gnutls_session_t s = state_->session;
  std::string who;
  if (state_->psk) {
    const char* user = gnutls_psk_server_get_username(s);
    who = std::string("PSK user ") + (user != nullptr ? user : "?");
  } else {
    unsigned count = 0;
    const gnutls_datum_t* certs = gnutls_certificate_get_peers(s, &count);
    who = "X.509";
    if (certs != nullptr && count > 0) {
      gnutls_x509_crt_t crt;
      if (gnutls_x509_crt_init(&crt) == 0) {
        gnutls_datum_t dn{};
        if (gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) == 0 &&
            gnutls_x509_crt_get_dn3(crt, &dn, 0) == 0) {
          who += std::string(" client ") + reinterpret_cast<const char*>(dn.data);
          gnutls_free(dn.data);
        }
        gnutls_x509_crt_deinit(crt);
      }
    }
  }
  const char* version = gnutls_protocol_get_name(gnutls_protocol_get_version(s));
  const char* cipher = gnutls_cipher_get_name(gnutls_cipher_get(s));
  return who + ", " + (version != nullptr ? version : "?") + " " +
         (cipher != nullptr ? cipher : "?");
}

}  // namespace rawdax::nbd
