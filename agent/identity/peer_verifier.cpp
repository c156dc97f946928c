// Peer certificate verification for mesh mTLS (see peer_verifier.h).
#include "identity/peer_verifier.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <cstring>
#include <fmt/chrono.h>
#include <fmt/format.h>

namespace meshlock::identity {
namespace {

std::unexpected<VerifyFailure> refuse(VerifyError reason, std::string detail) {
  return std::unexpected(VerifyFailure{reason, std::move(detail)});
}

// During path building, time errors are ignored: the validity window is
// checked afterwards, with the configured skew, over the chain that was built.
int ignoreTimeErrors(int ok, X509_STORE_CTX* context) {
  if (ok) return 1;
  int error = X509_STORE_CTX_get_error(context);
  return error == X509_V_ERR_CERT_HAS_EXPIRED || error == X509_V_ERR_CERT_NOT_YET_VALID ? 1 : 0;
}

bool isSelfSigned(X509* cert) {
  if (X509_NAME_cmp(X509_get_subject_name(cert), X509_get_issuer_name(cert)) != 0) return false;
  bssl::UniquePtr<EVP_PKEY> key(X509_get_pubkey(cert));
  bool selfSigned = key && X509_verify(cert, key.get()) == 1;
  ERR_clear_error();
  return selfSigned;
}

std::string describeCert(X509* cert, int depth) {
  std::string subject = subjectText(cert);
  return fmt::format("certificate at depth {} (serial {}{}{})", depth, serialHex(cert),
                     subject.empty() ? "" : ", ", subject);
}

}  // namespace

std::string_view toString(VerifyError error) {
  switch (error) {
    case VerifyError::kNoCertificate: return "no_certificate";
    case VerifyError::kBadCertificate: return "bad_certificate";
    case VerifyError::kUnknownCa: return "unknown_ca";
    case VerifyError::kInvalidChain: return "invalid_chain";
    case VerifyError::kExpired: return "expired";
    case VerifyError::kNotYetValid: return "not_yet_valid";
    case VerifyError::kSelfSignedLeaf: return "self_signed_leaf";
    case VerifyError::kLeafIsCa: return "leaf_is_ca";
    case VerifyError::kMissingKeyUsage: return "missing_key_usage";
    case VerifyError::kMissingServerAuth: return "missing_server_auth";
    case VerifyError::kMissingClientAuth: return "missing_client_auth";
    case VerifyError::kNoUriSan: return "no_uri_san";
    case VerifyError::kMultipleUriSans: return "multiple_uri_sans";
    case VerifyError::kMalformedSan: return "malformed_san";
    case VerifyError::kWrongTrustDomain: return "wrong_trust_domain";
    case VerifyError::kSanMismatch: return "san_mismatch";
    case VerifyError::kNoExpectedIdentity: return "no_expected_identity";
    case VerifyError::kInternal: return "internal";
  }
  return "unknown";
}

std::string VerifyFailure::describe() const {
  return fmt::format("{}: {}", toString(reason), detail);
}

std::expected<ValidityWindow, VerifyFailure> verifyChainAndValidity(std::span<X509* const> chain,
                                                          X509_STORE* roots, Seconds now,
                                                          std::chrono::seconds skew) {
  if (chain.empty()) return refuse(VerifyError::kNoCertificate, "the peer sent no certificate");
  X509* leaf = chain.front();
  if (isSelfSigned(leaf)) {
    return refuse(VerifyError::kSelfSignedLeaf,
                  fmt::format("{} is self-signed", describeCert(leaf, 0)));
  }
  if ((X509_get_extension_flags(leaf) & EXFLAG_CA) || X509_check_ca(leaf) != 0) {
    return refuse(VerifyError::kLeafIsCa,
                  fmt::format("{} is a CA certificate", describeCert(leaf, 0)));
  }
  BorrowedCertificateStack untrusted(sk_X509_new_null());
  bssl::UniquePtr<X509_STORE_CTX> context(X509_STORE_CTX_new());
  if (!untrusted || !context) return refuse(VerifyError::kInternal, "out of memory");
  for (X509* cert : chain.subspan(1)) {
    if (!sk_X509_push(untrusted.get(), cert)) return refuse(VerifyError::kInternal, "out of memory");
  }
  if (!X509_STORE_CTX_init(context.get(), roots, leaf, untrusted.get())) {
    return refuse(VerifyError::kInternal, takeSslErrors("X509_STORE_CTX_init"));
  }
  X509_VERIFY_PARAM_set_time(X509_STORE_CTX_get0_param(context.get()),
                             static_cast<time_t>(now.time_since_epoch().count()));
  X509_STORE_CTX_set_verify_cb(context.get(), ignoreTimeErrors);
  if (X509_verify_cert(context.get()) != 1) {
    int error = X509_STORE_CTX_get_error(context.get());
    int depth = X509_STORE_CTX_get_error_depth(context.get());
    ERR_clear_error();
    std::string detail = fmt::format("{} at depth {}", X509_verify_cert_error_string(error), depth);
    switch (error) {
      case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
      case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
      case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
      case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
        return refuse(VerifyError::kUnknownCa, std::move(detail));
      case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        return refuse(VerifyError::kSelfSignedLeaf, std::move(detail));
      default:
        return refuse(VerifyError::kInvalidChain, std::move(detail));
    }
  }
  STACK_OF(X509)* built = X509_STORE_CTX_get0_chain(context.get());
  time_t earliest = static_cast<time_t>((now - skew).time_since_epoch().count());
  time_t latest = static_cast<time_t>((now + skew).time_since_epoch().count());
  ValidityWindow window{Seconds::min(), Seconds::max()};
  for (size_t i = 0; i < sk_X509_num(built); ++i) {
    X509* cert = sk_X509_value(built, i);
    int depth = static_cast<int>(i);
    window.notBefore = std::max(window.notBefore, notBefore(cert));
    window.notAfter = std::min(window.notAfter, notAfter(cert));
    if (X509_cmp_time(X509_get0_notAfter(cert), &earliest) < 0) {
      return refuse(VerifyError::kExpired,
                    fmt::format("{} expired at {:%FT%TZ}", describeCert(cert, depth),
                                notAfter(cert)));
    }
    if (X509_cmp_time(X509_get0_notBefore(cert), &latest) > 0) {
      return refuse(VerifyError::kNotYetValid,
                    fmt::format("{} is valid only from {:%FT%TZ}", describeCert(cert, depth),
                                notBefore(cert)));
    }
  }
  return window;
}

VerifyResult spiffeIdOfCertificate(X509* leaf, const TrustDomain& trustDomain) {
  int critical = -1;
  bssl::UniquePtr<GENERAL_NAMES> names(static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(leaf, NID_subject_alt_name, &critical, nullptr)));
  ERR_clear_error();
  if (!names) {
    if (critical == -1) return refuse(VerifyError::kNoUriSan, "no subjectAltName extension");
    if (critical == -2) return refuse(VerifyError::kMalformedSan, "two subjectAltName extensions");
    return refuse(VerifyError::kMalformedSan, "subjectAltName does not parse");
  }
  const ASN1_IA5STRING* uri = nullptr;
  int uriCount = 0;
  for (size_t i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names.get(), i);
    if (name->type != GEN_URI) continue;
    ++uriCount;
    uri = name->d.uniformResourceIdentifier;
  }
  if (uriCount == 0) return refuse(VerifyError::kNoUriSan, "no URI in subjectAltName");
  if (uriCount > 1) {
    return refuse(VerifyError::kMultipleUriSans,
                  fmt::format("{} URIs in subjectAltName, a SPIFFE certificate has one", uriCount));
  }
  std::string_view text(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                        static_cast<size_t>(ASN1_STRING_length(uri)));
  if (text.find('\0') != std::string_view::npos) {
    return refuse(VerifyError::kMalformedSan, "URI SAN contains a NUL byte");
  }
  auto id = SpiffeId::parse(text);
  if (!id) return refuse(VerifyError::kMalformedSan, id.error().message);
  if (id->trustDomain() != trustDomain) {
    return refuse(VerifyError::kWrongTrustDomain,
                  fmt::format("{} is not in trust domain {}", id->uri(), trustDomain.name()));
  }
  return std::move(*id);
}

VerifyResult verifyPeerCertificate(std::span<X509* const> chain, const TrustBundle& bundle,
                                   const TrustDomain& trustDomain, const VerifyOptions& options,
                                   ValidityWindow* window) {
  auto valid = verifyChainAndValidity(chain, bundle.store(), options.now, options.skew);
  if (!valid) return std::unexpected(valid.error());
  if (window != nullptr) *window = *valid;
  X509* leaf = chain.front();
  uint32_t flags = X509_get_extension_flags(leaf);
  // SPIFFE X509-SVID: keyUsage present with digitalSignature; we also require
  // the EKU for the peer's role, which Istio's certificates always carry.
  if (!(flags & EXFLAG_KUSAGE) || !(X509_get_key_usage(leaf) & KU_DIGITAL_SIGNATURE)) {
    return refuse(VerifyError::kMissingKeyUsage, "leaf keyUsage lacks digitalSignature");
  }
  uint32_t eku = (flags & EXFLAG_XKUSAGE) ? X509_get_extended_key_usage(leaf) : 0;
  if (options.peerRole == PeerRole::kClient && !(eku & XKU_SSL_CLIENT)) {
    return refuse(VerifyError::kMissingClientAuth, "client leaf lacks the clientAuth EKU");
  }
  if (options.peerRole == PeerRole::kServer && !(eku & XKU_SSL_SERVER)) {
    return refuse(VerifyError::kMissingServerAuth, "server leaf lacks the serverAuth EKU");
  }
  return spiffeIdOfCertificate(leaf, trustDomain);
}

VerifyResult matchExpectedPeer(SpiffeId id, const ExpectedPeers& expected) {
  if (expected.anyInTrustDomain) return id;
  for (const auto& want : expected.ids) {
    if (want == id) return id;
  }
  if (expected.ids.empty()) {
    return refuse(VerifyError::kNoExpectedIdentity,
                  fmt::format("peer is {}, but no expected identity was set", id.uri()));
  }
  std::string wanted;
  for (const auto& want : expected.ids) wanted += (wanted.empty() ? "" : ", ") + want.uri();
  return refuse(VerifyError::kSanMismatch, fmt::format("peer is {}, expected {}", id.uri(), wanted));
}

VerifyResult verifyPeerChain(std::span<X509* const> chain, const TrustBundle& bundle,
                             const TrustDomain& trustDomain, const ExpectedPeers& expected,
                             const VerifyOptions& options) {
  auto id = verifyPeerCertificate(chain, bundle, trustDomain, options);
  if (!id) return id;
  return matchExpectedPeer(std::move(*id), expected);
}

}  // namespace meshlock::identity
