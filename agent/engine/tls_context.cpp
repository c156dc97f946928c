// PEM files → SSL_CTX with strict mutual verification; SPIFFE-ID matching.
#include "engine/tls_context.h"

#include <openssl/err.h>
#include <openssl/pem.h>

#include <algorithm>

namespace meshlock::engine {

Result<SslContextRef> makeMutualTlsContext(bool server, const TlsFiles& files, TlsMinVersion min_version) {
  bssl::UniquePtr<SSL_CTX> ctx(SSL_CTX_new(TLS_method()));
  if (!ctx) return fail("SSL_CTX_new: " + drainSslErrors());
  uint16_t min = min_version == TlsMinVersion::Tls13 ? TLS1_3_VERSION : TLS1_2_VERSION;
  if (!SSL_CTX_set_min_proto_version(ctx.get(), min) ||
      !SSL_CTX_set_max_proto_version(ctx.get(), TLS1_3_VERSION)) {
    return fail("tls versions: " + drainSslErrors());
  }
  if (!SSL_CTX_use_certificate_chain_file(ctx.get(), files.cert.c_str())) {
    return fail("certificate " + files.cert + ": " + drainSslErrors());
  }
  if (!SSL_CTX_use_PrivateKey_file(ctx.get(), files.key.c_str(), SSL_FILETYPE_PEM)) {
    return fail("private key " + files.key + ": " + drainSslErrors());
  }
  if (!SSL_CTX_check_private_key(ctx.get())) {
    return fail("private key " + files.key + " does not match " + files.cert + ": " + drainSslErrors());
  }
  if (!SSL_CTX_load_verify_locations(ctx.get(), files.ca.c_str(), nullptr)) {
    return fail("trust bundle " + files.ca + ": " + drainSslErrors());
  }
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  if (server) {
    // Resumed sessions must come from peers verified under this same context.
    static const uint8_t kSessionContext[] = "meshlock-mtls";
    SSL_CTX_set_session_id_context(ctx.get(), kSessionContext, sizeof kSessionContext - 1);
  }
  // Renegotiation is never allowed (BoringSSL's default; stated for the reader).
  return SslContextRef(std::move(ctx));
}

PeerVerifier expectSpiffeIds(std::vector<std::string> expected) {
  return [expected = std::move(expected)](SSL* ssl) -> Result<std::string> {
    bssl::UniquePtr<X509> peer(SSL_get_peer_certificate(ssl));
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
