// Client-side TLS session cache for outbound mTLS: the newest session ticket
// per (local identity, destination, expected peer identities), bounded LRU.
// A session is offered only under the context it was made with (same
// certificate and trust bundle) and only to connections expecting the same
// peers; the server's identity is verified again on resumption anyway.
#pragma once

#include <openssl/ssl.h>

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/error.h"
#include "identity/spiffe_id.h"

namespace meshlock::identity {

// Who connects where, expecting whom: sessions are never shared across keys.
struct SessionKey {
  SpiffeId local;
  std::string destination;       // "10.0.0.7:8080", or the SNI
  std::vector<SpiffeId> expected;  // order does not matter

  // One string for the map: the fields with the peers sorted.
  [[nodiscard]] std::string text() const;
};

struct SessionCacheCounters {
  uint64_t offered = 0;  // a cached session was set on a new connection
  uint64_t missed = 0;   // none was cached for the key
  uint64_t stale = 0;    // one was cached under an older context (renewal, bundle change) and dropped
  uint64_t stored = 0;   // tickets received
  uint64_t evicted = 0;  // keys dropped by the LRU bound
};

class ClientSessionCache {
 public:
  static constexpr size_t kDefaultCapacity = 1024;
  explicit ClientSessionCache(size_t capacity = kDefaultCapacity);
  ~ClientSessionCache();
  ClientSessionCache(const ClientSessionCache&) = delete;
  ClientSessionCache& operator=(const ClientSessionCache&) = delete;

  // Before the handshake of a client SSL of an identity context (session id
  // context set): offers the cached session for `key` if it was made under
  // the same context, and routes the tickets this connection receives into
  // the cache (the connection holds a reference to its slot, not a session).
  // Connections may outlive the cache: their tickets are then dropped.
  [[nodiscard]] Status prepare(SSL* ssl, const SessionKey& key);

  // Drops every key of `local` (its last pod went away).
  void forget(const SpiffeId& local);

  [[nodiscard]] size_t size() const;
  [[nodiscard]] SessionCacheCounters counters() const;

 private:
  struct Slot;
  struct Shared;
  std::shared_ptr<Slot> slotFor(const SessionKey& key);

  const size_t capacity_;
  std::shared_ptr<Shared> shared_;
  std::list<std::shared_ptr<Slot>> lru_;  // most recently used first; guarded by shared_->mutex
  std::unordered_map<std::string, std::list<std::shared_ptr<Slot>>::iterator> index_;
};

}  // namespace meshlock::identity
