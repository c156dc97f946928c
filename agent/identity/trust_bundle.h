// The set of roots a peer's chain must lead to. Immutable once built: a change
// (root rotation) makes a new bundle with the next generation, and contexts
// built from it, so handshakes in flight keep the bundle they started with.
#pragma once

#include <openssl/x509.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "common/error.h"
#include "identity/x509_util.h"

namespace meshlock::identity {

class TrustBundle {
 public:
  // Every root must be a CA certificate. `generation` counts bundle changes.
  [[nodiscard]] static Result<std::shared_ptr<const TrustBundle>> create(CertificateList roots,
                                                                         uint64_t generation);

  // Shared, read-only after creation; X509_verify_cert may use it from any thread.
  [[nodiscard]] X509_STORE* store() const { return store_.get(); }
  [[nodiscard]] const CertificateList& roots() const { return roots_; }
  // SHA-256 over the roots' sorted fingerprints: equal for equal sets of roots.
  [[nodiscard]] const std::string& fingerprint() const { return fingerprint_; }
  [[nodiscard]] uint64_t generation() const { return generation_; }
  [[nodiscard]] std::string pem() const;

 private:
  TrustBundle() = default;
  CertificateList roots_;
  bssl::UniquePtr<X509_STORE> store_;
  std::string fingerprint_;
  uint64_t generation_ = 0;
};

// The roots a CA directory trusts: every certificate in root-cert.pem, plus
// every certificate in extra-roots/*.pem (a new root during root rotation).
[[nodiscard]] Result<CertificateList> loadTrustRoots(const std::filesystem::path& caDirectory);

}  // namespace meshlock::identity
