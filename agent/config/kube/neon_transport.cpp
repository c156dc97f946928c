// neon: one ne_session per transport (a kept-alive connection), blocking I/O.
#include "config/kube/neon_transport.h"

#include <ne_request.h>
#include <ne_session.h>
#include <ne_socket.h>
#include <ne_ssl.h>
#include <ne_uri.h>
#include <ne_utils.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs8.h>
#include <openssl/x509.h>

#include <mutex>
#include <vector>

namespace meshlock::config::kube {
namespace {

constexpr std::size_t kMaxBody = 256u << 20;        // one list page (limit=500) is far below
constexpr std::size_t kMaxErrorBody = 64u << 10;
// Only ever held in memory between BoringSSL and neon; PKCS#12's MAC needs one.
constexpr const char* kTransientPassword = "meshlock";

struct CertDeleter {
  void operator()(ne_ssl_certificate* c) const { ne_ssl_cert_free(c); }
};
using NeCert = std::unique_ptr<ne_ssl_certificate, CertDeleter>;
struct ClientCertDeleter {
  void operator()(ne_ssl_client_cert* c) const { ne_ssl_clicert_free(c); }
};
using NeClientCert = std::unique_ptr<ne_ssl_client_cert, ClientCertDeleter>;

// Every CERTIFICATE block of a PEM text, as the base64 ne_ssl_cert_import takes.
std::vector<std::string> pemCertificateBodies(std::string_view pem) {
  std::vector<std::string> out;
  constexpr std::string_view kBegin = "-----BEGIN CERTIFICATE-----";
  constexpr std::string_view kEnd = "-----END CERTIFICATE-----";
  std::size_t pos = 0;
  while ((pos = pem.find(kBegin, pos)) != std::string_view::npos) {
    std::size_t start = pos + kBegin.size();
    std::size_t end = pem.find(kEnd, start);
    if (end == std::string_view::npos) break;
    std::string body;
    for (char c : pem.substr(start, end - start)) {
      if (c != '\n' && c != '\r' && c != ' ' && c != '\t') body.push_back(c);
    }
    out.push_back(std::move(body));
    pos = end + kEnd.size();
  }
  return out;
}

// PEM certificate (+ chain) and key → DER PKCS#12, what neon imports client certificates from.
Result<std::string> pkcs12FromPem(const std::string& cert_pem, const std::string& key_pem) {
  bssl::UniquePtr<BIO> cert_bio(BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size())));
  bssl::UniquePtr<X509> cert(PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr));
  if (!cert) return fail("client certificate: not a PEM certificate");
  bssl::UniquePtr<STACK_OF(X509)> chain(sk_X509_new_null());
  while (X509* extra = PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr)) sk_X509_push(chain.get(), extra);
  ERR_clear_error();  // the end of the PEM text
  bssl::UniquePtr<BIO> key_bio(BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size())));
  bssl::UniquePtr<EVP_PKEY> key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  if (!key) return fail("client key: not a PEM private key (or it is encrypted)");
  if (!X509_check_private_key(cert.get(), key.get())) return fail("client key: does not match the client certificate");
  // The certificate itself unencrypted (-1): GnuTLS need not know RC2.
  bssl::UniquePtr<PKCS12> p12(PKCS12_create(kTransientPassword, "meshlock-agent", key.get(), cert.get(),
                                            chain.get(), 0, -1, 0, 0, 0));
  if (!p12) return fail("client certificate: cannot build PKCS#12");
  uint8_t* der = nullptr;
  int len = i2d_PKCS12(p12.get(), &der);
  if (len <= 0) return fail("client certificate: cannot encode PKCS#12");
  std::string out(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
  OPENSSL_free(der);
  return out;
}

class NeonTransport final : public HttpTransport {
 public:
  NeonTransport(ne_session* session, NeClientCert client_cert)
      : session_(session), client_cert_(std::move(client_cert)) {}
  ~NeonTransport() override { ne_session_destroy(session_); }

  Result<HttpResponse> get(const std::string& target, const std::string& bearer) override {
    return whole("GET", target, bearer, nullptr);
  }

  Result<HttpResponse> send(const std::string& method, const std::string& target, const std::string& bearer,
                            const std::string& body) override {
    return whole(method.c_str(), target, bearer, &body);
  }

  Result<HttpResponse> stream(const std::string& target, const std::string& bearer,
                              const std::function<bool(std::string_view)>& on_data) override {
    return run("GET", target, bearer, nullptr, on_data);
  }

 private:
  // A request whose 2xx body is read whole, up to kMaxBody.
  Result<HttpResponse> whole(const char* method, const std::string& target, const std::string& bearer,
                             const std::string* request_body) {
    std::string body;
    bool too_big = false;
    auto response = run(method, target, bearer, request_body, [&](std::string_view data) {
      if (body.size() + data.size() > kMaxBody) {
        too_big = true;
        return false;
      }
      body.append(data);
      return true;
    });
    if (!response) return response;
    if (too_big) return fail(std::string(method) + " " + target + ": response larger than " + std::to_string(kMaxBody >> 20) + " MiB");
    if (response->status / 100 == 2) response->body = std::move(body);
    return response;
  }

  Result<HttpResponse> run(const char* method, const std::string& target, const std::string& bearer,
                           const std::string* request_body, const std::function<bool(std::string_view)>& on_data) {
    ne_request* req = ne_request_create(session_, method, target.c_str());
    ne_add_request_header(req, "Accept", "application/json");
    if (request_body) {
      ne_add_request_header(req, "Content-Type", "application/json");
      ne_set_request_body_buffer(req, request_body->data(), request_body->size());
    }
    std::string authorization;
    if (!bearer.empty()) {
      authorization = "Bearer " + bearer;
      ne_add_request_header(req, "Authorization", authorization.c_str());
    }
    HttpResponse response;
    bool stopped = false;
    int ret = NE_OK;
    do {
      ret = ne_begin_request(req);
      if (ret != NE_OK) break;
      response.status = ne_get_status(req)->code;
      const bool success = response.status / 100 == 2;
      response.body.clear();
      // An empty piece says the answer has begun (a watch is open).
      if (success && !on_data({})) {
        stopped = true;
        break;
      }
      char buffer[64 * 1024];
      ssize_t n = 0;
      while ((n = ne_read_response_block(req, buffer, sizeof buffer)) > 0) {
        std::string_view data(buffer, static_cast<std::size_t>(n));
        if (success) {
          if (!on_data(data)) {
            stopped = true;
            break;
          }
        } else if (response.body.size() < kMaxErrorBody) {
          response.body.append(data.substr(0, kMaxErrorBody - response.body.size()));
        }
      }
      if (stopped) break;
      if (n < 0) {
        ret = NE_ERROR;
        break;
      }
      ret = ne_end_request(req);
    } while (ret == NE_RETRY);
    if (stopped) ne_close_connection(session_);  // the rest of the body is not wanted
    std::string error = ret == NE_OK || stopped ? std::string() : std::string(ne_get_error(session_));
    ne_request_destroy(req);
    if (!error.empty()) {
      ne_close_connection(session_);
      return fail(std::string(method) + " " + target + ": " + error);
    }
    return response;
  }

  ne_session* session_;
  NeClientCert client_cert_;
};

class NeonTransportFactory final : public TransportFactory {
 public:
  NeonTransportFactory(std::string server, std::string host, unsigned port, std::vector<NeCert> cas,
                       std::string pkcs12, NeonOptions options)
      : server_(std::move(server)), host_(std::move(host)), port_(port), cas_(std::move(cas)),
        pkcs12_(std::move(pkcs12)), options_(options) {}

  Result<std::unique_ptr<HttpTransport>> open() override {
    NeClientCert client_cert;
    if (!pkcs12_.empty()) {
      client_cert.reset(ne_ssl_clicert_import(reinterpret_cast<const unsigned char*>(pkcs12_.data()), pkcs12_.size()));
      if (!client_cert) return fail("client certificate: neon cannot import it");
      if (ne_ssl_clicert_encrypted(client_cert.get()) && ne_ssl_clicert_decrypt(client_cert.get(), kTransientPassword) != 0) {
        return fail("client certificate: neon cannot decrypt the PKCS#12");
      }
    }
    ne_session* session = ne_session_create("https", host_.c_str(), port_);
    if (session == nullptr) return fail("neon: cannot create a session for " + server_);
    ne_set_connect_timeout(session, static_cast<int>(options_.connect_timeout.count()));
    ne_set_read_timeout(session, static_cast<int>(options_.read_timeout.count()));
    ne_set_useragent(session, "meshlock-agent");
    // Only the endpoint's CAs; no verify callback, so any failure (untrusted,
    // expired, name or IP mismatch) fails the request.
    for (const NeCert& ca : cas_) ne_ssl_trust_cert(session, ca.get());
    if (client_cert) ne_ssl_set_clicert(session, client_cert.get());
    return std::unique_ptr<HttpTransport>(new NeonTransport(session, std::move(client_cert)));
  }

  std::string server() const override { return server_; }

 private:
  std::string server_;
  std::string host_;
  unsigned port_;
  std::vector<NeCert> cas_;
  std::string pkcs12_;
  NeonOptions options_;
};

}  // namespace

Result<std::unique_ptr<TransportFactory>> makeNeonTransportFactory(const ApiEndpoint& endpoint, NeonOptions options) {
  static std::once_flag init;
  static int init_result = 0;
  std::call_once(init, [] { init_result = ne_sock_init(); });
  if (init_result != 0) return fail("neon: socket library initialisation failed");
  if (!ne_has_support(NE_FEATURE_SSL)) return fail("neon: built without TLS support");

  ne_uri uri{};
  if (ne_uri_parse(endpoint.server.c_str(), &uri) != 0 || uri.scheme == nullptr || uri.host == nullptr) {
    ne_uri_free(&uri);
    return fail(endpoint.origin + ": server \"" + endpoint.server + "\" is not a URL");
  }
  std::string scheme = uri.scheme;
  std::string host = uri.host;
  unsigned port = uri.port != 0 ? uri.port : 443;
  std::string path = uri.path ? uri.path : "";
  ne_uri_free(&uri);
  if (scheme != "https") return fail(endpoint.origin + ": server \"" + endpoint.server + "\" is not https");
  if (!path.empty() && path != "/") {
    return fail(endpoint.origin + ": server \"" + endpoint.server + "\": a path prefix is not supported");
  }
  // neon wants an IPv6 literal without brackets.
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);

  std::vector<NeCert> cas;
  for (const std::string& body : pemCertificateBodies(endpoint.ca_pem)) {
    NeCert cert(ne_ssl_cert_import(body.c_str()));
    if (!cert) return fail(endpoint.origin + ": CA certificate " + std::to_string(cas.size() + 1) + " cannot be read");
    cas.push_back(std::move(cert));
  }
  if (cas.empty()) return fail(endpoint.origin + ": no PEM CA certificate to trust");

  std::string pkcs12;
  if (!endpoint.client_cert_pem.empty()) {
    auto built = pkcs12FromPem(endpoint.client_cert_pem, endpoint.client_key_pem);
    if (!built) return std::unexpected(built.error().context(endpoint.origin));
    pkcs12 = std::move(*built);
  }
  return std::unique_ptr<TransportFactory>(
      new NeonTransportFactory(endpoint.server, host, port, std::move(cas), std::move(pkcs12), options));
}

}  // namespace meshlock::config::kube
