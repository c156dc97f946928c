// The crypto floor of the BoringSSL we link: AES-128-GCM, ECDSA P-256 and
// X25519 rates over one second each, single thread. The engine cannot beat these.
#include <openssl/aead.h>
#include <openssl/curve25519.h>
#include <openssl/ec_key.h>
#include <openssl/ecdsa.h>
#include <openssl/obj_mac.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <vector>

namespace {

// Calls `op` for one second; returns calls per second.
double rate(const std::function<void()>& op) {
  using Clock = std::chrono::steady_clock;
  auto start = Clock::now();
  long n = 0;
  while (Clock::now() - start < std::chrono::seconds(1)) {
    op();
    ++n;
  }
  return static_cast<double>(n) / std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

int main() {
  bssl::UniquePtr<EC_KEY> key(EC_KEY_new_by_curve_name(NID_X9_62_prime256v1));
  EC_KEY_generate_key(key.get());
  uint8_t digest[32] = {1};
  uint8_t sig[128];  // a DER P-256 signature is at most 72 bytes
  unsigned sig_len = 0;
  double sign = rate([&] { ECDSA_sign(0, digest, sizeof digest, sig, &sig_len, key.get()); });
  double verify = rate([&] { ECDSA_verify(0, digest, sizeof digest, sig, sig_len, key.get()); });
  uint8_t pub[32], priv[32], shared[32];
  X25519_keypair(pub, priv);
  double x25519 = rate([&] { X25519(shared, priv, pub); });
  bssl::ScopedEVP_AEAD_CTX aead;
  uint8_t aes_key[16] = {0};
  EVP_AEAD_CTX_init(aead.get(), EVP_aead_aes_128_gcm(), aes_key, sizeof aes_key, 16, nullptr);
  std::vector<uint8_t> in(16384), out(16384 + 16);
  uint8_t nonce[12] = {0};
  size_t out_len = 0;
  double seals = rate([&] {
    EVP_AEAD_CTX_seal(aead.get(), out.data(), &out_len, out.size(), nonce, sizeof nonce, in.data(), in.size(),
                      nullptr, 0);
  });
  std::printf("| AES-128-GCM seal, 16 KiB records | %.0f MB/s |\n", seals * in.size() / 1e6);
  std::printf("| ECDSA P-256 sign | %.0f /s |\n", sign);
  std::printf("| ECDSA P-256 verify | %.0f /s |\n", verify);
  std::printf("| X25519 | %.0f /s |\n", x25519);
}
