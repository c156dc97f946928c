// Address conversions between text, sockaddr and the BPF map form.
#include "capture/socket_address.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include "capture/bpf_abi.h"

namespace meshlock::capture {
namespace {

TEST(SocketAddress, Ipv4RoundTripsThroughTheMapForm) {
  auto ip = IpAddress::parse("10.1.2.3");
  ASSERT_TRUE(ip);
  ml_addr key;
  toBpf(*ip, key);
  const std::uint8_t mapped[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3};
  EXPECT_EQ(std::memcmp(key.bytes, mapped, 16), 0) << "IPv4 is ::ffff:a.b.c.d in maps";
  EXPECT_EQ(ipFromBpf(key, AF_INET), *ip);
}

TEST(SocketAddress, V4MappedPeerOfADualStackSocketIsIpv4) {
  sockaddr_in6 in6{};
  in6.sin6_family = AF_INET6;
  in6.sin6_port = htons(15001);
  inet_pton(AF_INET6, "::ffff:127.0.0.1", &in6.sin6_addr);
  auto sa = SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&in6), sizeof(in6));
  ASSERT_TRUE(sa);
  EXPECT_EQ(sa->toString(), "127.0.0.1:15001");
}

TEST(SocketAddress, Ipv6TextAndLoopback) {
  SocketAddress sa{*IpAddress::parse("fd00::1"), 443};
  EXPECT_EQ(sa.toString(), "[fd00::1]:443");
  EXPECT_FALSE(sa.ip.isLoopback());
  EXPECT_TRUE(IpAddress::parse("::1")->isLoopback());
  EXPECT_TRUE(IpAddress::parse("127.9.9.9")->isLoopback());
  EXPECT_FALSE(IpAddress::parse("not-an-ip"));
  sockaddr_storage ss;
  socklen_t len = sa.toSockaddr(ss);
  EXPECT_EQ(SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&ss), len).value(), sa);
}

TEST(BpfAbi, EveryCounterHasAName) {
  for (auto name : kCounterNames) EXPECT_FALSE(name.empty());
}

}  // namespace
}  // namespace meshlock::capture
