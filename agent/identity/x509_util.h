// BoringSSL helpers for certificates and keys: PEM files, building and signing
// an X.509 certificate from a plain description, fingerprints, and draining
// BoringSSL's error queue into a message. Everything returns Result.
#pragma once

#include <openssl/base.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "common/ssl_errors.h"

namespace meshlock::identity {

using Seconds = std::chrono::sys_seconds;
using CertificateList = std::vector<bssl::UniquePtr<X509>>;

using meshlock::takeSslErrors;  // common/ssl_errors.h

[[nodiscard]] Result<bssl::UniquePtr<EVP_PKEY>> generateP256Key();

[[nodiscard]] Result<std::string> readFile(const std::filesystem::path& path);
// Writes to a temporary file in the same directory, fsyncs and renames, so a
// reader never sees half a key. `mode` applies from creation on.
[[nodiscard]] Status writeFileAtomically(const std::filesystem::path& path, std::string_view data,
                                         unsigned mode);

// Every certificate in a PEM text; `what` names the input in errors. Empty is an error.
[[nodiscard]] Result<CertificateList> parseCertificatesPem(std::string_view pem,
                                                           std::string_view what);
[[nodiscard]] Result<CertificateList> readCertificatesPem(const std::filesystem::path& path);
[[nodiscard]] Result<bssl::UniquePtr<EVP_PKEY>> parsePrivateKeyPem(std::string_view pem,
                                                                   std::string_view what);
[[nodiscard]] Result<bssl::UniquePtr<EVP_PKEY>> readPrivateKeyPem(const std::filesystem::path& path);

[[nodiscard]] std::string certificatePem(X509* cert);
[[nodiscard]] std::string privateKeyPem(EVP_PKEY* key);  // PKCS#8, unencrypted
[[nodiscard]] bssl::UniquePtr<X509> copyCertificate(X509* cert);  // a new reference
[[nodiscard]] CertificateList copyCertificates(const CertificateList& certs);

// A stack of borrowed certificates: freeing it leaves the certificates alone
// (bssl::UniquePtr<STACK_OF(X509)> would free them too).
struct BorrowedStackFree {
  void operator()(STACK_OF(X509)* stack) const { sk_X509_free(stack); }
};
using BorrowedCertificateStack = std::unique_ptr<STACK_OF(X509), BorrowedStackFree>;

[[nodiscard]] std::string serialHex(X509* cert);
[[nodiscard]] std::string sha256Fingerprint(X509* cert);  // hex of the DER's SHA-256
[[nodiscard]] std::string subjectText(X509* cert);        // one-line RFC 2253 form
[[nodiscard]] Seconds notBefore(X509* cert);
[[nodiscard]] Seconds notAfter(X509* cert);

// A certificate described field by field. The mesh CA issues from it, and the
// tests craft the bad certificates a peer might present from it.
struct CertificateSpec {
  std::string commonName;    // empty: no CN (Istio's workload certificates have an empty subject)
  std::string organization;  // empty: no O
  std::vector<std::string> uriSans;  // raw bytes, written as given (tests put NULs in them)
  std::vector<std::string> dnsSans;
  bool sanCritical = true;  // RFC 5280: critical when the subject is empty
  bool isCa = false;
  std::optional<int> pathLength;  // CA only
  bool addKeyUsage = true;
  bool digitalSignature = true;
  bool keyCertSign = false;
  bool crlSign = false;
  bool addExtendedKeyUsage = true;
  bool serverAuth = true;
  bool clientAuth = true;
  Seconds notBefore;
  Seconds notAfter;
};

// Signs `spec` for `subjectKey` with `issuerKey`; `issuer` null means self-signed.
[[nodiscard]] Result<bssl::UniquePtr<X509>> buildCertificate(const CertificateSpec& spec,
                                                             EVP_PKEY* subjectKey, X509* issuer,
                                                             EVP_PKEY* issuerKey);

}  // namespace meshlock::identity
