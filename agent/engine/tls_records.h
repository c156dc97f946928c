// An established TLS 1.3 connection carried on without the SSL that
// negotiated it: its traffic secrets and sequence numbers, exported from
// BoringSSL, drive a record layer of our own. An agent upgrade hands them to
// the next process (docs/upgrade.md); the same keys are what kTLS would take.
//
// BoringSSL cannot import an established connection (its handback is for
// TLS 1.2 handshakes only, ssl.h "Split handshakes"), so what continues here
// is RFC 8446 section 5 on BoringSSL's AEADs and HKDF: records, KeyUpdate
// (7.2), close_notify and alerts (6). No handshake is ever started again.
#pragma once

#include <openssl/aead.h>
#include <openssl/ssl.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/error.h"
#include "engine/byte_queue.h"
#include "engine/tls_status.h"

namespace meshlock::engine {

// TLS 1.3 cipher suites (RFC 8446 B.4), as the IANA registry numbers them.
inline constexpr uint16_t kTlsAes128GcmSha256 = 0x1301;
inline constexpr uint16_t kTlsAes256GcmSha384 = 0x1302;
inline constexpr uint16_t kTlsChacha20Poly1305Sha256 = 0x1303;

// The keys of one established TLS 1.3 connection: sensitive, never logged.
struct TrafficKeys {
  bool server = false;               // which end we are (a client may get NewSessionTicket)
  uint16_t cipher_suite = 0;         // kTls*
  std::vector<uint8_t> read_secret;  // the current application traffic secrets
  std::vector<uint8_t> write_secret;
  uint64_t read_sequence = 0;        // of the next record to open
  uint64_t write_sequence = 0;       // of the next record to seal
};

// The keys of `ssl`, which must have completed a TLS 1.3 handshake.
[[nodiscard]] Result<TrafficKeys> exportTrafficKeys(const SSL* ssl);

// The AEAD key and IV of a traffic secret (RFC 8446 7.3), e.g. for kTLS.
struct RecordKey {
  std::vector<uint8_t> key;
  std::vector<uint8_t> iv;  // 12 bytes: XORed with the sequence number for each nonce
};
[[nodiscard]] Result<RecordKey> recordKeyOf(uint16_t cipher_suite, std::span<const uint8_t> secret);

class TlsRecordLayer {
 public:
  [[nodiscard]] static Result<std::unique_ptr<TlsRecordLayer>> create(const TrafficKeys& keys);

  // Opens the whole records at the front of `input` (a partial one stays
  // there) until `limit` bytes of plaintext were added. A KeyUpdate that asks
  // for ours queues it into `output`. NeedRead: nothing whole left; Closed:
  // close_notify; Error: reason() says why, `output` may hold the alert.
  TlsStatus open(ByteQueue& input, ByteQueue& plaintext, size_t limit, ByteQueue& output);
  // Seals all of `plaintext` into `output`, in records of at most 16 KiB.
  TlsStatus seal(std::span<const std::byte> plaintext, ByteQueue& output);
  // Queues close_notify; sealing is refused afterwards.
  TlsStatus close(ByteQueue& output);

  // Where the connection stands now, to hand it on again.
  [[nodiscard]] TrafficKeys keys() const;
  [[nodiscard]] const std::string& reason() const { return reason_; }
  [[nodiscard]] bool closeNotifySent() const { return close_sent_; }
  // Plaintext of the last opened record beyond `limit`, delivered first by the next open().
  [[nodiscard]] size_t pendingPlaintext() const { return pending_plain_.size(); }

 private:
  struct Direction {
    std::vector<uint8_t> secret;
    bssl::ScopedEVP_AEAD_CTX aead;
    uint8_t iv[12]{};
    uint64_t sequence = 0;
  };
  TlsRecordLayer() = default;
  Status rekey(Direction& direction, std::span<const uint8_t> secret);
  // RFC 8446 7.2: application_traffic_secret_N+1.
  Status advance(Direction& direction);
  void nonceFor(const Direction& direction, uint8_t out[12]) const;
  TlsStatus sealRecord(uint8_t content_type, std::span<const std::byte> body, ByteQueue& output);
  TlsStatus handleHandshake(ByteQueue& output);
  // Queues a fatal alert and records why.
  TlsStatus fatal(uint8_t alert, std::string reason, ByteQueue& output);

  bool server_ = false;
  uint16_t cipher_suite_ = 0;
  const EVP_MD* digest_ = nullptr;
  const EVP_AEAD* aead_ = nullptr;
  Direction read_;
  Direction write_;
  std::vector<uint8_t> scratch_;   // one record being sealed or opened
  std::vector<uint8_t> handshake_; // post-handshake messages may span records
  ByteQueue pending_plain_;
  std::string reason_;
  bool close_sent_ = false;
  bool peer_closed_ = false;
  bool failed_ = false;
};

}  // namespace meshlock::engine
