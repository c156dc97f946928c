// Workload identities of the node: one certificate per service account that
// has a pod here (refcounted), renewed at half its life, with server and
// client TLS contexts that follow renewals and trust bundle changes.
#pragma once

#include <openssl/ssl.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "common/error.h"
#include "identity/mesh_ca.h"
#include "identity/session_cache.h"
#include "identity/spiffe_id.h"
#include "identity/tls_context.h"
#include "identity/trust_bundle.h"

namespace meshlock::identity {

struct IdentityConfig {
  std::filesystem::path caDirectory;  // Istio plug-in layout; a root is generated if empty
  TrustDomain trustDomain;
  std::chrono::seconds certificateLifetime = std::chrono::hours(24);
  // Renewal at renewFraction of the lifetime, +/- renewJitter of the lifetime.
  double renewFraction = 0.5;
  double renewJitter = 0.05;
  std::chrono::seconds ticketKeyRotation = std::chrono::hours(1);
  MeshTlsSettings tls;
  size_t clientSessionCapacity = ClientSessionCache::kDefaultCapacity;  // outbound resumption keys
};

// For the admin API and logs.
struct CertificateStatus {
  SpiffeId id;
  int pods = 0;
  std::string serial;
  Seconds notBefore;
  Seconds notAfter;
  Seconds renewAt;
  std::string chainPem;
};

// What one tick did.
struct TickReport {
  std::vector<SpiffeId> renewed;
  bool trustBundleChanged = false;
  bool caReloaded = false;
  bool ticketKeyRotated = false;
  std::vector<std::string> errors;  // already logged; the previous state is kept
};

class IdentityManager {
 public:
  // Opens (or generates) the CA in config.caDirectory and loads the trust bundle.
  [[nodiscard]] static Result<std::unique_ptr<IdentityManager>> create(IdentityConfig config,
                                                                       Clock clock = systemNow);

  // A pod of `id` appeared: the first one issues its certificate and contexts.
  [[nodiscard]] Status acquire(const SpiffeId& id);
  // A pod of `id` went away: the last one drops its certificate. Connections
  // already established keep their own reference to the old context.
  void release(const SpiffeId& id);

  // Called by the agent's timer (about once a second) with the current time:
  // renews certificates that reached their renewal time, reloads the CA
  // directory and the trust bundle when its files changed, rotates ticket keys.
  TickReport tick(Seconds now);

  // Contexts for new handshakes of `local`, as new references (SSL_new takes
  // its own). Rebuilt after each renewal or bundle change, so that sessions
  // of an older certificate or bundle are never resumed.
  [[nodiscard]] Result<bssl::UniquePtr<SSL_CTX>> serverContext(const SpiffeId& local) const;
  [[nodiscard]] Result<bssl::UniquePtr<SSL_CTX>> clientContext(const SpiffeId& local) const;
  // SSL_new on those contexts with the role and expected peers already set.
  [[nodiscard]] Result<bssl::UniquePtr<SSL>> newServerSession(
      const SpiffeId& local, ExpectedPeers expected = ExpectedPeers::any()) const;
  [[nodiscard]] Result<bssl::UniquePtr<SSL>> newClientSession(const SpiffeId& local,
                                                              ExpectedPeers expected) const;

  // The mesh's minProtocolVersion changed: contexts for new handshakes are
  // rebuilt at once; established connections keep the context they began with.
  // An identity whose contexts cannot be rebuilt keeps its old ones (logged).
  void setMinimumVersion(TlsMinVersion version);
  [[nodiscard]] TlsMinVersion minimumVersion() const;

  // Outbound mTLS resumption: sessions per (local identity, destination,
  // expected peers). Contexts rebuilt after a renewal or a bundle change
  // never get an older session (the cache checks the session id context);
  // an identity's sessions go with its last pod.
  [[nodiscard]] ClientSessionCache& clientSessions() { return clientSessions_; }

  [[nodiscard]] std::shared_ptr<const TrustBundle> trustBundle() const;
  [[nodiscard]] std::vector<CertificateStatus> certificates() const;
  [[nodiscard]] const TrustDomain& trustDomain() const { return config_.trustDomain; }
  [[nodiscard]] const MeshCa& ca() const { return *ca_; }

 private:
  struct Entry {
    int pods = 0;
    std::shared_ptr<const WorkloadCertificate> certificate;
    Seconds renewAt;
    bssl::UniquePtr<SSL_CTX> server;
    bssl::UniquePtr<SSL_CTX> client;
  };

  IdentityManager(IdentityConfig config, Clock clock);
  Status issueLocked(const SpiffeId& id, Entry& entry, Seconds now);
  Status buildContextsLocked(Entry& entry);
  [[nodiscard]] std::string caFilesSignature() const;
  void reloadCaLocked(Seconds now, TickReport& report);
  Result<bssl::UniquePtr<SSL_CTX>> contextFor(const SpiffeId& local, TlsRole role) const;

  IdentityConfig config_;
  Clock clock_;
  mutable std::mutex mutex_;
  std::unique_ptr<MeshCa> ca_;
  std::shared_ptr<const TrustBundle> bundle_;
  std::shared_ptr<SessionTicketKeys> ticketKeys_;
  std::map<SpiffeId, Entry> entries_;
  std::string caSignature_;        // files as last loaded
  std::string failedCaSignature_;  // files that failed to load (logged once)
  std::mt19937_64 random_;
  ClientSessionCache clientSessions_;
};

}  // namespace meshlock::identity
