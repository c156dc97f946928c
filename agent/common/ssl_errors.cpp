// BoringSSL's error queue as text (ssl_errors.h).
#include "common/ssl_errors.h"

#include <openssl/err.h>

namespace meshlock {

std::string drainSslErrors() {
  std::string out;
  while (uint32_t code = ERR_get_error()) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof buffer);
    if (!out.empty()) out += "; ";
    out += buffer;
  }
  return out;
}

std::string takeSslErrors(std::string_view what) {
  const std::string errors = drainSslErrors();
  return std::string(what) + ": " + (errors.empty() ? std::string("(no BoringSSL error)") : errors);
}

}  // namespace meshlock
