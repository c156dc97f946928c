// TlsSession over memory: two sessions wired back to back, no sockets.
#include "engine/tls_session.h"

#include <gtest/gtest.h>

#include "engine/tls_context.h"
#include "test_support.h"

namespace meshlock::engine {
namespace {

using testing::kClientId;
using testing::kOtherId;
using testing::kServerId;
using testing::testPki;

SslContextRef context(bool server, const std::string& leaf, const std::string& ca = "ca",
                      TlsMinVersion min = TlsMinVersion::Tls12) {
  auto ctx = makeMutualTlsContext(server, testPki().files(leaf, ca), min);
  EXPECT_TRUE(ctx.has_value()) << (ctx ? "" : ctx.error().describe());
  return ctx ? *ctx : SslContextRef();
}

// Moves every pending output of one session into the other, both ways.
bool shuttle(TlsSession& from, TlsSession& to) {
  ByteQueue& out = from.output();
  bool moved = !out.empty();
  std::vector<std::byte> buf(out.size());
  out.read(buf);
  to.feed(buf);
  return moved;
}

struct Pair {
  std::unique_ptr<TlsSession> client;
  std::unique_ptr<TlsSession> server;
  TlsStatus client_status = TlsStatus::NeedRead;
  TlsStatus server_status = TlsStatus::NeedRead;

  // Runs the handshake to completion or failure.
  void handshake() {
    for (int round = 0; round < 20; ++round) {
      if (client_status != TlsStatus::Done && client_status != TlsStatus::Error) client_status = client->handshake();
      shuttle(*client, *server);
      if (server_status != TlsStatus::Done && server_status != TlsStatus::Error) server_status = server->handshake();
      shuttle(*server, *client);
      bool client_settled = client_status == TlsStatus::Done || client_status == TlsStatus::Error;
      bool server_settled = server_status == TlsStatus::Done || server_status == TlsStatus::Error;
      if (client_settled && server_settled) return;
      if (client_status == TlsStatus::Error || server_status == TlsStatus::Error) {
        // One side failed: let the other see the alert once more, then stop.
        if (client_status != TlsStatus::Error) client_status = client->handshake();
        if (server_status != TlsStatus::Error) server_status = server->handshake();
        return;
      }
    }
  }
};

Pair makePair(SslContextRef client_ctx, SslContextRef server_ctx, PeerVerifier client_verifier = {},
              PeerVerifier server_verifier = {}) {
  Pair pair;
  auto client = TlsSession::create(TlsSession::Role::Client, client_ctx, "server.shop",
                                   TlsHooks{{}, std::move(client_verifier), {}});
  auto server = TlsSession::create(TlsSession::Role::Server, server_ctx, {}, TlsHooks{{}, std::move(server_verifier), {}});
  EXPECT_TRUE(client && server);
  pair.client = std::move(*client);
  pair.server = std::move(*server);
  return pair;
}

std::string readAllPlain(TlsSession& session) {
  ByteQueue plain;
  session.read(plain, SIZE_MAX);
  std::string out(plain.size(), '\0');
  plain.read({reinterpret_cast<std::byte*>(out.data()), out.size()});
  return out;
}

std::span<const std::byte> bytes(std::string_view s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

TEST(TlsSession, MutualHandshakeRecordsVersionCipherAndPeerIdentities) {
  Pair pair = makePair(context(false, "client"), context(true, "server"), expectSpiffeIds({kServerId}));
  pair.handshake();
  ASSERT_EQ(pair.client_status, TlsStatus::Done) << pair.client->reason();
  ASSERT_EQ(pair.server_status, TlsStatus::Done) << pair.server->reason();
  EXPECT_EQ(pair.client->info().version, "TLSv1.3");
  EXPECT_FALSE(pair.client->info().cipher.empty());
  EXPECT_FALSE(pair.client->info().resumed);
  EXPECT_EQ(pair.client->info().peer_identity, kServerId);
  EXPECT_EQ(pair.server->info().peer_identity, kClientId);
}

TEST(TlsSession, CarriesDataBothWaysIntact) {
  Pair pair = makePair(context(false, "client"), context(true, "server"));
  pair.handshake();
  ASSERT_EQ(pair.server_status, TlsStatus::Done);
  std::string big(3 * 1024 * 1024 + 17, '\0');
  testing::PatternStream(7).fill(reinterpret_cast<uint8_t*>(big.data()), big.size());
  ASSERT_EQ(pair.client->write(bytes(big)), TlsStatus::Done);
  shuttle(*pair.client, *pair.server);
  EXPECT_EQ(readAllPlain(*pair.server), big);
  ASSERT_EQ(pair.server->write(bytes("reply")), TlsStatus::Done);
  shuttle(*pair.server, *pair.client);
  EXPECT_EQ(readAllPlain(*pair.client), "reply");
}

TEST(TlsSession, ReadStopsAtLimitAndResumes) {
  Pair pair = makePair(context(false, "client"), context(true, "server"));
  pair.handshake();
  std::string data(100000, 'x');
  ASSERT_EQ(pair.client->write(bytes(data)), TlsStatus::Done);
  shuttle(*pair.client, *pair.server);
  ByteQueue plain;
  EXPECT_EQ(pair.server->read(plain, 1000), TlsStatus::Done);
  EXPECT_EQ(plain.size(), 1000u);
  EXPECT_EQ(pair.server->read(plain, SIZE_MAX), TlsStatus::NeedRead);
  EXPECT_EQ(plain.size(), data.size());
}

TEST(TlsSession, CloseNotifyEndsOneDirectionOnly) {
  Pair pair = makePair(context(false, "client"), context(true, "server"));
  pair.handshake();
  ASSERT_EQ(pair.client->write(bytes("request")), TlsStatus::Done);
  ASSERT_EQ(pair.client->shutdown(), TlsStatus::Done);
  shuttle(*pair.client, *pair.server);
  ByteQueue plain;
  EXPECT_EQ(pair.server->read(plain, SIZE_MAX), TlsStatus::Closed);
  EXPECT_EQ(plain.size(), 7u);
  // Half-close: the server still answers after the client's close_notify.
  ASSERT_EQ(pair.server->write(bytes("response")), TlsStatus::Done);
  ASSERT_EQ(pair.server->shutdown(), TlsStatus::Done);
  shuttle(*pair.server, *pair.client);
  ByteQueue reply;
  EXPECT_EQ(pair.client->read(reply, SIZE_MAX), TlsStatus::Closed);
  EXPECT_EQ(reply.size(), 8u);
}

TEST(TlsSession, ClientRefusesUnexpectedServerIdentity) {
  Pair pair = makePair(context(false, "client"), context(true, "other"), expectSpiffeIds({kServerId}));
  pair.handshake();
  EXPECT_EQ(pair.client_status, TlsStatus::Error);
  EXPECT_NE(pair.client->reason().find(kOtherId), std::string::npos) << pair.client->reason();
}

TEST(TlsSession, ServerRefusesClientCertificateFromForeignCa) {
  Pair pair = makePair(context(false, "foreign", "ca"), context(true, "server"));
  pair.handshake();
  EXPECT_EQ(pair.server_status, TlsStatus::Error);
  EXPECT_NE(pair.server->reason().find("CERTIFICATE_VERIFY_FAILED"), std::string::npos) << pair.server->reason();
}

TEST(TlsSession, VersionBelowMinimumIsRefused) {
  // Client capped at TLS 1.2, server requiring 1.3.
  SslContextRef client_ctx = context(false, "client");
  SSL_CTX_set_max_proto_version(client_ctx.get(), TLS1_2_VERSION);
  Pair pair = makePair(client_ctx, context(true, "server", "ca", TlsMinVersion::Tls13));
  pair.handshake();
  EXPECT_EQ(pair.server_status, TlsStatus::Error);
  EXPECT_NE(pair.server->reason().find("UNSUPPORTED_PROTOCOL"), std::string::npos) << pair.server->reason();
}

TEST(TlsSession, GarbageIsAnErrorWithAReason) {
  auto server = TlsSession::create(TlsSession::Role::Server, context(true, "server"), {}, TlsHooks{});
  ASSERT_TRUE(server);
  // A well-framed record whose ClientHello body is nonsense.
  std::string garbage("\x16\x03\x01\x00\x08\x01\x00\x00\x04" "abcd", 13);
  (*server)->feed(bytes(garbage));
  EXPECT_EQ((*server)->handshake(), TlsStatus::Error);
  EXPECT_FALSE((*server)->reason().empty());
}

TEST(TlsSession, TruncatedClientHelloWaitsForMore) {
  auto client = TlsSession::create(TlsSession::Role::Client, context(false, "client"), {}, TlsHooks{});
  auto server = TlsSession::create(TlsSession::Role::Server, context(true, "server"), {}, TlsHooks{});
  ASSERT_TRUE(client && server);
  EXPECT_EQ((*client)->handshake(), TlsStatus::WantFlush);
  ByteQueue& hello = (*client)->output();
  std::vector<std::byte> part(hello.size() / 2);
  hello.read(part);
  (*server)->feed(part);
  EXPECT_EQ((*server)->handshake(), TlsStatus::NeedRead);
}

TEST(TlsSession, HooksRunBeforeTheHandshakeAndAfterItsEnd) {
  int prepared = 0;
  int released = 0;
  SSL* seen = nullptr;
  {
    TlsHooks hooks;
    hooks.prepare = [&](SSL* ssl) -> Status {
      ++prepared;
      seen = ssl;
      EXPECT_FALSE(SSL_is_init_finished(ssl));
      return {};
    };
    hooks.release = [&](SSL* ssl) {
      ++released;
      EXPECT_EQ(ssl, seen);
      EXPECT_TRUE(SSL_is_init_finished(ssl));
    };
    Pair pair;
    pair.client = std::move(*TlsSession::create(TlsSession::Role::Client, context(false, "client"), {}, std::move(hooks)));
    pair.server = std::move(*TlsSession::create(TlsSession::Role::Server, context(true, "server"), {}, TlsHooks{}));
    EXPECT_EQ(prepared, 1);
    pair.handshake();
    EXPECT_EQ(pair.client_status, TlsStatus::Done);
    EXPECT_EQ(released, 0);
  }
  EXPECT_EQ(released, 1);
}

TEST(TlsSession, FailingPrepareRefusesTheSession) {
  TlsHooks hooks;
  hooks.prepare = [](SSL*) -> Status { return fail("no expected peers"); };
  auto session = TlsSession::create(TlsSession::Role::Client, context(false, "client"), {}, std::move(hooks));
  ASSERT_FALSE(session);
  EXPECT_NE(session.error().describe().find("no expected peers"), std::string::npos);
}

}  // namespace
}  // namespace meshlock::engine
