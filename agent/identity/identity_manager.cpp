// Refcounted workload identities, renewal and trust bundle reloads (identity_manager.h).
#include "identity/identity_manager.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <fmt/chrono.h>
#include <fmt/format.h>
#include <system_error>

namespace meshlock::identity {

IdentityManager::IdentityManager(IdentityConfig config, Clock clock)
    : config_(std::move(config)),
      clock_(std::move(clock)),
      random_(std::random_device{}()),
      clientSessions_(config_.clientSessionCapacity) {}

Result<std::unique_ptr<IdentityManager>> IdentityManager::create(IdentityConfig config,
                                                                 Clock clock) {
  if (!clock) clock = systemNow;
  if (config.certificateLifetime < std::chrono::seconds(2)) {
    return fail("identity: certificate lifetime must be at least 2 s");
  }
  std::unique_ptr<IdentityManager> manager(new IdentityManager(std::move(config), std::move(clock)));
  Seconds now = manager->clock_();
  manager->caSignature_ = manager->caFilesSignature();
  auto ca = MeshCa::open(manager->config_.caDirectory, manager->config_.trustDomain, now);
  if (!ca) return std::unexpected(ca.error().context("identity: mesh CA"));
  manager->ca_ = std::move(*ca);
  manager->caSignature_ = manager->caFilesSignature();  // generation may have written the files
  auto roots = loadTrustRoots(manager->config_.caDirectory);
  if (!roots) return std::unexpected(roots.error().context("identity: trust bundle"));
  auto bundle = TrustBundle::create(std::move(*roots), 1);
  if (!bundle) return std::unexpected(bundle.error().context("identity: trust bundle"));
  manager->bundle_ = std::move(*bundle);
  manager->ticketKeys_ =
      std::make_shared<SessionTicketKeys>(manager->config_.ticketKeyRotation, now);
  spdlog::info("identity: trust domain {}, {} root(s) in the trust bundle, certificates for {} s",
               manager->config_.trustDomain.name(), manager->bundle_->roots().size(),
               manager->config_.certificateLifetime.count());
  return manager;
}

Status IdentityManager::issueLocked(const SpiffeId& id, Entry& entry, Seconds now) {
  auto issued = ca_->issue(id, now, config_.certificateLifetime);
  if (!issued) return std::unexpected(issued.error());
  auto certificate = std::make_shared<const WorkloadCertificate>(std::move(*issued));
  // The real lifetime: shorter than configured when the signing CA expires first.
  double lifetime = static_cast<double>((certificate->notAfter - certificate->issuedAt).count());
  std::uniform_real_distribution<double> jitter(-config_.renewJitter, config_.renewJitter);
  double fraction = std::clamp(config_.renewFraction + jitter(random_), 0.1, 0.9);
  auto renewAfter = std::chrono::seconds(static_cast<int64_t>(lifetime * fraction));
  Entry candidate;
  candidate.certificate = certificate;
  if (auto ok = buildContextsLocked(candidate); !ok) return ok;
  entry.certificate = std::move(certificate);
  entry.server = std::move(candidate.server);
  entry.client = std::move(candidate.client);
  entry.renewAt = now + std::max(renewAfter, std::chrono::seconds(1));
  spdlog::info("identity: issued {} serial {} valid until {:%F %T}Z, renewal at {:%F %T}Z", id.uri(),
               entry.certificate->serial, entry.certificate->notAfter, entry.renewAt);
  return {};
}

Status IdentityManager::buildContextsLocked(Entry& entry) {
  MeshContextParams params{
      .role = TlsRole::kServer,
      .certificate = entry.certificate.get(),
      .bundle = bundle_,
      .settings = config_.tls,
      .ticketKeys = ticketKeys_,
      .clock = clock_,
  };
  auto server = buildMeshContext(params);
  if (!server) return std::unexpected(server.error());
  params.role = TlsRole::kClient;
  params.ticketKeys = nullptr;
  auto client = buildMeshContext(params);
  if (!client) return std::unexpected(client.error());
  entry.server = std::move(*server);
  entry.client = std::move(*client);
  return {};
}

Status IdentityManager::acquire(const SpiffeId& id) {
  if (id.trustDomain() != config_.trustDomain) {
    return fail(fmt::format("identity: {} is not in trust domain {}", id.uri(),
                            config_.trustDomain.name()));
  }
  std::lock_guard lock(mutex_);
  auto it = entries_.find(id);
  if (it != entries_.end()) {
    ++it->second.pods;
    return {};
  }
  Entry entry;
  if (auto ok = issueLocked(id, entry, clock_()); !ok) return ok;
  entry.pods = 1;
  entries_.emplace(id, std::move(entry));
  return {};
}

void IdentityManager::release(const SpiffeId& id) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(id);
  MESHLOCK_CHECK(it != entries_.end() && it->second.pods > 0);  // a release without acquire
  if (--it->second.pods == 0) {
    spdlog::info("identity: dropped {} (no pod left on this node)", id.uri());
    entries_.erase(it);
    clientSessions_.forget(id);
  }
}

std::string IdentityManager::caFilesSignature() const {
  // Inode, size and mtime of every file the CA and the bundle are read from.
  std::string signature;
  auto add = [&](const std::filesystem::path& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
      signature += path.filename().string() + ":absent;";
      return;
    }
    signature += fmt::format("{}:{}:{}:{}.{};", path.filename().string(), st.st_ino, st.st_size,
                             st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
  };
  for (const char* file : {kCaCertFile, kCaKeyFile, kRootCertFile, kCertChainFile}) {
    add(config_.caDirectory / file);
  }
  std::error_code ec;
  std::vector<std::filesystem::path> extra;
  for (const auto& entry :
       std::filesystem::directory_iterator(config_.caDirectory / "extra-roots", ec)) {
    extra.push_back(entry.path());
  }
  std::ranges::sort(extra);
  for (const auto& path : extra) add(path);
  return signature;
}

void IdentityManager::reloadCaLocked(Seconds now, TickReport& report) {
  std::string signature = caFilesSignature();
  if (signature == caSignature_ || signature == failedCaSignature_) return;
  auto ca = MeshCa::loadPlugin(config_.caDirectory, now);
  auto roots = ca ? loadTrustRoots(config_.caDirectory) : Result<CertificateList>(std::unexpected(ca.error()));
  Result<std::shared_ptr<const TrustBundle>> bundle =
      roots ? TrustBundle::create(std::move(*roots), bundle_->generation() + 1)
            : Result<std::shared_ptr<const TrustBundle>>(std::unexpected(roots.error()));
  if (!bundle) {
    failedCaSignature_ = signature;  // files may be half-written: retried when they change again
    std::string message = fmt::format("identity: CA directory {} changed but does not load, "
                                      "keeping the previous CA and bundle: {}",
                                      config_.caDirectory.string(), bundle.error().describe());
    spdlog::error("{}", message);
    report.errors.push_back(std::move(message));
    return;
  }
  caSignature_ = signature;
  failedCaSignature_.clear();
  bool caChanged = X509_cmp((*ca)->signingCertificate(), ca_->signingCertificate()) != 0;
  bool bundleChanged = (*bundle)->fingerprint() != bundle_->fingerprint();
  if (caChanged) {
    ca_ = std::move(*ca);
    report.caReloaded = true;
    spdlog::info("identity: CA reloaded from {}: {} serial {}", config_.caDirectory.string(),
                 subjectText(ca_->signingCertificate()), serialHex(ca_->signingCertificate()));
  }
  if (bundleChanged) {
    bundle_ = std::move(*bundle);
    report.trustBundleChanged = true;
    spdlog::info("identity: trust bundle generation {} with {} root(s)", bundle_->generation(),
                 bundle_->roots().size());
  }
  for (auto& [id, entry] : entries_) {
    // A new signing CA means new certificates; a new bundle, new contexts.
    if (caChanged) {
      entry.renewAt = now;
    } else if (bundleChanged) {
      if (auto ok = buildContextsLocked(entry); !ok) {
        spdlog::error("identity: {}: {}", id.uri(), ok.error().describe());
        report.errors.push_back(ok.error().describe());
      }
    }
  }
}

void IdentityManager::setMinimumVersion(TlsMinVersion version) {
  std::lock_guard lock(mutex_);
  if (config_.tls.minVersion == version) return;
  config_.tls.minVersion = version;
  for (auto& [id, entry] : entries_) {
    if (!entry.certificate) continue;
    if (auto ok = buildContextsLocked(entry); !ok)
      spdlog::error("identity: {}: new minimum TLS version not applied: {}", id.uri(), ok.error().describe());
  }
  spdlog::info("identity: minimum TLS version for mesh mTLS is now {}",
               version == TlsMinVersion::kTls13 ? "TLS 1.3" : "TLS 1.2");
}

TlsMinVersion IdentityManager::minimumVersion() const {
  std::lock_guard lock(mutex_);
  return config_.tls.minVersion;
}

TickReport IdentityManager::tick(Seconds now) {
  TickReport report;
  std::lock_guard lock(mutex_);
  report.ticketKeyRotated = ticketKeys_->rotateIfDue(now);
  reloadCaLocked(now, report);
  for (auto& [id, entry] : entries_) {
    if (now < entry.renewAt) continue;
    if (auto ok = issueLocked(id, entry, now); !ok) {
      // The old certificate stays in use; the next tick tries again.
      std::string message =
          fmt::format("identity: renewing {} failed: {}", id.uri(), ok.error().describe());
      spdlog::error("{}", message);
      report.errors.push_back(std::move(message));
      continue;
    }
    report.renewed.push_back(id);
  }
  return report;
}

Result<bssl::UniquePtr<SSL_CTX>> IdentityManager::contextFor(const SpiffeId& local,
                                                             TlsRole role) const {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(local);
  if (it == entries_.end()) {
    return fail(fmt::format("identity: no certificate for {} (no pod of it acquired)", local.uri()));
  }
  SSL_CTX* ctx = role == TlsRole::kServer ? it->second.server.get() : it->second.client.get();
  SSL_CTX_up_ref(ctx);
  return bssl::UniquePtr<SSL_CTX>(ctx);
}

Result<bssl::UniquePtr<SSL_CTX>> IdentityManager::serverContext(const SpiffeId& local) const {
  return contextFor(local, TlsRole::kServer);
}

Result<bssl::UniquePtr<SSL_CTX>> IdentityManager::clientContext(const SpiffeId& local) const {
  return contextFor(local, TlsRole::kClient);
}

Result<bssl::UniquePtr<SSL>> IdentityManager::newServerSession(const SpiffeId& local,
                                                               ExpectedPeers expected) const {
  auto ctx = serverContext(local);
  if (!ctx) return std::unexpected(ctx.error());
  bssl::UniquePtr<SSL> ssl(SSL_new(ctx->get()));
  if (!ssl) return fail(takeSslErrors("SSL_new"));
  SSL_set_accept_state(ssl.get());
  if (auto ok = setExpectedPeers(ssl.get(), std::move(expected)); !ok) return std::unexpected(ok.error());
  return ssl;
}

Result<bssl::UniquePtr<SSL>> IdentityManager::newClientSession(const SpiffeId& local,
                                                               ExpectedPeers expected) const {
  auto ctx = clientContext(local);
  if (!ctx) return std::unexpected(ctx.error());
  bssl::UniquePtr<SSL> ssl(SSL_new(ctx->get()));
  if (!ssl) return fail(takeSslErrors("SSL_new"));
  SSL_set_connect_state(ssl.get());
  if (auto ok = setExpectedPeers(ssl.get(), std::move(expected)); !ok) return std::unexpected(ok.error());
  return ssl;
}

std::shared_ptr<const TrustBundle> IdentityManager::trustBundle() const {
  std::lock_guard lock(mutex_);
  return bundle_;
}

std::vector<CertificateStatus> IdentityManager::certificates() const {
  std::lock_guard lock(mutex_);
  std::vector<CertificateStatus> out;
  for (const auto& [id, entry] : entries_) {
    out.push_back(CertificateStatus{
        .id = id,
        .pods = entry.pods,
        .serial = entry.certificate->serial,
        .notBefore = entry.certificate->notBefore,
        .notAfter = entry.certificate->notAfter,
        .renewAt = entry.renewAt,
        .chainPem = entry.certificate->chainPem(),
    });
  }
  return out;
}

}  // namespace meshlock::identity
