// meshlockctl's side of the admin API: one request per connection to a TCP or
// Unix endpoint, with a deadline and a size bound on the answer.
#pragma once

#include <chrono>
#include <cstddef>
#include <string_view>

#include <nlohmann/json.hpp>

#include "admin/endpoint.h"
#include "admin/http_message.h"
#include "common/error.h"

namespace meshlock::admin {

inline constexpr std::string_view kDefaultAdminEndpoint = "unix:/run/meshlock/admin.sock";

struct ClientOptions {
  std::chrono::milliseconds timeout{5000};          // connect + request + response
  std::size_t max_response_bytes = 64 * 1024 * 1024;
};

class AdminClient {
 public:
  explicit AdminClient(Endpoint endpoint, ClientOptions options = {});

  // `target` is a path with an optional query ("/logging?level=debug").
  // A non-2xx answer is still a response; only transport failures are errors.
  [[nodiscard]] Result<ClientResponse> request(Method method, std::string_view target,
                                               std::string_view body = {});

  // GET, expect 2xx and a JSON body. A non-2xx answer becomes an error carrying
  // the server's {"error": ...} reason.
  [[nodiscard]] Result<nlohmann::json> getJson(std::string_view target);
  [[nodiscard]] Result<nlohmann::json> postJson(std::string_view target, std::string_view body = {});
  // GET, expect 2xx, return the body as is (for /metrics).
  [[nodiscard]] Result<std::string> getText(std::string_view target);

  [[nodiscard]] const Endpoint& endpoint() const { return endpoint_; }

 private:
  Endpoint endpoint_;
  ClientOptions options_;
};

}  // namespace meshlock::admin
