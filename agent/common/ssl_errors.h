// BoringSSL's per-thread error queue, drained into one line: every part that
// calls BoringSSL reports its failures with these (a library of its own,
// meshlock_ssl_errors, so meshlockctl's common part links no TLS library).
#pragma once

#include <string>
#include <string_view>

namespace meshlock {

// "reason; reason", empty when the queue was empty; the queue is emptied.
[[nodiscard]] std::string drainSslErrors();
// "what: reason; reason", or "what: (no BoringSSL error)".
[[nodiscard]] std::string takeSslErrors(std::string_view what);

}  // namespace meshlock
