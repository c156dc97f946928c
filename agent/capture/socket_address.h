// An IPv4 or IPv6 socket address as a value type, convertible to and from
// sockaddr, and addresses in the 16-byte form the BPF maps use (v4 as
// ::ffff:a.b.c.d).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/error.h"
#include "common/ip_address.h"

struct ml_addr;

namespace meshlock::capture {

using meshlock::IpAddress;

// The 16-byte map form: IPv4 as ::ffff:a.b.c.d.
void toBpf(const IpAddress& ip, ml_addr& out);
[[nodiscard]] IpAddress ipFromBpf(const ml_addr& in, int family);

struct SocketAddress {
  IpAddress ip;
  std::uint16_t port = 0;  // host byte order

  [[nodiscard]] static Result<SocketAddress> fromSockaddr(const sockaddr* sa, socklen_t len);
  // The socket's peer or local address (getpeername / getsockname).
  [[nodiscard]] static Result<SocketAddress> peerOf(int fd);
  [[nodiscard]] static Result<SocketAddress> localOf(int fd);
  [[nodiscard]] socklen_t toSockaddr(sockaddr_storage& out) const;
  [[nodiscard]] std::string toString() const;  // 1.2.3.4:80, [::1]:80
  friend bool operator==(const SocketAddress&, const SocketAddress&) = default;
};

}  // namespace meshlock::capture
