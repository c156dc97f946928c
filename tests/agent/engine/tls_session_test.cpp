// TlsSession over memory: two sessions wired back to back, no sockets.
#include "engine/tls_session.h"

#include <gtest/gtest.h>

#include <fstream>

#include "engine/ktls.h"
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

// ---- Handing an established connection over (engine/tls_records.h) ----
// The other end is always a BoringSSL SSL that never learns of the handover:
// whatever our record layer gets wrong, it refuses.

// `session`, handed over and carried on by a new one, as the next process would.
void handOverAndResume(std::unique_ptr<TlsSession>& session) {
  Result<TlsHandover> handover = session->handOver();
  ASSERT_TRUE(handover) << handover.error().describe();
  Result<std::unique_ptr<TlsSession>> resumed = TlsSession::resume(std::move(*handover));
  ASSERT_TRUE(resumed) << resumed.error().describe();
  session = std::move(*resumed);
  EXPECT_TRUE(session->resumedFromHandover());
}

std::string pattern(size_t size, uint64_t seed) {
  std::string out(size, '\0');
  testing::PatternStream(seed).fill(reinterpret_cast<uint8_t*>(out.data()), out.size());
  return out;
}

Pair establishedPair() {
  Pair pair = makePair(context(false, "client"), context(true, "server"), expectSpiffeIds({kServerId}));
  pair.handshake();
  EXPECT_EQ(pair.client_status, TlsStatus::Done) << pair.client->reason();
  EXPECT_EQ(pair.server_status, TlsStatus::Done) << pair.server->reason();
  return pair;
}

TEST(TlsHandover, BothEndsCarryOnWithEveryByteAndTheirIdentities) {
  Pair pair = establishedPair();
  const std::string request = pattern(200000, 1);
  ASSERT_EQ(pair.client->write(bytes(request)), TlsStatus::Done);
  shuttle(*pair.client, *pair.server);
  EXPECT_EQ(readAllPlain(*pair.server), request);
  const TlsInfo before = pair.server->info();
  handOverAndResume(pair.server);
  handOverAndResume(pair.client);
  EXPECT_EQ(pair.server->info().peer_identity, kClientId);
  EXPECT_EQ(pair.server->info().version, before.version);
  EXPECT_EQ(pair.server->info().cipher, before.cipher);
  EXPECT_EQ(pair.client->info().peer_identity, kServerId);
  // Each resumed end talks to the other, and three handovers in a row change nothing.
  for (int round = 0; round < 3; ++round) {
    const std::string up = pattern(70000 + round, 10 + round);
    const std::string down = pattern(50000 + round, 20 + round);
    ASSERT_EQ(pair.client->write(bytes(up)), TlsStatus::Done);
    ASSERT_EQ(pair.server->write(bytes(down)), TlsStatus::Done);
    shuttle(*pair.client, *pair.server);
    shuttle(*pair.server, *pair.client);
    EXPECT_EQ(readAllPlain(*pair.server), up);
    EXPECT_EQ(readAllPlain(*pair.client), down);
    handOverAndResume(round % 2 ? pair.client : pair.server);
  }
}

TEST(TlsHandover, ABoringSslPeerNeverNoticesAndItsKeyUpdatesWork) {
  Pair pair = establishedPair();
  handOverAndResume(pair.server);
  // The client (BoringSSL) updates its keys and asks for ours (RFC 8446 4.6.3).
  ASSERT_EQ(SSL_key_update(pair.client->ssl(), SSL_KEY_UPDATE_REQUESTED), 1);
  const std::string after = pattern(40000, 3);
  ASSERT_EQ(pair.client->write(bytes(after)), TlsStatus::Done);
  shuttle(*pair.client, *pair.server);
  EXPECT_EQ(readAllPlain(*pair.server), after);
  // Our answer (a KeyUpdate under the old key, then the new key) reaches it first.
  const std::string reply = pattern(30000, 4);
  ASSERT_EQ(pair.server->write(bytes(reply)), TlsStatus::Done);
  shuttle(*pair.server, *pair.client);
  EXPECT_EQ(readAllPlain(*pair.client), reply);
  EXPECT_GT(SSL_get_read_sequence(pair.client->ssl()), 0u);
  // Handed over again after the update: the new keys travel, not the first ones.
  handOverAndResume(pair.server);
  ASSERT_EQ(SSL_key_update(pair.client->ssl(), SSL_KEY_UPDATE_NOT_REQUESTED), 1);
  ASSERT_EQ(pair.client->write(bytes("twice")), TlsStatus::Done);
  shuttle(*pair.client, *pair.server);
  EXPECT_EQ(readAllPlain(*pair.server), "twice");
  ASSERT_EQ(pair.server->write(bytes("still")), TlsStatus::Done);
  shuttle(*pair.server, *pair.client);
  EXPECT_EQ(readAllPlain(*pair.client), "still");
}

TEST(TlsHandover, AResumedClientSkipsTheServersSessionTickets) {
  Pair pair = makePair(context(false, "client"), context(true, "server"));
  // The client completes (its Finished still unsent) and is handed over
  // before the server's NewSessionTickets, sent after it, arrive.
  EXPECT_EQ(pair.client->handshake(), TlsStatus::WantFlush);
  shuttle(*pair.client, *pair.server);
  EXPECT_EQ(pair.server->handshake(), TlsStatus::WantFlush);
  shuttle(*pair.server, *pair.client);
  ASSERT_EQ(pair.client->handshake(), TlsStatus::Done);
  handOverAndResume(pair.client);
  shuttle(*pair.client, *pair.server);
  ASSERT_EQ(pair.server->handshake(), TlsStatus::Done) << pair.server->reason();
  ASSERT_EQ(pair.server->write(bytes("hello")), TlsStatus::Done);
  ASSERT_GT(pair.server->output().size(), 100u);  // tickets, then the data
  shuttle(*pair.server, *pair.client);
  EXPECT_EQ(readAllPlain(*pair.client), "hello");
}

TEST(TlsHandover, APartialRecordTravelsAndIsCompletedByTheNextProcess) {
  Pair pair = establishedPair();
  const std::string data = pattern(50000, 5);
  ASSERT_EQ(pair.client->write(bytes(data)), TlsStatus::Done);
  ByteQueue& wire = pair.client->output();
  // Half of the ciphertext arrives before the handover, the rest after.
  std::vector<std::byte> first(wire.size() / 2 + 3);
  wire.read(first);
  pair.server->feed(first);
  const std::string before = readAllPlain(*pair.server);
  handOverAndResume(pair.server);
  shuttle(*pair.client, *pair.server);
  EXPECT_EQ(before + readAllPlain(*pair.server), data);
}

TEST(TlsHandover, UnsentCiphertextTravelsToo) {
  Pair pair = establishedPair();
  ASSERT_EQ(pair.server->write(bytes("sealed before")), TlsStatus::Done);
  handOverAndResume(pair.server);  // nothing was sent yet
  ASSERT_EQ(pair.server->write(bytes(", sealed after")), TlsStatus::Done);
  shuttle(*pair.server, *pair.client);
  EXPECT_EQ(readAllPlain(*pair.client), "sealed before, sealed after");
}

TEST(TlsHandover, CloseNotifyBothWaysAfterAResume) {
  Pair pair = establishedPair();
  handOverAndResume(pair.server);
  ASSERT_EQ(pair.client->write(bytes("last")), TlsStatus::Done);
  ASSERT_EQ(pair.client->shutdown(), TlsStatus::Done);
  shuttle(*pair.client, *pair.server);
  ByteQueue plain;
  EXPECT_EQ(pair.server->read(plain, SIZE_MAX), TlsStatus::Closed);
  EXPECT_EQ(plain.size(), 4u);
  ASSERT_EQ(pair.server->write(bytes("bye")), TlsStatus::Done);
  ASSERT_EQ(pair.server->shutdown(), TlsStatus::Done);
  EXPECT_EQ(pair.server->write(bytes("more")), TlsStatus::Error);
  shuttle(*pair.server, *pair.client);
  ByteQueue reply;
  EXPECT_EQ(pair.client->read(reply, SIZE_MAX), TlsStatus::Closed);
  EXPECT_EQ(reply.size(), 3u);
}

TEST(TlsHandover, ATamperedRecordIsRefusedAndThePeerTold) {
  Pair pair = establishedPair();
  handOverAndResume(pair.server);
  ASSERT_EQ(pair.client->write(bytes("integrity")), TlsStatus::Done);
  ByteQueue& wire = pair.client->output();
  std::vector<std::byte> record(wire.size());
  wire.read(record);
  record[8] ^= std::byte{1};
  pair.server->feed(record);
  ByteQueue plain;
  EXPECT_EQ(pair.server->read(plain, SIZE_MAX), TlsStatus::Error);
  EXPECT_NE(pair.server->reason().find("authentication"), std::string::npos) << pair.server->reason();
  EXPECT_EQ(plain.size(), 0u);
  // The alert reaches the peer sealed: it reads it as bad_record_mac.
  shuttle(*pair.server, *pair.client);
  EXPECT_EQ(pair.client->read(plain, SIZE_MAX), TlsStatus::Error);
  EXPECT_NE(pair.client->reason().find("BAD_RECORD_MAC"), std::string::npos) << pair.client->reason();
}

TEST(TlsHandover, ReadLimitHoldsAfterAResume) {
  Pair pair = establishedPair();
  handOverAndResume(pair.server);
  const std::string data = pattern(100000, 6);
  ASSERT_EQ(pair.client->write(bytes(data)), TlsStatus::Done);
  shuttle(*pair.client, *pair.server);
  ByteQueue plain;
  EXPECT_EQ(pair.server->read(plain, 1000), TlsStatus::Done);
  EXPECT_EQ(plain.size(), 1000u);
  // Pending plaintext must be read before the next handover.
  EXPECT_FALSE(pair.server->handOver());
  EXPECT_EQ(pair.server->read(plain, SIZE_MAX), TlsStatus::NeedRead);
  std::string out(plain.size(), '\0');
  plain.read({reinterpret_cast<std::byte*>(out.data()), out.size()});
  EXPECT_EQ(out, data);
  handOverAndResume(pair.server);
}

TEST(TlsHandover, OnlyAnEstablishedTls13ConnectionIsHandedOver) {
  // TLS 1.2: BoringSSL keeps no traffic secrets to carry on with.
  SslContextRef client_ctx = context(false, "client");
  SSL_CTX_set_max_proto_version(client_ctx.get(), TLS1_2_VERSION);
  Pair tls12 = makePair(client_ctx, context(true, "server"));
  tls12.handshake();
  ASSERT_EQ(tls12.server_status, TlsStatus::Done);
  auto refused = tls12.server->handOver();
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().describe().find("TLS 1.3"), std::string::npos) << refused.error().describe();
  // Mid-handshake, and after close_notify.
  Pair early = makePair(context(false, "client"), context(true, "server"));
  EXPECT_FALSE(early.server->handOver());
  Pair closed = establishedPair();
  ASSERT_EQ(closed.client->shutdown(), TlsStatus::Done);
  EXPECT_FALSE(closed.client->handOver());
  // Received records not yet read stay with the session that has them.
  Pair unread = establishedPair();
  ASSERT_EQ(unread.client->write(bytes("unread")), TlsStatus::Done);
  shuttle(*unread.client, *unread.server);
  EXPECT_FALSE(unread.server->handOver());
  EXPECT_EQ(readAllPlain(*unread.server), "unread");
  EXPECT_TRUE(unread.server->handOver());
}

TEST(TlsRecordLayer, KeysDeriveAsRfc8448Says) {
  // RFC 8448 section 3 (Simple 1-RTT Handshake), "derive write traffic keys
  // for application data" of the server, TLS_AES_128_GCM_SHA256.
  const std::vector<uint8_t> secret = {0xa1, 0x1a, 0xf9, 0xf0, 0x55, 0x31, 0xf8, 0x56, 0xad, 0x47, 0x11,
                                       0x6b, 0x45, 0xa9, 0x50, 0x32, 0x82, 0x04, 0xb4, 0xf4, 0x4b, 0xfb,
                                       0x6b, 0x3a, 0x4b, 0x4f, 0x1f, 0x3f, 0xcb, 0x63, 0x16, 0x43};
  Result<RecordKey> key = recordKeyOf(kTlsAes128GcmSha256, secret);
  ASSERT_TRUE(key) << key.error().describe();
  EXPECT_EQ(key->key, (std::vector<uint8_t>{0x9f, 0x02, 0x28, 0x3b, 0x6c, 0x9c, 0x07, 0xef, 0xc2, 0x6b, 0xb9, 0xf2,
                                            0xac, 0x92, 0xe3, 0x56}));
  EXPECT_EQ(key->iv, (std::vector<uint8_t>{0xcf, 0x78, 0x2b, 0x88, 0xdd, 0x83, 0x54, 0x9a, 0xad, 0xf1, 0xe9, 0x84}));
  EXPECT_FALSE(recordKeyOf(0x1304, secret));  // TLS_AES_128_CCM_SHA256: not offered by BoringSSL
  EXPECT_FALSE(recordKeyOf(kTlsAes256GcmSha384, secret));  // a SHA-256-sized secret
}

TEST(TlsRecordLayer, EverySuiteSealsWhatTheOtherEndOpens) {
  for (uint16_t suite : {kTlsAes128GcmSha256, kTlsAes256GcmSha384, kTlsChacha20Poly1305Sha256}) {
    const size_t length = suite == kTlsAes256GcmSha384 ? 48 : 32;
    std::vector<uint8_t> a(length, 0x11), b(length, 0x22);
    TrafficKeys client{.server = false, .cipher_suite = suite, .read_secret = a, .write_secret = b,
                       .read_sequence = 7, .write_sequence = 9};
    TrafficKeys server{.server = true, .cipher_suite = suite, .read_secret = b, .write_secret = a,
                       .read_sequence = 9, .write_sequence = 7};
    auto c = TlsRecordLayer::create(client);
    auto s = TlsRecordLayer::create(server);
    ASSERT_TRUE(c && s) << suite;
    const std::string data = pattern(40000, suite);
    ByteQueue wire, plain, unused;
    ASSERT_EQ((*c)->seal(bytes(data), wire), TlsStatus::Done);
    EXPECT_EQ(wire.size(), data.size() + 3 * (5 + 1 + 16));  // three records: 16 KiB, 16 KiB, the rest
    EXPECT_EQ((*s)->open(wire, plain, SIZE_MAX, unused), TlsStatus::NeedRead);
    std::string out(plain.size(), '\0');
    plain.read({reinterpret_cast<std::byte*>(out.data()), out.size()});
    EXPECT_EQ(out, data) << suite;
    EXPECT_EQ((*s)->keys().read_sequence, 12u);
  }
}

// What the kernel does with one direction's tls12_crypto_info for TLS 1.3
// (net/tls/tls_sw.c: tls_push_record, tls_make_aad; net/tls/tls.h:
// tls_xor_iv_with_seq; the layout is linux/tls.h's): the nonce is salt‖iv
// with the big-endian record sequence XORed into its last 8 bytes, the
// additional data the record header, the sealed body the plaintext and its
// inner content type. Written from the kernel's sources, not from ours.
std::vector<uint8_t> kernelSealsRecord(const KtlsCryptoInfo& info, uint64_t records_before, std::string_view plain) {
  const EVP_AEAD* aead = nullptr;
  std::vector<uint8_t> key, nonce;
  const unsigned char* rec_seq = nullptr;
  // linux/tls.h's structs differ in sizes only; ChaCha20's salt has none.
  auto take = [&](const auto& c, const EVP_AEAD* suite) {
    aead = suite;
    key.assign(c.key, c.key + sizeof c.key);
    nonce.assign(c.salt, c.salt + sizeof c.salt);
    nonce.insert(nonce.end(), c.iv, c.iv + sizeof c.iv);
    rec_seq = c.rec_seq;
  };
  switch (info.header().cipher_type) {
    case TLS_CIPHER_AES_GCM_128: take(info.aes128(), EVP_aead_aes_128_gcm()); break;
    case TLS_CIPHER_AES_GCM_256: take(info.aes256(), EVP_aead_aes_256_gcm()); break;
    case TLS_CIPHER_CHACHA20_POLY1305: take(info.chacha(), EVP_aead_chacha20_poly1305()); break;
    default: ADD_FAILURE() << "cipher_type " << info.header().cipher_type; return {};
  }
  EXPECT_EQ(info.header().version, TLS_1_3_VERSION);
  uint64_t sequence = 0;
  for (int i = 0; i < 8; ++i) sequence = sequence << 8 | rec_seq[i];
  sequence += records_before;
  for (int i = 0; i < 8; ++i) nonce[4 + i] ^= static_cast<uint8_t>(sequence >> (56 - 8 * i));
  std::vector<uint8_t> inner(plain.begin(), plain.end());
  inner.push_back(23);  // application_data
  const size_t length = inner.size() + 16;
  std::vector<uint8_t> record(5 + length);
  record[0] = 23;  // the outer type of every TLS 1.3 record, legacy version 3.3, length
  record[1] = 3;
  record[2] = 3;
  record[3] = static_cast<uint8_t>(length >> 8);
  record[4] = static_cast<uint8_t>(length);
  bssl::ScopedEVP_AEAD_CTX ctx;
  EXPECT_TRUE(EVP_AEAD_CTX_init(ctx.get(), aead, key.data(), key.size(), 16, nullptr));
  size_t sealed = 0;
  EXPECT_TRUE(EVP_AEAD_CTX_seal(ctx.get(), record.data() + 5, &sealed, length, nonce.data(), nonce.size(),
                                inner.data(), inner.size(), record.data(), 5));
  EXPECT_EQ(sealed, length);
  return record;
}

std::vector<uint8_t> drain(ByteQueue& queue) {
  std::vector<uint8_t> out(queue.size());
  queue.read({reinterpret_cast<std::byte*>(out.data()), out.size()});
  return out;
}

TEST(Ktls, TheKernelsFormOfOurKeysSealsWhatBoringSslSends) {
  Pair pair = establishedPair();
  // The client reads the server's tickets first: they count in its read sequence.
  ASSERT_EQ(pair.server->write(bytes("tickets first")), TlsStatus::Done);
  shuttle(*pair.server, *pair.client);
  EXPECT_EQ(readAllPlain(*pair.client), "tickets first");
  Result<TrafficKeys> client = exportTrafficKeys(pair.client->ssl());
  Result<TrafficKeys> server = exportTrafficKeys(pair.server->ssl());
  ASSERT_TRUE(client && server);
  ASSERT_EQ(client->cipher_suite, kTlsAes128GcmSha256) << "BoringSSL picks AES-128-GCM where AES is in hardware";
  Result<KtlsCryptoInfo> tx = ktlsCryptoInfo(*client, KtlsDirection::Transmit);
  Result<KtlsCryptoInfo> rx = ktlsCryptoInfo(*server, KtlsDirection::Receive);
  ASSERT_TRUE(tx && rx);
  EXPECT_EQ(tx->size(), sizeof(tls12_crypto_info_aes_gcm_128));
  EXPECT_EQ(tx->header().cipher_type, TLS_CIPHER_AES_GCM_128);
  // One direction, seen from both ends, is one key.
  EXPECT_EQ(std::memcmp(tx->data(), rx->data(), tx->size()), 0);
  // BoringSSL seals two records; the kernel, from the exported form, seals the same bytes.
  ASSERT_EQ(pair.client->write(bytes("first record")), TlsStatus::Done);
  const std::vector<uint8_t> first = drain(pair.client->output());
  EXPECT_EQ(first, kernelSealsRecord(*tx, 0, "first record"));
  ASSERT_EQ(pair.client->write(bytes("second")), TlsStatus::Done);
  const std::vector<uint8_t> second = drain(pair.client->output());
  EXPECT_EQ(second, kernelSealsRecord(*tx, 1, "second"));
  // And the server's BoringSSL opens the kernel's record after them.
  const std::vector<uint8_t> third = kernelSealsRecord(*rx, 2, " from the kernel");
  for (const std::vector<uint8_t>* record : {&first, &second, &third})
    pair.server->feed({reinterpret_cast<const std::byte*>(record->data()), record->size()});
  EXPECT_EQ(readAllPlain(*pair.server), "first recordsecond from the kernel");
}

TEST(Ktls, EverySuiteAndSequenceNumberTakeTheKernelsLayout) {
  for (uint16_t suite : {kTlsAes128GcmSha256, kTlsAes256GcmSha384, kTlsChacha20Poly1305Sha256}) {
    const size_t length = suite == kTlsAes256GcmSha384 ? 48 : 32;
    const uint64_t sequence = 0x0102030405060708;
    TrafficKeys keys{.server = false, .cipher_suite = suite, .read_secret = std::vector<uint8_t>(length, 0x33),
                     .write_secret = std::vector<uint8_t>(length, 0x44), .read_sequence = 1,
                     .write_sequence = sequence};
    Result<KtlsCryptoInfo> tx = ktlsCryptoInfo(keys, KtlsDirection::Transmit);
    ASSERT_TRUE(tx) << suite;
    const unsigned char* rec_seq = suite == kTlsAes128GcmSha256   ? tx->aes128().rec_seq
                                   : suite == kTlsAes256GcmSha384 ? tx->aes256().rec_seq
                                                                  : tx->chacha().rec_seq;
    EXPECT_EQ(std::vector<uint8_t>(rec_seq, rec_seq + 8), (std::vector<uint8_t>{1, 2, 3, 4, 5, 6, 7, 8}));
    EXPECT_EQ(tx->size(), suite == kTlsAes128GcmSha256 ? 40u : 56u);
    // Our own record layer, started at the same keys, writes what the kernel would.
    auto layer = TlsRecordLayer::create(keys);
    ASSERT_TRUE(layer);
    ByteQueue wire;
    ASSERT_EQ((*layer)->seal(bytes("abc"), wire), TlsStatus::Done);
    ASSERT_EQ((*layer)->seal(bytes("defgh"), wire), TlsStatus::Done);
    std::vector<uint8_t> expected = kernelSealsRecord(*tx, 0, "abc");
    const std::vector<uint8_t> next = kernelSealsRecord(*tx, 1, "defgh");
    expected.insert(expected.end(), next.begin(), next.end());
    EXPECT_EQ(drain(wire), expected) << suite;
  }
  EXPECT_FALSE(ktlsCryptoInfo(0x1304, std::vector<uint8_t>(32, 1), 0));  // no CCM in BoringSSL
  EXPECT_FALSE(ktlsCryptoInfo(kTlsAes256GcmSha384, std::vector<uint8_t>(32, 1), 0));
}

bool tlsUlpRegistered() {
  std::ifstream file("/proc/sys/net/ipv4/tcp_available_ulp");
  std::string word;
  while (file >> word)
    if (word == "tls") return true;
  return false;
}

// A connected loopback TCP pair, blocking.
std::pair<UniqueFd, UniqueFd> tcpPair() {
  auto address = SocketAddress::parse("127.0.0.1:0");
  auto listener = listenTcp(*address, 1);
  EXPECT_TRUE(listener);
  UniqueFd client = testing::connectTcp(testing::localPort(listener->get()));
  int flags = fcntl(listener->get(), F_GETFL);
  fcntl(listener->get(), F_SETFL, flags & ~O_NONBLOCK);
  UniqueFd server(::accept4(listener->get(), nullptr, nullptr, SOCK_CLOEXEC));
  testing::setRecvTimeout(client.get(), 5000);
  testing::setRecvTimeout(server.get(), 5000);
  return {std::move(client), std::move(server)};
}

// On a kernel with the tls ULP registered: the client's socket takes its
// keys, and from then on plain send()/recv() talk TLS with a BoringSSL peer.
// Elsewhere (this project's CI kernel has no CONFIG_TLS): TCP_ULP is refused,
// and the socket carries on as it was.
TEST(Ktls, TheSocketTakesTheKeysWhereTheKernelHasTls) {
  auto [client_fd, server_fd] = tcpPair();
  Pair pair = establishedPair();  // over memory; the keys then continue on the sockets
  ASSERT_EQ(pair.server->write(bytes("tickets first")), TlsStatus::Done);
  shuttle(*pair.server, *pair.client);
  EXPECT_EQ(readAllPlain(*pair.client), "tickets first");
  Result<TrafficKeys> keys = exportTrafficKeys(pair.client->ssl());
  ASSERT_TRUE(keys);
  Status installed = installKernelTls(client_fd.get(), *keys);
  if (!tlsUlpRegistered()) {
    ASSERT_FALSE(installed);
    EXPECT_EQ(installed.error().sys_errno, ENOENT) << installed.error().describe();
    EXPECT_NE(installed.error().message.find("TCP_ULP"), std::string::npos);
    ASSERT_TRUE(testing::writeAll(client_fd.get(), "plain", 5));
    char buf[5];
    ASSERT_EQ(::recv(server_fd.get(), buf, sizeof buf, MSG_WAITALL), 5);
    EXPECT_EQ(std::string(buf, 5), "plain");
    return;
  }
  ASSERT_TRUE(installed) << installed.error().describe();
  const std::string up = pattern(100000, 5);
  ASSERT_TRUE(testing::writeAll(client_fd.get(), up.data(), up.size()));
  ::shutdown(client_fd.get(), SHUT_WR);
  std::string wire;
  ASSERT_TRUE(testing::readToEof(server_fd.get(), wire));
  pair.server->feed({reinterpret_cast<const std::byte*>(wire.data()), wire.size()});
  EXPECT_EQ(readAllPlain(*pair.server), up);
  const std::string down = pattern(50000, 6);
  ASSERT_EQ(pair.server->write(bytes(down)), TlsStatus::Done);
  const std::vector<uint8_t> sealed = drain(pair.server->output());
  ASSERT_TRUE(testing::writeAll(server_fd.get(), sealed.data(), sealed.size()));
  std::string got(down.size(), '\0');
  ASSERT_EQ(::recv(client_fd.get(), got.data(), got.size(), MSG_WAITALL), static_cast<ssize_t>(got.size()));
  EXPECT_EQ(got, down);
}

}  // namespace
}  // namespace meshlock::engine
