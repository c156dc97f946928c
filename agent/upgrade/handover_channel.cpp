// HandoverChannel: SOCK_SEQPACKET with SCM_RIGHTS.
#include "upgrade/handover_channel.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cerrno>
#include <algorithm>
#include <cstring>

namespace meshlock::upgrade {
namespace {

// A connection's packet carries its queued bytes: give the socket room for
// the largest (bounded queues, two directions) rather than the 208 KiB default.
constexpr int kSocketBuffer = 8 * 1024 * 1024;

void enlargeBuffers(int fd) {
  for (auto [force, plain] : {std::pair{SO_SNDBUFFORCE, SO_SNDBUF}, std::pair{SO_RCVBUFFORCE, SO_RCVBUF}}) {
    if (::setsockopt(fd, SOL_SOCKET, force, &kSocketBuffer, sizeof kSocketBuffer) != 0)
      (void)::setsockopt(fd, SOL_SOCKET, plain, &kSocketBuffer, sizeof kSocketBuffer);
  }
}

Result<sockaddr_un> unixAddress(const std::filesystem::path& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  const std::string text = path.string();
  if (text.size() >= sizeof address.sun_path) return fail("handover socket path too long: " + text);
  std::memcpy(address.sun_path, text.c_str(), text.size() + 1);
  return address;
}

bool waitFor(int fd, short events, std::chrono::milliseconds timeout) {
  pollfd p{fd, events, 0};
  int n;
  do {
    n = ::poll(&p, 1, static_cast<int>(timeout.count()));
  } while (n < 0 && errno == EINTR);
  return n > 0;
}

}  // namespace

HandoverChannel::HandoverChannel(UniqueFd fd) : fd_(std::move(fd)) { enlargeBuffers(fd_.get()); }

Result<HandoverChannel> HandoverChannel::connect(const std::filesystem::path& path) {
  Result<sockaddr_un> address = unixAddress(path);
  if (!address) return std::unexpected(address.error());
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!fd) return failErrno("socket(AF_UNIX, SOCK_SEQPACKET)");
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&*address), sizeof *address) != 0)
    return failErrno("connect " + path.string());
  return HandoverChannel(std::move(fd));
}

Status HandoverChannel::send(std::span<const std::byte> packet, std::span<const int> fds, std::chrono::milliseconds timeout) {
  MESHLOCK_CHECK(fds.size() <= kMaxFdsPerPacket);
  iovec iov{const_cast<std::byte*>(packet.data()), packet.size()};
  msghdr message{};
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerPacket)]{};
  if (!fds.empty()) {
    message.msg_control = control;
    message.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(header), fds.data(), sizeof(int) * fds.size());
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (::sendmsg(fd_.get(), &message, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0) return {};
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return failErrno("handover: send");
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 || !waitFor(fd_.get(), POLLOUT, left)) return fail("handover: send: no room within the timeout");
  }
}

bool HandoverChannel::readable() const { return waitFor(fd_.get(), POLLIN, std::chrono::milliseconds(0)); }

Result<std::optional<HandoverChannel::Packet>> HandoverChannel::receive(std::chrono::milliseconds timeout) {
  if (!waitFor(fd_.get(), POLLIN, timeout)) {
    if (timeout.count() == 0) return std::nullopt;
    return fail("handover: nothing received within " + std::to_string(timeout.count()) + " ms");
  }
  // The packet's length first, so the buffer fits it. A peer that closed
  // with packets of ours unread leaves ECONNRESET pending, reported once and
  // before the packets it sent us: those are still to be read (a Taken
  // among them decides who owns a connection).
  ssize_t length = ::recv(fd_.get(), nullptr, 0, MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT);
  if (length < 0 && errno == ECONNRESET) length = ::recv(fd_.get(), nullptr, 0, MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT);
  if (length < 0) {
    if (errno == EAGAIN) return std::nullopt;
    return failErrno("handover: receive");
  }
  Packet packet;
  packet.bytes.resize(static_cast<size_t>(length));
  iovec iov{packet.bytes.data(), packet.bytes.size()};
  msghdr message{};
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerPacket)]{};
  message.msg_control = control;
  message.msg_controllen = sizeof control;
  const ssize_t n = ::recvmsg(fd_.get(), &message, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  if (n < 0) return failErrno("handover: receive");
  for (cmsghdr* header = CMSG_FIRSTHDR(&message); header != nullptr; header = CMSG_NXTHDR(&message, header)) {
    if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(header) + i * sizeof(int), sizeof fd);
      packet.fds.emplace_back(fd);
    }
  }
  if (message.msg_flags & MSG_CTRUNC) return fail("handover: a packet came with more sockets than allowed");
  if (n == 0 && length == 0 && packet.fds.empty()) return std::nullopt;  // the peer closed
  return packet;
}

void HandoverChannel::stopReceiving() { ::shutdown(fd_.get(), SHUT_RD); }

size_t HandoverChannel::maxPacket() const {
  int buffer = 0;
  socklen_t length = sizeof buffer;
  if (::getsockopt(fd_.get(), SOL_SOCKET, SO_SNDBUF, &buffer, &length) != 0) return 64 * 1024;
  // The kernel reports twice what it accounts for data; a packet must stay
  // below the buffer (unix_dgram_sendmsg) with room for its own overhead.
  const size_t usable = static_cast<size_t>(buffer) / 2 > 4096 ? static_cast<size_t>(buffer) / 2 - 4096 : 0;
  return std::min(usable, kMaxPacketBytes);
}

Result<pid_t> HandoverChannel::peerPid() const {
  ucred credentials{};
  socklen_t length = sizeof credentials;
  if (::getsockopt(fd_.get(), SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) return failErrno("SO_PEERCRED");
  return credentials.pid;
}

Result<UniqueFd> listenHandover(const std::filesystem::path& path) {
  Result<sockaddr_un> address = unixAddress(path);
  if (!address) return std::unexpected(address.error());
  std::error_code ec;
  std::filesystem::create_directories(path.parent_path(), ec);
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return failErrno("socket(AF_UNIX, SOCK_SEQPACKET)");
  // The newest agent owns the path: an older one keeps its socket, unreachable
  // by name, and finds the newer one here when it is told to stop.
  const std::filesystem::path temporary = path.string() + ".new";
  ::unlink(temporary.c_str());
  Result<sockaddr_un> staged = unixAddress(temporary);
  if (!staged) return std::unexpected(staged.error());
  const mode_t previous = ::umask(0077);
  const int bound = ::bind(fd.get(), reinterpret_cast<const sockaddr*>(&*staged), sizeof *staged);
  ::umask(previous);
  if (bound != 0) return failErrno("bind " + temporary.string());
  if (::listen(fd.get(), 16) != 0) return failErrno("listen " + temporary.string());
  // rename(): the path names a live socket at every instant.
  if (::rename(temporary.c_str(), path.c_str()) != 0) return failErrno("rename to " + path.string());
  return fd;
}

}  // namespace meshlock::upgrade
