#include "identity/verified_chains.h"

#include <openssl/sha.h>

#include <cstring>

namespace meshlock::identity {

VerifiedChains::Digest VerifiedChains::digestOf(const STACK_OF(CRYPTO_BUFFER)* chain, PeerRole role) {
  SHA256_CTX sha;
  SHA256_Init(&sha);
  const uint8_t role_byte = role == PeerRole::kClient ? 'c' : 's';
  SHA256_Update(&sha, &role_byte, 1);
  for (size_t i = 0; i < sk_CRYPTO_BUFFER_num(chain); ++i) {
    const CRYPTO_BUFFER* cert = sk_CRYPTO_BUFFER_value(chain, i);
    const uint64_t length = CRYPTO_BUFFER_len(cert);
    SHA256_Update(&sha, &length, sizeof length);
    SHA256_Update(&sha, CRYPTO_BUFFER_data(cert), length);
  }
  Digest out;
  SHA256_Final(out.data(), &sha);
  return out;
}

std::optional<SpiffeId> VerifiedChains::find(const Digest& digest, Seconds now, std::chrono::seconds skew) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(digest);
  if (it == entries_.end()) {
    ++misses_;
    return std::nullopt;
  }
  // The same bounds verifyChainAndValidity applies; outside them the chain is
  // verified again, and refused with the precise reason.
  const ValidityWindow& w = it->second.window;
  if (w.notAfter < now - skew || w.notBefore > now + skew) {
    oldest_.erase(it->second.age);
    entries_.erase(it);
    ++misses_;
    return std::nullopt;
  }
  ++hits_;
  return it->second.id;
}

void VerifiedChains::insert(const Digest& digest, SpiffeId id, ValidityWindow window) {
  std::lock_guard lock(mutex_);
  if (capacity_ == 0 || entries_.contains(digest)) return;
  if (entries_.size() >= capacity_) {
    entries_.erase(oldest_.front());
    oldest_.pop_front();
  }
  oldest_.push_back(digest);
  entries_.emplace(digest, Entry{std::move(id), window, std::prev(oldest_.end())});
}

VerifiedChains::Stats VerifiedChains::stats() const {
  std::lock_guard lock(mutex_);
  return {hits_, misses_, entries_.size()};
}

}  // namespace meshlock::identity
