// Endpoint parsing and the client-side connect with a deadline.
#include "admin/endpoint.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <charconv>
#include <cstring>

namespace meshlock::admin {

Endpoint Endpoint::tcp(std::string host, std::uint16_t port) {
  Endpoint endpoint;
  endpoint.kind = Kind::kTcp;
  endpoint.host = std::move(host);
  endpoint.port = port;
  return endpoint;
}

Endpoint Endpoint::unixSocket(std::string path) {
  Endpoint endpoint;
  endpoint.kind = Kind::kUnix;
  endpoint.path = std::move(path);
  return endpoint;
}

Result<Endpoint> Endpoint::parse(std::string_view spec) {
  const std::string original(spec);
  if (spec.starts_with("unix:")) {
    spec.remove_prefix(5);
    if (spec.starts_with("//")) spec.remove_prefix(2);  // unix:///path
    if (spec.empty()) return fail("endpoint \"" + original + "\": empty socket path");
    if (spec.size() >= sizeof(sockaddr_un{}.sun_path)) {
      return fail("endpoint \"" + original + "\": socket path too long");
    }
    return unixSocket(std::string(spec));
  }
  if (spec.starts_with("/")) return unixSocket(std::string(spec));
  if (spec.starts_with("http://")) spec.remove_prefix(7);
  if (spec.starts_with("https://")) {
    return fail("endpoint \"" + original + "\": the admin API is plain HTTP on a local address");
  }
  while (spec.ends_with("/")) spec.remove_suffix(1);
  std::string host;
  std::string_view port_text;
  if (spec.starts_with("[")) {
    const std::size_t close = spec.find(']');
    if (close == std::string_view::npos || close + 1 >= spec.size() || spec[close + 1] != ':') {
      return fail("endpoint \"" + original + "\": expected [ipv6]:port");
    }
    host = std::string(spec.substr(1, close - 1));
    port_text = spec.substr(close + 2);
  } else {
    const std::size_t colon = spec.rfind(':');
    if (colon == std::string_view::npos || spec.find(':') != colon) {
      return fail("endpoint \"" + original + "\": expected host:port, http://host:port or unix:/path");
    }
    host = std::string(spec.substr(0, colon));
    port_text = spec.substr(colon + 1);
  }
  unsigned port = 0;
  const auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc() || end != port_text.data() + port_text.size() || port > 65535) {
    return fail("endpoint \"" + original + "\": bad port \"" + std::string(port_text) + "\"");
  }
  if (host.empty()) return fail("endpoint \"" + original + "\": empty host");
  return tcp(std::move(host), static_cast<std::uint16_t>(port));
}

std::string Endpoint::describe() const {
  if (kind == Kind::kUnix) return "unix:" + path;
  if (host.find(':') != std::string::npos) return "http://[" + host + "]:" + std::to_string(port);
  return "http://" + host + ":" + std::to_string(port);
}

namespace {

Status waitConnected(int fd, std::chrono::milliseconds timeout, const std::string& what) {
  pollfd pfd{fd, POLLOUT, 0};
  int ready;
  do {
    ready = ::poll(&pfd, 1, static_cast<int>(timeout.count()));
  } while (ready < 0 && errno == EINTR);
  if (ready < 0) return failErrno(what + ": poll");
  if (ready == 0) return failErrno(what + ": connect", ETIMEDOUT);
  int err = 0;
  socklen_t len = sizeof(err);
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) return failErrno(what + ": getsockopt");
  if (err != 0) return failErrno(what + ": connect", err);
  return {};
}

Result<UniqueFd> connectAddress(const sockaddr* address, socklen_t length, int family,
                                std::chrono::milliseconds timeout, const std::string& what) {
  UniqueFd fd(::socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return failErrno(what + ": socket");
  if (::connect(fd.get(), address, length) < 0) {
    if (errno != EINPROGRESS && errno != EAGAIN) return failErrno(what + ": connect");
    if (auto ok = waitConnected(fd.get(), timeout, what); !ok) return std::unexpected(ok.error());
  }
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) < 0) return failErrno(what + ": fcntl");
  return fd;
}

}  // namespace

Result<UniqueFd> connectTo(const Endpoint& endpoint, std::chrono::milliseconds timeout) {
  const std::string what = endpoint.describe();
  if (endpoint.kind == Endpoint::Kind::kUnix) {
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (endpoint.path.size() >= sizeof(address.sun_path)) return fail(what + ": socket path too long");
    std::memcpy(address.sun_path, endpoint.path.data(), endpoint.path.size());
    return connectAddress(reinterpret_cast<sockaddr*>(&address), sizeof(address), AF_UNIX, timeout, what);
  }
  const std::string host = endpoint.host == "localhost" ? "127.0.0.1" : endpoint.host;
  sockaddr_in v4{};
  if (::inet_pton(AF_INET, host.c_str(), &v4.sin_addr) == 1) {
    v4.sin_family = AF_INET;
    v4.sin_port = htons(endpoint.port);
    return connectAddress(reinterpret_cast<sockaddr*>(&v4), sizeof(v4), AF_INET, timeout, what);
  }
  sockaddr_in6 v6{};
  if (::inet_pton(AF_INET6, host.c_str(), &v6.sin6_addr) == 1) {
    v6.sin6_family = AF_INET6;
    v6.sin6_port = htons(endpoint.port);
    return connectAddress(reinterpret_cast<sockaddr*>(&v6), sizeof(v6), AF_INET6, timeout, what);
  }
  return fail(what + ": host must be an IP address or localhost (no DNS for the admin API)");
}

}  // namespace meshlock::admin
