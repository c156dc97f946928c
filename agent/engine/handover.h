// A relayed connection leaving one engine for another, sockets and TLS state
// included: how an agent upgrade keeps established connections (docs/upgrade.md).
// The engine quiesces and exports; moving the result between processes is
// agent/upgrade's job.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "engine/engine.h"
#include "engine/socket_address.h"
#include "engine/tls_session.h"

namespace meshlock::engine {

struct HandedSide {
  UniqueFd fd;
  std::optional<TlsHandover> tls;     // this side speaks TLS
  std::vector<std::byte> plain_unsent;  // a plain side: plaintext not yet sent to it
};

struct HandedConnection {
  std::string listener;  // ListenerSpec::name, for reports
  std::string pod_key;   // counts against this pod's budget in the new engine
  bool outbound = true;
  bool plaintext = false;  // relayed without TLS (snapshot's `plaintext`)
  SocketAddress peer;      // of the accepted socket
  SocketAddress upstream;  // where it is relayed to
  uint64_t bytes_to_upstream = 0;
  uint64_t bytes_to_downstream = 0;
  std::chrono::milliseconds age{0};
  // When the old process stopped reading it (wall clock: two processes):
  // the new one measures each connection's pause from here.
  std::chrono::system_clock::time_point quiesced_at{};
  HandedSide down;  // the accepted socket
  HandedSide up;    // the upstream socket
  std::string observer_state;  // ConnectionObserver::handoverState() of the old process
};

// What Engine::handOver did.
struct HandoverOutcome {
  std::vector<HandedConnection> connections;  // now the caller's: nothing of them is left in the engine
  size_t stayed = 0;  // could not be handed over (handshake, half-closed, HBONE, TLS 1.2): drained as before
};

}  // namespace meshlock::engine
