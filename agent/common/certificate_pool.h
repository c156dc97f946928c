// The one CRYPTO_BUFFER_POOL of the process: every TLS context (the agent's
// mesh contexts, the proxy's) hands it to BoringSSL, so the certificates of
// all connections from or to the same peer share one copy. Never freed: it
// must outlive every SSL_CTX, SSL and SSL_SESSION. Header-only, for the parts
// that link BoringSSL.
#pragma once

#include <openssl/pool.h>

#include "common/error.h"

namespace meshlock {

inline CRYPTO_BUFFER_POOL* certificatePool() {
  static CRYPTO_BUFFER_POOL* pool = [] {
    CRYPTO_BUFFER_POOL* p = CRYPTO_BUFFER_POOL_new();
    MESHLOCK_CHECK(p != nullptr);
    return p;
  }();
  return pool;
}

}  // namespace meshlock
