// One TLS connection driven entirely through memory: the engine feeds it the
// ciphertext it received and sends what output() holds. It never touches a
// socket, so the io_uring and epoll loops (and the unit tests) share it.
#pragma once

#include <openssl/ssl.h>

#include <cstdint>
#include <functional>
#include <span>
#include <string>

#include "common/error.h"
#include "common/ssl_errors.h"
#include "engine/byte_queue.h"
#include "engine/tls_records.h"
#include "engine/tls_status.h"

namespace meshlock::engine {

// Called once the handshake has completed and the chain has been verified by
// the SSL_CTX; returns the peer's identity (e.g. its SPIFFE ID) or why it is
// not acceptable. The identity part (agent/identity) provides the mesh's one.
using PeerVerifier = std::function<Result<std::string>(SSL* ssl)>;
// Called on each new SSL before its handshake (e.g. identity::setExpectedPeers,
// SSL_set_session to offer a cached session). An error refuses the connection.
using SslPreparer = std::function<Status(SSL* ssl)>;
// Called with an SSL whose handshake completed, just before it is freed
// (e.g. identity::takeResumableSession into a per-destination cache).
using SslReleaser = std::function<void(SSL* ssl)>;
// Called when a handshake fails: why, in the words of whoever verified the
// peer (e.g. identity::verifyFailure: "san_mismatch: ..."); empty if unknown.
using SslFailureExplainer = std::function<std::string(const SSL* ssl)>;

// Per-connection hooks beside the SSL_CTX; all may be empty.
struct TlsHooks {
  SslPreparer prepare;
  PeerVerifier verify_peer;
  SslReleaser release;
  SslFailureExplainer explain_failure;
};

// A counted reference to an SSL_CTX: contexts are shared by every connection
// of an identity and outlive any single one.
class SslContextRef {
 public:
  SslContextRef() = default;
  explicit SslContextRef(bssl::UniquePtr<SSL_CTX> ctx) : ctx_(std::move(ctx)) {}
  SslContextRef(const SslContextRef& other) { *this = other; }
  SslContextRef& operator=(const SslContextRef& other) {
    if (this != &other) {
      if (other.ctx_) SSL_CTX_up_ref(other.ctx_.get());
      ctx_.reset(other.ctx_.get());
    }
    return *this;
  }
  SslContextRef(SslContextRef&&) noexcept = default;
  SslContextRef& operator=(SslContextRef&&) noexcept = default;

  [[nodiscard]] SSL_CTX* get() const { return ctx_.get(); }
  explicit operator bool() const { return ctx_ != nullptr; }

 private:
  bssl::UniquePtr<SSL_CTX> ctx_;
};


// What the handshake established, kept for metrics and the CLI.
struct TlsInfo {
  std::string version;        // "TLSv1.3"
  std::string cipher;         // "TLS_AES_128_GCM_SHA256"
  bool resumed = false;
  std::string peer_identity;  // from the verifier, or the peer's URI SAN
  std::string server_name;    // the SNI the client sent (server side), if any
};

struct TlsHandover;

class TlsSession {
 public:
  enum class Role { Client, Server };

  // server_name: SNI for clients (empty: none).
  [[nodiscard]] static Result<std::unique_ptr<TlsSession>> create(Role role, const SslContextRef& ctx,
                                                                  std::string_view server_name, TlsHooks hooks);
  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;
  ~TlsSession();

  // Carries on an established TLS 1.3 connection that another session
  // (maybe in another process) handed over: no SSL, records of our own.
  [[nodiscard]] static Result<std::unique_ptr<TlsSession>> resume(TlsHandover handover);

  // Ciphertext received from the peer.
  void feed(std::span<const std::byte> ciphertext);
  // Ciphertext to send to the peer, in order; consume what was sent.
  [[nodiscard]] ByteQueue& output() { return output_; }
  // Ciphertext fed but not yet processed.
  [[nodiscard]] size_t bufferedInput() const { return input_.bytes.size(); }

  // Advances the handshake. Done once complete and the peer verified.
  TlsStatus handshake();
  [[nodiscard]] bool handshakeDone() const { return handshake_done_; }

  // Decrypts into `plaintext` until no whole record is left or `limit` bytes
  // were added. NeedRead: all fed input consumed; Done: limit reached.
  TlsStatus read(ByteQueue& plaintext, size_t limit);
  // Encrypts all of `plaintext` into output().
  TlsStatus write(std::span<const std::byte> plaintext);
  // Queues close_notify into output(); writes are refused afterwards.
  TlsStatus shutdown();

  // Empty until the handshake is done.
  [[nodiscard]] TlsInfo info() const;
  [[nodiscard]] const std::string& reason() const { return reason_; }
  // The failure was the peer's alert refusing our certificate (unknown CA,
  // bad, expired, revoked, unsupported or required certificate, access denied).
  [[nodiscard]] bool peerRefusedOurCertificate() const;
  // Null once resumed from a handover.
  [[nodiscard]] SSL* ssl() const { return ssl_.get(); }
  [[nodiscard]] bool resumedFromHandover() const { return records_ != nullptr; }

  // Everything needed to carry the connection on elsewhere; the session is
  // spent afterwards. Only an established TLS 1.3 connection that has
  // neither sent nor received close_notify, and whose every received record
  // was read (read() with no limit first), can be handed over.
  [[nodiscard]] Result<TlsHandover> handOver();

 private:
  TlsSession() = default;
  TlsStatus failWith(const char* operation, int ret);
  TlsStatus readInto(ByteQueue& plaintext, size_t limit);
  TlsStatus wantStatus() const;
  // A record layer's answer, its failure recorded as the session's.
  TlsStatus fromRecords(TlsStatus status);

  // The input BIO gives BoringSSL whole records only, so at any time every
  // byte it took has been opened: what is left here is all a handover must
  // carry (see handOver). `whole`: the front bytes that are whole records.
  struct Input {
    ByteQueue bytes;
    size_t whole = 0;
  };

  bssl::UniquePtr<SSL> ssl_;
  std::unique_ptr<TlsRecordLayer> records_;  // instead of ssl_, once resumed
  TlsInfo resumed_info_;
  Input input_;
  ByteQueue output_;
  PeerVerifier verifier_;
  SslReleaser releaser_;
  SslFailureExplainer explainer_;
  std::string peer_identity_;  // version, cipher and resumption are read from the SSL
  std::string reason_;
  uint32_t error_ = 0;  // the first BoringSSL error of the failure, 0 if none
  bool handshake_done_ = false;
  bool failed_ = false;
};

// An established connection between two TlsSessions (handOver, resume).
struct TlsHandover {
  TrafficKeys keys;
  TlsInfo info;
  std::vector<std::byte> unread;  // ciphertext received, not yet opened (a partial record)
  std::vector<std::byte> unsent;  // ciphertext sealed, not yet sent
};

// The peer's leaf certificate, parsed from the chain the SSL keeps as bytes
// (contexts made with TLS_with_buffers_method keep no X509 objects), or null.
bssl::UniquePtr<X509> peerLeaf(const SSL* ssl);
// The "spiffe://" URI SAN of a certificate, or empty.
std::string spiffeIdOf(X509* cert);
using meshlock::drainSslErrors;  // common/ssl_errors.h

}  // namespace meshlock::engine
