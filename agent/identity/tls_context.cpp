// SSL_CTX factories and the per-connection verification state (tls_context.h).
#include "identity/tls_context.h"

#include "common/certificate_pool.h"

#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/pool.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>
#include <spdlog/spdlog.h>

#include <cstring>
#include <fmt/format.h>
#include <mutex>

namespace meshlock::identity {
namespace {

// What a context verifies; one per SSL_CTX, owned through its ex_data.
struct ContextState {
  bool mesh = true;
  TlsRole role = TlsRole::kServer;
  // mesh
  std::shared_ptr<const TrustBundle> bundle;
  std::optional<TrustDomain> trustDomain;
  std::shared_ptr<SessionTicketKeys> ticketKeys;
  std::unique_ptr<VerifiedChains> verifiedChains = std::make_unique<VerifiedChains>();
  // DestinationRule
  std::string ruleName;
  bssl::UniquePtr<X509_STORE> destinationRoots;
  std::vector<std::string> subjectAltNames;
  std::string sni;

  std::chrono::seconds skew{60};
  Clock clock;
};

// What one connection expects and what its handshake found.
struct ConnectionState {
  std::optional<ExpectedPeers> expected;
  std::optional<SpiffeId> peer;
  std::optional<VerifyFailure> failure;
  bool destinationVerified = false;
  bssl::UniquePtr<SSL_SESSION> newestSession;  // client: the last ticket received, without a sink
  std::shared_ptr<SessionSink> sessionSink;    // client: where tickets go instead
  bool tunnel = false;                         // server: an HBONE tunnel (ALPN h2 only)
};

void freeContextState(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
  delete static_cast<ContextState*>(ptr);
}
void freeConnectionState(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
  delete static_cast<ConnectionState*>(ptr);
}

int contextIndex() {
  static const int index =
      SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, freeContextState);
  MESHLOCK_CHECK(index >= 0);
  return index;
}
int connectionIndex() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, freeConnectionState);
  MESHLOCK_CHECK(index >= 0);
  return index;
}

ContextState* contextState(const SSL_CTX* ctx) {
  return static_cast<ContextState*>(SSL_CTX_get_ex_data(ctx, contextIndex()));
}
ConnectionState* findConnectionState(const SSL* ssl) {
  return static_cast<ConnectionState*>(SSL_get_ex_data(ssl, connectionIndex()));
}
ConnectionState* connectionState(SSL* ssl) {
  if (auto* state = findConnectionState(ssl)) return state;
  auto* state = new ConnectionState();
  if (!SSL_set_ex_data(ssl, connectionIndex(), state)) {
    delete state;
    return nullptr;
  }
  return state;
}

// The peer's chain as X509 objects (BoringSSL hands out CRYPTO_BUFFERs).
Result<CertificateList> peerChain(const SSL* ssl) {
  CertificateList chain;
  const STACK_OF(CRYPTO_BUFFER)* buffers = SSL_get0_peer_certificates(ssl);
  if (buffers == nullptr) return chain;
  for (size_t i = 0; i < sk_CRYPTO_BUFFER_num(buffers); ++i) {
    bssl::UniquePtr<X509> cert(X509_parse_from_buffer(sk_CRYPTO_BUFFER_value(buffers, i)));
    if (!cert) {
      ERR_clear_error();
      return fail(fmt::format("certificate at depth {} does not parse", i));
    }
    chain.push_back(std::move(cert));
  }
  return chain;
}

bool matchesDestinationNames(X509* leaf, const ContextState& state, std::string* detail) {
  if (state.subjectAltNames.empty()) {
    if (state.sni.empty()) return true;  // the chain alone, as Istio does without SANs or SNI
    if (X509_check_host(leaf, state.sni.data(), state.sni.size(), 0, nullptr) == 1) return true;
    *detail = fmt::format("certificate does not name host {}", state.sni);
    return false;
  }
  bssl::UniquePtr<GENERAL_NAMES> names(static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(leaf, NID_subject_alt_name, nullptr, nullptr)));
  ERR_clear_error();
  for (const auto& want : state.subjectAltNames) {
    if (X509_check_host(leaf, want.data(), want.size(), 0, nullptr) == 1) return true;
    for (size_t i = 0; names && i < sk_GENERAL_NAME_num(names.get()); ++i) {
      const GENERAL_NAME* name = sk_GENERAL_NAME_value(names.get(), i);
      if (name->type != GEN_URI) continue;
      const ASN1_IA5STRING* uri = name->d.uniformResourceIdentifier;
      std::string_view text(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                            static_cast<size_t>(ASN1_STRING_length(uri)));
      if (text == want) return true;
    }
  }
  std::string wanted;
  for (const auto& want : state.subjectAltNames) wanted += (wanted.empty() ? "" : ", ") + want;
  *detail = fmt::format("certificate matches none of subjectAltNames [{}]", wanted);
  return false;
}

VerifyResult verifyMeshPeer(SSL* ssl, const ContextState& state, ConnectionState& connection) {
  ExpectedPeers expected;
  if (connection.expected) {
    expected = *connection.expected;
  } else if (SSL_is_server(ssl)) {
    expected = ExpectedPeers::any();
  }
  VerifyOptions options{
      .peerRole = SSL_is_server(ssl) ? PeerRole::kClient : PeerRole::kServer,
      .now = state.clock(),
      .skew = state.skew,
  };
  // The same chain as a handshake before: its verdict, then secure naming.
  const STACK_OF(CRYPTO_BUFFER)* buffers = SSL_get0_peer_certificates(ssl);
  std::optional<VerifiedChains::Digest> digest;
  if (buffers != nullptr && sk_CRYPTO_BUFFER_num(buffers) > 0) {
    digest = VerifiedChains::digestOf(buffers, options.peerRole);
    if (auto id = state.verifiedChains->find(*digest, options.now, options.skew))
      return matchExpectedPeer(std::move(*id), expected);
  }
  auto chain = peerChain(ssl);
  if (!chain) return std::unexpected(VerifyFailure{VerifyError::kBadCertificate, chain.error().message});
  std::vector<X509*> raw;
  for (const auto& cert : *chain) raw.push_back(cert.get());
  ValidityWindow window;
  auto id = verifyPeerCertificate(raw, *state.bundle, *state.trustDomain, options, &window);
  if (!id) return id;
  if (digest) state.verifiedChains->insert(*digest, *id, window);
  return matchExpectedPeer(std::move(*id), expected);
}

std::expected<void, VerifyFailure> verifyDestinationPeer(SSL* ssl, const ContextState& state) {
  auto chain = peerChain(ssl);
  if (!chain) return std::unexpected(VerifyFailure{VerifyError::kBadCertificate, chain.error().message});
  std::vector<X509*> raw;
  for (const auto& cert : *chain) raw.push_back(cert.get());
  if (auto ok = verifyChainAndValidity(raw, state.destinationRoots.get(), state.clock(), state.skew); !ok) {
    return std::unexpected(ok.error());
  }

  X509* leaf = raw.front();
  uint32_t flags = X509_get_extension_flags(leaf);
  if ((flags & EXFLAG_XKUSAGE) && !(X509_get_extended_key_usage(leaf) & XKU_SSL_SERVER)) {
    return std::unexpected(
        VerifyFailure{VerifyError::kMissingServerAuth, "server leaf lacks the serverAuth EKU"});
  }
  std::string detail;
  if (!matchesDestinationNames(leaf, state, &detail)) {
    return std::unexpected(VerifyFailure{VerifyError::kSanMismatch, std::move(detail)});
  }
  return {};
}

// BoringSSL hands a client its TLS 1.3 tickets only through this callback.
int keepNewSession(SSL* ssl, SSL_SESSION* session) {
  ConnectionState* connection = connectionState(ssl);
  if (connection == nullptr) return 0;  // not taken: BoringSSL frees it
  if (connection->sessionSink) {
    connection->sessionSink->store(bssl::UniquePtr<SSL_SESSION>(session));
    return 1;
  }
  connection->newestSession.reset(session);
  return 1;
}

void enableClientSessions(SSL_CTX* ctx) {
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT);
  SSL_CTX_sess_set_new_cb(ctx, keepNewSession);
}

uint8_t alertFor(VerifyError reason) {
  switch (reason) {
    case VerifyError::kExpired:
    case VerifyError::kNotYetValid: return SSL_AD_CERTIFICATE_EXPIRED;
    case VerifyError::kUnknownCa:
    case VerifyError::kSelfSignedLeaf: return SSL_AD_UNKNOWN_CA;
    case VerifyError::kInternal: return SSL_AD_INTERNAL_ERROR;
    case VerifyError::kSanMismatch:
    case VerifyError::kNoExpectedIdentity:
    case VerifyError::kWrongTrustDomain: return SSL_AD_CERTIFICATE_UNKNOWN;
    default: return SSL_AD_BAD_CERTIFICATE;
  }
}

ssl_verify_result_t verifyCallback(SSL* ssl, uint8_t* outAlert) {
  const ContextState* state = contextState(SSL_get_SSL_CTX(ssl));
  ConnectionState* connection = connectionState(ssl);
  if (state == nullptr || connection == nullptr) {
    *outAlert = SSL_AD_INTERNAL_ERROR;
    return ssl_verify_invalid;
  }
  connection->peer.reset();
  connection->failure.reset();
  if (state->mesh) {
    auto result = verifyMeshPeer(ssl, *state, *connection);
    if (result) {
      connection->peer = std::move(*result);
      return ssl_verify_ok;
    }
    connection->failure = std::move(result.error());
  } else {
    auto result = verifyDestinationPeer(ssl, *state);
    if (result) {
      connection->destinationVerified = true;
      return ssl_verify_ok;
    }
    connection->failure = std::move(result.error());
    connection->failure->detail =
        fmt::format("DestinationRule {}: {}", state->ruleName, connection->failure->detail);
  }
  *outAlert = alertFor(connection->failure->reason);
  return ssl_verify_invalid;
}

// Encrypts new tickets with the current shared key; decrypts with any kept key
// and asks for a fresh ticket when the key was not the current one.
int ticketKeyCallback(SSL* ssl, uint8_t* keyName, uint8_t* iv, EVP_CIPHER_CTX* cipher,
                      HMAC_CTX* hmac, int encrypt) {
  const ContextState* state = contextState(SSL_get_SSL_CTX(ssl));
  if (state == nullptr || !state->ticketKeys) return encrypt ? -1 : 0;
  const EVP_CIPHER* aes = EVP_aes_256_cbc();
  if (encrypt) {
    SessionTicketKeys::Key key = state->ticketKeys->current();
    std::memcpy(keyName, key.name.data(), key.name.size());
    RAND_bytes(iv, EVP_CIPHER_iv_length(aes));
    if (!EVP_EncryptInit_ex(cipher, aes, nullptr, key.aesKey.data(), iv) ||
        !HMAC_Init_ex(hmac, key.hmacKey.data(), key.hmacKey.size(), EVP_sha256(), nullptr)) {
      return -1;
    }
    return 1;
  }
  auto found = state->ticketKeys->find(keyName);
  if (!found) return 0;  // unknown or retired key: full handshake
  const auto& [key, isCurrent] = *found;
  if (!EVP_DecryptInit_ex(cipher, aes, nullptr, key.aesKey.data(), iv) ||
      !HMAC_Init_ex(hmac, key.hmacKey.data(), key.hmacKey.size(), EVP_sha256(), nullptr)) {
    return -1;
  }
  return isCurrent ? 1 : 2;
}

std::string alpnWire(std::initializer_list<std::string_view> protocols) {
  std::string wire;
  for (auto protocol : protocols) {
    wire += static_cast<char>(protocol.size());
    wire += protocol;
  }
  return wire;
}

// HBONE's port takes HTTP/2 only, as ztunnel's inbound listener: "h2" or nothing.
int selectTunnelAlpn(const uint8_t** out, uint8_t* outLength, const uint8_t* in, unsigned inLength) {
  for (unsigned i = 0; i < inLength;) {
    uint8_t length = in[i];
    if (i + 1 + length > inLength) return SSL_TLSEXT_ERR_NOACK;
    if (std::string_view(reinterpret_cast<const char*>(in + i + 1), length) == kAlpnH2) {
      *out = in + i + 1;
      *outLength = length;
      return SSL_TLSEXT_ERR_OK;
    }
    i += 1 + length;
  }
  return SSL_TLSEXT_ERR_NOACK;
}

int selectAlpn(SSL* ssl, const uint8_t** out, uint8_t* outLength, const uint8_t* in,
               unsigned inLength, void* arg) {
  if (const ConnectionState* state = findConnectionState(ssl); state != nullptr && state->tunnel)
    return selectTunnelAlpn(out, outLength, in, inLength);
  bool peerExchange = arg != nullptr;
  const uint8_t* chosen = nullptr;
  uint8_t chosenLength = 0;
  for (unsigned i = 0; i < inLength;) {
    uint8_t length = in[i];
    if (i + 1 + length > inLength) return SSL_TLSEXT_ERR_NOACK;
    std::string_view protocol(reinterpret_cast<const char*>(in + i + 1), length);
    if (protocol == kAlpnIstio) {
      chosen = in + i + 1;
      chosenLength = length;
      break;  // "istio" is always our first choice
    }
    if (peerExchange && protocol == kAlpnIstioPeerExchange && chosen == nullptr) {
      chosen = in + i + 1;
      chosenLength = length;
    }
    i += 1 + length;
  }
  if (chosen == nullptr) return SSL_TLSEXT_ERR_NOACK;  // go on without ALPN, as Envoy does
  *out = chosen;
  *outLength = chosenLength;
  return SSL_TLSEXT_ERR_OK;
}

// TLS_with_buffers_method: a connection keeps its peer's chain as bytes from
// the pool and no parsed X509 objects (a third of an idle connection's
// memory otherwise); verification parses what it needs (peerChain).
Result<bssl::UniquePtr<SSL_CTX>> newBaseContext(TlsMinVersion minVersion,
                                                const std::string& ciphers) {
  bssl::UniquePtr<SSL_CTX> ctx(SSL_CTX_new(TLS_with_buffers_method()));
  if (!ctx) return fail(takeSslErrors("SSL_CTX_new"));
  SSL_CTX_set0_buffer_pool(ctx.get(), certificatePool());
  uint16_t minimum = minVersion == TlsMinVersion::kTls13 ? TLS1_3_VERSION : TLS1_2_VERSION;
  if (!SSL_CTX_set_min_proto_version(ctx.get(), minimum) ||
      !SSL_CTX_set_max_proto_version(ctx.get(), TLS1_3_VERSION)) {
    return fail(takeSslErrors("protocol versions"));
  }
  if (!SSL_CTX_set_strict_cipher_list(ctx.get(), ciphers.c_str())) {
    return fail(takeSslErrors(fmt::format("cipher list \"{}\"", ciphers)));
  }
  if (!SSL_CTX_set1_curves_list(ctx.get(), "X25519:P-256:P-384")) {
    return fail(takeSslErrors("curves"));
  }
  return ctx;
}

Status setCertificate(SSL_CTX* ctx, X509* leaf, const CertificateList& chain, EVP_PKEY* key,
                      std::string_view what) {
  std::vector<bssl::UniquePtr<CRYPTO_BUFFER>> buffers;
  auto add = [&](X509* cert) {
    uint8_t* der = nullptr;
    int length = i2d_X509(cert, &der);
    if (length <= 0) return false;
    bssl::UniquePtr<uint8_t> owned(der);
    buffers.emplace_back(CRYPTO_BUFFER_new(der, static_cast<size_t>(length), certificatePool()));
    return buffers.back() != nullptr;
  };
  if (!add(leaf)) return fail(takeSslErrors(fmt::format("{}: certificate", what)));
  for (const auto& cert : chain) {
    if (!add(cert.get())) return fail(takeSslErrors(fmt::format("{}: chain", what)));
  }
  std::vector<CRYPTO_BUFFER*> raw;
  for (const auto& buffer : buffers) raw.push_back(buffer.get());
  if (!SSL_CTX_set_chain_and_key(ctx, raw.data(), raw.size(), key, nullptr)) {
    return fail(takeSslErrors(fmt::format("{}: private key does not match the certificate", what)));
  }
  return {};
}

Status attachState(SSL_CTX* ctx, std::unique_ptr<ContextState> state) {
  if (!SSL_CTX_set_ex_data(ctx, contextIndex(), state.get())) {
    return fail(takeSslErrors("SSL_CTX_set_ex_data"));
  }
  state.release();  // freed with the context
  return {};
}

}  // namespace

Result<TlsMinVersion> parseTlsMinVersion(std::string_view value) {
  if (value.empty() || value == "TLS_AUTO" || value == "TLSV1_2") return TlsMinVersion::kTls12;
  if (value == "TLSV1_3") return TlsMinVersion::kTls13;
  return fail(fmt::format("minProtocolVersion \"{}\": expected TLSV1_2 or TLSV1_3", value));
}

Seconds systemNow() {
  return std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now());
}

SessionTicketKeys::SessionTicketKeys(std::chrono::seconds rotation, Seconds now)
    : rotation_(rotation) {
  rotateNow(now);
}

void SessionTicketKeys::rotateNow(Seconds now) {
  Key key{};
  RAND_bytes(key.name.data(), key.name.size());
  RAND_bytes(key.aesKey.data(), key.aesKey.size());
  RAND_bytes(key.hmacKey.data(), key.hmacKey.size());
  key.createdAt = now;
  std::unique_lock lock(mutex_);
  keys_.insert(keys_.begin(), key);
  if (keys_.size() > 3) keys_.resize(3);
}

bool SessionTicketKeys::rotateIfDue(Seconds now) {
  {
    std::shared_lock lock(mutex_);
    if (!keys_.empty() && now < keys_.front().createdAt + rotation_) return false;
  }
  rotateNow(now);
  return true;
}

SessionTicketKeys::Key SessionTicketKeys::current() const {
  std::shared_lock lock(mutex_);
  return keys_.front();
}

std::optional<std::pair<SessionTicketKeys::Key, bool>> SessionTicketKeys::find(
    const uint8_t* name) const {
  std::shared_lock lock(mutex_);
  for (size_t i = 0; i < keys_.size(); ++i) {
    if (std::memcmp(keys_[i].name.data(), name, keys_[i].name.size()) == 0) {
      return std::pair{keys_[i], i == 0};
    }
  }
  return std::nullopt;
}

Result<bssl::UniquePtr<SSL_CTX>> buildMeshContext(const MeshContextParams& params) {
  MESHLOCK_CHECK(params.certificate != nullptr && params.bundle != nullptr);
  const WorkloadCertificate& cert = *params.certificate;
  std::string what = fmt::format("TLS context for {}", cert.id.uri());
  auto ctx = newBaseContext(params.settings.minVersion, params.settings.tls12Ciphers);
  if (!ctx) return std::unexpected(ctx.error().context(what));
  SSL_CTX* raw = ctx->get();
  if (auto ok = setCertificate(raw, cert.leaf.get(), cert.chain, cert.key.get(), what); !ok) {
    return std::unexpected(ok.error());
  }

  bool server = params.role == TlsRole::kServer;
  SSL_CTX_set_custom_verify(raw, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verifyCallback);
  SSL_CTX_set_reverify_on_resume(raw, 1);  // a client re-checks a resumed server's identity

  // Sessions are bound to this certificate and this bundle: a renewal or a
  // bundle change ends resumption of older sessions.
  std::string binding = fmt::format("meshlock mesh|{}|{}|{}|{}", server ? "server" : "client",
                                    cert.id.uri(), cert.serial, params.bundle->fingerprint());
  uint8_t sessionContext[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const uint8_t*>(binding.data()), binding.size(), sessionContext);
  static_assert(sizeof(sessionContext) <= SSL_MAX_SID_CTX_LENGTH);
  if (!SSL_CTX_set_session_id_context(raw, sessionContext, sizeof(sessionContext))) {
    return fail(takeSslErrors(what));
  }
  auto lifetime = static_cast<uint32_t>(params.settings.sessionLifetime.count());
  SSL_CTX_set_timeout(raw, lifetime);
  SSL_CTX_set_session_psk_dhe_timeout(raw, lifetime);

  if (server) {
    SSL_CTX_set_alpn_select_cb(raw, selectAlpn,
                               params.settings.peerExchangeAlpn ? reinterpret_cast<void*>(1) : nullptr);
    if (params.ticketKeys) {
      SSL_CTX_set_tlsext_ticket_key_cb(raw, ticketKeyCallback);
    } else {
      SSL_CTX_set_options(raw, SSL_OP_NO_TICKET);
    }
  } else {
    enableClientSessions(raw);
    std::string wire = params.settings.peerExchangeAlpn
                           ? alpnWire({kAlpnIstioPeerExchange, kAlpnIstio})
                           : alpnWire({kAlpnIstio});
    // Unlike everything else here, 0 is success.
    if (SSL_CTX_set_alpn_protos(raw, reinterpret_cast<const uint8_t*>(wire.data()), wire.size()) != 0) {
      return fail(takeSslErrors(what + ": ALPN"));
    }
  }

  auto state = std::make_unique<ContextState>();
  state->mesh = true;
  state->role = params.role;
  state->bundle = params.bundle;
  state->trustDomain = cert.id.trustDomain();
  state->ticketKeys = params.ticketKeys;
  state->skew = params.settings.clockSkew;
  state->clock = params.clock ? params.clock : Clock(systemNow);
  if (auto ok = attachState(raw, std::move(state)); !ok) return std::unexpected(ok.error());
  return ctx;
}

VerifiedChains::Stats verifiedChainStats(const SSL_CTX* ctx) {
  const ContextState* state = contextState(ctx);
  if (state == nullptr || !state->verifiedChains) return {};
  return state->verifiedChains->stats();
}

Status setExpectedPeers(SSL* ssl, ExpectedPeers expected) {
  ConnectionState* state = connectionState(ssl);
  if (state == nullptr) return fail(takeSslErrors("SSL_set_ex_data"));
  state->expected = std::move(expected);
  return {};
}

VerifyResult handshakeIdentity(SSL* ssl) {
  ConnectionState* connection = connectionState(ssl);
  const ContextState* state = contextState(SSL_get_SSL_CTX(ssl));
  if (connection == nullptr || state == nullptr) {
    return std::unexpected(VerifyFailure{VerifyError::kInternal, "not a meshlock TLS context"});
  }
  if (connection->failure) return std::unexpected(*connection->failure);
  if (connection->peer) return *connection->peer;
  if (!state->mesh) {
    return std::unexpected(
        VerifyFailure{VerifyError::kInternal, "a DestinationRule connection has no SPIFFE identity"});
  }
  if (SSL_in_init(ssl)) {
    return std::unexpected(VerifyFailure{VerifyError::kInternal, "handshake not finished"});
  }
  if (SSL_session_reused(ssl)) {
    auto result = verifyMeshPeer(ssl, *state, *connection);
    if (result) {
      connection->peer = *result;
    } else {
      connection->failure = result.error();
    }
    return result;
  }
  return std::unexpected(VerifyFailure{VerifyError::kNoCertificate, "the peer sent no certificate"});
}

std::optional<SpiffeId> peerIdentity(SSL* ssl) {
  auto result = handshakeIdentity(ssl);
  if (!result) return std::nullopt;
  return *result;
}

std::optional<VerifyFailure> verifyFailure(const SSL* ssl) {
  const ConnectionState* state = findConnectionState(ssl);
  if (state == nullptr) return std::nullopt;
  return state->failure;
}

bssl::UniquePtr<SSL_SESSION> takeResumableSession(SSL* ssl) {
  ConnectionState* state = findConnectionState(ssl);
  if (state == nullptr || !state->newestSession) return nullptr;
  return std::move(state->newestSession);
}

Status prepareTunnelServer(SSL* ssl) {
  ConnectionState* state = connectionState(ssl);
  if (state == nullptr) return fail(takeSslErrors("SSL_set_ex_data"));
  state->tunnel = true;
  if (!SSL_set_min_proto_version(ssl, TLS1_3_VERSION)) return fail(takeSslErrors("HBONE: TLS 1.3"));
  return {};
}

Status prepareTunnelClient(SSL* ssl) {
  static const std::string wire = alpnWire({kAlpnH2});
  // Unlike everything else here, 0 is success.
  if (SSL_set_alpn_protos(ssl, reinterpret_cast<const uint8_t*>(wire.data()), wire.size()) != 0)
    return fail(takeSslErrors("HBONE: ALPN h2"));
  if (!SSL_set_min_proto_version(ssl, TLS1_3_VERSION)) return fail(takeSslErrors("HBONE: TLS 1.3"));
  return {};
}

Status setSessionSink(SSL* ssl, std::shared_ptr<SessionSink> sink) {
  ConnectionState* state = connectionState(ssl);
  if (state == nullptr) return fail(takeSslErrors("SSL_set_ex_data"));
  state->sessionSink = std::move(sink);
  return {};
}

std::string contextDescription(const SSL_CTX* ctx) {
  const ContextState* state = contextState(ctx);
  if (state == nullptr) return "not a meshlock context";
  if (state->mesh) {
    return fmt::format("mesh {} context, trust domain {}, bundle generation {}",
                       state->role == TlsRole::kServer ? "server" : "client",
                       state->trustDomain->name(), state->bundle->generation());
  }
  return fmt::format("DestinationRule {} client context, sni \"{}\", {} subjectAltNames",
                     state->ruleName, state->sni, state->subjectAltNames.size());
}

Result<bssl::UniquePtr<SSL_CTX>> buildDestinationContext(const DestinationTlsConfig& config,
                                                         const MeshTlsSettings& settings,
                                                         Clock clock) {
  std::string rule = fmt::format("DestinationRule {}", config.ruleName);
  auto ctx = newBaseContext(settings.minVersion, settings.tls12Ciphers);
  if (!ctx) return std::unexpected(ctx.error().context(rule));
  SSL_CTX* raw = ctx->get();

  auto state = std::make_unique<ContextState>();
  state->mesh = false;
  state->role = TlsRole::kClient;
  state->ruleName = config.ruleName;
  state->subjectAltNames = config.subjectAltNames;
  state->sni = config.sni;
  state->skew = settings.clockSkew;
  state->clock = clock ? clock : Clock(systemNow);

  const bool from_secret = !config.credentialSource.empty();
  std::string caFile = config.caCertificates.empty() ? kSystemRootsFile : config.caCertificates;
  auto roots = from_secret ? parseCertificatesPem(config.caPem, config.credentialSource + " CA")
                           : readCertificatesPem(caFile);
  if (!roots) return std::unexpected(roots.error().context(rule + (from_secret ? ": credentialName" : ": caCertificates")));
  state->destinationRoots.reset(X509_STORE_new());
  if (!state->destinationRoots) return fail(takeSslErrors(rule));
  for (const auto& root : *roots) X509_STORE_add_cert(state->destinationRoots.get(), root.get());
  ERR_clear_error();  // duplicate roots in a system bundle are not an error

  if (config.mode == DestinationTlsMode::kMutual) {
    if (!from_secret && (config.clientCertificate.empty() || config.privateKey.empty())) {
      return fail(fmt::format("{}: MUTUAL needs clientCertificate and privateKey", rule));
    }
    auto certs = from_secret ? parseCertificatesPem(config.certificatePem, config.credentialSource + " certificate")
                             : readCertificatesPem(config.clientCertificate);
    if (!certs) return std::unexpected(certs.error().context(rule + (from_secret ? ": credentialName" : ": clientCertificate")));
    auto key = from_secret ? parsePrivateKeyPem(config.keyPem, config.credentialSource + " key")
                           : readPrivateKeyPem(config.privateKey);
    if (!key) return std::unexpected(key.error().context(rule + (from_secret ? ": credentialName" : ": privateKey")));
    bssl::UniquePtr<X509> leaf = std::move(certs->front());
    certs->erase(certs->begin());
    const std::string what = from_secret ? fmt::format("{}: credentialName {}", rule, config.credentialSource)
                                         : fmt::format("{}: clientCertificate {} with privateKey {}", rule,
                                                       config.clientCertificate, config.privateKey);
    if (auto ok = setCertificate(raw, leaf.get(), *certs, key->get(), what); !ok) return std::unexpected(ok.error());
  }
  SSL_CTX_set_custom_verify(raw, SSL_VERIFY_PEER, verifyCallback);
  SSL_CTX_set_reverify_on_resume(raw, 1);
  enableClientSessions(raw);
  if (auto ok = attachState(raw, std::move(state)); !ok) return std::unexpected(ok.error());
  return ctx;
}

Result<bssl::UniquePtr<SSL>> newDestinationSession(SSL_CTX* ctx) {
  const ContextState* state = contextState(ctx);
  if (state == nullptr || state->mesh) return fail("not a DestinationRule context");
  bssl::UniquePtr<SSL> ssl(SSL_new(ctx));
  if (!ssl) return fail(takeSslErrors("SSL_new"));
  SSL_set_connect_state(ssl.get());
  if (!state->sni.empty() && !SSL_set_tlsext_host_name(ssl.get(), state->sni.c_str())) {
    return fail(takeSslErrors(fmt::format("DestinationRule {}: sni", state->ruleName)));
  }
  return ssl;
}

}  // namespace meshlock::identity
