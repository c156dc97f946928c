// The sk_reuseport/migrate program on the real kernel (root): when one of two
// SO_REUSEPORT listeners closes (the old agent of a rolling update), the
// connections queued on it move to the other one instead of being reset,
// although net.ipv4.tcp_migrate_req is 0 in the netns. The control without
// the program shows what it prevents. In an anonymous netns of the test's own.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include "capture/netns.h"
#include "capture/socket_address.h"
#include "capture_reuseport.skel.h"

namespace meshlock::capture {
namespace {

// A new netns with lo up, held by the returned fd only (gone when it closes).
UniqueFd anonymousNetns() {
  UniqueFd out;
  std::thread([&] {
    if (::unshare(CLONE_NEWNET) != 0) return;
    UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
    ifr.ifr_flags = IFF_UP | IFF_LOOPBACK | IFF_RUNNING;
    if (!sock || ::ioctl(sock.get(), SIOCSIFFLAGS, &ifr) != 0) return;
    out = UniqueFd(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  }).join();
  return out;
}

// How many of `clients` connections queued on two reuseport listeners are
// accepted by the second after the first closes without accepting any.
int acceptedAfterClose(int netns, int prog_fd, int clients) {
  auto count = runInNetns<int>(netns, [&]() -> Result<int> {
    auto listener = [&]() {
      UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
      int one = 1;
      ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
      sockaddr_storage ss;
      socklen_t len = SocketAddress{IpAddress::v4(0x7f000001), 15006}.toSockaddr(ss);
      if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(fd.get(), 128) != 0)
        return UniqueFd();
      if (prog_fd >= 0 && ::setsockopt(fd.get(), SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &prog_fd, sizeof(prog_fd)) != 0)
        return UniqueFd();
      return fd;
    };
    UniqueFd old_agent = listener(), new_agent = listener();
    if (!old_agent || !new_agent) return failErrno("reuseport listeners");
    std::vector<UniqueFd> conns;
    for (int i = 0; i < clients; ++i) {
      UniqueFd c(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
      sockaddr_storage ss;
      socklen_t len = SocketAddress{IpAddress::v4(0x7f000001), 15006}.toSockaddr(ss);
      if (::connect(c.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) return failErrno("connect");
      conns.push_back(std::move(c));
    }
    old_agent.reset();  // the old agent closes without accepting what it had queued
    int accepted = 0;
    pollfd p{new_agent.get(), POLLIN, 0};
    while (::poll(&p, 1, 500) == 1) {
      UniqueFd a(::accept4(new_agent.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!a) break;
      ++accepted;
    }
    return accepted;
  });
  return count ? *count : -1;
}

TEST(ReuseportMigrate, QueuedConnectionsMoveToTheNewListenerWhenTheOldCloses) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  UniqueFd netns = anonymousNetns();
  ASSERT_TRUE(netns) << "cannot make a netns";
  auto* skel = capture_reuseport__open_and_load();
  ASSERT_NE(skel, nullptr);
  const int clients = 32;
  const int with = acceptedAfterClose(netns.get(), bpf_program__fd(skel->progs.ml_reuseport), clients);
  EXPECT_EQ(with, clients);
  // Without the program (tcp_migrate_req is 0 in a new netns), the ones the
  // kernel's hash had put on the closed listener are reset: about half.
  const int without = acceptedAfterClose(netns.get(), -1, clients);
  EXPECT_GE(without, 0);
  EXPECT_LT(without, clients) << "every connection survived without the program: the test proves nothing";
  std::printf("queued connections the new listener accepted after the old one closed: %d of %d with the "
              "program, %d of %d without\n", with, clients, without, clients);
  capture_reuseport__destroy(skel);
}

}  // namespace
}  // namespace meshlock::capture
