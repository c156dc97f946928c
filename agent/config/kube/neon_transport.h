// HttpTransport over neon (libneon27-gnutls): HTTP/1.1 with keep-alive, TLS
// through GnuTLS, so no OpenSSL enters a process that has BoringSSL
// (docs/kubernetes.md says why not libcurl). Only the endpoint's CA is
// trusted, never the system store; client certificates are handed to neon as
// an in-memory PKCS#12 built with BoringSSL.
#pragma once

#include <chrono>
#include <memory>

#include "config/kube/endpoint.h"
#include "config/kube/transport.h"

namespace meshlock::config::kube {

struct NeonOptions {
  std::chrono::seconds connect_timeout{10};
  // No byte for this long fails the request. Watches get bookmarks and
  // end by timeoutSeconds well within it.
  std::chrono::seconds read_timeout{15 * 60};
};

// Checks the endpoint (server URL, CA, client certificate) once; fails with a
// clear error if any is unusable.
[[nodiscard]] Result<std::unique_ptr<TransportFactory>> makeNeonTransportFactory(const ApiEndpoint& endpoint,
                                                                                 NeonOptions options = {});

}  // namespace meshlock::config::kube
