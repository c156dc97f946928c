// Certificate signing requests for workload keys generated on the node: the
// key never leaves the node, only this request does.
#pragma once

#include <openssl/evp.h>

#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "identity/spiffe_id.h"

namespace meshlock::identity {

// PKCS#10, PEM: empty subject, one critical URI SAN = the SPIFFE ID, signed
// with `key` (SHA-256) — what ztunnel sends (istio/ztunnel src/tls/csr.rs).
[[nodiscard]] Result<std::string> buildCsrPem(EVP_PKEY* key, const SpiffeId& id);

// What a CA takes from a request it received: the public key, once the
// request's signature proves the sender holds the private key, and the URI
// SANs it asked for (a CA decides the identity itself; these are compared).
struct ReceivedCsr {
  bssl::UniquePtr<EVP_PKEY> publicKey;
  std::vector<std::string> uriSans;
};

// One PEM CERTIFICATE REQUEST, self-signature valid, key ECDSA P-256/P-384 or
// RSA of 2048 bits or more (what istiod signs); anything else is an error
// that says what was wrong.
[[nodiscard]] Result<ReceivedCsr> parseCsrPem(std::string_view pem);

}  // namespace meshlock::identity
