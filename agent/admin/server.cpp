// civetweb contexts behind our own listening sockets and accept gates (see
// server.h and accept_gate.h for why the listener is ours).
#include "admin/server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <civetweb.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <thread>

namespace meshlock::admin {
namespace {

using Clock = std::chrono::steady_clock;

struct Listener {
  UniqueFd fd;
  Endpoint endpoint;
  ino_t unix_inode = 0;  // to remove only our own socket file on stop
};

Result<Listener> listenTcp(const Endpoint& endpoint) {
  const std::string what = "admin listen " + endpoint.describe();
  const std::string host = endpoint.host == "localhost" ? "127.0.0.1" : endpoint.host;
  sockaddr_storage storage{};
  socklen_t length = 0;
  const int family = AF_INET;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&storage);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&storage);
  if (::inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(endpoint.port);
    length = sizeof(*v4);
  } else if (::inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    return fail(what + ": IPv6 is not served (Debian's civetweb is built without USE_IPV6)");
  } else {
    return fail(what + ": host must be an IP address");
  }
  UniqueFd fd(::socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return failErrno(what + ": socket");
  const int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&storage), length) < 0) return failErrno(what + ": bind");
  if (::listen(fd.get(), 128) < 0) return failErrno(what + ": listen");
  socklen_t bound_length = sizeof(storage);
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&storage), &bound_length) < 0) {
    return failErrno(what + ": getsockname");
  }
  Endpoint bound = endpoint;
  bound.port = ntohs(v4->sin_port);
  return Listener{std::move(fd), std::move(bound), 0};
}

Result<Listener> listenUnix(const Endpoint& endpoint, mode_t mode, bool replace_live) {
  const std::string what = "admin listen " + endpoint.describe();
  namespace fs = std::filesystem;
  const fs::path path(endpoint.path);
  std::error_code ec;
  if (path.has_parent_path() && !fs::exists(path.parent_path(), ec)) {
    fs::create_directories(path.parent_path(), ec);
    if (ec) return fail(what + ": create " + path.parent_path().string() + ": " + ec.message());
  }
  // A socket file that still answers belongs to a running agent: do not steal it.
  struct stat existing {};
  if (::lstat(endpoint.path.c_str(), &existing) == 0) {
    if (!S_ISSOCK(existing.st_mode)) return fail(what + ": path exists and is not a socket");
    if (!replace_live && connectTo(endpoint, std::chrono::milliseconds(200))) {
      return fail(what + ": another server is listening on it");
    }
  }
  // Bind under a temporary name, set the mode, then rename into place, so the
  // socket is never reachable with the umask's looser mode.
  static std::atomic<unsigned> sequence{0};
  const std::string temporary = endpoint.path + ".tmp." + std::to_string(::getpid()) + "." +
                                std::to_string(sequence.fetch_add(1));
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (temporary.size() >= sizeof(address.sun_path)) return fail(what + ": socket path too long");
  std::memcpy(address.sun_path, temporary.data(), temporary.size());
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return failErrno(what + ": socket");
  ::unlink(temporary.c_str());
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) < 0) {
    return failErrno(what + ": bind " + temporary);
  }
  if (::chmod(temporary.c_str(), mode) < 0) {
    const int err = errno;
    ::unlink(temporary.c_str());
    return failErrno(what + ": chmod", err);
  }
  if (::listen(fd.get(), 128) < 0 || ::rename(temporary.c_str(), endpoint.path.c_str()) < 0) {
    const int err = errno;
    ::unlink(temporary.c_str());
    return failErrno(what + ": listen/rename", err);
  }
  struct stat bound {};
  if (::stat(endpoint.path.c_str(), &bound) < 0) return failErrno(what + ": stat");
  return Listener{std::move(fd), endpoint, bound.st_ino};
}


// The descriptor civetweb opened for its placeholder listener 127.0.0.1:port,
// found once at start-up among our open descriptors.
Result<int> findListener(std::uint16_t port) {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return failErrno("admin server: open /proc/self/fd");
  int found = -1;
  while (dirent* entry = ::readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0' || fd == ::dirfd(dir)) continue;
    int listening = 0;
    socklen_t size = sizeof(listening);
    if (::getsockopt(static_cast<int>(fd), SOL_SOCKET, SO_ACCEPTCONN, &listening, &size) != 0 || !listening) continue;
    sockaddr_in address{};
    socklen_t length = sizeof(address);
    if (::getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&address), &length) != 0) continue;
    if (address.sin_family == AF_INET && ntohs(address.sin_port) == port &&
        address.sin_addr.s_addr == htonl(INADDR_LOOPBACK)) {
      found = static_cast<int>(fd);
      break;
    }
  }
  ::closedir(dir);
  if (found < 0) return fail("admin server: civetweb's listener on 127.0.0.1:" + std::to_string(port) + " not found");
  return found;
}

// What civetweb's own error answers (before any handler ran) become, so a
// client sees the same statuses the admin API always gave: a head cut at the
// deadline is a 408, a head over the size bound a 431, an unknown method 501.
int adminStatusFor(int civet_status, std::string_view message, const mg_request_info* info, bool deadline_passed,
                   bool bytes_left_unread) {
  if (civet_status == 413) return 431;  // civetweb's "Message too large" is always the head
  // civetweb's one word for a head it gave up on: cut at the deadline, larger
  // than its buffer (the client's bytes are still waiting), or bad bytes.
  if (civet_status == 400 && message == "Malformed message") {
    if (deadline_passed) return 408;
    if (bytes_left_unread) return 431;
    return 400;
  }
  // civetweb parsed up to "HTTP/1.x" and then refused the method itself.
  if (civet_status == 400 && info != nullptr && info->request_method != nullptr && info->http_version != nullptr &&
      std::string_view(info->http_version).starts_with("1.")) {
    const std::string_view method = info->request_method;
    const bool ours = method == "GET" || method == "POST" || method == "PUT";
    if (!ours && !method.empty() &&
        std::all_of(method.begin(), method.end(), [](char c) { return std::isupper(static_cast<unsigned char>(c)); }))
      return 501;
  }
  return civet_status;
}

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Per connection, from civetweb's init_connection to connection_closed.
struct ConnectionState {
  Clock::time_point picked_up = Clock::now();
  std::atomic<int>* in_flight = nullptr;  // counted while a request is served
};
thread_local ConnectionState* closing_state = nullptr;

}  // namespace

struct HttpServer::Impl {
  // One endpoint's budget: our listener, its gate, its civetweb context.
  struct Served {
    Impl* server = nullptr;
    Listener listener;
    std::unique_ptr<AcceptGate> gate;
    mg_context* context = nullptr;
    std::atomic<int> in_flight{0};
    std::string swap_error;  // set by init_context if our listener could not replace civetweb's
  };

  ServerOptions options;
  Router router;
  std::vector<std::unique_ptr<Served>> served;
  std::vector<Endpoint> endpoints;
  std::atomic<bool> stopped{false};

  Result<std::unique_ptr<Served>> startOne(Listener listener);
  int serve(Served& served, mg_connection* connection);
  void send(mg_connection* connection, const Response& response);
};

namespace {

HttpServer::Impl::Served* servedOf(const mg_connection* connection) {
  return static_cast<HttpServer::Impl::Served*>(mg_get_user_data(mg_get_context(connection)));
}

}  // namespace

void HttpServer::Impl::send(mg_connection* connection, const Response& response) {
  // Our own bytes rather than civetweb's header calls: one serialiser for
  // every answer (the gate's refusals too), always "HTTP/1.1" and Connection: close.
  const std::string bytes = serializeResponse(response);
  // A client that reads slowly must not hold the worker either: the answer
  // must leave within request_timeout, plus the piece in flight (civetweb
  // waits for room in 2 s poll slices: measured 2.4 s with a 300 ms deadline).
  constexpr std::size_t kPiece = 16 * 1024;
  const auto deadline = Clock::now() + options.request_timeout;
  for (std::size_t offset = 0; offset < bytes.size(); offset += kPiece) {
    const std::size_t length = std::min(kPiece, bytes.size() - offset);
    if (Clock::now() > deadline || mg_write(connection, bytes.data() + offset, length) != static_cast<int>(length)) {
      mg_disable_connection_keep_alive(connection);
      return;
    }
  }
}

int HttpServer::Impl::serve(Served& served, mg_connection* connection) {
  // In progress until civetweb has closed it (connection_closed): stop()
  // waits for that, so an answer is never cut by mg_stop's abortive close.
  if (auto* state = static_cast<ConnectionState*>(mg_get_user_connection_data(connection))) {
    state->in_flight = &served.in_flight;
    served.in_flight.fetch_add(1);
  }
  // One request per connection, and nothing read after the answer: without
  // this civetweb would read and discard an unread body for as long as the
  // client trickles it.
  mg_disable_connection_keep_alive(connection);
  const mg_request_info* info = mg_get_request_info(connection);
  auto answer = [&](const Response& response) {
    send(connection, response);
    return response.status;
  };

  // Only what the gate let in is served (a connection civetweb took from its
  // placeholder listener before ours replaced it is not).
  const auto admitted = served.gate->admitted(info->remote_addr, info->remote_port);
  if (!admitted) return answer(Response::error(403, "connection not admitted by the admin server"));

  Request request;
  request.from_unix_socket = admitted->unix_uid.has_value();
  const std::string_view method = info->request_method ? info->request_method : "";
  if (method == "GET") {
    request.method = Method::kGet;
  } else if (method == "POST") {
    request.method = Method::kPost;
  } else if (method == "PUT") {
    request.method = Method::kPut;
  } else {
    return answer(Response::error(501, "method " + std::string(method) + " is not supported (GET, POST, PUT)"));
  }
  // civetweb has percent-decoded the path (not the query) already.
  auto target = parseTarget(info->local_uri_raw ? info->local_uri_raw : "", info->query_string ? info->query_string : "");
  if (!target) return answer(Response::error(400, target.error().message));
  request.path = std::move(target->path);
  request.query = std::move(target->query);
  for (int i = 0; i < info->num_headers; ++i) {
    request.headers.emplace_back(lower(info->http_headers[i].name), info->http_headers[i].value);
  }
  if (request.header("transfer-encoding")) {
    return answer(Response::error(501, "Transfer-Encoding is not supported; send Content-Length"));
  }
  if (info->content_length > 0) {
    if (static_cast<unsigned long long>(info->content_length) > options.limits.max_body_bytes) {
      return answer(Response::error(413, "request body larger than " + std::to_string(options.limits.max_body_bytes) + " bytes"));
    }
    // One byte per read: a read waits until its bytes are all there, so
    // larger reads would let a trickled body outlive the deadline.
    const auto deadline = Clock::now() + options.request_timeout;
    request.body.reserve(static_cast<std::size_t>(info->content_length));
    while (request.body.size() < static_cast<std::size_t>(info->content_length)) {
      char byte = 0;
      if (Clock::now() > deadline || mg_read(connection, &byte, 1) != 1) {
        return answer(Response::error(408, "request body not received within the timeout"));
      }
      request.body.push_back(byte);
    }
  }

  // A handler's exception (e.g. JSON that cannot be encoded) is this
  // request's 500, never the agent's end.
  Response response;
  try {
    response = router.dispatch(request);
  } catch (const std::exception& e) {
    response = Response::error(500, std::string("internal error: ") + e.what());
  }
  return answer(response);
}

Result<std::unique_ptr<HttpServer::Impl::Served>> HttpServer::Impl::startOne(Listener listener) {
  const std::string what = "admin server " + listener.endpoint.describe();
  auto served = std::make_unique<Served>();
  served->server = this;
  served->listener = std::move(listener);

  GateLimits limits;
  limits.max_connections = std::max<std::size_t>(1, options.max_connections);
  limits.per_source = std::max<std::size_t>(1, options.per_source_connections);
  limits.unix_socket = served->listener.endpoint.kind == Endpoint::Kind::kUnix;
  limits.unix_require_owner = options.unix_require_owner;
  served->gate = std::make_unique<AcceptGate>(limits, served->listener.fd.get());

  mg_callbacks callbacks{};
  callbacks.begin_request = [](mg_connection* connection) {
    Served* s = servedOf(connection);
    return s->server->serve(*s, connection);
  };
  callbacks.http_error = [](mg_connection* connection, int status, const char* message) {
    Served* s = servedOf(connection);
    const auto* state = static_cast<const ConnectionState*>(mg_get_user_connection_data(connection));
    const bool late = state != nullptr && Clock::now() - state->picked_up >= s->server->options.request_timeout;
    const std::string_view text = message ? message : "";
    const mg_request_info* info = mg_get_request_info(connection);
    int unread = 0;
    if (auto admitted = s->gate->admitted(info->remote_addr, info->remote_port)) ::ioctl(admitted->fd, FIONREAD, &unread);
    const int admin_status = adminStatusFor(status, text, info, late, unread > 0);
    std::string reason(text);
    if (admin_status == 408) reason = "request not received within the timeout";
    if (admin_status == 431) reason = "request head larger than " + std::to_string(s->server->options.limits.max_head_bytes) + " bytes (or cut short)";
    if (admin_status == 501) reason = "method not supported (GET, POST, PUT)";
    s->server->send(connection, Response::error(admin_status, reason));
    return 0;  // handled
  };
  callbacks.init_connection = [](const mg_connection*, void** data) {
    *data = new ConnectionState();
    return 0;
  };
  // civetweb drops the connection's data between these two calls (both on
  // the worker, in this order): carry it across to after the socket is closed.
  callbacks.connection_close = [](const mg_connection* connection) {
    closing_state = static_cast<ConnectionState*>(mg_get_user_connection_data(connection));
  };
  callbacks.connection_closed = [](const mg_connection* connection) {
    Served* s = servedOf(connection);
    const mg_request_info* info = mg_get_request_info(connection);
    s->gate->release(info->remote_addr, info->remote_port);
    ConnectionState* state = std::exchange(closing_state, nullptr);
    if (state != nullptr && state->in_flight != nullptr) state->in_flight->fetch_sub(1);
    delete state;
  };
  // Before civetweb's accept thread starts: put our listening socket under
  // the descriptor of the placeholder listener civetweb opened (it cannot
  // take ours), so that thread only ever accepts from ours, through the gate.
  callbacks.init_context = [](const mg_context* context) {
    auto* s = static_cast<Served*>(mg_get_user_data(context));
    mg_server_port port{};
    if (mg_get_server_ports(context, 1, &port) != 1) {
      s->swap_error = "civetweb reports no listening port";
      return;
    }
    auto placeholder = findListener(static_cast<std::uint16_t>(port.port));
    if (!placeholder) {
      s->swap_error = placeholder.error().describe();
      return;
    }
    if (::dup3(s->listener.fd.get(), *placeholder, O_CLOEXEC) < 0) {
      s->swap_error = std::string("dup3 over civetweb's listener: ") + std::strerror(errno);
    }
  };
  callbacks.log_message = [](const mg_connection*, const char* message) {
    spdlog::debug("admin server (civetweb): {}", message);
    return 1;
  };

  const std::string workers = std::to_string(std::max(1u, options.workers));
  const std::string queue = std::to_string(std::max<std::size_t>(1, options.max_connections));
  const std::string timeout = std::to_string(options.request_timeout.count());
  const std::string head_bytes = std::to_string(options.limits.max_head_bytes);
  // Placeholder listener: civetweb cannot take ours, so it opens one on a free
  // loopback port and init_context puts our socket under its descriptor.
  const char* config[] = {"listening_ports", "127.0.0.1:0",
                          "num_threads", workers.c_str(),
                          "connection_queue", queue.c_str(),
                          "request_timeout_ms", timeout.c_str(),
                          "enable_keep_alive", "no",
                          "max_request_size", head_bytes.c_str(),
                          "enable_directory_listing", "no",
                          nullptr};
  char error_text[256] = "";
  mg_init_data init{&callbacks, served.get(), config};
  mg_error_data error{0, error_text, sizeof(error_text)};
  served->context = mg_start2(&init, &error);
  if (served->context == nullptr) return fail(what + ": civetweb: " + error_text);
  if (!served->swap_error.empty()) {
    mg_stop(served->context);
    served->context = nullptr;
    return fail(what + ": " + served->swap_error);
  }
  return served;
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { stop(); }

const std::vector<Endpoint>& HttpServer::endpoints() const { return impl_->endpoints; }

std::vector<EndpointStats> HttpServer::stats() const {
  std::vector<EndpointStats> out;
  for (const auto& served : impl_->served) {
    out.push_back({served->listener.endpoint, served->gate->refusals(), served->gate->open()});
  }
  return out;
}

Result<std::unique_ptr<HttpServer>> HttpServer::start(ServerOptions options, Router router) {
  if (options.listen.empty()) return fail("admin server: no endpoint to listen on");
  // Plain HTTP only: without MG_FEATURES_TLS civetweb never dlopens libssl or
  // libcrypto (which would clash with BoringSSL's symbols).
  static std::once_flag library;
  std::call_once(library, [] { mg_init_library(0); });
  auto impl = std::make_unique<Impl>();
  impl->router = std::move(router);
  impl->options = options;
  auto undo = [&] {
    for (auto& served : impl->served) {
      mg_stop(served->context);
      if (served->listener.endpoint.kind == Endpoint::Kind::kUnix) ::unlink(served->listener.endpoint.path.c_str());
    }
  };
  for (const Endpoint& endpoint : options.listen) {
    auto listener = endpoint.kind == Endpoint::Kind::kUnix ? listenUnix(endpoint, options.unix_socket_mode, options.unix_replace_live)
                                                           : listenTcp(endpoint);
    if (!listener) {
      undo();
      return std::unexpected(listener.error());
    }
    const Endpoint bound = listener->endpoint;
    const std::string unix_path = bound.kind == Endpoint::Kind::kUnix ? bound.path : "";
    auto served = impl->startOne(std::move(*listener));
    if (!served) {
      if (!unix_path.empty()) ::unlink(unix_path.c_str());
      undo();
      return std::unexpected(served.error());
    }
    impl->endpoints.push_back(bound);
    impl->served.push_back(std::move(*served));
  }
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

void HttpServer::stop() {
  if (!impl_ || impl_->stopped.exchange(true)) return;
  for (auto& served : impl_->served) served->gate->close();
  // civetweb stops writing answers once stopping: let the handlers that run finish first.
  const auto deadline = Clock::now() + 2 * impl_->options.request_timeout;
  for (auto& served : impl_->served) {
    while (served->in_flight.load() > 0 && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  // mg_stop waits for civetweb's accept thread, which polls in 2 s slices:
  // stop every context at once, and wake each with a connection (refused by
  // the closed gate) every 50 ms until it is down.
  std::vector<std::thread> stopping;
  std::vector<std::unique_ptr<std::atomic<bool>>> down;
  for (auto& served : impl_->served) {
    down.push_back(std::make_unique<std::atomic<bool>>(false));
    stopping.emplace_back([context = served->context, flag = down.back().get()] {
      mg_stop(context);  // closes its descriptor of our listener, joins its threads
      flag->store(true);
    });
  }
  for (bool all_down = false; !all_down;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    all_down = true;
    for (std::size_t i = 0; i < down.size(); ++i) {
      if (down[i]->load()) continue;
      all_down = false;
      const Listener& listener = impl_->served[i]->listener;
      struct stat current {};
      const bool ours = listener.endpoint.kind != Endpoint::Kind::kUnix ||
                        (::stat(listener.endpoint.path.c_str(), &current) == 0 && current.st_ino == listener.unix_inode);
      if (ours) (void)connectTo(listener.endpoint, std::chrono::milliseconds(50));  // not a newer agent's socket
    }
  }
  for (std::thread& thread : stopping) thread.join();
  for (auto& served : impl_->served) {
    served->context = nullptr;
    Listener& listener = served->listener;
    if (listener.endpoint.kind == Endpoint::Kind::kUnix) {
      // Only our own inode: a newer agent may have taken the path over.
      struct stat current {};
      if (::stat(listener.endpoint.path.c_str(), &current) == 0 && current.st_ino == listener.unix_inode) {
        ::unlink(listener.endpoint.path.c_str());
      }
    }
    listener.fd.reset();
  }
}

}  // namespace meshlock::admin
