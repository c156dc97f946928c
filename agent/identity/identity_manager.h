// Workload identities of the node: one certificate per service account that
// has a pod here (refcounted), renewed at half its life, with server and
// client TLS contexts that follow renewals and trust bundle changes.
#pragma once

#include <openssl/ssl.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "identity/ca_client.h"
#include "identity/mesh_ca.h"
#include "identity/session_cache.h"
#include "identity/spiffe_id.h"
#include "identity/tls_context.h"
#include "identity/trust_bundle.h"

namespace meshlock::identity {

// Certificates from a remote CA (istiod's CA API): no CA key on the node.
// Requests run on worker threads of their own, never on the caller's.
struct RemoteCaConfig {
  CaClientConfig client;
  unsigned workers = 2;  // requests in flight at once (one connection each)
  // After a failure: retry in [d/2, d], d = initial * 2^(failures-1) up to max.
  std::chrono::milliseconds retryInitial{1000};
  std::chrono::milliseconds retryMax{60000};
};

struct IdentityConfig {
  std::filesystem::path caDirectory;  // Istio plug-in layout; a root is generated if empty
  // Set: certificates come from this CA and the trust bundle from its
  // client.rootFile; caDirectory is not used.
  std::optional<RemoteCaConfig> remoteCa;
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
  // "ready", or "renewing" once renewal is due and has not succeeded yet
  // (then lastError says why; the certificate stays in use while valid).
  std::string state = "ready";
  std::string lastError;
};

// An identity a pod of this node needs whose certificate the remote CA has
// not given yet: such pods are not served (fail closed).
struct PendingCertificate {
  SpiffeId id;
  std::string state;      // "pending" (asked, no answer yet) or "failed" (retrying)
  std::string lastError;  // the last failure, as logged
  int failures = 0;       // consecutive
  std::optional<std::chrono::milliseconds> retryIn;  // when failed
};

// What one tick did.
struct TickReport {
  std::vector<SpiffeId> renewed;
  std::vector<SpiffeId> issued;  // first certificates from the remote CA since the last tick
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
  // With a remote CA the certificate must already be there (see want()):
  // otherwise an error saying it is pending, and nothing is counted.
  [[nodiscard]] Status acquire(const SpiffeId& id);
  // Remote CA: the identities of every pod the node should serve. Asks the
  // CA for those without a certificate (in the background, with backoff after
  // failures) and forgets those no pod needs; returns the ones still
  // without a certificate. Local CA: issues nothing, returns nothing.
  [[nodiscard]] std::set<SpiffeId> want(const std::set<SpiffeId>& ids);
  [[nodiscard]] bool remote() const { return config_.remoteCa.has_value(); }
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
  [[nodiscard]] std::vector<PendingCertificate> pending() const;
  // Remote CA requests by result: "success", a gRPC code ("unavailable",
  // "permission_denied", ...), "invalid_response" or "local" (CaError::reason).
  [[nodiscard]] std::map<std::string, uint64_t> caRequests() const;
  [[nodiscard]] const std::optional<RemoteCaConfig>& remoteCa() const { return config_.remoteCa; }
  [[nodiscard]] const TrustDomain& trustDomain() const { return config_.trustDomain; }
  [[nodiscard]] const MeshCa& ca() const {
    MESHLOCK_CHECK(ca_ != nullptr);  // local modes only
    return *ca_;
  }

  ~IdentityManager();
  IdentityManager(const IdentityManager&) = delete;
  IdentityManager& operator=(const IdentityManager&) = delete;

 private:
  using Steady = std::chrono::steady_clock;
  struct Entry {
    int pods = 0;
    std::shared_ptr<const WorkloadCertificate> certificate;  // null until the remote CA answers
    Seconds renewAt;
    bssl::UniquePtr<SSL_CTX> server;
    bssl::UniquePtr<SSL_CTX> client;
    // Remote CA requests.
    bool inFlight = false;
    int failures = 0;
    std::string lastError;
    Steady::time_point nextAttempt{};
  };

  IdentityManager(IdentityConfig config, Clock clock);
  Status issueLocked(const SpiffeId& id, Entry& entry, Seconds now);
  Status installLocked(const SpiffeId& id, Entry& entry, WorkloadCertificate issued, Seconds now);
  void requestLocked(const SpiffeId& id, Entry& entry);
  void reloadRemoteRootsLocked(TickReport& report);
  void workerLoop(std::unique_ptr<CaClient> client);
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
  // Remote CA: the queue the workers take identities from, what they did.
  std::map<std::string, uint64_t> caRequests_;
  std::vector<SpiffeId> issuedSinceTick_;
  std::vector<SpiffeId> renewedSinceTick_;
  std::vector<std::string> errorsSinceTick_;
  std::string rootSignature_;
  std::mutex queueMutex_;
  std::condition_variable queueReady_;
  std::deque<SpiffeId> queue_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace meshlock::identity
