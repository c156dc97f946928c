// PEM files → SSL_CTX with strict mutual verification; SPIFFE-ID matching.
// Contexts use TLS_with_buffers_method: a connection keeps its peer's chain as
// bytes (shared through one buffer pool) and no parsed X509 objects, which
// were a third of an idle connection's memory. The chain is verified in a
// custom-verify callback against the CA file's X509_STORE.
#include "engine/tls_context.h"

#include "common/certificate_pool.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pool.h>
#include <openssl/x509.h>

#include <algorithm>
#include <string_view>
#include <vector>

namespace meshlock::engine {
namespace {

void freeStore(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) { X509_STORE_free(static_cast<X509_STORE*>(ptr)); }

int storeIndex() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, freeStore);
  MESHLOCK_CHECK(index >= 0);
  return index;
}

// The peer's chain (as sent) against the context's roots, X509 objects made
// for the check only.
ssl_verify_result_t verifyChain(SSL* ssl, uint8_t* out_alert) {
  auto* roots = static_cast<X509_STORE*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), storeIndex()));
  const STACK_OF(CRYPTO_BUFFER)* chain = SSL_get0_peer_certificates(ssl);
  if (roots == nullptr || chain == nullptr || sk_CRYPTO_BUFFER_num(chain) == 0) {
    *out_alert = SSL_AD_CERTIFICATE_REQUIRED;
    return ssl_verify_invalid;
  }
  bssl::UniquePtr<X509> leaf(X509_parse_from_buffer(sk_CRYPTO_BUFFER_value(chain, 0)));
  bssl::UniquePtr<STACK_OF(X509)> untrusted(sk_X509_new_null());
  bssl::UniquePtr<X509_STORE_CTX> context(X509_STORE_CTX_new());
  if (!leaf || !untrusted || !context) {
    *out_alert = SSL_AD_BAD_CERTIFICATE;
    return ssl_verify_invalid;
  }
  for (size_t i = 1; i < sk_CRYPTO_BUFFER_num(chain); ++i) {
    bssl::UniquePtr<X509> cert(X509_parse_from_buffer(sk_CRYPTO_BUFFER_value(chain, i)));
    if (!cert || !bssl::PushToStack(untrusted.get(), std::move(cert))) {
      *out_alert = SSL_AD_BAD_CERTIFICATE;
      return ssl_verify_invalid;
    }
  }
  if (!X509_STORE_CTX_init(context.get(), roots, leaf.get(), untrusted.get()) ||
      !X509_STORE_CTX_set_default(context.get(), SSL_is_server(ssl) ? "ssl_client" : "ssl_server")) {
    *out_alert = SSL_AD_INTERNAL_ERROR;
    return ssl_verify_invalid;
  }
  if (X509_verify_cert(context.get()) != 1) {
    *out_alert = static_cast<uint8_t>(SSL_alert_from_verify_result(X509_STORE_CTX_get_error(context.get())));
    return ssl_verify_invalid;
  }
  return ssl_verify_ok;
}

Result<std::vector<bssl::UniquePtr<X509>>> readCertificates(const std::string& path) {
  bssl::UniquePtr<BIO> bio(BIO_new_file(path.c_str(), "r"));
  if (!bio) return fail(path + ": " + drainSslErrors());
  std::vector<bssl::UniquePtr<X509>> certs;
  while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) certs.emplace_back(cert);
  ERR_clear_error();  // the read that ended the loop
  if (certs.empty()) return fail(path + ": no PEM certificate");
  return certs;
}

bssl::UniquePtr<CRYPTO_BUFFER> toBuffer(X509* cert) {
  uint8_t* der = nullptr;
  int length = i2d_X509(cert, &der);
  if (length <= 0) return nullptr;
  bssl::UniquePtr<uint8_t> owned(der);
  return bssl::UniquePtr<CRYPTO_BUFFER>(CRYPTO_BUFFER_new(der, static_cast<size_t>(length), certificatePool()));
}

}  // namespace

Result<SslContextRef> makeMutualTlsContext(bool server, const TlsFiles& files, TlsMinVersion min_version) {
  bssl::UniquePtr<SSL_CTX> ctx(SSL_CTX_new(TLS_with_buffers_method()));
  if (!ctx) return fail("SSL_CTX_new: " + drainSslErrors());
  SSL_CTX_set0_buffer_pool(ctx.get(), certificatePool());
  uint16_t min = min_version == TlsMinVersion::Tls13 ? TLS1_3_VERSION : TLS1_2_VERSION;
  if (!SSL_CTX_set_min_proto_version(ctx.get(), min) ||
      !SSL_CTX_set_max_proto_version(ctx.get(), TLS1_3_VERSION)) {
    return fail("tls versions: " + drainSslErrors());
  }

  auto chain = readCertificates(files.cert);
  if (!chain) return fail("certificate " + chain.error().describe());
  std::vector<bssl::UniquePtr<CRYPTO_BUFFER>> buffers;
  for (const auto& cert : *chain) {
    buffers.push_back(toBuffer(cert.get()));
    if (!buffers.back()) return fail("certificate " + files.cert + ": " + drainSslErrors());
  }
  bssl::UniquePtr<BIO> key_bio(BIO_new_file(files.key.c_str(), "r"));
  bssl::UniquePtr<EVP_PKEY> key(key_bio ? PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!key) return fail("private key " + files.key + ": " + drainSslErrors());
  std::vector<CRYPTO_BUFFER*> raw;
  for (const auto& buffer : buffers) raw.push_back(buffer.get());
  if (!SSL_CTX_set_chain_and_key(ctx.get(), raw.data(), raw.size(), key.get(), nullptr)) {
    return fail("private key " + files.key + " does not match " + files.cert + ": " + drainSslErrors());
  }

  auto roots = readCertificates(files.ca);
  if (!roots) return fail("trust bundle " + roots.error().describe());
  bssl::UniquePtr<X509_STORE> store(X509_STORE_new());
  if (!store) return fail("X509_STORE_new: " + drainSslErrors());
  for (const auto& root : *roots) {
    if (!X509_STORE_add_cert(store.get(), root.get())) return fail("trust bundle " + files.ca + ": " + drainSslErrors());
  }
  if (!SSL_CTX_set_ex_data(ctx.get(), storeIndex(), store.get())) return fail("SSL_CTX_set_ex_data: " + drainSslErrors());
  store.release();  // freed with the context
  SSL_CTX_set_custom_verify(ctx.get(), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verifyChain);
  if (server) {
    // Resumed sessions must come from peers verified under this same context.
    static const uint8_t kSessionContext[] = "meshlock-mtls";
    SSL_CTX_set_session_id_context(ctx.get(), kSessionContext, sizeof kSessionContext - 1);
  }
  // Renegotiation is never allowed (BoringSSL's default; stated for the reader).
  return SslContextRef(std::move(ctx));
}

void selectHboneAlpn(SSL_CTX* server) {
  SSL_CTX_set_alpn_select_cb(
      server,
      [](SSL*, const uint8_t** out, uint8_t* out_length, const uint8_t* in, unsigned in_length, void*) {
        for (unsigned i = 0; i < in_length;) {
          const uint8_t length = in[i];
          if (i + 1 + length > in_length) break;
          if (std::string_view(reinterpret_cast<const char*>(in + i + 1), length) == "h2") {
            *out = in + i + 1;
            *out_length = length;
            return SSL_TLSEXT_ERR_OK;
          }
          i += 1 + length;
        }
        return SSL_TLSEXT_ERR_NOACK;
      },
      nullptr);
}

Status offerHboneAlpn(SSL* client) {
  static const uint8_t kH2[] = {2, 'h', '2'};
  if (SSL_set_alpn_protos(client, kH2, sizeof kH2) != 0) return fail("ALPN h2: " + drainSslErrors());
  return {};
}

PeerVerifier expectSpiffeIds(std::vector<std::string> expected) {
  return [expected = std::move(expected)](SSL* ssl) -> Result<std::string> {
    bssl::UniquePtr<X509> peer = peerLeaf(ssl);
    if (!peer) return fail("peer presented no certificate");
    std::string id = spiffeIdOf(peer.get());
    if (id.empty()) return fail("peer certificate has no spiffe:// URI SAN");
    if (!expected.empty() && std::find(expected.begin(), expected.end(), id) == expected.end()) {
      return fail("peer identity " + id + " is not one of the expected identities");
    }
    return id;
  };
}

}  // namespace meshlock::engine
