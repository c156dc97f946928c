// An IPv4 or IPv6 address as a value, shared by every part that names one:
// cluster state (pod and service IPs), policy, capture (BPF map keys) and the
// agent. Compared and hashed by value; printed the way Kubernetes writes it.
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace meshlock {

class IpAddress {
 public:
  IpAddress() = default;  // unset: neither family
  // "10.0.0.1", "fd00::1"; nullopt for anything else (no ports, no zones).
  [[nodiscard]] static std::optional<IpAddress> parse(std::string_view text);
  [[nodiscard]] static IpAddress v4(uint32_t host_order);
  // From network-order bytes: 4 for AF_INET, 16 for AF_INET6.
  [[nodiscard]] static IpAddress fromBytes(int family, std::span<const uint8_t> bytes);

  [[nodiscard]] bool isV4() const { return family_ == 4; }
  [[nodiscard]] bool isV6() const { return family_ == 6; }
  [[nodiscard]] int family() const { return family_ == 4 ? AF_INET : family_ == 6 ? AF_INET6 : AF_UNSPEC; }
  // Network order; IPv4 in the first four bytes, the rest zero.
  [[nodiscard]] const std::array<uint8_t, 16>& bytes() const { return bytes_; }
  [[nodiscard]] bool isLoopback() const;  // 127.0.0.0/8, ::1
  [[nodiscard]] std::string toString() const;
  auto operator<=>(const IpAddress&) const = default;

 private:
  uint8_t family_ = 0;  // 4 or 6; 0 = unset
  std::array<uint8_t, 16> bytes_{};
};

// An address block: "10.0.0.0/8", "fd00::/64", or one address (all its bits).
class IpPrefix {
 public:
  // nullopt for anything else, or a prefix length beyond the family's bits.
  [[nodiscard]] static std::optional<IpPrefix> parse(std::string_view text);
  [[nodiscard]] bool contains(const IpAddress& ip) const;
  [[nodiscard]] const IpAddress& base() const { return base_; }
  [[nodiscard]] unsigned length() const { return length_; }
  bool operator==(const IpPrefix&) const = default;

 private:
  IpAddress base_;
  unsigned length_ = 0;
};

}  // namespace meshlock
