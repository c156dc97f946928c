// A handover packet as the old agent's socket delivers it to the new one
// (agent/upgrade, docs/upgrade.md): decoded with two sockets beside it, and
// a connection's TLS state carried on as the new agent would, its unread
// ciphertext opened by the record layer. Only a root process on the node
// can send one; still, a bad packet must be refused, never crash.
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <span>
#include <vector>

#include <google/protobuf/stubs/logging.h>

#include "engine/tls_session.h"
#include "upgrade/handover_codec.h"

using namespace meshlock;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // protobuf logs every string that is not UTF-8: a refusal, not news here.
  static const bool quiet = [] {
    google::protobuf::SetLogHandler(nullptr);
    return true;
  }();
  (void)quiet;
  std::vector<UniqueFd> fds;
  for (int i = 0; i < 2; ++i) fds.emplace_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  Result<upgrade::Packet> packet = upgrade::decodePacket(std::as_bytes(std::span(data, size)), std::move(fds));
  if (!packet) return 0;
  auto* connection = std::get_if<upgrade::ConnectionPacket>(&*packet);
  if (connection == nullptr) return 0;
  for (engine::HandedSide* side : {&connection->connection.down, &connection->connection.up}) {
    if (!side->tls) continue;
    auto session = engine::TlsSession::resume(std::move(*side->tls));
    if (!session) continue;
    engine::ByteQueue plaintext;
    (void)(*session)->read(plaintext, 1 << 20);
    (void)(*session)->write(std::as_bytes(std::span("reply", 5)));
    (void)(*session)->shutdown();
  }
  return 0;
}
