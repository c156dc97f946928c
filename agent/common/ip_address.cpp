#include "common/ip_address.h"

#include <charconv>

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

namespace meshlock {

std::optional<IpAddress> IpAddress::parse(std::string_view text) {
  if (text.empty() || text.size() > 45) return std::nullopt;
  std::string s(text);
  IpAddress ip;
  if (inet_pton(AF_INET, s.c_str(), ip.bytes_.data()) == 1) {
    ip.family_ = 4;
    return ip;
  }
  if (inet_pton(AF_INET6, s.c_str(), ip.bytes_.data()) == 1) {
    ip.family_ = 6;
    return ip;
  }
  return std::nullopt;
}

IpAddress IpAddress::v4(uint32_t host_order) {
  IpAddress ip;
  ip.family_ = 4;
  uint32_t net = htonl(host_order);
  std::memcpy(ip.bytes_.data(), &net, 4);
  return ip;
}

IpAddress IpAddress::fromBytes(int family, std::span<const uint8_t> bytes) {
  IpAddress ip;
  if (family == AF_INET && bytes.size() >= 4) {
    ip.family_ = 4;
    std::copy_n(bytes.begin(), 4, ip.bytes_.begin());
  } else if (family == AF_INET6 && bytes.size() >= 16) {
    ip.family_ = 6;
    std::copy_n(bytes.begin(), 16, ip.bytes_.begin());
  }
  return ip;
}

bool IpAddress::isLoopback() const {
  if (family_ == 4) return bytes_[0] == 127;
  static constexpr std::array<uint8_t, 16> kV6Loopback = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  return family_ == 6 && bytes_ == kV6Loopback;
}

std::string IpAddress::toString() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (family_ == 4) {
    inet_ntop(AF_INET, bytes_.data(), buf, sizeof buf);
  } else if (family_ == 6) {
    inet_ntop(AF_INET6, bytes_.data(), buf, sizeof buf);
  }
  return buf;
}

std::optional<IpPrefix> IpPrefix::parse(std::string_view text) {
  const std::size_t slash = text.find('/');
  auto base = IpAddress::parse(text.substr(0, slash));
  if (!base) return std::nullopt;
  const unsigned bits = base->isV4() ? 32 : 128;
  unsigned length = bits;
  if (slash != std::string_view::npos) {
    std::string_view digits = text.substr(slash + 1);
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), length);
    if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size() || length > bits) return std::nullopt;
  }
  IpPrefix prefix;
  prefix.base_ = *base;
  prefix.length_ = length;
  return prefix;
}

bool IpPrefix::contains(const IpAddress& ip) const {
  if (ip.family() != base_.family()) return false;
  const auto& a = ip.bytes();
  const auto& b = base_.bytes();
  unsigned whole = length_ / 8;
  for (unsigned i = 0; i < whole; ++i)
    if (a[i] != b[i]) return false;
  if (const unsigned rest = length_ % 8; rest != 0) {
    const uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest));
    if ((a[whole] & mask) != (b[whole] & mask)) return false;
  }
  return true;
}

}  // namespace meshlock
