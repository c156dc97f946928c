// Kernel TLS (the kernel's Documentation/networking/tls.rst): an established
// TLS 1.3 connection's record keys handed to the socket, so that the kernel
// seals what the agent send()s and opens what it recv()s.
//
// The keys are the ones an upgrade hands over (tls_records.h): the traffic
// secret of each direction expanded to an AEAD key and IV (RFC 8446 7.3),
// and the sequence number of the next record. linux/tls.h splits the 12-byte
// IV in two: `salt` is its first 4 bytes and `iv` the other 8 for AES-GCM;
// ChaCha20-Poly1305 has no salt and a 12-byte `iv`. For TLS 1.3 the kernel
// XORs the big-endian `rec_seq` into the last 8 bytes of salt‖iv for each
// record's nonce (net/tls/tls.h, tls_xor_iv_with_seq), as RFC 8446 5.3 says.
//
// meshlock never loads kernel modules (kmod-free/): setsockopt(TCP_ULP,
// "tls") would make the kernel load `tls`, so it is only tried when the ULP
// is already registered (net.ipv4.tcp_available_ulp lists it).
#pragma once

#include <linux/tls.h>
#include <sys/socket.h>

#include <cstdint>
#include <span>

#include "common/error.h"
#include "engine/tls_records.h"

namespace meshlock::engine {

// One direction's keys in linux/tls.h's form: sensitive, cleansed when it goes.
class KtlsCryptoInfo {
 public:
  KtlsCryptoInfo() = default;
  KtlsCryptoInfo(const KtlsCryptoInfo&) = delete;
  KtlsCryptoInfo& operator=(const KtlsCryptoInfo&) = delete;
  KtlsCryptoInfo(KtlsCryptoInfo&& other) noexcept;
  KtlsCryptoInfo& operator=(KtlsCryptoInfo&&) = delete;
  ~KtlsCryptoInfo();

  // What setsockopt(SOL_TLS, TLS_TX or TLS_RX) takes.
  [[nodiscard]] const void* data() const { return &info_; }
  [[nodiscard]] socklen_t size() const { return size_; }
  // Every member starts with it (a common initial sequence: any may read it).
  [[nodiscard]] const tls_crypto_info& header() const { return info_.aes128.info; }
  [[nodiscard]] const tls12_crypto_info_aes_gcm_128& aes128() const { return info_.aes128; }
  [[nodiscard]] const tls12_crypto_info_aes_gcm_256& aes256() const { return info_.aes256; }
  [[nodiscard]] const tls12_crypto_info_chacha20_poly1305& chacha() const { return info_.chacha; }

 private:
  friend Result<KtlsCryptoInfo> ktlsCryptoInfo(uint16_t, std::span<const uint8_t>, uint64_t);
  union Info {
    tls12_crypto_info_aes_gcm_128 aes128;
    tls12_crypto_info_aes_gcm_256 aes256;
    tls12_crypto_info_chacha20_poly1305 chacha;
  };
  Info info_{};
  socklen_t size_ = 0;
};

// The keys of one direction: the TLS 1.3 suite (kTls*), that direction's
// current traffic secret and the sequence number of its next record.
[[nodiscard]] Result<KtlsCryptoInfo> ktlsCryptoInfo(uint16_t cipher_suite, std::span<const uint8_t> secret,
                                                    uint64_t sequence);

enum class KtlsDirection { Transmit, Receive };
[[nodiscard]] Result<KtlsCryptoInfo> ktlsCryptoInfo(const TrafficKeys& keys, KtlsDirection direction);

// Gives both directions of the established TLS 1.3 connection `keys` to the
// connected TCP socket `fd`: TCP_ULP "tls", then TLS_TX and TLS_RX. Every
// record sealed and opened so far must already be on the wire or read: the
// kernel starts at the keys' sequence numbers. Call it only where the kernel
// probe (kmod-free/probe.h) found `ktls`: on a kernel whose tls module is not
// loaded, TCP_ULP would load it. A failure of TCP_ULP leaves the socket as it
// was (ENOENT: no tls ULP); a failure after it leaves one that can only be
// closed.
[[nodiscard]] Status installKernelTls(int fd, const TrafficKeys& keys);

}  // namespace meshlock::engine
