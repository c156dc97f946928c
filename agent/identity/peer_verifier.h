// Verification of a peer's certificate chain for mesh mTLS, in both
// directions: chain to the trust bundle, validity window with clock skew,
// key usages, exactly one strictly parsed SPIFFE URI SAN, expected identity.
// The result is the peer's SpiffeId or the precise reason it was refused.
#pragma once

#include <openssl/x509.h>

#include <chrono>
#include <expected>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "identity/spiffe_id.h"
#include "identity/trust_bundle.h"
#include "identity/x509_util.h"

namespace meshlock::identity {

// Why a peer was refused. Stable: toString() names are metric labels.
enum class VerifyError {
  kNoCertificate,      // the peer sent none
  kBadCertificate,     // not parseable DER
  kUnknownCa,          // does not chain to any root of the trust bundle
  kInvalidChain,       // chains, but the chain itself is wrong (CA flags, signature, ...)
  kExpired,            // notAfter < now - skew (leaf or a CA in the chain)
  kNotYetValid,        // notBefore > now + skew
  kSelfSignedLeaf,     // the leaf is its own issuer
  kLeafIsCa,           // the leaf has basicConstraints CA:TRUE
  kMissingKeyUsage,    // no keyUsage digitalSignature
  kMissingServerAuth,  // a server without the serverAuth EKU
  kMissingClientAuth,  // a client without the clientAuth EKU
  kNoUriSan,           // no URI SAN at all
  kMultipleUriSans,    // more than one URI SAN
  kMalformedSan,       // NUL byte, bad SAN encoding, or not a strict SPIFFE ID
  kWrongTrustDomain,   // a SPIFFE ID of another trust domain
  kSanMismatch,        // a valid identity, but not one this connection expects
  kNoExpectedIdentity, // a client connection whose expected peers were never set
  kInternal,           // our own failure (allocation, missing state)
};

[[nodiscard]] std::string_view toString(VerifyError error);

struct VerifyFailure {
  VerifyError reason;
  std::string detail;  // for the log: which certificate, which value

  [[nodiscard]] std::string describe() const;
};

using VerifyResult = std::expected<SpiffeId, VerifyFailure>;

// The role of the peer being verified: a server verifies a kClient peer.
enum class PeerRole { kClient, kServer };

// Which identities a connection accepts from its peer.
struct ExpectedPeers {
  std::vector<SpiffeId> ids;       // any of these
  bool anyInTrustDomain = false;   // or any SPIFFE ID of our trust domain

  [[nodiscard]] static ExpectedPeers any() { return {.ids = {}, .anyInTrustDomain = true}; }
  [[nodiscard]] static ExpectedPeers oneOf(std::vector<SpiffeId> ids) {
    return {.ids = std::move(ids), .anyInTrustDomain = false};
  }
};

struct VerifyOptions {
  PeerRole peerRole = PeerRole::kServer;
  Seconds now;
  std::chrono::seconds skew{60};
};

// While a verified chain may be trusted: the latest notBefore and the earliest
// notAfter over the chain built to a root (without the skew).
struct ValidityWindow {
  Seconds notBefore;
  Seconds notAfter;
};

// What the peer's chain proves by itself: chain to the bundle, validity,
// key usages, one strict SPIFFE ID of the trust domain. No expected-identity
// check; `window` (if given) receives the chain's validity window.
[[nodiscard]] VerifyResult verifyPeerCertificate(std::span<X509* const> chain, const TrustBundle& bundle,
                                                 const TrustDomain& trustDomain, const VerifyOptions& options,
                                                 ValidityWindow* window = nullptr);
// Whether `id` is one the connection accepts (secure naming).
[[nodiscard]] VerifyResult matchExpectedPeer(SpiffeId id, const ExpectedPeers& expected);

// verifyPeerCertificate then matchExpectedPeer.
// `chain` is what the peer sent, leaf first.
[[nodiscard]] VerifyResult verifyPeerChain(std::span<X509* const> chain, const TrustBundle& bundle,
                                           const TrustDomain& trustDomain,
                                           const ExpectedPeers& expected,
                                           const VerifyOptions& options);

// Just the SAN rules: exactly one URI SAN, no NUL, a strict SPIFFE ID of
// `trustDomain`. Shared by verifyPeerChain and the tests.
[[nodiscard]] VerifyResult spiffeIdOfCertificate(X509* leaf, const TrustDomain& trustDomain);

// The chain and validity checks alone, against an X509_STORE (also used for
// DestinationRule SIMPLE/MUTUAL). On success, no identity is implied.
[[nodiscard]] std::expected<ValidityWindow, VerifyFailure> verifyChainAndValidity(
    std::span<X509* const> chain, X509_STORE* roots, Seconds now, std::chrono::seconds skew);

}  // namespace meshlock::identity
