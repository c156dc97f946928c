// ClientSessionCache (session_cache.h): an LRU of slots, one per key, each
// holding the newest session; connections fill their slot as tickets arrive.
#include "identity/session_cache.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#include "identity/tls_context.h"
#include "identity/x509_util.h"

namespace meshlock::identity {

// What outlives the cache: connections keep slots, slots keep this.
struct ClientSessionCache::Shared {
  std::mutex mutex;  // the LRU, the index and every slot's session
  bool closed = false;
  SessionCacheCounters counters;
};

struct ClientSessionCache::Slot final : SessionSink {
  Slot(std::shared_ptr<Shared> shared, std::string key, SpiffeId local)
      : shared(std::move(shared)), key(std::move(key)), local(std::move(local)) {}

  void store(bssl::UniquePtr<SSL_SESSION> fresh) override {
    if (!SSL_SESSION_is_resumable(fresh.get())) return;
    std::lock_guard lock(shared->mutex);
    if (shared->closed) return;
    session = std::move(fresh);  // the newest wins: the latest ticket lifetime
    ++shared->counters.stored;
  }

  std::shared_ptr<Shared> shared;
  const std::string key;
  const SpiffeId local;
  bssl::UniquePtr<SSL_SESSION> session;  // guarded by shared->mutex
};

std::string SessionKey::text() const {
  std::vector<std::string> peers;
  peers.reserve(expected.size());
  for (const SpiffeId& id : expected) peers.push_back(id.uri());
  std::sort(peers.begin(), peers.end());
  std::string out = local.uri();
  out += '|';
  out += destination;
  for (const std::string& peer : peers) {
    out += '|';
    out += peer;
  }
  return out;
}

ClientSessionCache::ClientSessionCache(size_t capacity)
    : capacity_(std::max<size_t>(capacity, 1)), shared_(std::make_shared<Shared>()) {}

ClientSessionCache::~ClientSessionCache() {
  std::lock_guard lock(shared_->mutex);
  shared_->closed = true;
  for (auto& slot : lru_) slot->session.reset();
}

std::shared_ptr<ClientSessionCache::Slot> ClientSessionCache::slotFor(const SessionKey& key) {
  std::string text = key.text();
  if (auto it = index_.find(text); it != index_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second);
    return lru_.front();
  }
  lru_.push_front(std::make_shared<Slot>(shared_, text, key.local));
  index_.emplace(std::move(text), lru_.begin());
  while (lru_.size() > capacity_) {
    index_.erase(lru_.back()->key);
    lru_.back()->session.reset();  // connections still holding the slot store into nothing findable
    lru_.pop_back();
    ++shared_->counters.evicted;
  }
  return lru_.front();
}

namespace {

// Whether `session` was made under the context `ssl` uses now: the identity
// contexts bind their session id context to the certificate and the trust
// bundle, so a renewal or a bundle change makes older sessions stale.
bool sameContext(const SSL* ssl, const SSL_SESSION* session) {
  size_t want_length = 0;
  const uint8_t* want = SSL_get0_session_id_context(ssl, &want_length);
  unsigned have_length = 0;
  const uint8_t* have = SSL_SESSION_get0_id_context(session, &have_length);
  return want != nullptr && want_length > 0 && want_length == have_length &&
         std::memcmp(want, have, want_length) == 0;
}

}  // namespace

Status ClientSessionCache::prepare(SSL* ssl, const SessionKey& key) {
  std::shared_ptr<Slot> slot;
  bssl::UniquePtr<SSL_SESSION> offer;
  {
    std::lock_guard lock(shared_->mutex);
    slot = slotFor(key);
    if (!slot->session) {
      ++shared_->counters.missed;
    } else if (!sameContext(ssl, slot->session.get())) {
      slot->session.reset();
      ++shared_->counters.stale;
      ++shared_->counters.missed;
    } else {
      SSL_SESSION_up_ref(slot->session.get());
      offer.reset(slot->session.get());
      ++shared_->counters.offered;
    }
  }
  if (offer && !SSL_set_session(ssl, offer.get())) {
    return fail(takeSslErrors("SSL_set_session"));
  }
  return setSessionSink(ssl, std::move(slot));
}

void ClientSessionCache::forget(const SpiffeId& local) {
  std::lock_guard lock(shared_->mutex);
  for (auto it = lru_.begin(); it != lru_.end();) {
    if ((*it)->local == local) {
      (*it)->session.reset();
      index_.erase((*it)->key);
      it = lru_.erase(it);
    } else {
      ++it;
    }
  }
}

size_t ClientSessionCache::size() const {
  std::lock_guard lock(shared_->mutex);
  return lru_.size();
}

SessionCacheCounters ClientSessionCache::counters() const {
  std::lock_guard lock(shared_->mutex);
  return shared_->counters;
}

}  // namespace meshlock::identity
