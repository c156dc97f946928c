// Peer chains a TLS context has already verified, by the SHA-256 of their DER
// bytes. A workload presents the same chain on every connection until its
// certificate is renewed, so its signatures need checking once; later
// handshakes that present the same bytes reuse the verdict while the chain is
// inside its validity window. What is not skipped: the peer proves it holds
// the key on every handshake (TLS CertificateVerify, checked by BoringSSL),
// and the expected-identity check (secure naming) runs every time. The cache
// belongs to one SSL_CTX, which is rebuilt when the trust bundle or the local
// certificate changes, so a verdict never outlives the roots it was made with.
#pragma once

#include <openssl/pool.h>

#include <array>
#include <cstring>
#include <chrono>
#include <cstdint>
#include <list>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "identity/peer_verifier.h"

namespace meshlock::identity {

class VerifiedChains {
 public:
  using Digest = std::array<uint8_t, 32>;

  explicit VerifiedChains(size_t capacity = 1024) : capacity_(capacity) {}

  // Over the role and every certificate's DER, each with its length.
  [[nodiscard]] static Digest digestOf(const STACK_OF(CRYPTO_BUFFER)* chain, PeerRole role);

  // The identity a chain with this digest proved, if it was verified and
  // `now` is still inside its window (with the skew verification allows).
  [[nodiscard]] std::optional<SpiffeId> find(const Digest& digest, Seconds now, std::chrono::seconds skew);
  void insert(const Digest& digest, SpiffeId id, ValidityWindow window);

  struct Stats {
    uint64_t hits = 0;
    uint64_t misses = 0;
    size_t entries = 0;
  };
  [[nodiscard]] Stats stats() const;

 private:
  struct DigestHash {
    size_t operator()(const Digest& d) const noexcept {
      size_t h;
      static_assert(sizeof h <= sizeof(Digest));
      std::memcpy(&h, d.data(), sizeof h);  // already uniformly distributed
      return h;
    }
  };
  struct Entry {
    SpiffeId id;
    ValidityWindow window;
    std::list<Digest>::iterator age;  // position in oldest_
  };

  const size_t capacity_;
  mutable std::mutex mutex_;
  std::unordered_map<Digest, Entry, DigestHash> entries_;
  std::list<Digest> oldest_;  // insertion order, oldest first: evicted first
  uint64_t hits_ = 0;
  uint64_t misses_ = 0;
};

}  // namespace meshlock::identity
