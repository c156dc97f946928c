// TLS origination for DestinationRule SIMPLE and MUTUAL: client contexts built
// from the rule's files or its credentialName's Secrets, cached, and rebuilt
// when a file or a Secret changes.
#pragma once

#include <openssl/ssl.h>

#include <map>
#include <mutex>
#include <string>

#include "common/error.h"
#include "identity/tls_context.h"

namespace meshlock::identity {

class DestinationTlsContexts {
 public:
  explicit DestinationTlsContexts(MeshTlsSettings settings, Clock clock = systemNow);

  // The context for `config`, as a new reference. Files are stat()ed on each
  // call and re-read when one changed (inode, size or mtime). When a change
  // does not load, the previous context stays in use and the error is logged
  // once; with no previous context the error (naming rule and file) is returned.
  [[nodiscard]] Result<bssl::UniquePtr<SSL_CTX>> context(const DestinationTlsConfig& config);
  // context() and a new client SSL with the rule's SNI.
  [[nodiscard]] Result<bssl::UniquePtr<SSL>> newSession(const DestinationTlsConfig& config);
  // Forget rules no longer in the configuration.
  void retain(const std::vector<DestinationTlsConfig>& current);

 private:
  struct Entry {
    DestinationTlsConfig config;
    std::string filesSignature;
    std::string failedSignature;
    bssl::UniquePtr<SSL_CTX> ctx;
  };
  [[nodiscard]] static std::string key(const DestinationTlsConfig& config);
  [[nodiscard]] static std::string filesSignature(const DestinationTlsConfig& config);

  MeshTlsSettings settings_;
  Clock clock_;
  std::mutex mutex_;
  std::map<std::string, Entry> entries_;
};

}  // namespace meshlock::identity
