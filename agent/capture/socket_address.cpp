// Socket address conversions between text, sockaddr and the BPF map form.
#include "capture/socket_address.h"

#include <arpa/inet.h>

#include <cstring>

#include "capture/bpf_abi.h"

namespace meshlock::capture {

void toBpf(const IpAddress& ip, ml_addr& out) {
  std::memset(&out, 0, sizeof(out));
  if (ip.isV4()) {
    out.bytes[10] = 0xff;
    out.bytes[11] = 0xff;
    std::memcpy(&out.bytes[12], ip.bytes().data(), 4);
  } else {
    std::memcpy(out.bytes, ip.bytes().data(), 16);
  }
}

IpAddress ipFromBpf(const ml_addr& in, int family) {
  if (family == AF_INET) return IpAddress::fromBytes(AF_INET, std::span<const uint8_t>(&in.bytes[12], 4));
  return IpAddress::fromBytes(AF_INET6, std::span<const uint8_t>(in.bytes, 16));
}

Result<SocketAddress> SocketAddress::fromSockaddr(const sockaddr* sa, socklen_t len) {
  SocketAddress out;
  if (sa->sa_family == AF_INET && len >= sizeof(sockaddr_in)) {
    auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    out.ip = IpAddress::fromBytes(AF_INET, std::span(reinterpret_cast<const uint8_t*>(&in->sin_addr), 4));
    out.port = ntohs(in->sin_port);
    return out;
  }
  if (sa->sa_family == AF_INET6 && len >= sizeof(sockaddr_in6)) {
    auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    const auto* bytes = reinterpret_cast<const uint8_t*>(&in6->sin6_addr);
    // A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
    out.ip = IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) ? IpAddress::fromBytes(AF_INET, std::span(bytes + 12, 4))
                                                   : IpAddress::fromBytes(AF_INET6, std::span(bytes, 16));
    out.port = ntohs(in6->sin6_port);
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
  if (ip.isV4()) {
    auto* in = reinterpret_cast<sockaddr_in*>(&out);
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    std::memcpy(&in->sin_addr, ip.bytes().data(), 4);
    return sizeof(sockaddr_in);
  }
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&out);
  in6->sin6_family = AF_INET6;
  in6->sin6_port = htons(port);
  std::memcpy(&in6->sin6_addr, ip.bytes().data(), 16);
  return sizeof(sockaddr_in6);
}

std::string SocketAddress::toString() const {
  if (ip.isV6()) return "[" + ip.toString() + "]:" + std::to_string(port);
  return ip.toString() + ":" + std::to_string(port);
}

}  // namespace meshlock::capture
