// Exact-path dispatch with 404/405 answers and a handler-exception backstop.
#include "admin/router.h"

#include <algorithm>
#include <exception>

#include "common/error.h"

namespace meshlock::admin {

void Router::handle(std::string path, Handler handler, std::initializer_list<Method> methods,
                    ChangeAccess changes) {
  MESHLOCK_CHECK(!path.empty() && path.front() == '/');
  MESHLOCK_CHECK(handler != nullptr);
  MESHLOCK_CHECK(methods.size() > 0);
  const bool inserted = routes_.emplace(std::move(path), Route{methods, std::move(handler), changes}).second;
  MESHLOCK_CHECK(inserted);
}

std::vector<std::string> Router::paths() const {
  std::vector<std::string> out;
  for (const auto& [path, route] : routes_) out.push_back(path);
  return out;
}

Response Router::dispatch(const Request& request) const {
  auto it = routes_.find(request.path);
  if (it == routes_.end()) {
    if (request.path == "/" && request.method == Method::kGet) {
      std::string body = "{\"paths\":[";
      bool first = true;
      for (const auto& [path, route] : routes_) {
        body += first ? "\"" : ",\"";
        body += path;  // registered by code, checked to start with '/'; no quoting needed
        body += "\"";
        first = false;
      }
      body += "]}";
      return Response::json(200, std::move(body));
    }
    return Response::error(404, "no such endpoint: " + request.path + " (GET / lists them)");
  }
  const Route& route = it->second;
  if (std::find(route.methods.begin(), route.methods.end(), request.method) == route.methods.end()) {
    Response response = Response::error(405, std::string(methodName(request.method)) +
                                                 " is not allowed on " + request.path);
    std::string allow;
    for (Method method : route.methods) {
      if (!allow.empty()) allow += ", ";
      allow += methodName(method);
    }
    response.headers.emplace_back("Allow", allow);
    return response;
  }
  // Any local user reaches the TCP admin port; only root and the agent's own
  // user reach the Unix socket (SO_PEERCRED): changes go over the socket.
  if (route.changes == ChangeAccess::kUnixSocket && request.method != Method::kGet && !request.from_unix_socket) {
    return Response::error(403, std::string(methodName(request.method)) + " " + request.path +
                                    " changes the agent: only over the admin Unix socket, not TCP");
  }
  try {
    return route.handler(request);
  } catch (const std::exception& e) {
    return Response::error(500, std::string("handler for ") + request.path + " failed: " + e.what());
  } catch (...) {
    return Response::error(500, "handler for " + request.path + " failed");
  }
}

}  // namespace meshlock::admin
