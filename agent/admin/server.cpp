// Accept thread + worker pool. A worker reads one request under a deadline,
// dispatches it, writes the response under a deadline and closes.
#include "admin/server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
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

int millisLeft(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() < 0 ? 0 : static_cast<int>(left.count());
}

Result<Listener> listenTcp(const Endpoint& endpoint) {
  const std::string what = "admin listen " + endpoint.describe();
  const std::string host = endpoint.host == "localhost" ? "127.0.0.1" : endpoint.host;
  sockaddr_storage storage{};
  socklen_t length = 0;
  int family = AF_INET;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&storage);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&storage);
  if (::inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(endpoint.port);
    length = sizeof(*v4);
  } else if (::inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    family = AF_INET6;
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(endpoint.port);
    length = sizeof(*v6);
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
  bound.port = ntohs(family == AF_INET ? v4->sin_port : v6->sin6_port);
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

// Sends all of `bytes` or gives up at the deadline.
bool sendAll(int fd, std::string_view bytes, Clock::time_point deadline) {
  while (!bytes.empty()) {
    const ssize_t sent = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent > 0) {
      bytes.remove_prefix(static_cast<std::size_t>(sent));
      continue;
    }
    if (sent < 0 && errno == EINTR) continue;
    if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd pfd{fd, POLLOUT, 0};
      const int left = millisLeft(deadline);
      if (left == 0 || ::poll(&pfd, 1, left) <= 0) return false;
      continue;
    }
    return false;
  }
  return true;
}

}  // namespace

struct HttpServer::Impl {
  ServerOptions options;
  Router router;
  std::vector<Listener> listeners;
  std::vector<Endpoint> endpoints;
  UniqueFd wake;  // eventfd: stop() wakes the accept thread
  std::thread acceptor;
  std::vector<std::thread> workers;

  std::mutex mutex;
  std::condition_variable ready;
  struct Pending {
    UniqueFd fd;
    bool forbidden = false;  // a Unix peer that is neither root nor us: answer 403
    bool unix_socket = false;
  };
  std::deque<Pending> pending;
  bool stopping = false;
  std::atomic<bool> stopped{false};

  void acceptLoop();
  void workerLoop();
  void serve(int fd, bool unix_socket);
  void refuse(int fd, int status, std::string_view reason);
  bool peerAllowed(int fd);
  void answer(int fd, const Response& response);
};

bool HttpServer::Impl::peerAllowed(int fd) {
  ucred credentials{};
  socklen_t length = sizeof(credentials);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) < 0) return false;
  return credentials.uid == 0 || credentials.uid == ::geteuid();
}

void HttpServer::Impl::answer(int fd, const Response& response) {
  const auto deadline = Clock::now() + options.write_timeout;
  if (!sendAll(fd, serializeResponse(response), deadline)) return;
  // Half-close and drain briefly, so unread request bytes do not turn our
  // close into a reset that discards the response before the client reads it.
  ::shutdown(fd, SHUT_WR);
  const auto linger_deadline = Clock::now() + std::chrono::milliseconds(200);
  char sink[4096];
  std::size_t drained = 0;
  while (drained < 256 * 1024) {
    pollfd pfd{fd, POLLIN, 0};
    const int left = millisLeft(linger_deadline);
    if (left == 0 || ::poll(&pfd, 1, left) <= 0) break;
    const ssize_t got = ::recv(fd, sink, sizeof(sink), MSG_DONTWAIT);
    if (got <= 0) break;
    drained += static_cast<std::size_t>(got);
  }
}

void HttpServer::Impl::refuse(int fd, int status, std::string_view reason) {
  answer(fd, Response::error(status, reason));
}

void HttpServer::Impl::serve(int fd, bool unix_socket) {
  const auto deadline = Clock::now() + options.request_timeout;
  std::string buffer;
  std::size_t head_end = std::string::npos;
  std::size_t scanned = 0;
  char chunk[4096];
  const std::size_t head_cap = options.limits.max_head_bytes;

  // Read until the blank line that ends the head.
  while (head_end == std::string::npos) {
    pollfd pfd{fd, POLLIN, 0};
    const int left = millisLeft(deadline);
    const int ready = left == 0 ? 0 : ::poll(&pfd, 1, left);
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return refuse(fd, 408, "request not received within the timeout");
    const ssize_t got = ::recv(fd, chunk, sizeof(chunk), MSG_DONTWAIT);
    if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (got <= 0) return;  // the client went away
    buffer.append(chunk, static_cast<std::size_t>(got));
    // Search from slightly before the new bytes: the terminator may straddle reads.
    const std::size_t from = scanned >= 3 ? scanned - 3 : 0;
    const std::size_t crlf = buffer.find("\r\n\r\n", from);
    const std::size_t lf = buffer.find("\n\n", from);
    if (crlf != std::string::npos && (lf == std::string::npos || crlf + 2 <= lf)) {
      head_end = crlf + 4;
    } else if (lf != std::string::npos) {
      head_end = lf + 2;
    }
    scanned = buffer.size();
    if (head_end == std::string::npos && buffer.size() > head_cap) {
      return refuse(fd, 431, "request head larger than " + std::to_string(head_cap) + " bytes");
    }
  }
  if (head_end > head_cap) {
    return refuse(fd, 431, "request head larger than " + std::to_string(head_cap) + " bytes");
  }

  auto head = parseRequestHead(std::string_view(buffer).substr(0, head_end), options.limits);
  if (!head) return refuse(fd, head.error().status, head.error().reason);
  Request& request = head->request;
  request.from_unix_socket = unix_socket;

  std::string body = buffer.substr(head_end);
  while (body.size() < head->content_length) {
    pollfd pfd{fd, POLLIN, 0};
    const int left = millisLeft(deadline);
    const int ready = left == 0 ? 0 : ::poll(&pfd, 1, left);
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return refuse(fd, 408, "request body not received within the timeout");
    const ssize_t got = ::recv(fd, chunk, sizeof(chunk), MSG_DONTWAIT);
    if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (got <= 0) return;
    body.append(chunk, static_cast<std::size_t>(got));
  }
  body.resize(head->content_length);  // anything pipelined after it is ignored: we close
  request.body = std::move(body);

  // A handler's exception (e.g. JSON that cannot be encoded) is this
  // request's 500, never the agent's end.
  Response response;
  try {
    response = router.dispatch(request);
  } catch (const std::exception& e) {
    response = Response::error(500, std::string("internal error: ") + e.what());
  }
  answer(fd, response);
}

void HttpServer::Impl::workerLoop() {
  for (;;) {
    Pending connection;
    {
      std::unique_lock lock(mutex);
      ready.wait(lock, [&] { return stopping || !pending.empty(); });
      if (stopping) return;  // queued connections are closed by their UniqueFd
      connection = std::move(pending.front());
      pending.pop_front();
    }
    if (connection.forbidden) {
      refuse(connection.fd.get(), 403, "only root or the agent's own user may use the admin socket");
    } else {
      serve(connection.fd.get(), connection.unix_socket);
    }
  }
}

void HttpServer::Impl::acceptLoop() {
  std::vector<pollfd> fds;
  for (const Listener& listener : listeners) fds.push_back({listener.fd.get(), POLLIN, 0});
  fds.push_back({wake.get(), POLLIN, 0});
  for (;;) {
    for (pollfd& pfd : fds) pfd.revents = 0;
    const int ready_count = ::poll(fds.data(), fds.size(), -1);
    if (ready_count < 0) {
      if (errno == EINTR) continue;
      spdlog::error("admin server: poll: {}", std::strerror(errno));
      return;
    }
    if (fds.back().revents != 0) return;  // stop()
    for (std::size_t i = 0; i + 1 < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      UniqueFd connection(::accept4(fds[i].fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
      if (!connection) {
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
          spdlog::warn("admin server {}: accept: {}", listeners[i].endpoint.describe(), std::strerror(errno));
          if (errno == EMFILE || errno == ENFILE) std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        continue;
      }
      const bool unix_socket = listeners[i].endpoint.kind == Endpoint::Kind::kUnix;
      const bool forbidden = unix_socket && options.unix_require_owner && !peerAllowed(connection.get());
      std::unique_lock lock(mutex);
      if (pending.size() >= options.max_pending) {
        lock.unlock();
        // Answered from the accept thread, so bounded tightly: never block it.
        const auto deadline = Clock::now() + std::chrono::milliseconds(10);
        sendAll(connection.get(), serializeResponse(Response::error(503, "admin server busy")), deadline);
        continue;
      }
      pending.push_back(Pending{std::move(connection), forbidden, unix_socket});
      lock.unlock();
      ready.notify_one();
    }
  }
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { stop(); }

const std::vector<Endpoint>& HttpServer::endpoints() const { return impl_->endpoints; }

Result<std::unique_ptr<HttpServer>> HttpServer::start(ServerOptions options, Router router) {
  if (options.listen.empty()) return fail("admin server: no endpoint to listen on");
  if (options.workers == 0) options.workers = 1;
  auto impl = std::make_unique<Impl>();
  impl->router = std::move(router);
  for (const Endpoint& endpoint : options.listen) {
    auto listener = endpoint.kind == Endpoint::Kind::kUnix ? listenUnix(endpoint, options.unix_socket_mode, options.unix_replace_live)
                                                           : listenTcp(endpoint);
    if (!listener) {
      for (const Listener& done : impl->listeners) {
        if (done.endpoint.kind == Endpoint::Kind::kUnix) ::unlink(done.endpoint.path.c_str());
      }
      return std::unexpected(listener.error());
    }
    impl->endpoints.push_back(listener->endpoint);
    impl->listeners.push_back(std::move(*listener));
  }
  impl->wake = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!impl->wake) return failErrno("admin server: eventfd");
  impl->options = std::move(options);
  Impl* raw = impl.get();
  for (unsigned i = 0; i < raw->options.workers; ++i) raw->workers.emplace_back([raw] { raw->workerLoop(); });
  raw->acceptor = std::thread([raw] { raw->acceptLoop(); });
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

void HttpServer::stop() {
  if (!impl_ || impl_->stopped.exchange(true)) return;
  const std::uint64_t one = 1;
  [[maybe_unused]] const ssize_t written = ::write(impl_->wake.get(), &one, sizeof(one));
  if (impl_->acceptor.joinable()) impl_->acceptor.join();
  // Remove our socket files first, so nobody connects to a server that is going away.
  for (Listener& listener : impl_->listeners) {
    if (listener.endpoint.kind == Endpoint::Kind::kUnix) {
      struct stat current {};
      if (::stat(listener.endpoint.path.c_str(), &current) == 0 && current.st_ino == listener.unix_inode) {
        ::unlink(listener.endpoint.path.c_str());
      }
    }
    listener.fd.reset();
  }
  {
    std::lock_guard lock(impl_->mutex);
    impl_->stopping = true;
  }
  impl_->ready.notify_all();
  for (std::thread& worker : impl_->workers) worker.join();
  impl_->pending.clear();
}

}  // namespace meshlock::admin
