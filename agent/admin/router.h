// Maps request paths to the handlers the composition root provides. Built
// before the server starts and read-only afterwards, so it needs no lock.
#pragma once

#include <functional>
#include <initializer_list>
#include <map>
#include <string>
#include <vector>

#include "admin/http_message.h"

namespace meshlock::admin {

// Runs on a server worker thread; may be called concurrently with itself.
using Handler = std::function<Response(const Request&)>;

// Who may call a route's methods other than GET.
enum class ChangeAccess {
  kAnyEndpoint,  // TCP too (tests, read-only helpers)
  kUnixSocket,   // the request changes the agent: only over the Unix socket (root or the agent's user)
};

class Router {
 public:
  // Registers `handler` for an exact path (no patterns: the admin API is flat).
  // Registering a path twice is a programming error and aborts.
  void handle(std::string path, Handler handler,
              std::initializer_list<Method> methods = {Method::kGet},
              ChangeAccess changes = ChangeAccess::kAnyEndpoint);

  // 404 for an unknown path, 405 with Allow for a wrong method, 403 for a
  // change over TCP to a kUnixSocket route, 500 with the reason when a handler
  // throws. "GET /" lists the registered paths unless "/" has its own handler.
  [[nodiscard]] Response dispatch(const Request& request) const;

  [[nodiscard]] std::vector<std::string> paths() const;

 private:
  struct Route {
    std::vector<Method> methods;
    Handler handler;
    ChangeAccess changes = ChangeAccess::kAnyEndpoint;
  };
  std::map<std::string, Route> routes_;
};

}  // namespace meshlock::admin
