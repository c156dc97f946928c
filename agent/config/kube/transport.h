// The HTTP the Kubernetes client needs, behind an interface: whole GETs (lists,
// discovery), streamed GETs (watches) and POSTs (creates). The informers are tested with a fake
// one; neon_transport.h is the real one (and the one to replace when the agent
// moves to HTTP/2 over nghttp2).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/error.h"

namespace meshlock::config::kube {

struct HttpResponse {
  int status = 0;
  std::string body;  // the whole body (get), or the body of a non-2xx answer (stream)
};

// One connection's worth of HTTP; one thread uses it at a time.
class HttpTransport {
 public:
  virtual ~HttpTransport() = default;
  // GET `target` (path and query). An error is a transport failure (connect,
  // TLS, timeout); any HTTP status is a response.
  [[nodiscard]] virtual Result<HttpResponse> get(const std::string& target, const std::string& bearer_token) = 0;
  // GET `target`, handing a 2xx body to `on_data` as it arrives, until the
  // server ends it or `on_data` returns false. `on_data` first gets an empty
  // piece when a 2xx answer begins (the watch is open); a transport may also
  // hand it empty pieces while the body is idle.
  // `method` ("POST", "PUT") a JSON `body` to `target`, the answer read whole
  // (the CA service's TokenReviews and its root ConfigMap).
  [[nodiscard]] virtual Result<HttpResponse> send(const std::string& method, const std::string& target,
                                                  const std::string& bearer_token, const std::string& body) = 0;
  [[nodiscard]] virtual Result<HttpResponse> stream(const std::string& target, const std::string& bearer_token,
                                                    const std::function<bool(std::string_view)>& on_data) = 0;
};

// Makes transports for one API server: one per watch thread.
class TransportFactory {
 public:
  virtual ~TransportFactory() = default;
  [[nodiscard]] virtual Result<std::unique_ptr<HttpTransport>> open() = 0;
  [[nodiscard]] virtual std::string server() const = 0;  // for status and errors
};

}  // namespace meshlock::config::kube
