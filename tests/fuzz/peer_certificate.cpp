// A peer's certificate (DER, as the TLS handshake hands it over) through
// meshlock's own checks: SAN extraction and the SPIFFE rules, then the whole
// verification against a fixed trust bundle. BoringSSL's parser itself is
// fuzzed upstream; what is ours is what reads the parsed certificate.
#include <openssl/x509.h>

#include <cstdint>

#include "identity/peer_verifier.h"
#include "identity/trust_bundle.h"
#include "identity/x509_util.h"

using namespace meshlock::identity;

namespace {

// A root generated once per process (the bundle needs one; nothing the fuzzer
// makes will chain to it, which exercises the refusal paths).
std::shared_ptr<const TrustBundle> bundle() {
  static std::shared_ptr<const TrustBundle> made = [] {
    auto key = generateP256Key();
    CertificateSpec spec;
    spec.organization = "fuzz";
    spec.isCa = true;
    spec.keyCertSign = true;
    spec.notBefore = Seconds{std::chrono::seconds{1700000000}};
    spec.notAfter = Seconds{std::chrono::seconds{2000000000}};
    auto root = buildCertificate(spec, key->get(), nullptr, key->get());
    CertificateList roots;
    roots.push_back(std::move(*root));
    return *TrustBundle::create(std::move(roots), 1);
  }();
  return made;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const uint8_t* p = data;
  bssl::UniquePtr<X509> cert(d2i_X509(nullptr, &p, static_cast<long>(size)));
  if (!cert) return 0;
  static const TrustDomain domain = *TrustDomain::parse("cluster.local");
  (void)spiffeIdOfCertificate(cert.get(), domain);
  X509* chain[] = {cert.get()};
  for (PeerRole role : {PeerRole::kClient, PeerRole::kServer}) {
    auto result = verifyPeerCertificate(chain, *bundle(), domain, VerifyOptions{.peerRole = role, .now = Seconds{std::chrono::seconds{1796400000}}});
    if (!result) (void)result.error().describe();
  }
  (void)subjectText(cert.get());
  (void)serialHex(cert.get());
  return 0;
}
