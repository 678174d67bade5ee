// TLS on the NBD export (NBD_OPT_STARTTLS): real clients (nbdinfo, nbdcopy,
// qemu-img) with pre-shared keys made by psktool and X.509 certificates made
// by certtool, plain clients under `on` and `require`, a wrong key, an
// untrusted client certificate, a client that stalls in the handshake, the
// protocol's rules byte by byte (with a GnuTLS client in this file), and the
// material refused at start. The server runs in this process on a unix
// socket; `rawdax serve` is run for its command-line refusals.
#include <gnutls/gnutls.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "export/nbd_fixture.h"
#include "export/nbd_wire.h"

namespace rawdax {
namespace {

using ::rawdax::testing::NbdFixture;
using ::rawdax::testing::RawClient;
using ::rawdax::testing::RunResult;
using ::rawdax::testing::ScratchDir;
using ::rawdax::testing::slurp_file;
using ::rawdax::nbd::wire::greet;
using ::rawdax::nbd::wire::info_payload;
using ::rawdax::nbd::wire::option;
using ::rawdax::nbd::wire::OptReply;
using ::rawdax::nbd::wire::read_opt_reply;
using ::rawdax::nbd::wire::request;
using ::rawdax::nbd::kOptGo;
using ::rawdax::nbd::kOptList;
using ::rawdax::nbd::kOptExportName;
using ::rawdax::nbd::kOptStartTls;
using ::rawdax::nbd::kOptStructuredReply;
using ::rawdax::nbd::kRepAck;
using ::rawdax::nbd::kRepErrInvalid;
using ::rawdax::nbd::kRepErrTlsReqd;
using ::rawdax::nbd::kRepErrUnsup;
using ::rawdax::nbd::kRepInfo;
using ::rawdax::nbd::kRepServer;

std::string q(const std::string& s) { return "'" + s + "'"; }

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

NbdServerOptions opts(NbdTls tls, const std::string& psk = "", const std::string& certs = "",
                      bool verify = false, const std::string& listen = "") {
  NbdServerOptions o;
  o.tls = tls;
  o.tls_psk_file = psk;
  o.tls_certificates_dir = certs;
  o.tls_verify_peer = verify;
  if (!listen.empty()) o.listen = listen;
  return o;
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

class NbdTlsTest : public NbdFixture {
 protected:
  uint64_t namespace_size() const override { return 16 << 20; }

  void SetUp() override {
    NbdFixture::SetUp();
    RAWDAX_REQUIRE_PROGRAM("psktool");
    RAWDAX_REQUIRE_PROGRAM("certtool");
    tls_ = dir_.path() + "/tls";
    std::filesystem::create_directories(tls_);
  }

  // A psktool key file with one user; `dir`/keys.psk, as qemu wants it.
  std::string make_psk(const std::string& dir, const std::string& user = "alice") {
    std::filesystem::create_directories(dir);
    std::string file = dir + "/keys.psk";
    RunResult r = run("psktool -u " + user + " -p " + q(file));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return file;
  }

  // certtool: a private key (ECDSA: quick to make).
  void make_key(const std::string& path) {
    RunResult r = run("certtool --generate-privkey --key-type ecdsa --outfile " + q(path));
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  // A CA in `dir` (ca-cert.pem, ca-key.pem).
  void make_ca(const std::string& dir, const std::string& name) {
    std::filesystem::create_directories(dir);
    make_key(dir + "/ca-key.pem");
    write_file(dir + "/ca.info", "cn = " + name + "\nca\ncert_signing_key\nexpiration_days = 30\n");
    RunResult r = run("certtool --generate-self-signed --load-privkey " + q(dir + "/ca-key.pem") +
                      " --template " + q(dir + "/ca.info") + " --outfile " +
                      q(dir + "/ca-cert.pem"));
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  // PREFIX-cert.pem and PREFIX-key.pem in `dir`, signed by the CA in `ca`.
  void make_cert(const std::string& ca, const std::string& dir, const std::string& prefix,
                 bool server) {
    std::filesystem::create_directories(dir);
    make_key(dir + "/" + prefix + "-key.pem");
    write_file(dir + "/" + prefix + ".info",
               server ? "cn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\n"
                        "tls_www_server\nsigning_key\nexpiration_days = 30\n"
                      : "cn = rawdax test client\ntls_www_client\nsigning_key\n"
                        "expiration_days = 30\n");
    RunResult r = run("certtool --generate-certificate --load-ca-certificate " +
                      q(ca + "/ca-cert.pem") + " --load-ca-privkey " + q(ca + "/ca-key.pem") +
                      " --load-privkey " + q(dir + "/" + prefix + "-key.pem") + " --template " +
                      q(dir + "/" + prefix + ".info") + " --outfile " +
                      q(dir + "/" + prefix + "-cert.pem"));
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  // The server's directory (ca-cert.pem, server-cert.pem, server-key.pem),
  // and a client one with the CA alone; client_with_cert adds a client
  // certificate from the same CA.
  void make_x509() {
    make_ca(tls_ + "/ca", "rawdax test CA");
    server_dir_ = tls_ + "/server";
    make_cert(tls_ + "/ca", server_dir_, "server", true);
    std::filesystem::copy_file(tls_ + "/ca/ca-cert.pem", server_dir_ + "/ca-cert.pem");
    client_dir_ = tls_ + "/client";
    std::filesystem::create_directories(client_dir_);
    std::filesystem::copy_file(tls_ + "/ca/ca-cert.pem", client_dir_ + "/ca-cert.pem");
    client_with_cert_ = tls_ + "/client-cert";
    make_cert(tls_ + "/ca", client_with_cert_, "client", false);
    std::filesystem::copy_file(tls_ + "/ca/ca-cert.pem", client_with_cert_ + "/ca-cert.pem");
  }

  void start_tls(NbdTls mode, const std::string& psk, const std::string& certs = "",
                 bool verify = false) {
    NbdServerOptions o;
    o.tls = mode;
    o.tls_psk_file = psk;
    o.tls_certificates_dir = certs;
    o.tls_verify_peer = verify;
    o.handshake_timeout = handshake_timeout_;
    start_server_with(std::move(o));
  }
  void restart_tls(NbdTls mode, const std::string& psk, const std::string& certs = "",
                   bool verify = false) {
    server_->stop();
    server_.reset();
    start_tls(mode, psk, certs, verify);
  }

  // libnbd URIs: the TLS username goes before the '@'.
  std::string psk_uri(const std::string& psk_file) {
    return "nbds+unix://alice@/default?socket=" + socket_path() + "&tls-psk-file=" + psk_file;
  }
  std::string x509_uri(const std::string& client_dir) {
    return "nbds+unix:///default?socket=" + socket_path() + "&tls-certificates=" + client_dir;
  }
  std::string plain_uri() { return "nbd+unix:///default?socket=" + socket_path(); }

  // A file of namespace_size() random bytes.
  std::string random_file(const std::string& name, uint32_t seed) {
    std::string data(namespace_size(), '\0');
    std::mt19937_64 rng(seed);
    for (size_t i = 0; i < data.size(); i += 8) {
      uint64_t v = rng();
      std::memcpy(data.data() + i, &v, 8);
    }
    std::string path = dir_.path() + "/" + name;
    write_file(path, data);
    return path;
  }

  // nbdcopy a random file in, then the export out: the same bytes, and the
  // device holds them too. Stops the server.
  void round_trip(const std::string& uri, uint32_t seed) {
    std::string in = random_file("in" + std::to_string(seed) + ".bin", seed);
    std::string out = dir_.path() + "/out" + std::to_string(seed) + ".bin";
    RunResult put = run("nbdcopy " + q(in) + " " + q(uri));
    ASSERT_EQ(put.exit_code, 0) << put.err << log_text();
    RunResult get = run("nbdcopy " + q(uri) + " " + q(out));
    ASSERT_EQ(get.exit_code, 0) << get.err << log_text();
    std::string sent = slurp_file(in), back = slurp_file(out);
    ASSERT_EQ(back.size(), sent.size());
    EXPECT_TRUE(back == sent) << "the bytes read back through TLS differ";
    // Stopping the server joins its threads, which orders their writes
    // before this read of the device.
    server_->stop();
    std::vector<char> dev(1 << 20);
    auto device = open_device();
    ASSERT_TRUE(
        device->read(namespace_size() - dev.size(), std::as_writable_bytes(std::span(dev))));
    EXPECT_EQ(0, std::memcmp(dev.data(), sent.data() + sent.size() - dev.size(), dev.size()));
  }

  std::string tls_;
  std::string server_dir_, client_dir_, client_with_cert_;
  std::chrono::milliseconds handshake_timeout_{10000};
};

TEST_P(NbdTlsTest, PskNbdinfoAndNbdcopyRoundTrip) {
  RAWDAX_REQUIRE_PROGRAM("nbdinfo");
  RAWDAX_REQUIRE_PROGRAM("nbdcopy");
  std::string psk = make_psk(tls_ + "/psk");
  start_tls(NbdTls::kRequire, psk);
  EXPECT_TRUE(uri().starts_with("nbds+unix:///default")) << uri();
  RunResult info = run("nbdinfo --json " + q(psk_uri(psk)));
  ASSERT_EQ(info.exit_code, 0) << info.err << log_text();
  auto j = nlohmann::json::parse(info.out);
  EXPECT_EQ(j["TLS"], true) << info.out;
  EXPECT_EQ(j["exports"][0]["export-size"], namespace_size());
  round_trip(psk_uri(psk), 1);
  EXPECT_NE(log_text().find("TLS on (PSK user alice"), std::string::npos) << log_text();
}

TEST_P(NbdTlsTest, X509NbdinfoNbdcopyAndClientCertificates) {
  RAWDAX_REQUIRE_PROGRAM("nbdinfo");
  RAWDAX_REQUIRE_PROGRAM("nbdcopy");
  make_x509();
  start_tls(NbdTls::kRequire, "", server_dir_);
  RunResult info = run("nbdinfo --json " + q(x509_uri(client_dir_)));
  ASSERT_EQ(info.exit_code, 0) << info.err << log_text();
  EXPECT_EQ(nlohmann::json::parse(info.out)["TLS"], true) << info.out;
  round_trip(x509_uri(client_dir_), 2);

  // Verifying peers: a client without a certificate is refused, one with a
  // certificate from the CA is served, one from another CA is refused; the
  // server goes on serving after each refusal.
  restart_tls(NbdTls::kRequire, "", server_dir_, /*verify=*/true);
  RunResult anonymous = run("nbdinfo " + q(x509_uri(client_dir_)));
  EXPECT_NE(anonymous.exit_code, 0) << anonymous.out;
  RunResult signed_client = run("nbdinfo --json " + q(x509_uri(client_with_cert_)));
  ASSERT_EQ(signed_client.exit_code, 0) << signed_client.err << log_text();
  EXPECT_NE(log_text().find("CN=rawdax test client"), std::string::npos) << log_text();

  make_ca(tls_ + "/other-ca", "another CA");
  std::string stranger = tls_ + "/stranger";
  make_cert(tls_ + "/other-ca", stranger, "client", false);
  std::filesystem::copy_file(tls_ + "/ca/ca-cert.pem", stranger + "/ca-cert.pem");
  const size_t refusals = count(log_text(), "TLS handshake failed: Certificate is required");
  RunResult untrusted = run("nbdinfo " + q(x509_uri(stranger)));
  EXPECT_NE(untrusted.exit_code, 0) << untrusted.out;
  // The server names its CA in the certificate request, so the client keeps
  // its certificate from another CA to itself: refused as having none.
  EXPECT_EQ(count(log_text(), "TLS handshake failed: Certificate is required"), refusals + 1)
      << log_text();
  RunResult again = run("nbdinfo " + q(x509_uri(client_with_cert_)));
  EXPECT_EQ(again.exit_code, 0) << again.err << log_text();
}

TEST_P(NbdTlsTest, QemuImgWithPskAndX509) {
  RAWDAX_REQUIRE_PROGRAM("qemu-img");
  std::string psk_dir = tls_ + "/psk";
  std::string psk = make_psk(psk_dir);
  start_tls(NbdTls::kRequire, psk);
  std::string in = random_file("in.raw", 3);
  std::string nbd = "driver=nbd,server.type=unix,server.path=" + socket_path() +
                    ",export=default,tls-creds=tls0";
  std::string object = "--object tls-creds-psk,id=tls0,endpoint=client,username=alice,dir=" +
                       psk_dir;
  RunResult info = run("qemu-img info " + object + " --image-opts " + q(nbd));
  ASSERT_EQ(info.exit_code, 0) << info.err << log_text();
  EXPECT_NE(info.out.find("16 MiB"), std::string::npos) << info.out;
  RunResult convert = run("qemu-img convert -n " + object + " -f raw " + q(in) +
                          " --target-image-opts " + q(nbd));
  ASSERT_EQ(convert.exit_code, 0) << convert.err << log_text();
  RunResult compare = run("qemu-img compare " + object + " --image-opts " +
                          q("driver=file,filename=" + in) + " " + q(nbd));
  EXPECT_EQ(compare.exit_code, 0) << compare.out << compare.err;

  // X.509: qemu checks the server's certificate against the name given.
  make_x509();
  restart_tls(NbdTls::kRequire, "", server_dir_);
  std::string x509_object = "--object tls-creds-x509,id=tls0,endpoint=client,dir=" + client_dir_;
  std::string x509_nbd = nbd + ",tls-hostname=localhost";
  RunResult x509_info = run("qemu-img info " + x509_object + " --image-opts " + q(x509_nbd));
  ASSERT_EQ(x509_info.exit_code, 0) << x509_info.err << log_text();
  RunResult x509_compare = run("qemu-img compare " + x509_object + " --image-opts " +
                               q("driver=file,filename=" + in) + " " + q(x509_nbd));
  EXPECT_EQ(x509_compare.exit_code, 0) << x509_compare.out << x509_compare.err;
  // One byte changed through TLS: compare sees it.
  std::string other = random_file("other.raw", 4);
  RunResult convert2 = run("qemu-img convert -n " + x509_object + " -f raw " + q(other) +
                           " --target-image-opts " + q(x509_nbd));
  ASSERT_EQ(convert2.exit_code, 0) << convert2.err;
  RunResult differs = run("qemu-img compare " + x509_object + " --image-opts " +
                          q("driver=file,filename=" + in) + " " + q(x509_nbd));
  EXPECT_EQ(differs.exit_code, 1) << differs.out << differs.err;
}

TEST_P(NbdTlsTest, PlainClientRefusedUnderRequireServedUnderOn) {
  RAWDAX_REQUIRE_PROGRAM("nbdinfo");
  std::string psk = make_psk(tls_ + "/psk");
  start_tls(NbdTls::kRequire, psk);
  RunResult plain = run("nbdinfo " + q(plain_uri()));
  EXPECT_NE(plain.exit_code, 0) << plain.out;
  EXPECT_NE(log_text().find("refused: TLS is required"), std::string::npos) << log_text();

  restart_tls(NbdTls::kOn, psk);
  RunResult plain_on = run("nbdinfo --json " + q(plain_uri()));
  ASSERT_EQ(plain_on.exit_code, 0) << plain_on.err << log_text();
  EXPECT_EQ(nlohmann::json::parse(plain_on.out)["TLS"], false);
  RunResult tls_on = run("nbdinfo --json " + q(psk_uri(psk)));
  ASSERT_EQ(tls_on.exit_code, 0) << tls_on.err << log_text();
  EXPECT_EQ(nlohmann::json::parse(tls_on.out)["TLS"], true);
}

TEST_P(NbdTlsTest, WrongKeyRefusedRightKeyServed) {
  RAWDAX_REQUIRE_PROGRAM("nbdinfo");
  std::string psk = make_psk(tls_ + "/psk");
  std::string wrong = make_psk(tls_ + "/wrong");  // alice again, another key
  start_tls(NbdTls::kRequire, psk);
  RunResult bad = run("nbdinfo " + q(psk_uri(wrong)));
  EXPECT_NE(bad.exit_code, 0) << bad.out;
  EXPECT_NE(log_text().find("TLS handshake failed"), std::string::npos) << log_text();
  RunResult good = run("nbdinfo " + q(psk_uri(psk)));
  EXPECT_EQ(good.exit_code, 0) << good.err << log_text();
}

TEST_P(NbdTlsTest, StalledHandshakeTimedOutWhileOthersServed) {
  RAWDAX_REQUIRE_PROGRAM("nbdinfo");
  std::string psk = make_psk(tls_ + "/psk");
  handshake_timeout_ = std::chrono::milliseconds(3000);
  start_tls(NbdTls::kRequire, psk);
  RawClient stalled(socket_path());
  ASSERT_TRUE(stalled.connected());
  greet(stalled);
  ASSERT_TRUE(stalled.send(option(kOptStartTls)));
  EXPECT_EQ(read_opt_reply(stalled).type, kRepAck);
  // The stalled client sends no ClientHello; a good client is served
  // meanwhile, on its own thread.
  RunResult good = run("nbdinfo " + q(psk_uri(psk)));
  EXPECT_EQ(good.exit_code, 0) << good.err << log_text();
  EXPECT_TRUE(stalled.closed_by_server());
  // The good client was served while the stalled one still held its thread.
  std::string log = log_text();
  size_t served = log.find("TLS on (PSK user alice");
  size_t timed_out = log.find("handshake not finished within 3000 ms");
  ASSERT_NE(served, std::string::npos) << log;
  ASSERT_NE(timed_out, std::string::npos) << log;
  EXPECT_LT(served, timed_out) << log;
}

// A GnuTLS client on a RawClient's socket, checking the server's
// certificate against a CA, for what real clients never do.
class TlsClient {
 public:
  TlsClient(int fd, const std::string& ca_file) {
    gnutls_certificate_allocate_credentials(&creds_);
    gnutls_certificate_set_x509_trust_file(creds_, ca_file.c_str(), GNUTLS_X509_FMT_PEM);
    gnutls_init(&session_, GNUTLS_CLIENT | GNUTLS_NO_SIGNAL);
    gnutls_set_default_priority(session_);
    gnutls_credentials_set(session_, GNUTLS_CRD_CERTIFICATE, creds_);
    gnutls_session_set_verify_cert(session_, "localhost", 0);
    gnutls_transport_set_int(session_, fd);
    gnutls_handshake_set_timeout(session_, 10000);
    int rc;
    do {
      rc = gnutls_handshake(session_);
    } while (rc < 0 && gnutls_error_is_fatal(rc) == 0);
    ok_ = rc == 0;
  }
  ~TlsClient() {
    gnutls_deinit(session_);
    gnutls_certificate_free_credentials(creds_);
  }
  bool ok() const { return ok_; }
  // All of it, one record (at most 16 KiB) at a time.
  bool send(const std::string& bytes) {
    size_t sent = 0;
    while (sent < bytes.size()) {
      ssize_t r = gnutls_record_send(session_, bytes.data() + sent, bytes.size() - sent);
      if (r <= 0) return false;
      sent += static_cast<size_t>(r);
    }
    return true;
  }
  std::string recv(size_t n) {
    std::string out(n, '\0');
    size_t got = 0;
    while (got < n) {
      ssize_t r = gnutls_record_recv(session_, out.data() + got, n - got);
      if (r <= 0) break;
      got += static_cast<size_t>(r);
    }
    out.resize(got);
    return out;
  }
  OptReply read_opt_reply() {
    OptReply r;
    std::string h = recv(20);
    if (h.size() != 20 || nbd::load_u64(h.data()) != nbd::kOptReplyMagic) return r;
    r.option = nbd::load_u32(h.data() + 8);
    r.type = nbd::load_u32(h.data() + 12);
    r.data = recv(nbd::load_u32(h.data() + 16));
    r.ok = true;
    return r;
  }

 private:
  gnutls_certificate_credentials_t creds_ = nullptr;
  gnutls_session_t session_ = nullptr;
  bool ok_ = false;
};

TEST_P(NbdTlsTest, StartTlsRulesOfTheProtocol) {
  make_x509();
  start_tls(NbdTls::kRequire, "", server_dir_);
  {
    // Before TLS under require: options get TLS_REQD, ABORT is honoured.
    RawClient c(socket_path());
    greet(c);
    ASSERT_TRUE(c.send(option(kOptList)));
    OptReply list = read_opt_reply(c);
    EXPECT_EQ(list.option, kOptList);
    EXPECT_EQ(list.type, kRepErrTlsReqd);
    ASSERT_TRUE(c.send(option(kOptGo, info_payload("default", {}))));
    EXPECT_EQ(read_opt_reply(c).type, kRepErrTlsReqd);
    ASSERT_TRUE(c.send(option(kOptStartTls, "x")));
    EXPECT_EQ(read_opt_reply(c).type, kRepErrInvalid) << "STARTTLS takes no data";
    ASSERT_TRUE(c.send(option(nbd::kOptAbort)));
    EXPECT_EQ(read_opt_reply(c).type, kRepAck);
    EXPECT_TRUE(c.closed_by_server());
  }
  {
    // A client that is not fixed newstyle cannot start TLS: under require
    // it is closed at its flags.
    RawClient c(socket_path());
    greet(c, nbd::kClientNoZeroes);
    EXPECT_TRUE(c.closed_by_server());
  }
  {
    // EXPORT_NAME before TLS under require: the connection closes.
    RawClient c(socket_path());
    greet(c);
    ASSERT_TRUE(c.send(option(kOptExportName, "default")));
    EXPECT_TRUE(c.closed_by_server());
  }
  {
    // STARTTLS, then haggling inside TLS: STRUCTURED_REPLY negotiated in
    // clear text does not carry over, STARTTLS again is invalid, and GO
    // and a read work.
    RawClient c(socket_path());
    greet(c);
    ASSERT_TRUE(c.send(option(kOptStartTls)));
    EXPECT_EQ(read_opt_reply(c).type, kRepAck);
    TlsClient t(c.fd(), client_dir_ + "/ca-cert.pem");
    ASSERT_TRUE(t.ok()) << log_text();
    ASSERT_TRUE(t.send(option(kOptStartTls)));
    EXPECT_EQ(t.read_opt_reply().type, kRepErrInvalid);
    ASSERT_TRUE(t.send(option(kOptList)));
    OptReply listed = t.read_opt_reply();
    EXPECT_EQ(listed.type, kRepServer);
    EXPECT_EQ(t.read_opt_reply().type, kRepAck);
    ASSERT_TRUE(t.send(option(kOptGo, info_payload("default", {}))));
    while (true) {
      OptReply r = t.read_opt_reply();
      ASSERT_TRUE(r.ok);
      if (r.type == kRepAck) break;
      ASSERT_EQ(r.type, kRepInfo);
    }
    // A 1 MiB write through TLS (its payload received straight into the
    // payload buffer), then read back with simple replies: a large read
    // (the path that replaces sendfile) and a small one.
    std::string pattern(1 << 20, '\0');
    for (size_t i = 0; i < pattern.size(); ++i) pattern[i] = static_cast<char>(i * 7 + 3);
    ASSERT_TRUE(t.send(request(nbd::kCmdWrite, 1, 4096, 1 << 20) + pattern));
    std::string written = t.recv(16);
    ASSERT_EQ(written.size(), 16u);
    EXPECT_EQ(nbd::load_u32(written.data() + 4), 0u) << "write error";
    for (uint32_t length : {1u << 20, 512u}) {
      ASSERT_TRUE(t.send(request(nbd::kCmdRead, length, 4096, length)));
      std::string reply = t.recv(16);
      ASSERT_EQ(reply.size(), 16u);
      EXPECT_EQ(nbd::load_u32(reply.data()), nbd::kSimpleReplyMagic);
      EXPECT_EQ(nbd::load_u32(reply.data() + 4), 0u);
      std::string data = t.recv(length);
      ASSERT_EQ(data.size(), length);
      EXPECT_TRUE(data == pattern.substr(0, length)) << length;
    }
    ASSERT_TRUE(t.send(request(nbd::kCmdDisc, 9, 0, 0)));
  }
  {
    // With TLS off, STARTTLS stays unsupported.
    restart_tls(NbdTls::kOff, "");
    RawClient c(socket_path());
    greet(c);
    ASSERT_TRUE(c.send(option(kOptStartTls)));
    EXPECT_EQ(read_opt_reply(c).type, kRepErrUnsup);
    ASSERT_TRUE(c.send(option(kOptStructuredReply)));
    EXPECT_EQ(read_opt_reply(c).type, kRepAck);
  }
}

// The material is refused at start, naming the file and what is wrong.
TEST_P(NbdTlsTest, BadMaterialRefusedAtStart) {
  std::string psk = make_psk(tls_ + "/psk");
  make_x509();
  auto refused = [&](NbdServerOptions o, const std::string& expect) {
    o.listen = "unix:" + dir_.path() + "/refused.sock";
    auto server = NbdServer::start(*region_, std::move(o));
    ASSERT_FALSE(server) << "started; expected: " << expect;
    EXPECT_NE(server.error().message().find(expect), std::string::npos)
        << server.error().message() << " (expected: " << expect << ")";
    EXPECT_FALSE(std::filesystem::exists(dir_.path() + "/refused.sock"));
  };
  const std::string missing = tls_ + "/missing.psk";
  refused(opts(NbdTls::kRequire, missing, "", false),
          "cannot read PSK file " + missing + ": No such file or directory");
  refused(opts(NbdTls::kRequire, tls_, "", false),
          "PSK file " + tls_ + " is not a regular file");
  const std::string no_colon = tls_ + "/no-colon.psk";
  write_file(no_colon, "alice 00112233\n");
  refused(opts(NbdTls::kOn, no_colon, "", false),
          "PSK file " + no_colon + " line 1: no ':' between username and key");
  const std::string not_hex = tls_ + "/not-hex.psk";
  write_file(not_hex, "\nbob:0011zz33\n");
  refused(opts(NbdTls::kOn, not_hex, "", false),
          "PSK file " + not_hex + " line 2: the key is not hexadecimal");
  const std::string empty = tls_ + "/empty.psk";
  write_file(empty, "\n");
  refused(opts(NbdTls::kOn, empty, "", false), "PSK file " + empty + " holds no key");
  refused(opts(NbdTls::kOn, "", "", false), "TLS is on but has no material");
  refused(opts(NbdTls::kRequire, "", "", false), "TLS is on but has no material");
  refused(opts(NbdTls::kOn, psk, server_dir_, false),
          "--tls-psk and --tls-certificates exclude each other");
  refused(opts(NbdTls::kOff, psk, "", false), "TLS is off");
  refused(opts(NbdTls::kOn, psk, "", true),
          "--tls-verify-peer verifies client certificates: it needs --tls-certificates");
  refused(opts(NbdTls::kOn, "", tls_ + "/nowhere", false),
          "TLS certificates directory " + tls_ + "/nowhere: No such file or directory");

  // A directory missing its key; a key that is not the certificate's; a
  // certificate that is not one; verification without a CA.
  auto copy_of_server = [&](const std::string& name) {
    std::string d = tls_ + "/" + name;
    std::filesystem::copy(server_dir_, d);
    return d;
  };
  std::string no_key = copy_of_server("no-key");
  std::filesystem::remove(no_key + "/server-key.pem");
  refused(opts(NbdTls::kOn, "", no_key, false),
          "cannot read server key " + no_key + "/server-key.pem: No such file or directory");
  std::string mismatched = copy_of_server("mismatched");
  make_key(mismatched + "/server-key.pem.new");
  std::filesystem::rename(mismatched + "/server-key.pem.new", mismatched + "/server-key.pem");
  refused(opts(NbdTls::kRequire, "", mismatched, false),
          "server key " + mismatched + "/server-key.pem does not match certificate " +
              mismatched + "/server-cert.pem");
  std::string garbage = copy_of_server("garbage");
  write_file(garbage + "/server-cert.pem", "not a certificate\n");
  refused(opts(NbdTls::kRequire, "", garbage, false),
          "server certificate " + garbage + "/server-cert.pem is not a PEM certificate");
  std::string no_ca = copy_of_server("no-ca");
  std::filesystem::remove(no_ca + "/ca-cert.pem");
  refused(opts(NbdTls::kRequire, "", no_ca, true),
          "cannot read CA certificate " + no_ca + "/ca-cert.pem");
  // Without verification the CA is optional: that directory serves.
  start_tls(NbdTls::kRequire, "", no_ca);
  EXPECT_EQ(run("nbdinfo " + q(x509_uri(client_dir_))).exit_code, 0) << log_text();
}

// `rawdax serve` refuses bad TLS settings before it touches the region.
TEST_P(NbdTlsTest, ServeRefusesBadTlsBeforeTouchingTheRegion) {
  ScratchDir scratch(::rawdax::testing::tmpfs_parent());
  const std::string region = scratch.path() + "/region";
  const std::string missing = scratch.path() + "/missing.psk";
  auto serve = [&](const std::string& flags) {
    return run(std::string(RAWDAX_CLI_PATH) + " serve --region " + q(region) + " --nbd " +
               q("unix:" + scratch.path() + "/nbd.sock") + " --control " +
               q(scratch.path() + "/control.sock") + " " + flags);
  };
  RunResult r = serve("--tls require --tls-psk " + q(missing));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("cannot read PSK file " + missing), std::string::npos) << r.err;
  RunResult none = serve("--tls on");
  EXPECT_NE(none.exit_code, 0);
  EXPECT_NE(none.err.find("no material"), std::string::npos) << none.err;
  RunResult both = serve("--tls on --tls-psk " + q(missing) + " --tls-certificates " +
                         q(scratch.path()));
  EXPECT_NE(both.exit_code, 0);
  EXPECT_NE(both.err.find("excludes"), std::string::npos) << both.err;
  RunResult mode = serve("--tls sometimes");
  EXPECT_NE(mode.exit_code, 0);
  EXPECT_FALSE(std::filesystem::exists(region)) << "a refused start created the region";
}

// Listening beyond loopback without TLS required is logged as the risk it is.
TEST_P(NbdTlsTest, NonLoopbackWithoutRequiredTlsWarns) {
  std::string psk = make_psk(tls_ + "/psk");
  auto warned = [&](NbdServerOptions o) {
    std::vector<std::string> lines;
    o.log = [&lines](const std::string& line) { lines.push_back(line); };
    auto server = NbdServer::start(*region_, std::move(o));
    EXPECT_TRUE(server) << server.error().message();
    if (server) (*server)->stop();
    for (const auto& line : lines) {
      if (line.starts_with("warning: NBD listens on ")) return line;
    }
    return std::string();
  };
  std::string open_plain = warned(opts(NbdTls::kOff, "", "", false, "0.0.0.0:0"));
  EXPECT_NE(open_plain.find("anyone who can reach this port can read and write every namespace, "
                            "in clear text"),
            std::string::npos)
      << open_plain;
  EXPECT_NE(warned(opts(NbdTls::kOn, psk, "", false, "0.0.0.0:0")), "");
  EXPECT_EQ(warned(opts(NbdTls::kRequire, psk, "", false, "0.0.0.0:0")), "");
  EXPECT_EQ(warned(opts(NbdTls::kOff, "", "", false, "127.0.0.1:0")), "");
}

INSTANTIATE_TEST_SUITE_P(Media, NbdTlsTest, RAWDAX_TMPFS_AND_CARVED,
                         ::rawdax::testing::param_name);

}  // namespace
}  // namespace rawdax
