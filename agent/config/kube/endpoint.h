// Where the Kubernetes API is and how to prove who we are to it: from a
// kubeconfig file (its current context) or from the pod's service-account
// directory (in-cluster). Plain values; nothing here opens a connection.
#pragma once

#include <chrono>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "common/error.h"

namespace meshlock::config::kube {

inline constexpr std::string_view kDefaultServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount";

struct ApiEndpoint {
  std::string server;          // "https://10.96.0.1:443"
  std::string ca_pem;          // the CA certificates to trust (PEM); the system store is never used
  std::string token;           // a bearer token given inline
  std::filesystem::path token_file;  // a bearer token read from a file (reread when it rotates)
  std::string client_cert_pem;  // client certificate and key (PEM), both or neither
  std::string client_key_pem;
  std::string ns;               // the context's or the service account's namespace
  std::string origin;           // "kubeconfig /x (context c)" or "in-cluster (/var/run/...)"
};

// Parses a kubeconfig text; relative file paths resolve against `base_dir`.
// Errors name the file and the field.
[[nodiscard]] Result<ApiEndpoint> parseKubeconfig(std::string_view yaml, std::string_view origin,
                                                  const std::filesystem::path& base_dir);
[[nodiscard]] Result<ApiEndpoint> loadKubeconfig(const std::filesystem::path& file);

// KUBERNETES_SERVICE_HOST/PORT (passed in, so tests need no environment) and
// the service-account directory's token, ca.crt and namespace.
[[nodiscard]] Result<ApiEndpoint> inClusterEndpoint(std::string_view host, std::string_view port,
                                                    const std::filesystem::path& service_account_dir);

// The bearer token to send. A token file is reread when its mtime changes,
// looked at no more often than `check_every`, or at once after a 401.
class BearerToken {
 public:
  explicit BearerToken(const ApiEndpoint& endpoint,
                       std::chrono::milliseconds check_every = std::chrono::seconds(10));
  // The token now (empty: none). Thread-safe.
  [[nodiscard]] std::string current();
  // After a 401: reread the file now. True if the token changed.
  bool refresh();

 private:
  void reread();  // with mutex_ held
  std::mutex mutex_;
  std::string token_;
  std::filesystem::path file_;
  std::chrono::milliseconds check_every_;
  std::chrono::steady_clock::time_point checked_at_{};
  std::filesystem::file_time_type mtime_{};
};

}  // namespace meshlock::config::kube
