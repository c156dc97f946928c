// Trust bundle: roots, their X509_STORE and a fingerprint (see trust_bundle.h).
#include "identity/trust_bundle.h"

#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <fmt/chrono.h>
#include <fmt/format.h>
#include <system_error>

namespace meshlock::identity {

Result<std::shared_ptr<const TrustBundle>> TrustBundle::create(CertificateList roots,
                                                               uint64_t generation) {
  if (roots.empty()) return fail("trust bundle: no root certificate");
  std::shared_ptr<TrustBundle> bundle(new TrustBundle());
  bundle->store_.reset(X509_STORE_new());
  if (!bundle->store_) return fail(takeSslErrors("X509_STORE_new"));
  std::vector<std::string> fingerprints;
  for (auto& root : roots) {
    if (X509_check_ca(root.get()) == 0) {
      return fail(fmt::format("trust bundle: {} (subject {}) is not a CA certificate",
                              sha256Fingerprint(root.get()), subjectText(root.get())));
    }
    std::string fingerprint = sha256Fingerprint(root.get());
    if (std::ranges::find(fingerprints, fingerprint) != fingerprints.end()) continue;
    if (!X509_STORE_add_cert(bundle->store_.get(), root.get())) {
      return fail(takeSslErrors("X509_STORE_add_cert"));
    }
    fingerprints.push_back(std::move(fingerprint));
    bundle->roots_.push_back(std::move(root));
  }
  std::ranges::sort(fingerprints);
  SHA256_CTX sha;
  SHA256_Init(&sha);
  for (const auto& fingerprint : fingerprints) SHA256_Update(&sha, fingerprint.data(), fingerprint.size());
  uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256_Final(digest, &sha);
  for (uint8_t byte : digest) bundle->fingerprint_ += fmt::format("{:02x}", byte);
  bundle->generation_ = generation;
  return bundle;
}

std::string TrustBundle::pem() const {
  std::string out;
  for (const auto& root : roots_) out += certificatePem(root.get());
  return out;
}

Result<CertificateList> loadTrustRoots(const std::filesystem::path& caDirectory) {
  auto roots = readCertificatesPem(caDirectory / "root-cert.pem");
  if (!roots) return roots;
  std::error_code ec;
  std::filesystem::path extra = caDirectory / "extra-roots";
  if (!std::filesystem::is_directory(extra, ec)) return roots;
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(extra, ec)) {
    if (entry.path().extension() == ".pem") files.push_back(entry.path());
  }
  if (ec) return fail(fmt::format("{}: {}", extra.string(), ec.message()));
  std::ranges::sort(files);
  for (const auto& file : files) {
    auto more = readCertificatesPem(file);
    if (!more) return more;
    for (auto& cert : *more) roots->push_back(std::move(cert));
  }
  return roots;
}

}  // namespace meshlock::identity
