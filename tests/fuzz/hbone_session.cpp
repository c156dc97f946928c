// HBONE's HTTP/2 server (engine/hbone_session.h) fed a client's whole byte
// stream as the TLS session would hand it over, in chunks the input itself
// sizes. The handler does what the tunnel does: accepts CONNECT streams whose
// authority is an address, refuses the rest, echoes every byte back and
// opens the windows again, ends its side when the client ends. Besides not
// crashing, properties: a refused stream never delivers data, and the
// frames produced stay bounded by what the input could ask for.
#include <cstdint>
#include <set>
#include <span>

#include "engine/hbone_session.h"
#include "engine/socket_address.h"

using namespace meshlock::engine;

namespace {

class EchoHandler final : public HboneSession::Handler {
 public:
  HboneSession* server = nullptr;
  std::set<int32_t> refused;

  void onRequest(int32_t stream, const HboneRequest& request) override {
    auto target = SocketAddress::parse(request.authority);
    if (request.method != "CONNECT" || request.extended_connect || !target) {
      refused.insert(stream);
      server->refuse(stream, HboneStatus::kBadRequest);
      return;
    }
    server->accept(stream);
  }
  void onData(int32_t stream, std::span<const std::byte> data) override {
    if (refused.contains(stream)) __builtin_trap();  // a refused stream's bytes are dropped
    server->send(stream, data);
    server->consumed(stream, data.size());
  }
  void onEndOfInput(int32_t stream) override { server->endOutput(stream); }
  void onStreamClosed(int32_t, uint32_t) override {}
  void onOutputDrained(int32_t) override {}
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  EchoHandler handler;
  auto server = HboneSession::create(HboneSession::Role::kServer, handler);
  if (!server) return 0;
  handler.server = server->get();
  ByteQueue out;
  std::span input(reinterpret_cast<const std::byte*>(data), size);
  size_t produced = 0;
  while (!input.empty()) {
    // The first byte of each chunk sizes it (1..256), so records split anywhere.
    const size_t n = std::min(input.size(), static_cast<size_t>(std::to_integer<uint8_t>(input[0])) + 1);
    if (!(*server)->receive(input.first(n))) break;
    input = input.subspan(n);
    if (!(*server)->produce(out, 1 << 20)) break;
    produced += out.size();
    out.clear();
  }
  (void)(*server)->produce(out, 1 << 20);
  produced += out.size();
  // Echo plus framing: never more than a few times the input and the settings.
  if (produced > 16 * (size + 1) + 64 * 1024) __builtin_trap();
  return 0;
}
