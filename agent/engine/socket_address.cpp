// SocketAddress parsing and printing.
#include "engine/socket_address.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <charconv>
#include <cstring>

namespace meshlock::engine {

Result<SocketAddress> SocketAddress::parse(std::string_view text) {
  std::string_view host;
  std::string_view port_text;
  if (text.starts_with('[')) {
    size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return fail("address " + std::string(text) + ": expected [v6]:port");
    }
    host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return fail("address " + std::string(text) + ": expected host:port");
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
  }
  unsigned port = 0;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || end != port_text.data() + port_text.size() || port > 65535) {
    return fail("address " + std::string(text) + ": bad port");
  }
  SocketAddress out;
  std::string host_str(host);
  auto* v4 = reinterpret_cast<sockaddr_in*>(&out.storage_);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&out.storage_);
  if (inet_pton(AF_INET, host_str.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    out.length_ = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, host_str.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    out.length_ = sizeof(sockaddr_in6);
  } else {
    return fail("address " + std::string(text) + ": host must be an IPv4 or IPv6 literal");
  }
  return out;
}

SocketAddress SocketAddress::fromSockaddr(const sockaddr* address, socklen_t length) {
  SocketAddress out;
  length = std::min<socklen_t>(length, sizeof out.storage_);
  std::memcpy(&out.storage_, address, length);
  out.length_ = length;
  return out;
}

Result<SocketAddress> SocketAddress::localOf(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return failErrno("getsockname");
  return fromSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

Result<SocketAddress> SocketAddress::peerOf(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return failErrno("getpeername");
  return fromSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

uint16_t SocketAddress::port() const {
  if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
  if (family() == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
  return 0;
}

IpAddress SocketAddress::ip() const {
  if (family() == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr;
    return IpAddress::fromBytes(AF_INET, std::span(reinterpret_cast<const uint8_t*>(&in), 4));
  }
  if (family() == AF_INET6) {
    const auto& in6 = reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr;
    const auto* bytes = reinterpret_cast<const uint8_t*>(&in6);
    if (IN6_IS_ADDR_V4MAPPED(&in6)) return IpAddress::fromBytes(AF_INET, std::span(bytes + 12, 4));
    return IpAddress::fromBytes(AF_INET6, std::span(bytes, 16));
  }
  return {};
}

std::string SocketAddress::hostString() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (family() == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr, buf, sizeof buf);
  } else if (family() == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr, buf, sizeof buf);
  } else {
    return "(unset)";
  }
  return buf;
}

std::string SocketAddress::toString() const {
  if (family() == AF_INET) return hostString() + ":" + std::to_string(port());
  if (family() == AF_INET6) return "[" + hostString() + "]:" + std::to_string(port());
  return "(unset)";
}

}  // namespace meshlock::engine
