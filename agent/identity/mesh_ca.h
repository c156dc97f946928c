// The mesh CA: signs the workload certificates of this node. Its key and
// certificates come from a directory in Istio's plug-in layout (the `cacerts`
// secret), which meshlock creates with a self-signed root when it is empty.
#pragma once

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "identity/spiffe_id.h"
#include "identity/x509_util.h"

namespace meshlock::identity {

// File names of Istio's plug-in CA layout.
inline constexpr const char* kCaCertFile = "ca-cert.pem";       // signs workload certificates
inline constexpr const char* kCaKeyFile = "ca-key.pem";         // its private key
inline constexpr const char* kRootCertFile = "root-cert.pem";   // the root(s) peers trust
inline constexpr const char* kCertChainFile = "cert-chain.pem"; // ca-cert up to the root

// One workload's key and certificate, with the chain to send after the leaf.
struct WorkloadCertificate {
  SpiffeId id;
  bssl::UniquePtr<EVP_PKEY> key;
  bssl::UniquePtr<X509> leaf;
  CertificateList chain;  // intermediates after the leaf (the root is left out)
  Seconds issuedAt;       // renewal is planned from here
  Seconds notBefore;      // issuedAt, backdated a little for peers with slow clocks
  Seconds notAfter;
  std::string serial;     // hex, as `openssl x509 -serial` prints it

  [[nodiscard]] std::string chainPem() const;  // leaf first
};

class MeshCa {
 public:
  // Istio's plug-in layout in `directory`: ca-cert.pem, ca-key.pem,
  // root-cert.pem, cert-chain.pem (optional: ca-cert alone then). Checks that
  // the key matches, that ca-cert may sign, and that it chains to root-cert.
  [[nodiscard]] static Result<std::unique_ptr<MeshCa>> loadPlugin(
      const std::filesystem::path& directory, Seconds now);

  // The plug-in layout if `directory` holds ca-cert.pem; otherwise generates a
  // self-signed ECDSA P-256 root there (key 0600) and uses it. The generated
  // root is reused on restart. Cross-node mTLS needs every node to share it.
  [[nodiscard]] static Result<std::unique_ptr<MeshCa>> open(const std::filesystem::path& directory,
                                                            const TrustDomain& trustDomain,
                                                            Seconds now);

  // ECDSA P-256 key, URI SAN = the SPIFFE ID only, digitalSignature,
  // serverAuth + clientAuth, valid [now - backdate, now + lifetime], cut at
  // the signing CA's own notAfter.
  [[nodiscard]] Result<WorkloadCertificate> issue(const SpiffeId& id, Seconds now,
                                                  std::chrono::seconds lifetime) const;

  // The same profile for a key made elsewhere (the public key of a CSR that a
  // node agent sent to `meshlock-agent ca`): the key never comes here.
  struct SignedLeaf {
    bssl::UniquePtr<X509> leaf;
    Seconds notBefore;
    Seconds notAfter;
  };
  // `dnsNames`: DNS SANs too (the CA service's own serving certificate).
  [[nodiscard]] Result<SignedLeaf> sign(EVP_PKEY* subjectKey, const SpiffeId& id, Seconds now,
                                        std::chrono::seconds lifetime,
                                        const std::vector<std::string>& dnsNames = {}) const;

  [[nodiscard]] X509* signingCertificate() const { return caCert_.get(); }
  [[nodiscard]] const CertificateList& chain() const { return chain_; }
  [[nodiscard]] const CertificateList& roots() const { return roots_; }  // root-cert.pem
  [[nodiscard]] const std::filesystem::path& directory() const { return directory_; }
  // True when ca-cert.pem is its own root (generated mode, or a plug-in root).
  [[nodiscard]] bool selfSigned() const { return selfSigned_; }

 private:
  MeshCa() = default;
  std::filesystem::path directory_;
  bssl::UniquePtr<X509> caCert_;
  bssl::UniquePtr<EVP_PKEY> caKey_;
  CertificateList chain_;
  CertificateList roots_;
  bool selfSigned_ = false;
};

}  // namespace meshlock::identity
