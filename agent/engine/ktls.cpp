// ktlsCryptoInfo, installKernelTls: TLS 1.3 record keys in linux/tls.h's form.
#include "engine/ktls.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/mem.h>

#include <cstring>

namespace meshlock::engine {
namespace {

#ifndef SOL_TLS
constexpr int SOL_TLS = 282;  // linux/socket.h; older libc headers lack it
#endif

// Splits the 12-byte TLS 1.3 IV into salt and iv, fills key and rec_seq.
template <typename Info>
void fill(Info& info, uint16_t cipher_type, const RecordKey& key, uint64_t sequence) {
  static_assert(sizeof info.salt + sizeof info.iv == 12, "a TLS 1.3 nonce is 12 bytes");
  static_assert(sizeof info.rec_seq == 8);
  info.info.version = TLS_1_3_VERSION;
  info.info.cipher_type = cipher_type;
  std::memcpy(info.salt, key.iv.data(), sizeof info.salt);
  std::memcpy(info.iv, key.iv.data() + sizeof info.salt, sizeof info.iv);
  std::memcpy(info.key, key.key.data(), sizeof info.key);
  for (size_t i = 0; i < 8; ++i) info.rec_seq[i] = static_cast<unsigned char>(sequence >> (56 - 8 * i));
}

}  // namespace

KtlsCryptoInfo::KtlsCryptoInfo(KtlsCryptoInfo&& other) noexcept : info_(other.info_), size_(other.size_) {
  OPENSSL_cleanse(&other.info_, sizeof other.info_);
  other.size_ = 0;
}

KtlsCryptoInfo::~KtlsCryptoInfo() { OPENSSL_cleanse(&info_, sizeof info_); }

Result<KtlsCryptoInfo> ktlsCryptoInfo(uint16_t cipher_suite, std::span<const uint8_t> secret, uint64_t sequence) {
  Result<RecordKey> key = recordKeyOf(cipher_suite, secret);
  if (!key) return std::unexpected(key.error());
  KtlsCryptoInfo out;
  switch (cipher_suite) {
    case kTlsAes128GcmSha256:
      fill(out.info_.aes128, TLS_CIPHER_AES_GCM_128, *key, sequence);
      out.size_ = sizeof out.info_.aes128;
      break;
    case kTlsAes256GcmSha384:
      fill(out.info_.aes256, TLS_CIPHER_AES_GCM_256, *key, sequence);
      out.size_ = sizeof out.info_.aes256;
      break;
    case kTlsChacha20Poly1305Sha256:  // no salt: the whole IV is `iv` (SALT_SIZE 0)
      fill(out.info_.chacha, TLS_CIPHER_CHACHA20_POLY1305, *key, sequence);
      out.size_ = sizeof out.info_.chacha;
      break;
    default: return fail("ktls: cipher suite has no kernel TLS form");  // recordKeyOf knows no other
  }
  OPENSSL_cleanse(key->key.data(), key->key.size());
  return out;
}

Result<KtlsCryptoInfo> ktlsCryptoInfo(const TrafficKeys& keys, KtlsDirection direction) {
  const bool transmit = direction == KtlsDirection::Transmit;
  return ktlsCryptoInfo(keys.cipher_suite, transmit ? keys.write_secret : keys.read_secret,
                        transmit ? keys.write_sequence : keys.read_sequence);
}

Status installKernelTls(int fd, const TrafficKeys& keys) {
  Result<KtlsCryptoInfo> tx = ktlsCryptoInfo(keys, KtlsDirection::Transmit);
  if (!tx) return std::unexpected(tx.error().context("ktls"));
  Result<KtlsCryptoInfo> rx = ktlsCryptoInfo(keys, KtlsDirection::Receive);
  if (!rx) return std::unexpected(rx.error().context("ktls"));
  static constexpr char kUlp[] = "tls";
  if (::setsockopt(fd, IPPROTO_TCP, TCP_ULP, kUlp, sizeof kUlp - 1) != 0) return failErrno("ktls: setsockopt(TCP_ULP, tls)");
  if (::setsockopt(fd, SOL_TLS, TLS_TX, tx->data(), tx->size()) != 0) return failErrno("ktls: setsockopt(TLS_TX)");
  if (::setsockopt(fd, SOL_TLS, TLS_RX, rx->data(), rx->size()) != 0) return failErrno("ktls: setsockopt(TLS_RX)");
  return {};
}

}  // namespace meshlock::engine
