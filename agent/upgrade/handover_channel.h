// The handover's transport: a Unix SOCK_SEQPACKET socket, one packet per
// message (so a reader never sees half of one), sockets passed beside a
// packet with SCM_RIGHTS.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <optional>
#include <span>
#include <vector>

#include "common/error.h"
#include "common/unique_fd.h"

namespace meshlock::upgrade {

// The most sockets one packet carries (a connection has two).
inline constexpr size_t kMaxFdsPerPacket = 2;
// The largest packet sent: the socket buffers are sized above it.
inline constexpr size_t kMaxPacketBytes = 4 * 1024 * 1024;

class HandoverChannel {
 public:
  explicit HandoverChannel(UniqueFd fd);
  [[nodiscard]] static Result<HandoverChannel> connect(const std::filesystem::path& path);

  // Waits up to `timeout` for room. EMSGSIZE: larger than the socket allows.
  [[nodiscard]] Status send(std::span<const std::byte> packet, std::span<const int> fds, std::chrono::milliseconds timeout);
  struct Packet {
    std::vector<std::byte> bytes;
    std::vector<UniqueFd> fds;
  };
  // The next packet within `timeout`; nullopt: the peer closed (or, with a
  // zero timeout, nothing is queued).
  [[nodiscard]] Result<std::optional<Packet>> receive(std::chrono::milliseconds timeout);
  // Whether a packet is waiting (no wait).
  [[nodiscard]] bool readable() const;
  // No packet can be queued to us after this returns; those already queued stay readable.
  void stopReceiving();
  [[nodiscard]] Result<pid_t> peerPid() const;
  // The largest packet the socket takes (its send buffer: 8 MiB where the
  // agent may force it, the system's wmem_max otherwise), at most kMaxPacketBytes.
  [[nodiscard]] size_t maxPacket() const;
  [[nodiscard]] int fd() const { return fd_.get(); }

 private:
  UniqueFd fd_;
};

// Listens on `path`, replacing whatever socket is there (the newest agent
// owns the path); only root may connect (mode 0600).
[[nodiscard]] Result<UniqueFd> listenHandover(const std::filesystem::path& path);

}  // namespace meshlock::upgrade
