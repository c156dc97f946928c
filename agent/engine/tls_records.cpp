// TlsRecordLayer: RFC 8446 records over BoringSSL's AEAD and HKDF, for a
// connection whose handshake another process (or an earlier SSL) completed.
#include "engine/tls_records.h"

#include <openssl/digest.h>
#include <openssl/hkdf.h>
#include <openssl/mem.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <limits>

#include "common/ssl_errors.h"

namespace meshlock::engine {
namespace {

// RFC 8446 5.1, 5.2, 6 and B.3.
constexpr uint8_t kAlert = 21;
constexpr uint8_t kHandshake = 22;
constexpr uint8_t kApplicationData = 23;
constexpr uint8_t kNewSessionTicket = 4;
constexpr uint8_t kKeyUpdate = 24;
constexpr uint8_t kCloseNotify = 0;
constexpr uint8_t kUnexpectedMessage = 10;
constexpr uint8_t kBadRecordMac = 20;
constexpr uint8_t kRecordOverflow = 22;
constexpr uint8_t kDecodeError = 50;
constexpr uint8_t kUserCanceled = 90;
constexpr uint8_t kInternalError = 80;
constexpr size_t kHeader = 5;
constexpr size_t kMaxPlaintext = 16384;
constexpr size_t kMaxCiphertext = kMaxPlaintext + 256;
// Post-handshake messages we accept are small: a ticket, a KeyUpdate.
constexpr size_t kMaxHandshakeMessage = 64 * 1024;

struct Suite {
  const EVP_MD* digest;
  const EVP_AEAD* aead;
};

Result<Suite> suiteOf(uint16_t cipher_suite) {
  switch (cipher_suite) {
    case kTlsAes128GcmSha256: return Suite{EVP_sha256(), EVP_aead_aes_128_gcm()};
    case kTlsAes256GcmSha384: return Suite{EVP_sha384(), EVP_aead_aes_256_gcm()};
    case kTlsChacha20Poly1305Sha256: return Suite{EVP_sha256(), EVP_aead_chacha20_poly1305()};
    default: {
      char hex[8];
      std::snprintf(hex, sizeof hex, "%04x", cipher_suite);
      return fail(std::string("tls: cipher suite 0x") + hex + " is not a TLS 1.3 suite this layer knows");
    }
  }
}

// HKDF-Expand-Label(secret, label, "", length), RFC 8446 7.1.
Result<std::vector<uint8_t>> expandLabel(const EVP_MD* digest, std::span<const uint8_t> secret, std::string_view label,
                                         size_t length) {
  const std::string full = "tls13 " + std::string(label);
  std::vector<uint8_t> info;
  info.push_back(static_cast<uint8_t>(length >> 8));
  info.push_back(static_cast<uint8_t>(length));
  info.push_back(static_cast<uint8_t>(full.size()));
  info.insert(info.end(), full.begin(), full.end());
  info.push_back(0);  // empty context
  std::vector<uint8_t> out(length);
  if (!HKDF_expand(out.data(), out.size(), digest, secret.data(), secret.size(), info.data(), info.size()))
    return fail("tls: HKDF-Expand-Label " + std::string(label) + ": " + drainSslErrors());
  return out;
}

}  // namespace

Result<TrafficKeys> exportTrafficKeys(const SSL* ssl) {
  if (SSL_in_init(ssl)) return fail("tls: the handshake has not completed");
  if (SSL_version(ssl) != TLS1_3_VERSION)
    return fail(std::string("tls: only TLS 1.3 keys can be carried on (this connection is ") + SSL_get_version(ssl) + ")");
  const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl);
  if (cipher == nullptr) return fail("tls: no cipher negotiated");
  bssl::Span<const uint8_t> read_secret;
  bssl::Span<const uint8_t> write_secret;
  if (!bssl::SSL_get_traffic_secrets(ssl, &read_secret, &write_secret))
    return fail("tls: SSL_get_traffic_secrets: " + drainSslErrors());
  TrafficKeys keys;
  keys.server = SSL_is_server(ssl) == 1;
  keys.cipher_suite = SSL_CIPHER_get_protocol_id(cipher);
  keys.read_secret.assign(read_secret.begin(), read_secret.end());
  keys.write_secret.assign(write_secret.begin(), write_secret.end());
  keys.read_sequence = SSL_get_read_sequence(ssl);
  keys.write_sequence = SSL_get_write_sequence(ssl);
  return keys;
}

Result<RecordKey> recordKeyOf(uint16_t cipher_suite, std::span<const uint8_t> secret) {
  Result<Suite> suite = suiteOf(cipher_suite);
  if (!suite) return std::unexpected(suite.error());
  if (secret.size() != EVP_MD_size(suite->digest)) return fail("tls: a traffic secret of " + std::to_string(secret.size()) + " bytes does not fit its suite");
  Result<std::vector<uint8_t>> key = expandLabel(suite->digest, secret, "key", EVP_AEAD_key_length(suite->aead));
  if (!key) return std::unexpected(key.error());
  Result<std::vector<uint8_t>> iv = expandLabel(suite->digest, secret, "iv", 12);
  if (!iv) return std::unexpected(iv.error());
  return RecordKey{std::move(*key), std::move(*iv)};
}

Result<std::unique_ptr<TlsRecordLayer>> TlsRecordLayer::create(const TrafficKeys& keys) {
  Result<Suite> suite = suiteOf(keys.cipher_suite);
  if (!suite) return std::unexpected(suite.error());
  std::unique_ptr<TlsRecordLayer> layer(new TlsRecordLayer());
  layer->server_ = keys.server;
  layer->cipher_suite_ = keys.cipher_suite;
  layer->digest_ = suite->digest;
  layer->aead_ = suite->aead;
  if (Status s = layer->rekey(layer->read_, keys.read_secret); !s) return std::unexpected(s.error());
  if (Status s = layer->rekey(layer->write_, keys.write_secret); !s) return std::unexpected(s.error());
  layer->read_.sequence = keys.read_sequence;
  layer->write_.sequence = keys.write_sequence;
  return layer;
}

Status TlsRecordLayer::rekey(Direction& direction, std::span<const uint8_t> secret) {
  Result<RecordKey> key = recordKeyOf(cipher_suite_, secret);
  if (!key) return std::unexpected(key.error());
  direction.aead.Reset();
  if (!EVP_AEAD_CTX_init(direction.aead.get(), aead_, key->key.data(), key->key.size(), EVP_AEAD_DEFAULT_TAG_LENGTH, nullptr))
    return fail("tls: EVP_AEAD_CTX_init: " + drainSslErrors());
  std::memcpy(direction.iv, key->iv.data(), sizeof direction.iv);
  OPENSSL_cleanse(key->key.data(), key->key.size());
  direction.secret.assign(secret.begin(), secret.end());
  direction.sequence = 0;
  return {};
}

Status TlsRecordLayer::advance(Direction& direction) {
  Result<std::vector<uint8_t>> next = expandLabel(digest_, direction.secret, "traffic upd", EVP_MD_size(digest_));
  if (!next) return std::unexpected(next.error());
  Status status = rekey(direction, *next);
  OPENSSL_cleanse(next->data(), next->size());
  return status;
}

void TlsRecordLayer::nonceFor(const Direction& direction, uint8_t out[12]) const {
  std::memcpy(out, direction.iv, 12);
  for (int i = 0; i < 8; ++i) out[11 - i] ^= static_cast<uint8_t>(direction.sequence >> (8 * i));
}

TrafficKeys TlsRecordLayer::keys() const {
  return TrafficKeys{.server = server_, .cipher_suite = cipher_suite_, .read_secret = read_.secret,
                     .write_secret = write_.secret, .read_sequence = read_.sequence, .write_sequence = write_.sequence};
}

TlsStatus TlsRecordLayer::sealRecord(uint8_t content_type, std::span<const std::byte> body, ByteQueue& output) {
  if (write_.sequence == std::numeric_limits<uint64_t>::max()) {
    failed_ = true;
    reason_ = "tls: the write sequence number is exhausted";
    return TlsStatus::Error;
  }
  const size_t inner = body.size() + 1;
  const size_t sealed = inner + EVP_AEAD_max_overhead(aead_);
  scratch_.resize(kHeader + sealed);
  scratch_[0] = kApplicationData;  // the outer type is always application_data (5.2)
  scratch_[1] = 0x03;
  scratch_[2] = 0x03;
  scratch_[3] = static_cast<uint8_t>(sealed >> 8);
  scratch_[4] = static_cast<uint8_t>(sealed);
  std::memcpy(scratch_.data() + kHeader, body.data(), body.size());
  scratch_[kHeader + body.size()] = content_type;
  uint8_t nonce[12];
  nonceFor(write_, nonce);
  size_t out_length = 0;
  if (!EVP_AEAD_CTX_seal(write_.aead.get(), scratch_.data() + kHeader, &out_length, sealed, nonce, sizeof nonce,
                         scratch_.data() + kHeader, inner, scratch_.data(), kHeader) ||
      out_length != sealed) {
    failed_ = true;
    reason_ = "tls: seal: " + drainSslErrors();
    return TlsStatus::Error;
  }
  ++write_.sequence;
  output.append(std::as_bytes(std::span(scratch_)));
  return TlsStatus::Done;
}

TlsStatus TlsRecordLayer::fatal(uint8_t alert, std::string reason, ByteQueue& output) {
  reason_ = std::move(reason);
  if (!close_sent_ && !failed_) {
    const std::array<std::byte, 2> body{std::byte{2}, std::byte{alert}};  // fatal
    (void)sealRecord(kAlert, body, output);
  }
  close_sent_ = true;
  failed_ = true;
  return TlsStatus::Error;
}

TlsStatus TlsRecordLayer::seal(std::span<const std::byte> plaintext, ByteQueue& output) {
  if (failed_) return TlsStatus::Error;
  if (close_sent_) {
    reason_ = "tls: write after close_notify";
    return TlsStatus::Error;
  }
  while (!plaintext.empty()) {
    const size_t n = std::min(plaintext.size(), kMaxPlaintext);
    if (TlsStatus s = sealRecord(kApplicationData, plaintext.first(n), output); s != TlsStatus::Done) return s;
    plaintext = plaintext.subspan(n);
  }
  return TlsStatus::Done;
}

TlsStatus TlsRecordLayer::close(ByteQueue& output) {
  if (failed_) return TlsStatus::Error;
  if (close_sent_) return TlsStatus::Done;
  const std::array<std::byte, 2> body{std::byte{1}, std::byte{kCloseNotify}};
  TlsStatus status = sealRecord(kAlert, body, output);
  close_sent_ = true;
  return status;
}

TlsStatus TlsRecordLayer::handleHandshake(ByteQueue& output) {
  size_t used = 0;
  while (handshake_.size() - used >= 4) {
    const uint8_t* message = handshake_.data() + used;
    const size_t length = (size_t{message[1]} << 16) | (size_t{message[2]} << 8) | message[3];
    if (length > kMaxHandshakeMessage) return fatal(kDecodeError, "tls: a post-handshake message of " + std::to_string(length) + " bytes", output);
    if (handshake_.size() - used < 4 + length) break;
    switch (message[0]) {
      case kNewSessionTicket:
        // A ticket for a later connection; this one has nothing to keep it for.
        if (server_) return fatal(kUnexpectedMessage, "tls: the client sent NewSessionTicket", output);
        break;
      case kKeyUpdate: {
        if (length != 1 || message[4] > 1) return fatal(kDecodeError, "tls: malformed KeyUpdate", output);
        const bool requested = message[4] == 1;
        // 7.2 / 5.1: a KeyUpdate ends its record; nothing may follow under the old key.
        if (handshake_.size() != used + 5) return fatal(kUnexpectedMessage, "tls: data after KeyUpdate in its record", output);
        if (Status s = advance(read_); !s) return fatal(kInternalError, s.error().describe(), output);
        if (requested && !close_sent_) {
          const std::array<std::byte, 5> reply{std::byte{kKeyUpdate}, std::byte{0}, std::byte{0}, std::byte{1}, std::byte{0}};
          if (TlsStatus s = sealRecord(kHandshake, reply, output); s != TlsStatus::Done) return s;
          if (Status s = advance(write_); !s) return fatal(kInternalError, s.error().describe(), output);
        }
        break;
      }
      default:
        return fatal(kUnexpectedMessage, "tls: unexpected post-handshake message type " + std::to_string(message[0]), output);
    }
    used += 4 + length;
  }
  handshake_.erase(handshake_.begin(), handshake_.begin() + static_cast<std::ptrdiff_t>(used));
  return TlsStatus::Done;
}

TlsStatus TlsRecordLayer::open(ByteQueue& input, ByteQueue& plaintext, size_t limit, ByteQueue& output) {
  if (failed_) return TlsStatus::Error;
  size_t added = 0;
  if (!pending_plain_.empty()) {
    std::vector<std::byte> carry(std::min(limit, pending_plain_.size()));
    pending_plain_.read(carry);
    plaintext.append(carry);
    added = carry.size();
  }
  while (added < limit) {
    if (peer_closed_) return TlsStatus::Closed;
    std::array<std::byte, kHeader> header;
    if (input.peek(0, header) < kHeader) return TlsStatus::NeedRead;
    const auto type = static_cast<uint8_t>(header[0]);
    const size_t length = (static_cast<size_t>(header[3]) << 8) | static_cast<size_t>(header[4]);
    if (type != kApplicationData)
      return fatal(kUnexpectedMessage, "tls: a record of type " + std::to_string(type) + " after the handshake", output);
    if (length > kMaxCiphertext) return fatal(kRecordOverflow, "tls: a record of " + std::to_string(length) + " bytes", output);
    if (input.size() < kHeader + length) return TlsStatus::NeedRead;
    scratch_.resize(kHeader + length);
    input.read(std::as_writable_bytes(std::span(scratch_)));
    uint8_t nonce[12];
    nonceFor(read_, nonce);
    size_t opened = 0;
    if (!EVP_AEAD_CTX_open(read_.aead.get(), scratch_.data() + kHeader, &opened, length, nonce, sizeof nonce,
                           scratch_.data() + kHeader, length, scratch_.data(), kHeader)) {
      (void)drainSslErrors();
      return fatal(kBadRecordMac, "tls: a record failed authentication (sequence " + std::to_string(read_.sequence) + ")", output);
    }
    ++read_.sequence;
    // The inner content type is the last non-zero byte; zeros after it are padding.
    while (opened > 0 && scratch_[kHeader + opened - 1] == 0) --opened;
    if (opened == 0) return fatal(kUnexpectedMessage, "tls: a record with no content type", output);
    const uint8_t content_type = scratch_[kHeader + opened - 1];
    const std::span<const std::byte> body = std::as_bytes(std::span(scratch_)).subspan(kHeader, opened - 1);
    if (body.size() > kMaxPlaintext) return fatal(kRecordOverflow, "tls: a record of " + std::to_string(body.size()) + " plaintext bytes", output);
    if (content_type != kHandshake && !handshake_.empty())
      return fatal(kUnexpectedMessage, "tls: a handshake message interrupted by another record", output);
    switch (content_type) {
      case kApplicationData: {
        const size_t take = std::min(body.size(), limit - added);
        plaintext.append(body.first(take));
        pending_plain_.append(body.subspan(take));
        added += take;
        break;
      }
      case kHandshake: {
        if (body.empty()) return fatal(kUnexpectedMessage, "tls: an empty handshake record", output);
        const auto* bytes = reinterpret_cast<const uint8_t*>(body.data());
        handshake_.insert(handshake_.end(), bytes, bytes + body.size());
        if (TlsStatus s = handleHandshake(output); s != TlsStatus::Done) return s;
        break;
      }
      case kAlert: {
        if (body.size() != 2) return fatal(kDecodeError, "tls: a malformed alert", output);
        const auto description = static_cast<uint8_t>(body[1]);
        if (description == kCloseNotify) {
          peer_closed_ = true;
          return TlsStatus::Closed;
        }
        if (description == kUserCanceled) break;  // close_notify follows (6.1)
        failed_ = true;
        close_sent_ = true;  // no alert in answer to one (6.2)
        reason_ = "tls: the peer sent alert " + std::to_string(description);
        return TlsStatus::Error;
      }
      default:
        return fatal(kUnexpectedMessage, "tls: a record of content type " + std::to_string(content_type), output);
    }
  }
  return TlsStatus::Done;
}

}  // namespace meshlock::engine
