// Network namespaces from the agent's side: the agent stays in the host netns
// and runs each in-pod socket operation on a short-lived thread that setns()
// into the pod's netns, so no thread of the agent ever has to come back.
#pragma once

#include <sched.h>
#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <thread>
#include <vector>

#include "capture/socket_address.h"
#include "common/error.h"
#include "common/unique_fd.h"

namespace meshlock::capture {

[[nodiscard]] Result<UniqueFd> openNetns(const std::filesystem::path& path);
[[nodiscard]] Result<UniqueFd> openNetnsOfPid(pid_t pid);

// Runs `fn` on a new thread inside the netns `netns_fd` and returns its
// result. The thread ends afterwards, so the caller's netns never changes.
template <typename T>
[[nodiscard]] Result<T> runInNetns(int netns_fd, const std::function<Result<T>()>& fn) {
  Result<T> result = fail("runInNetns: not run");
  std::thread worker([&] {
    if (::setns(netns_fd, CLONE_NEWNET) != 0) {
      result = failErrno("setns(CLONE_NEWNET)");
      return;
    }
    result = fn();
  });
  worker.join();
  return result;
}

// A TCP listener bound to `address` inside the netns (SO_REUSEADDR,
// IPV6_V6ONLY for IPv6, close-on-exec, blocking). With a reuseport program
// (>= 0) it also sets SO_REUSEPORT, so another agent process can listen on
// the same address at once (a rolling update), and attaches the program to
// the port's reuseport group once listening (see bpf/reuseport.bpf.c).
[[nodiscard]] Result<UniqueFd> openListenerInNetns(int netns_fd, const SocketAddress& address,
                                                   int backlog = 1024, int reuseport_prog_fd = -1);
// A TCP socket connected to `address` from inside the netns (used by the
// agent for upstream connections, and by tests).
[[nodiscard]] Result<UniqueFd> connectInNetns(int netns_fd, const SocketAddress& address);
// A non-blocking TCP socket created inside the netns by the calling thread,
// which enters the netns for the socket() call only and comes back: cheap
// enough per connection (two setns calls, no thread). Aborts if the thread
// cannot return, since every later socket would open in the wrong netns.
[[nodiscard]] Result<UniqueFd> socketInNetns(int netns_fd, int family);
// The netns's addresses other than loopback and IPv6 link-local.
[[nodiscard]] Result<std::vector<IpAddress>> netnsAddresses(int netns_fd);
// SO_NETNS_COOKIE of a socket (Linux >= 5.14).
[[nodiscard]] Result<std::uint64_t> socketNetnsCookie(int socket_fd);

}  // namespace meshlock::capture
