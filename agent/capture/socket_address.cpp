// Socket address conversions between text, sockaddr and the BPF map form.
#include "capture/socket_address.h"

#include <arpa/inet.h>

#include <cstring>

#include "capture/bpf_abi.h"

namespace meshlock::capture {

Result<IpAddress> IpAddress::parse(std::string_view text) {
  std::string s(text);
  IpAddress ip;
  if (inet_pton(AF_INET, s.c_str(), ip.bytes.data()) == 1) {
    ip.family = AF_INET;
    return ip;
  }
  if (inet_pton(AF_INET6, s.c_str(), ip.bytes.data()) == 1) {
    ip.family = AF_INET6;
    return ip;
  }
  return fail("not an IP address: '" + s + "'");
}

IpAddress IpAddress::v4(std::uint32_t host_order) {
  IpAddress ip;
  std::uint32_t be = htonl(host_order);
  std::memcpy(ip.bytes.data(), &be, 4);
  return ip;
}

std::string IpAddress::toString() const {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(family, bytes.data(), buf, sizeof(buf));
  return buf;
}

bool IpAddress::isLoopback() const {
  if (family == AF_INET) return bytes[0] == 127;
  static constexpr std::array<std::uint8_t, 16> kV6Loopback = {0, 0, 0, 0, 0, 0, 0, 0,
                                                               0, 0, 0, 0, 0, 0, 0, 1};
  return bytes == kV6Loopback;
}

void IpAddress::toBpf(ml_addr& out) const {
  std::memset(&out, 0, sizeof(out));
  if (family == AF_INET) {
    out.bytes[10] = 0xff;
    out.bytes[11] = 0xff;
    std::memcpy(&out.bytes[12], bytes.data(), 4);
  } else {
    std::memcpy(out.bytes, bytes.data(), 16);
  }
}

IpAddress IpAddress::fromBpf(const ml_addr& in, int family) {
  IpAddress ip;
  ip.family = family;
  if (family == AF_INET) {
    std::memcpy(ip.bytes.data(), &in.bytes[12], 4);
  } else {
    std::memcpy(ip.bytes.data(), in.bytes, 16);
  }
  return ip;
}

Result<SocketAddress> SocketAddress::fromSockaddr(const sockaddr* sa, socklen_t len) {
  SocketAddress out;
  if (sa->sa_family == AF_INET && len >= sizeof(sockaddr_in)) {
    auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    out.ip.family = AF_INET;
    std::memcpy(out.ip.bytes.data(), &in->sin_addr, 4);
    out.port = ntohs(in->sin_port);
    return out;
  }
  if (sa->sa_family == AF_INET6 && len >= sizeof(sockaddr_in6)) {
    auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    out.ip.family = AF_INET6;
    std::memcpy(out.ip.bytes.data(), &in6->sin6_addr, 16);
    out.port = ntohs(in6->sin6_port);
    // A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
      out.ip.family = AF_INET;
      std::memmove(out.ip.bytes.data(), out.ip.bytes.data() + 12, 4);
      std::memset(out.ip.bytes.data() + 4, 0, 12);
    }
    return out;
  }
  return fail("unsupported socket address family " + std::to_string(sa->sa_family));
}

Result<SocketAddress> SocketAddress::peerOf(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return failErrno("getpeername");
  return fromSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

Result<SocketAddress> SocketAddress::localOf(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return failErrno("getsockname");
  return fromSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

socklen_t SocketAddress::toSockaddr(sockaddr_storage& out) const {
  std::memset(&out, 0, sizeof(out));
  if (ip.family == AF_INET) {
    auto* in = reinterpret_cast<sockaddr_in*>(&out);
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    std::memcpy(&in->sin_addr, ip.bytes.data(), 4);
    return sizeof(sockaddr_in);
  }
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&out);
  in6->sin6_family = AF_INET6;
  in6->sin6_port = htons(port);
  std::memcpy(&in6->sin6_addr, ip.bytes.data(), 16);
  return sizeof(sockaddr_in6);
}

std::string SocketAddress::toString() const {
  if (ip.family == AF_INET6) return "[" + ip.toString() + "]:" + std::to_string(port);
  return ip.toString() + ":" + std::to_string(port);
}

}  // namespace meshlock::capture
