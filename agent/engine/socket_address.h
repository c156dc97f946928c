// An IPv4/IPv6 socket address as a value: parsed from "host:port" /
// "[v6]:port", printed back, passed to bind/connect.
#pragma once

#include <sys/socket.h>

#include <string>
#include <string_view>

#include "common/error.h"
#include "common/ip_address.h"

namespace meshlock::engine {

class SocketAddress {
 public:
  SocketAddress() = default;
  [[nodiscard]] static Result<SocketAddress> parse(std::string_view text);
  [[nodiscard]] static SocketAddress fromSockaddr(const sockaddr* address, socklen_t length);
  // The local or remote address of a socket.
  [[nodiscard]] static Result<SocketAddress> localOf(int fd);
  [[nodiscard]] static Result<SocketAddress> peerOf(int fd);

  [[nodiscard]] const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage_); }
  [[nodiscard]] socklen_t length() const { return length_; }
  [[nodiscard]] int family() const { return storage_.ss_family; }
  [[nodiscard]] bool empty() const { return length_ == 0; }
  [[nodiscard]] uint16_t port() const;
  [[nodiscard]] std::string toString() const;  // "10.0.0.1:80", "[::1]:80"
  [[nodiscard]] std::string hostString() const;  // the address alone: "10.0.0.1", "::1"
  [[nodiscard]] IpAddress ip() const;             // IPv4-mapped IPv6 as IPv4

 private:
  sockaddr_storage storage_{};
  socklen_t length_ = 0;
};

}  // namespace meshlock::engine
