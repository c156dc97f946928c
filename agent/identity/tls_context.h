// BoringSSL SSL_CTX factories for mesh mTLS and DestinationRule TLS, and the
// per-connection API the engine uses around a handshake: the expected peer
// identities in, the verified peer identity or the refusal reason out.
//
// Verification runs inside the handshake (SSL_CTX_set_custom_verify), so a
// refused peer fails the handshake; the reason stays on the SSL (ex_data).
#pragma once

#include <openssl/ssl.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "identity/mesh_ca.h"
#include "identity/peer_verifier.h"
#include "identity/spiffe_id.h"
#include "identity/trust_bundle.h"
#include "identity/verified_chains.h"

namespace meshlock::identity {

// The agent's clock, injected so that tests can move time.
using Clock = std::function<Seconds()>;
[[nodiscard]] Seconds systemNow();

// Mesh minProtocolVersion (TLSV1_2 is Istio's default). TLS 1.3 is always the maximum.
enum class TlsMinVersion { kTls12, kTls13 };
// MeshConfig.meshMTLS.minProtocolVersion: "TLSV1_2", "TLSV1_3", or "" / "TLS_AUTO" (= TLS 1.2).
[[nodiscard]] Result<TlsMinVersion> parseTlsMinVersion(std::string_view value);

// Istio's default TLS 1.2 cipher suites (TLS 1.3 suites are fixed by BoringSSL).
inline constexpr const char* kIstioTls12Ciphers =
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256";
inline constexpr std::string_view kAlpnIstio = "istio";
inline constexpr std::string_view kAlpnIstioPeerExchange = "istio-peer-exchange";
inline constexpr std::string_view kAlpnH2 = "h2";  // HBONE

struct MeshTlsSettings {
  TlsMinVersion minVersion = TlsMinVersion::kTls12;
  std::string tls12Ciphers = kIstioTls12Ciphers;
  std::chrono::seconds clockSkew{60};
  // Istio sidecars offer "istio-peer-exchange" then "istio". Selecting
  // istio-peer-exchange commits both sides to Istio's metadata exchange
  // framing, which meshlock does not speak yet: off by default, so a server
  // selects "istio" and a client offers "istio" only.
  bool peerExchangeAlpn = false;
  std::chrono::seconds sessionLifetime{3600};  // tickets and TLS 1.2 session ids
};

// Session ticket keys shared by every context of the agent (all threads):
// a new key every `rotation`, the two before it still decrypt.
class SessionTicketKeys {
 public:
  struct Key {
    std::array<uint8_t, 16> name;
    std::array<uint8_t, 32> aesKey;
    std::array<uint8_t, 32> hmacKey;
    Seconds createdAt;
  };
  explicit SessionTicketKeys(std::chrono::seconds rotation, Seconds now);
  // Returns true when a new key was made.
  bool rotateIfDue(Seconds now);
  void rotateNow(Seconds now);
  [[nodiscard]] Key current() const;
  // The key with this name and whether it is the current one.
  [[nodiscard]] std::optional<std::pair<Key, bool>> find(const uint8_t* name) const;

 private:
  mutable std::shared_mutex mutex_;
  std::chrono::seconds rotation_;
  std::vector<Key> keys_;  // newest first
};

// The side of the connection a context is for.
enum class TlsRole { kServer, kClient };

struct MeshContextParams {
  TlsRole role = TlsRole::kServer;
  const WorkloadCertificate* certificate = nullptr;
  std::shared_ptr<const TrustBundle> bundle;  // peers must chain to it, in the certificate's trust domain
  MeshTlsSettings settings;
  std::shared_ptr<SessionTicketKeys> ticketKeys;  // server side; null: no tickets
  Clock clock = systemNow;
};

// An ISTIO_MUTUAL context for one workload identity: its certificate and
// chain, the bundle, verification of the peer's SPIFFE identity, ALPN,
// versions, ciphers, tickets, and a session id context bound to the identity's
// current certificate and the bundle, so that no session survives a change.
[[nodiscard]] Result<bssl::UniquePtr<SSL_CTX>> buildMeshContext(const MeshContextParams& params);

// --- Per connection -------------------------------------------------------

// Which peer identities this connection accepts. Server connections accept
// any identity of the trust domain unless told otherwise; client connections
// refuse every server until this is called (secure naming fails closed).
[[nodiscard]] Status setExpectedPeers(SSL* ssl, ExpectedPeers expected);

// A server connection on HBONE's port (15008): TLS 1.3 at least, and ALPN
// "h2" selected when offered, nothing else (ztunnel's inbound listener).
[[nodiscard]] Status prepareTunnelServer(SSL* ssl);
// A client connection to HBONE's port: TLS 1.3 at least, ALPN "h2" only (in
// place of the context's "istio"), as ztunnel's outbound connects.
[[nodiscard]] Status prepareTunnelClient(SSL* ssl);

// How often a mesh context's peers presented a chain it had already verified
// (verified_chains.h); zeros for other contexts.
[[nodiscard]] VerifiedChains::Stats verifiedChainStats(const SSL_CTX* ctx);

// After the handshake: the peer's verified identity, or why it was refused.
// For a resumed session the stored peer chain is verified again here (BoringSSL
// does not re-run verification on the server side), against the context's
// bundle and the current time.
[[nodiscard]] VerifyResult handshakeIdentity(SSL* ssl);
[[nodiscard]] std::optional<SpiffeId> peerIdentity(SSL* ssl);
// The refusal recorded during the handshake, if any (both mesh and DestinationRule contexts).
[[nodiscard]] std::optional<VerifyFailure> verifyFailure(const SSL* ssl);

// Client side: the newest session ticket this connection received (TLS 1.3
// sends them after the handshake, so call this after some data was read), or
// null. Offer it on a later connection to the same destination with
// SSL_set_session before the handshake; the server resumes it only while the
// certificates and the trust bundle of both contexts are unchanged, and the
// client re-verifies the server's identity on resumption anyway.
[[nodiscard]] bssl::UniquePtr<SSL_SESSION> takeResumableSession(SSL* ssl);

// Client side: where the session tickets of one connection go as they
// arrive, instead of being kept on the connection (ClientSessionCache).
class SessionSink {
 public:
  virtual ~SessionSink() = default;
  virtual void store(bssl::UniquePtr<SSL_SESSION> session) = 0;
};
[[nodiscard]] Status setSessionSink(SSL* ssl, std::shared_ptr<SessionSink> sink);

// The SNI and peer names a DestinationRule context checks, for tests and logs.
[[nodiscard]] std::string contextDescription(const SSL_CTX* ctx);

// --- DestinationRule SIMPLE / MUTUAL --------------------------------------

enum class DestinationTlsMode { kSimple, kMutual };

struct DestinationTlsConfig {
  std::string ruleName;  // "<namespace>/<name>", for errors and logs
  DestinationTlsMode mode = DestinationTlsMode::kSimple;
  std::string caCertificates;     // empty: the system roots
  std::string clientCertificate;  // MUTUAL only
  std::string privateKey;         // MUTUAL only
  std::vector<std::string> subjectAltNames;  // any one must match a DNS or URI SAN
  std::string sni;  // sent as SNI; checked as host name when subjectAltNames is empty
  // A credentialName's Secrets (config/credentials.h): PEM text in place of
  // the three files above when `credentialSource` is set.
  std::string credentialSource;  // "Secret shop/db-client"
  std::string caPem;
  std::string certificatePem;  // MUTUAL only
  std::string keyPem;          // MUTUAL only

  bool operator==(const DestinationTlsConfig&) const = default;
};

inline constexpr const char* kSystemRootsFile = "/etc/ssl/certs/ca-certificates.crt";

// Builds a client context from the rule's files now; errors name the rule and the file.
[[nodiscard]] Result<bssl::UniquePtr<SSL_CTX>> buildDestinationContext(
    const DestinationTlsConfig& config, const MeshTlsSettings& settings, Clock clock = systemNow);

// A new client SSL for `ctx` with the rule's SNI set (if the context has one).
[[nodiscard]] Result<bssl::UniquePtr<SSL>> newDestinationSession(SSL_CTX* ctx);

}  // namespace meshlock::identity
