// In-pod socket operations, each on a thread that enters the pod's netns.
#include "capture/netns.h"

#include <fcntl.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>

#include <string>

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

namespace meshlock::capture {

Result<UniqueFd> openNetns(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return failErrno("open netns " + path.string());
  return UniqueFd(fd);
}

Result<UniqueFd> openNetnsOfPid(pid_t pid) {
  return openNetns(std::filesystem::path("/proc") / std::to_string(pid) / "ns" / "net");
}

Result<UniqueFd> openListenerInNetns(int netns_fd, const SocketAddress& address, int backlog,
                                     int reuseport_prog_fd) {
  return runInNetns<UniqueFd>(netns_fd, [&]() -> Result<UniqueFd> {
    UniqueFd fd(::socket(address.ip.family(), SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP));
    if (!fd) return failErrno("socket");
    int one = 1;
    if (::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0)
      return failErrno("setsockopt(SO_REUSEADDR)");
    // Both agents of a rolling update run as root: the kernel groups
    // SO_REUSEPORT sockets of one owner only (inet_csk_bind_conflict).
    if (reuseport_prog_fd >= 0 && ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
      return failErrno("setsockopt(SO_REUSEPORT)");
    if (address.ip.family() == AF_INET6 &&
        ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0)
      return failErrno("setsockopt(IPV6_V6ONLY)");
    sockaddr_storage ss;
    socklen_t len = address.toSockaddr(ss);
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0)
      return failErrno("bind " + address.toString());
    if (::listen(fd.get(), backlog) != 0) return failErrno("listen " + address.toString());
    // After listen(): the group exists, and the program replaces whatever a
    // previous agent attached to it.
    if (reuseport_prog_fd >= 0 &&
        ::setsockopt(fd.get(), SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &reuseport_prog_fd,
                     sizeof(reuseport_prog_fd)) != 0)
      return failErrno("setsockopt(SO_ATTACH_REUSEPORT_EBPF) on " + address.toString());
    return fd;
  });
}

Result<UniqueFd> connectInNetns(int netns_fd, const SocketAddress& address) {
  return runInNetns<UniqueFd>(netns_fd, [&]() -> Result<UniqueFd> {
    UniqueFd fd(::socket(address.ip.family(), SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP));
    if (!fd) return failErrno("socket");
    sockaddr_storage ss;
    socklen_t len = address.toSockaddr(ss);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0)
      return failErrno("connect " + address.toString());
    return fd;
  });
}

Result<std::vector<IpAddress>> netnsAddresses(int netns_fd) {
  return runInNetns<std::vector<IpAddress>>(
      netns_fd, []() -> Result<std::vector<IpAddress>> {
        ifaddrs* list = nullptr;
        if (::getifaddrs(&list) != 0) return failErrno("getifaddrs");
        std::vector<IpAddress> out;
        for (ifaddrs* it = list; it != nullptr; it = it->ifa_next) {
          if (it->ifa_addr == nullptr) continue;
          int family = it->ifa_addr->sa_family;
          if (family != AF_INET && family != AF_INET6) continue;
          auto sa = SocketAddress::fromSockaddr(
              it->ifa_addr, family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6));
          if (!sa || sa->ip.isLoopback()) continue;
          if (family == AF_INET6 && sa->ip.bytes()[0] == 0xfe && (sa->ip.bytes()[1] & 0xc0) == 0x80)
            continue;  // link-local
          out.push_back(sa->ip);
        }
        ::freeifaddrs(list);
        return out;
      });
}

Result<std::uint64_t> socketNetnsCookie(int socket_fd) {
  std::uint64_t cookie = 0;
  socklen_t len = sizeof(cookie);
  if (::getsockopt(socket_fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) != 0)
    return failErrno("getsockopt(SO_NETNS_COOKIE)");
  return cookie;
}

Result<UniqueFd> socketInNetns(int netns_fd, int family) {
  thread_local UniqueFd home(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!home) return failErrno("open /proc/thread-self/ns/net");
  if (::setns(netns_fd, CLONE_NEWNET) != 0) return failErrno("setns into the pod's netns");
  UniqueFd fd(::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  const int socket_errno = errno;
  MESHLOCK_CHECK(::setns(home.get(), CLONE_NEWNET) == 0);
  if (!fd) return failErrno("socket in the pod's netns", socket_errno);
  return fd;
}

}  // namespace meshlock::capture
