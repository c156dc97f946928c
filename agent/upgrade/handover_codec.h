// The handover's packets (proto/handover.proto) as bytes, and back.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "common/error.h"
#include "common/unique_fd.h"
#include "engine/handover.h"

namespace meshlock::upgrade {

// Bumped whenever a packet changes meaning: agents of different formats
// never hand over (the old one drains instead).
inline constexpr uint32_t kHandoverFormat = 1;

struct HelloPacket {
  uint32_t format = 0;
  std::string agent_version;
  int32_t pid = 0;
  uint64_t instance = 0;
};
struct WelcomePacket {
  uint32_t format = 0;
  bool accepted = false;
  std::string reason;
};
struct ConnectionPacket {
  uint64_t id = 0;
  engine::HandedConnection connection;
};
struct TakenPacket {
  uint64_t id = 0;
};
struct DonePacket {
  uint64_t handed = 0;
  uint64_t stayed = 0;
};
using Packet = std::variant<HelloPacket, WelcomePacket, ConnectionPacket, TakenPacket, DonePacket>;

// `format`: other than kHandoverFormat only to test how a mismatch is met.
[[nodiscard]] std::string encodeHello(std::string_view agent_version, int32_t pid, uint64_t instance,
                                      uint32_t format = kHandoverFormat);
[[nodiscard]] std::string encodeWelcome(bool accepted, std::string_view reason, uint32_t format = kHandoverFormat);
// Without its sockets: they travel beside the packet (down, then up).
[[nodiscard]] std::string encodeConnection(uint64_t id, const engine::HandedConnection& connection);
[[nodiscard]] std::string encodeTaken(uint64_t id);
[[nodiscard]] std::string encodeDone(uint64_t handed, uint64_t stayed);

// `fds`: the sockets that came with the packet; a connection takes its two.
[[nodiscard]] Result<Packet> decodePacket(std::span<const std::byte> bytes, std::vector<UniqueFd> fds);

}  // namespace meshlock::upgrade
