// SSL_CTX construction from PEM files and a SPIFFE-ID verifier, for the
// standalone `proxy` command and the tests. The agent itself gets its
// contexts and verifier from agent/identity (one SSL_CTX per identity).
#pragma once

#include <openssl/ssl.h>

#include <string>
#include <vector>

#include "common/error.h"
#include "engine/tls_session.h"

namespace meshlock::engine {

struct TlsFiles {
  std::string cert;  // PEM chain, leaf first
  std::string key;   // PEM private key
  std::string ca;    // PEM trust bundle for the peer's chain
};

enum class TlsMinVersion { Tls12, Tls13 };

// A context for either role: presents cert/key and requires (server: as a
// client certificate) a peer chain that verifies against `ca`.
[[nodiscard]] Result<SslContextRef> makeMutualTlsContext(bool server, const TlsFiles& files,
                                                         TlsMinVersion min_version = TlsMinVersion::Tls12);

// HBONE's ALPN for these contexts (the agent's own are in agent/identity):
// a server context selects "h2" or nothing; a client connection offers "h2" only.
void selectHboneAlpn(SSL_CTX* server);
[[nodiscard]] Status offerHboneAlpn(SSL* client);

// Accepts a peer whose certificate carries one of `expected` as its SPIFFE
// URI SAN (any SPIFFE ID if `expected` is empty) and returns it.
[[nodiscard]] PeerVerifier expectSpiffeIds(std::vector<std::string> expected);

}  // namespace meshlock::engine
