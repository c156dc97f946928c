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
  if (manager->config_.remoteCa) {
    RemoteCaConfig& remote = *manager->config_.remoteCa;
    remote.workers = std::clamp(remote.workers, 1u, 64u);
    manager->rootSignature_ = fileSignature(remote.client.rootFile);
    auto roots = readCertificatesPem(remote.client.rootFile);
    if (!roots) return std::unexpected(roots.error().context("identity: caRootFile"));
    auto bundle = TrustBundle::create(std::move(*roots), 1);
    if (!bundle) return std::unexpected(bundle.error().context("identity: caRootFile " + remote.client.rootFile.string()));
    manager->bundle_ = std::move(*bundle);
    manager->ticketKeys_ = std::make_shared<SessionTicketKeys>(manager->config_.ticketKeyRotation, now);
    std::vector<std::unique_ptr<CaClient>> clients;
    for (unsigned i = 0; i < remote.workers; ++i) {
      auto client = CaClient::create(remote.client, manager->config_.trustDomain);
      if (!client) return std::unexpected(client.error().context("identity: CA client"));
      clients.push_back(std::move(*client));
    }
    for (auto& client : clients)
      manager->workers_.emplace_back([m = manager.get(), c = std::move(client)]() mutable { m->workerLoop(std::move(c)); });
    spdlog::info("identity: trust domain {}, certificates from the CA at {} ({} worker(s)), {} root(s) from {}, "
                 "certificates for {} s; no CA key on this node",
                 manager->config_.trustDomain.name(), remote.client.address, remote.workers,
                 manager->bundle_->roots().size(), remote.client.rootFile.string(),
                 manager->config_.certificateLifetime.count());
    return manager;
  }
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

IdentityManager::~IdentityManager() {
  {
    std::lock_guard lock(queueMutex_);
    stopping_ = true;
  }
  queueReady_.notify_all();
  for (std::thread& worker : workers_) worker.join();  // a request in flight ends by its deadline
}

Status IdentityManager::issueLocked(const SpiffeId& id, Entry& entry, Seconds now) {
  auto issued = ca_->issue(id, now, config_.certificateLifetime);
  if (!issued) return std::unexpected(issued.error());
  return installLocked(id, entry, std::move(*issued), now);
}

Status IdentityManager::installLocked(const SpiffeId& id, Entry& entry, WorkloadCertificate issued, Seconds now) {
  auto certificate = std::make_shared<const WorkloadCertificate>(std::move(issued));
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
  if (remote()) {
    if (it == entries_.end() || !it->second.certificate) {
      return fail(fmt::format("identity: the certificate of {} is pending from the CA at {}{}", id.uri(),
                              config_.remoteCa->client.address,
                              it != entries_.end() && !it->second.lastError.empty()
                                  ? " (last attempt: " + it->second.lastError + ")" : ""));
    }
  }
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
  // A remote CA's certificate stays while want() still lists the identity
  // (a pod restarting); want() drops it when no pod needs it.
  if (--it->second.pods == 0 && !remote()) {
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
  if (remote()) {
    reloadRemoteRootsLocked(report);
    const auto steady = Steady::now();
    for (auto& [id, entry] : entries_) {
      if (entry.inFlight || steady < entry.nextAttempt) continue;
      if (!entry.certificate || now >= entry.renewAt) requestLocked(id, entry);
    }
    report.issued = std::exchange(issuedSinceTick_, {});
    report.renewed = std::exchange(renewedSinceTick_, {});
    report.errors = std::exchange(errorsSinceTick_, {});
    return report;
  }
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
  if (!it->second.certificate) {
    return fail(fmt::format("identity: the certificate of {} is pending from the CA", local.uri()));
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
  const Seconds now = clock_();
  for (const auto& [id, entry] : entries_) {
    if (!entry.certificate) continue;  // pending(): not issued yet
    const bool renewing = remote() && now >= entry.renewAt;
    out.push_back(CertificateStatus{
        .id = id,
        .pods = entry.pods,
        .serial = entry.certificate->serial,
        .notBefore = entry.certificate->notBefore,
        .notAfter = entry.certificate->notAfter,
        .renewAt = entry.renewAt,
        .chainPem = entry.certificate->chainPem(),
        .state = renewing ? "renewing" : "ready",
        .lastError = entry.lastError,
    });
  }
  return out;
}

std::set<SpiffeId> IdentityManager::want(const std::set<SpiffeId>& ids) {
  std::set<SpiffeId> waiting;
  if (!remote()) return waiting;
  std::lock_guard lock(mutex_);
  for (const SpiffeId& id : ids) {
    if (id.trustDomain() != config_.trustDomain) continue;  // acquire() names it
    auto [it, added] = entries_.try_emplace(id);
    if (added) requestLocked(id, it->second);
    if (!it->second.certificate) waiting.insert(id);
  }
  // Asked for once, but no pod needs them any more (and none holds them).
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (it->second.pods > 0 || ids.contains(it->first)) {
      ++it;
      continue;
    }
    spdlog::info("identity: dropped {} (no pod left on this node)", it->first.uri());
    clientSessions_.forget(it->first);
    it = entries_.erase(it);
  }
  return waiting;
}

void IdentityManager::requestLocked(const SpiffeId& id, Entry& entry) {
  entry.inFlight = true;
  {
    std::lock_guard lock(queueMutex_);
    queue_.push_back(id);
  }
  queueReady_.notify_one();
}

void IdentityManager::workerLoop(std::unique_ptr<CaClient> client) {
  for (;;) {
    std::optional<SpiffeId> next;
    {
      std::unique_lock lock(queueMutex_);
      queueReady_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      next = std::move(queue_.front());
      queue_.pop_front();
    }
    const SpiffeId& id = *next;
    const Seconds now = clock_();
    auto fetched = client->fetch(id, config_.certificateLifetime, now);  // no lock held: it blocks

    std::lock_guard lock(mutex_);
    ++caRequests_[fetched ? "success" : fetched.error().reason];
    auto it = entries_.find(id);
    if (it == entries_.end()) continue;  // no pod wants it any more
    Entry& entry = it->second;
    entry.inFlight = false;
    const bool first = entry.certificate == nullptr;
    Status installed = fetched ? installLocked(id, entry, std::move(*fetched), now)
                               : Status(std::unexpected(Error{fetched.error().describe()}));
    if (installed) {
      entry.failures = 0;
      entry.lastError.clear();
      entry.nextAttempt = {};
      (first ? issuedSinceTick_ : renewedSinceTick_).push_back(id);
      continue;
    }
    // Backoff with jitter: [d/2, d], d doubling from retryInitial up to retryMax.
    const RemoteCaConfig& remote = *config_.remoteCa;
    entry.failures = std::min(entry.failures + 1, 30);
    auto delay = remote.retryInitial * (int64_t{1} << std::min(entry.failures - 1, 20));
    delay = std::min<std::chrono::milliseconds>(delay, remote.retryMax);
    std::uniform_real_distribution<double> spread(0.5, 1.0);
    const auto wait = std::chrono::milliseconds(static_cast<int64_t>(static_cast<double>(delay.count()) * spread(random_)));
    entry.nextAttempt = Steady::now() + wait;
    entry.lastError = installed.error().describe();
    std::string message =
        entry.certificate
            ? fmt::format("identity: renewing {} failed (attempt {}), keeping the certificate valid until "
                          "{:%F %T}Z, retry in {} ms: {}",
                          id.uri(), entry.failures, entry.certificate->notAfter, wait.count(), entry.lastError)
            : fmt::format("identity: no certificate for {} yet (attempt {}), its pods are not served, retry in {} ms: {}",
                          id.uri(), entry.failures, wait.count(), entry.lastError);
    spdlog::warn("{}", message);
    errorsSinceTick_.push_back(std::move(message));
  }
}

void IdentityManager::reloadRemoteRootsLocked(TickReport& report) {
  const std::filesystem::path& file = config_.remoteCa->client.rootFile;
  std::string signature = fileSignature(file);
  if (signature == rootSignature_ || signature == failedCaSignature_) return;
  auto roots = readCertificatesPem(file);
  Result<std::shared_ptr<const TrustBundle>> bundle =
      roots ? TrustBundle::create(std::move(*roots), bundle_->generation() + 1)
            : Result<std::shared_ptr<const TrustBundle>>(std::unexpected(roots.error()));
  if (!bundle) {
    failedCaSignature_ = signature;  // retried when the file changes again
    std::string message = fmt::format("identity: caRootFile {} changed but does not load, keeping the previous "
                                      "trust bundle: {}", file.string(), bundle.error().describe());
    spdlog::error("{}", message);
    report.errors.push_back(std::move(message));
    return;
  }
  rootSignature_ = signature;
  failedCaSignature_.clear();
  if ((*bundle)->fingerprint() == bundle_->fingerprint()) return;
  bundle_ = std::move(*bundle);
  report.trustBundleChanged = true;
  spdlog::info("identity: trust bundle generation {} with {} root(s) from {}", bundle_->generation(),
               bundle_->roots().size(), file.string());
  for (auto& [id, entry] : entries_) {
    if (!entry.certificate) continue;
    if (auto ok = buildContextsLocked(entry); !ok) {
      spdlog::error("identity: {}: {}", id.uri(), ok.error().describe());
      report.errors.push_back(ok.error().describe());
    }
  }
}

std::vector<PendingCertificate> IdentityManager::pending() const {
  std::lock_guard lock(mutex_);
  std::vector<PendingCertificate> out;
  const auto steady = Steady::now();
  for (const auto& [id, entry] : entries_) {
    if (entry.certificate) continue;
    PendingCertificate item{.id = id, .state = entry.failures > 0 ? "failed" : "pending",
                            .lastError = entry.lastError, .failures = entry.failures, .retryIn = std::nullopt};
    if (entry.failures > 0 && !entry.inFlight)
      item.retryIn = std::max(std::chrono::milliseconds(0),
                              std::chrono::duration_cast<std::chrono::milliseconds>(entry.nextAttempt - steady));
    out.push_back(std::move(item));
  }
  return out;
}

std::map<std::string, uint64_t> IdentityManager::caRequests() const {
  std::lock_guard lock(mutex_);
  return caRequests_;
}

}  // namespace meshlock::identity
