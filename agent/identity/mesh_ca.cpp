// Mesh CA: loading the plug-in layout, generating a root, issuing (mesh_ca.h).
#include "identity/mesh_ca.h"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fmt/chrono.h>
#include <fmt/format.h>
#include <system_error>

namespace meshlock::identity {
namespace {

constexpr std::chrono::seconds kRootLifetime = std::chrono::hours(24 * 365 * 10);
constexpr std::chrono::seconds kMaxBackdate{60};

bool isSelfIssued(X509* cert) {
  return X509_NAME_cmp(X509_get_subject_name(cert), X509_get_issuer_name(cert)) == 0;
}

Status checkCanSign(const std::filesystem::path& file, X509* cert, Seconds now) {
  if (X509_check_ca(cert) == 0) {
    return fail(fmt::format("{}: {} is not a CA certificate (basicConstraints CA:TRUE needed)",
                            file.string(), subjectText(cert)));
  }
  uint32_t flags = X509_get_extension_flags(cert);
  if ((flags & EXFLAG_KUSAGE) && !(X509_get_key_usage(cert) & KU_KEY_CERT_SIGN)) {
    return fail(fmt::format("{}: key usage lacks keyCertSign", file.string()));
  }
  if (notAfter(cert) <= now) return fail(fmt::format("{}: CA certificate has expired", file.string()));
  return {};
}

// Holds an exclusive flock on <dir>/.meshlock-ca.lock so that two agents
// sharing the directory never both generate a root.
class DirectoryLock {
 public:
  static Result<DirectoryLock> take(const std::filesystem::path& directory) {
    std::string path = (directory / ".meshlock-ca.lock").string();
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return failErrno(fmt::format("{}: open", path));
    if (::flock(fd, LOCK_EX) != 0) {
      int err = errno;
      ::close(fd);
      return failErrno(fmt::format("{}: flock", path), err);
    }
    return DirectoryLock(fd);
  }
  DirectoryLock(DirectoryLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  DirectoryLock& operator=(DirectoryLock&&) = delete;
  ~DirectoryLock() {
    if (fd_ >= 0) ::close(fd_);  // closing releases the lock
  }

 private:
  explicit DirectoryLock(int fd) : fd_(fd) {}
  int fd_;
};

Status generateRoot(const std::filesystem::path& directory, const TrustDomain& trustDomain,
                    Seconds now) {
  auto key = generateP256Key();
  if (!key) return std::unexpected(key.error());
  CertificateSpec spec;
  spec.organization = trustDomain.name();
  spec.commonName = "meshlock root CA";
  spec.isCa = true;
  spec.digitalSignature = false;
  spec.keyCertSign = true;
  spec.crlSign = true;
  spec.addExtendedKeyUsage = false;
  spec.sanCritical = false;
  spec.notBefore = now - kMaxBackdate;
  spec.notAfter = now + kRootLifetime;
  auto root = buildCertificate(spec, key->get(), nullptr, key->get());
  if (!root) return std::unexpected(root.error().context("generating the mesh root"));
  std::string rootPem = certificatePem(root->get());
  // The key first: a ca-cert.pem on disk always has its key beside it.
  if (auto ok = writeFileAtomically(directory / kCaKeyFile, privateKeyPem(key->get()), 0600); !ok) {
    return ok;
  }
  for (const char* file : {kRootCertFile, kCertChainFile, kCaCertFile}) {
    if (auto ok = writeFileAtomically(directory / file, rootPem, 0644); !ok) return ok;
  }
  return {};
}

}  // namespace

std::string WorkloadCertificate::chainPem() const {
  std::string out = certificatePem(leaf.get());
  for (const auto& cert : chain) out += certificatePem(cert.get());
  return out;
}

Result<std::unique_ptr<MeshCa>> MeshCa::loadPlugin(const std::filesystem::path& directory,
                                                   Seconds now) {
  std::unique_ptr<MeshCa> ca(new MeshCa());
  ca->directory_ = directory;
  auto caCerts = readCertificatesPem(directory / kCaCertFile);
  if (!caCerts) return std::unexpected(caCerts.error());
  ca->caCert_ = std::move(caCerts->front());
  auto key = readPrivateKeyPem(directory / kCaKeyFile);
  if (!key) return std::unexpected(key.error());
  ca->caKey_ = std::move(*key);
  if (!X509_check_private_key(ca->caCert_.get(), ca->caKey_.get())) {
    ERR_clear_error();
    return fail(fmt::format("{}: key does not match {}", (directory / kCaKeyFile).string(),
                            (directory / kCaCertFile).string()));
  }
  if (auto ok = checkCanSign(directory / kCaCertFile, ca->caCert_.get(), now); !ok) {
    return std::unexpected(ok.error());
  }
  struct stat keyStat {};
  if (::stat((directory / kCaKeyFile).c_str(), &keyStat) == 0 && (keyStat.st_mode & 0077) != 0) {
    spdlog::warn("identity: {} is readable by group or others (mode {:o}); it should be 0600",
                 (directory / kCaKeyFile).string(), keyStat.st_mode & 0777);
  }
  ca->selfSigned_ = isSelfIssued(ca->caCert_.get());

  // The chain sent after each leaf: cert-chain.pem (Istio puts ca-cert first),
  // or ca-cert alone; self-signed roots are left out, peers have them.
  CertificateList chain;
  std::error_code ec;
  if (std::filesystem::exists(directory / kCertChainFile, ec)) {
    auto certs = readCertificatesPem(directory / kCertChainFile);
    if (!certs) return std::unexpected(certs.error());
    chain = std::move(*certs);
  } else {
    chain.push_back(copyCertificate(ca->caCert_.get()));
  }
  if (X509_cmp(chain.front().get(), ca->caCert_.get()) != 0) {
    chain.insert(chain.begin(), copyCertificate(ca->caCert_.get()));
  }
  std::erase_if(chain, [](const auto& cert) { return isSelfIssued(cert.get()); });
  ca->chain_ = std::move(chain);

  // ca-cert must lead to a root in root-cert.pem, or nobody would accept our leaves.
  auto roots = readCertificatesPem(directory / kRootCertFile);
  if (!roots) return std::unexpected(roots.error());
  bssl::UniquePtr<X509_STORE> store(X509_STORE_new());
  BorrowedCertificateStack untrusted(sk_X509_new_null());
  bssl::UniquePtr<X509_STORE_CTX> context(X509_STORE_CTX_new());
  if (!store || !untrusted || !context) return fail(takeSslErrors("X509_STORE"));
  for (const auto& root : *roots) X509_STORE_add_cert(store.get(), root.get());
  for (const auto& cert : ca->chain_) sk_X509_push(untrusted.get(), cert.get());
  if (!X509_STORE_CTX_init(context.get(), store.get(), ca->caCert_.get(), untrusted.get())) {
    return fail(takeSslErrors("X509_STORE_CTX_init"));
  }
  X509_VERIFY_PARAM_set_time(X509_STORE_CTX_get0_param(context.get()),
                             static_cast<time_t>(now.time_since_epoch().count()));
  if (X509_verify_cert(context.get()) != 1) {
    int error = X509_STORE_CTX_get_error(context.get());
    ERR_clear_error();
    return fail(fmt::format("{}: does not chain to {} (with {}): {}",
                            (directory / kCaCertFile).string(),
                            (directory / kRootCertFile).string(),
                            (directory / kCertChainFile).string(),
                            X509_verify_cert_error_string(error)));
  }
  ca->roots_ = std::move(*roots);
  return ca;
}

Result<std::unique_ptr<MeshCa>> MeshCa::open(const std::filesystem::path& directory,
                                             const TrustDomain& trustDomain, Seconds now) {
  std::error_code ec;
  std::filesystem::create_directories(directory, ec);
  if (ec) return fail(fmt::format("{}: create directory: {}", directory.string(), ec.message()));
  auto lock = DirectoryLock::take(directory);
  if (!lock) return std::unexpected(lock.error());
  if (!std::filesystem::exists(directory / kCaCertFile, ec)) {
    if (std::filesystem::exists(directory / kCaKeyFile, ec)) {
      return fail(fmt::format("{}: {} exists without {}; refusing to overwrite a key",
                              directory.string(), kCaKeyFile, kCaCertFile));
    }
    if (auto ok = generateRoot(directory, trustDomain, now); !ok) {
      return std::unexpected(ok.error().context(directory.string()));
    }
    spdlog::warn(
        "identity: generated a self-signed mesh root CA in {} (trust domain {}). Every node "
        "must share this directory (or a copy of it) for mTLS between nodes: certificates "
        "from a node with another root are refused. Whoever can read {} can impersonate "
        "every workload of the mesh.",
        directory.string(), trustDomain.name(), (directory / kCaKeyFile).string());
  }
  auto ca = loadPlugin(directory, now);
  if (ca) {
    spdlog::info("identity: mesh CA {} from {} ({}), serial {}, valid until {:%F %T}Z",
                 subjectText((*ca)->signingCertificate()), directory.string(),
                 (*ca)->selfSigned() ? "self-signed root" : "intermediate under root-cert.pem",
                 serialHex((*ca)->signingCertificate()),
                 notAfter((*ca)->signingCertificate()));
  }
  return ca;
}

Result<MeshCa::SignedLeaf> MeshCa::sign(EVP_PKEY* subjectKey, const SpiffeId& id, Seconds now,
                                        std::chrono::seconds lifetime,
                                        const std::vector<std::string>& dnsNames) const {
  if (lifetime <= std::chrono::seconds::zero()) return fail("certificate lifetime must be positive");
  std::chrono::seconds backdate = std::min(kMaxBackdate, lifetime / 10);
  CertificateSpec spec;
  spec.uriSans = {id.uri()};
  spec.dnsSans = dnsNames;
  spec.notBefore = now - backdate;
  // Never beyond the signing CA: peers would refuse the chain before the leaf expires.
  spec.notAfter = std::min(now + lifetime, notAfter(caCert_.get()));
  if (spec.notAfter <= now) return fail(fmt::format("issuing {}: the signing CA has expired", id.uri()));
  auto leaf = buildCertificate(spec, subjectKey, caCert_.get(), caKey_.get());
  if (!leaf) return std::unexpected(leaf.error().context(fmt::format("issuing {}", id.uri())));
  return SignedLeaf{.leaf = std::move(*leaf), .notBefore = spec.notBefore, .notAfter = spec.notAfter};
}

Result<WorkloadCertificate> MeshCa::issue(const SpiffeId& id, Seconds now,
                                          std::chrono::seconds lifetime) const {
  auto key = generateP256Key();
  if (!key) return std::unexpected(key.error());
  auto signed_leaf = sign(key->get(), id, now, lifetime);
  if (!signed_leaf) return std::unexpected(signed_leaf.error());
  WorkloadCertificate out{
      .id = id,
      .key = std::move(*key),
      .leaf = std::move(signed_leaf->leaf),
      .chain = copyCertificates(chain_),
      .issuedAt = now,
      .notBefore = signed_leaf->notBefore,
      .notAfter = signed_leaf->notAfter,
      .serial = {},
  };
  out.serial = serialHex(out.leaf.get());
  return out;
}

}  // namespace meshlock::identity
