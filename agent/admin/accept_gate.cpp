// The gate's bookkeeping and the accept() civetweb calls (see accept_gate.h).
#include "admin/accept_gate.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <shared_mutex>
#include <vector>

#include "admin/http_message.h"
#include "common/error.h"

namespace meshlock::admin {
namespace {

// Every live gate, by the inode of the socket it guards. Process-wide because
// accept() is: this is the one global of the admin server, and only the
// interposed accept() below reads it.
std::shared_mutex registry_mutex;
std::vector<AcceptGate*>& registry() {
  static std::vector<AcceptGate*> gates;
  return gates;
}

ino_t socketInode(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) return 0;
  return st.st_ino;
}

std::optional<std::uint32_t> parseIpv4(std::string_view text) {
  char buffer[INET_ADDRSTRLEN] = {};
  if (text.size() >= sizeof(buffer)) return std::nullopt;
  std::memcpy(buffer, text.data(), text.size());
  in_addr address{};
  if (::inet_pton(AF_INET, buffer, &address) != 1) return std::nullopt;
  return ntohl(address.s_addr);
}

}  // namespace

std::string cannedResponse(int status, std::string_view reason) {
  return serializeResponse(Response::error(status, reason));
}

AcceptGate::AcceptGate(GateLimits limits, int listen_fd) : limits_(limits), inode_(socketInode(listen_fd)) {
  MESHLOCK_CHECK(inode_ != 0);
  std::unique_lock lock(registry_mutex);
  registry().push_back(this);
}

AcceptGate::~AcceptGate() {
  std::unique_lock lock(registry_mutex);
  auto& gates = registry();
  gates.erase(std::remove(gates.begin(), gates.end(), this), gates.end());
}

void AcceptGate::refuse(int fd, int status, std::string_view reason, std::atomic<std::uint64_t>& counter) {
  counter.fetch_add(1, std::memory_order_relaxed);
  if (status != 0) {
    // Best effort and never blocking: this runs on civetweb's accept thread.
    const std::string answer = cannedResponse(status, reason);
    [[maybe_unused]] const ssize_t sent = ::send(fd, answer.data(), answer.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    ::shutdown(fd, SHUT_WR);
    // A request already here, unread at close, would reset the connection
    // and could take the answer with it: read what is there (never waiting).
    char sink[4096];
    for (int i = 0; i < 4 && ::recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0; ++i) {
    }
  }
  ::close(fd);
}

bool AcceptGate::admit(int fd, sockaddr* address, socklen_t capacity, socklen_t* length) {
  std::unique_lock lock(mutex_);
  if (closed_) {
    lock.unlock();
    refuse(fd, 503, "admin server stopping", stopping_);
    return false;
  }
  if (open_.size() >= limits_.max_connections) {
    lock.unlock();
    refuse(fd, 503, "admin server busy: " + std::to_string(limits_.max_connections) + " connections open", total_cap_);
    return false;
  }
  if (limits_.unix_socket) {
    ucred credentials{};
    socklen_t size = sizeof(credentials);
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &size) != 0) {
      lock.unlock();
      refuse(fd, 0, "", peer_uid_);
      return false;
    }
    if (limits_.unix_require_owner && credentials.uid != 0 && credentials.uid != ::geteuid()) {
      lock.unlock();
      refuse(fd, 403, "only root or the agent's own user may use the admin socket", peer_uid_);
      return false;
    }
    // civetweb only knows IPv4 peers: tell it 0.0.0.0:<ticket>, an address no
    // TCP peer can have, so a request can be traced back to this admission.
    if (address == nullptr || length == nullptr || capacity < sizeof(sockaddr_in)) {
      lock.unlock();
      refuse(fd, 0, "", peer_uid_);
      return false;
    }
    std::uint16_t ticket = next_ticket_;
    while (ticket == 0 || open_.contains({0, ticket})) ++ticket;  // at most max_connections taken
    next_ticket_ = static_cast<std::uint16_t>(ticket + 1);
    open_.emplace(std::pair<std::uint32_t, int>{0, ticket}, Admitted{credentials.uid, fd});
    sockaddr_in fake{};
    fake.sin_family = AF_INET;
    fake.sin_port = htons(ticket);
    std::memcpy(address, &fake, sizeof(fake));
    *length = sizeof(fake);
    return true;
  }
  sockaddr_in peer{};
  socklen_t peer_length = sizeof(peer);
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_length) != 0 || peer.sin_family != AF_INET) {
    lock.unlock();
    refuse(fd, 0, "", peer_uid_);
    return false;
  }
  const std::uint32_t source = ntohl(peer.sin_addr.s_addr);
  std::size_t& from_source = per_source_[source];
  if (from_source >= limits_.per_source) {
    lock.unlock();
    char text[INET_ADDRSTRLEN] = "?";
    ::inet_ntop(AF_INET, &peer.sin_addr, text, sizeof(text));
    refuse(fd, 503, "too many connections from " + std::string(text) + " (at most " +
                        std::to_string(limits_.per_source) + ")", source_cap_);
    return false;
  }
  ++from_source;
  open_.emplace(std::pair<std::uint32_t, int>{source, ntohs(peer.sin_port)}, Admitted{std::nullopt, fd});
  return true;
}

std::optional<AcceptGate::Admitted> AcceptGate::admitted(std::string_view address, int port) const {
  const auto ip = parseIpv4(address);
  if (!ip) return std::nullopt;
  std::lock_guard lock(mutex_);
  auto it = open_.find({*ip, port});
  if (it == open_.end()) return std::nullopt;
  // A TCP peer claiming 0.0.0.0 cannot exist; a ticket only matches a Unix admission.
  if (limits_.unix_socket != it->second.unix_uid.has_value()) return std::nullopt;
  return it->second;
}

void AcceptGate::release(std::string_view address, int port) {
  const auto ip = parseIpv4(address);
  if (!ip) return;
  std::lock_guard lock(mutex_);
  if (open_.erase({*ip, port}) == 0) return;
  if (limits_.unix_socket) return;
  auto it = per_source_.find(*ip);
  if (it != per_source_.end() && --it->second == 0) per_source_.erase(it);
}

void AcceptGate::close() {
  std::lock_guard lock(mutex_);
  closed_ = true;
}

GateRefusals AcceptGate::refusals() const {
  return {total_cap_.load(std::memory_order_relaxed), source_cap_.load(std::memory_order_relaxed),
          peer_uid_.load(std::memory_order_relaxed), stopping_.load(std::memory_order_relaxed)};
}

std::size_t AcceptGate::open() const {
  std::lock_guard lock(mutex_);
  return open_.size();
}

}  // namespace meshlock::admin

// civetweb's master thread calls accept() on its listeners. Sockets of a
// registered gate are admitted or refused here; any other descriptor (nobody
// else in the agent calls plain accept(): the engine uses accept4/io_uring)
// behaves exactly as libc's accept, which is accept4 without flags.
extern "C" int accept(int fd, sockaddr* address, socklen_t* length) {
  const socklen_t capacity = length != nullptr ? *length : 0;  // accept4 overwrites it with the peer's size
  const int connection = ::accept4(fd, address, length, 0);
  if (connection < 0) return connection;
  const ino_t inode = meshlock::admin::socketInode(fd);
  std::shared_lock lock(meshlock::admin::registry_mutex);
  for (meshlock::admin::AcceptGate* gate : meshlock::admin::registry()) {
    if (gate->inode() != inode) continue;
    if (gate->admit(connection, address, capacity, length)) return connection;
    errno = EAGAIN;  // civetweb ignores a failed accept and polls again
    return -1;
  }
  return connection;
}
