// Certificate signing requests for workload keys generated on the node: the
// key never leaves the node, only this request does.
#pragma once

#include <openssl/evp.h>

#include <string>

#include "common/error.h"
#include "identity/spiffe_id.h"

namespace meshlock::identity {

// PKCS#10, PEM: empty subject, one critical URI SAN = the SPIFFE ID, signed
// with `key` (SHA-256) — what ztunnel sends (istio/ztunnel src/tls/csr.rs).
[[nodiscard]] Result<std::string> buildCsrPem(EVP_PKEY* key, const SpiffeId& id);

}  // namespace meshlock::identity
