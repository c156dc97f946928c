// Packets <-> protobuf (proto/handover.proto).
#include "upgrade/handover_codec.h"

#include "upgrade/proto/handover.pb.h"

namespace meshlock::upgrade {
namespace {

std::string serialize(const wire::Packet& packet) {
  std::string out;
  MESHLOCK_CHECK(packet.SerializeToString(&out));
  return out;
}

std::string bytesOf(const std::vector<std::byte>& data) {
  return {reinterpret_cast<const char*>(data.data()), data.size()};
}
std::vector<uint8_t> u8Of(const std::string& data) { return {data.begin(), data.end()}; }
std::vector<std::byte> bytesOf(const std::string& data) {
  const auto* begin = reinterpret_cast<const std::byte*>(data.data());
  return {begin, begin + data.size()};
}

void encodeSide(const engine::HandedSide& side, wire::Side& out) {
  out.set_plain_unsent(bytesOf(side.plain_unsent));
  if (!side.tls) return;
  const engine::TlsHandover& tls = *side.tls;
  wire::TlsState& state = *out.mutable_tls();
  state.set_server(tls.keys.server);
  state.set_cipher_suite(tls.keys.cipher_suite);
  state.set_read_secret(tls.keys.read_secret.data(), tls.keys.read_secret.size());
  state.set_write_secret(tls.keys.write_secret.data(), tls.keys.write_secret.size());
  state.set_read_sequence(tls.keys.read_sequence);
  state.set_write_sequence(tls.keys.write_sequence);
  state.set_unread(bytesOf(tls.unread));
  state.set_unsent(bytesOf(tls.unsent));
  state.set_version(tls.info.version);
  state.set_cipher(tls.info.cipher);
  state.set_resumed(tls.info.resumed);
  state.set_peer_identity(tls.info.peer_identity);
  state.set_server_name(tls.info.server_name);
}

engine::HandedSide decodeSide(const wire::Side& in, UniqueFd fd) {
  engine::HandedSide side;
  side.fd = std::move(fd);
  side.plain_unsent = bytesOf(in.plain_unsent());
  if (!in.has_tls()) return side;
  const wire::TlsState& state = in.tls();
  engine::TlsHandover tls;
  tls.keys.server = state.server();
  tls.keys.cipher_suite = static_cast<uint16_t>(state.cipher_suite());
  tls.keys.read_secret = u8Of(state.read_secret());
  tls.keys.write_secret = u8Of(state.write_secret());
  tls.keys.read_sequence = state.read_sequence();
  tls.keys.write_sequence = state.write_sequence();
  tls.unread = bytesOf(state.unread());
  tls.unsent = bytesOf(state.unsent());
  tls.info = engine::TlsInfo{.version = state.version(), .cipher = state.cipher(), .resumed = state.resumed(),
                             .peer_identity = state.peer_identity(), .server_name = state.server_name()};
  side.tls = std::move(tls);
  return side;
}

Result<engine::SocketAddress> addressOf(const std::string& text, const char* what) {
  if (text.empty()) return engine::SocketAddress{};
  Result<engine::SocketAddress> address = engine::SocketAddress::parse(text);
  if (!address) return fail(std::string("handover: connection ") + what + " address " + text + ": " + address.error().describe());
  return address;
}

}  // namespace

std::string encodeHello(std::string_view agent_version, int32_t pid, uint64_t instance, uint32_t format) {
  wire::Packet packet;
  wire::Hello& hello = *packet.mutable_hello();
  hello.set_format(format);
  hello.set_instance(instance);
  hello.set_agent_version(std::string(agent_version));
  hello.set_pid(pid);
  return serialize(packet);
}

std::string encodeWelcome(bool accepted, std::string_view reason, uint32_t format) {
  wire::Packet packet;
  wire::Welcome& welcome = *packet.mutable_welcome();
  welcome.set_format(format);
  welcome.set_accepted(accepted);
  welcome.set_reason(std::string(reason));
  return serialize(packet);
}

std::string encodeConnection(uint64_t id, const engine::HandedConnection& connection) {
  wire::Packet packet;
  wire::Connection& out = *packet.mutable_connection();
  out.set_id(id);
  out.set_listener(connection.listener);
  out.set_pod_key(connection.pod_key);
  out.set_outbound(connection.outbound);
  out.set_plaintext(connection.plaintext);
  if (!connection.peer.empty()) out.set_peer(connection.peer.toString());
  if (!connection.upstream.empty()) out.set_upstream(connection.upstream.toString());
  out.set_bytes_to_upstream(connection.bytes_to_upstream);
  out.set_bytes_to_downstream(connection.bytes_to_downstream);
  out.set_age_ms(static_cast<uint64_t>(connection.age.count()));
  encodeSide(connection.down, *out.mutable_down());
  encodeSide(connection.up, *out.mutable_up());
  out.set_report(connection.observer_state);
  const auto quiesced = connection.quiesced_at.time_since_epoch();
  if (quiesced.count() > 0)
    out.set_quiesced_unix_ns(static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(quiesced).count()));
  return serialize(packet);
}

std::string encodeTaken(uint64_t id) {
  wire::Packet packet;
  packet.mutable_taken()->set_id(id);
  return serialize(packet);
}

std::string encodeDone(uint64_t handed, uint64_t stayed) {
  wire::Packet packet;
  packet.mutable_done()->set_handed(handed);
  packet.mutable_done()->set_stayed(stayed);
  return serialize(packet);
}

Result<Packet> decodePacket(std::span<const std::byte> bytes, std::vector<UniqueFd> fds) {
  wire::Packet packet;
  if (!packet.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return fail("handover: a packet that does not parse");
  const bool wants_fds = packet.body_case() == wire::Packet::kConnection;
  if (!wants_fds && !fds.empty()) return fail("handover: sockets came with a packet that takes none");
  switch (packet.body_case()) {
    case wire::Packet::kHello:
      return HelloPacket{packet.hello().format(), packet.hello().agent_version(), packet.hello().pid(),
                         packet.hello().instance()};
    case wire::Packet::kWelcome:
      return WelcomePacket{packet.welcome().format(), packet.welcome().accepted(), packet.welcome().reason()};
    case wire::Packet::kTaken:
      return TakenPacket{packet.taken().id()};
    case wire::Packet::kDone:
      return DonePacket{packet.done().handed(), packet.done().stayed()};
    case wire::Packet::kConnection: {
      const wire::Connection& in = packet.connection();
      if (fds.size() != 2) return fail("handover: connection " + std::to_string(in.id()) + " came with " + std::to_string(fds.size()) + " sockets, not 2");
      if (in.down().has_tls() && in.up().has_tls()) return fail("handover: connection " + std::to_string(in.id()) + " has TLS on both sides");
      ConnectionPacket out;
      out.id = in.id();
      engine::HandedConnection& c = out.connection;
      c.listener = in.listener();
      c.pod_key = in.pod_key();
      c.outbound = in.outbound();
      c.plaintext = in.plaintext();
      Result<engine::SocketAddress> peer = addressOf(in.peer(), "peer");
      if (!peer) return std::unexpected(peer.error());
      Result<engine::SocketAddress> upstream = addressOf(in.upstream(), "upstream");
      if (!upstream) return std::unexpected(upstream.error());
      c.peer = *peer;
      c.upstream = *upstream;
      c.bytes_to_upstream = in.bytes_to_upstream();
      c.bytes_to_downstream = in.bytes_to_downstream();
      c.age = std::chrono::milliseconds(static_cast<int64_t>(std::min<uint64_t>(in.age_ms(), uint64_t{1} << 50)));
      c.down = decodeSide(in.down(), std::move(fds[0]));
      c.up = decodeSide(in.up(), std::move(fds[1]));
      c.observer_state = in.report();
      c.quiesced_at = std::chrono::system_clock::time_point(std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::nanoseconds(static_cast<int64_t>(std::min<uint64_t>(in.quiesced_unix_ns(), uint64_t{1} << 62)))));
      return out;
    }
    case wire::Packet::BODY_NOT_SET:
      break;
  }
  return fail("handover: an empty packet");
}

}  // namespace meshlock::upgrade
