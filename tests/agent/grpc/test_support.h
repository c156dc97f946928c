// Shared by the gRPC server tests: certificates made in-process with
// BoringSSL (a root CA and the server certificates it signs), a scratch
// directory, running the Python peers, and raw sockets for hostile clients.
#pragma once

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/bio.h>
#include <openssl/bytestring.h>
#include <openssl/ec_key.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>

#include "common/error.h"
#include "common/unique_fd.h"

namespace meshlock::grpc::testing {

inline std::string pemOf(X509* cert) {
  bssl::UniquePtr<BIO> bio(BIO_new(BIO_s_mem()));
  MESHLOCK_CHECK(PEM_write_bio_X509(bio.get(), cert));
  const uint8_t* data = nullptr;
  size_t length = 0;
  MESHLOCK_CHECK(BIO_mem_contents(bio.get(), &data, &length));
  return {reinterpret_cast<const char*>(data), length};
}

inline std::string pemOf(EVP_PKEY* key) {
  bssl::UniquePtr<BIO> bio(BIO_new(BIO_s_mem()));
  MESHLOCK_CHECK(PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr));
  const uint8_t* data = nullptr;
  size_t length = 0;
  MESHLOCK_CHECK(BIO_mem_contents(bio.get(), &data, &length));
  return {reinterpret_cast<const char*>(data), length};
}

inline bssl::UniquePtr<EVP_PKEY> newP256Key() {
  bssl::UniquePtr<EC_KEY> ec(EC_KEY_new_by_curve_name(NID_X9_62_prime256v1));
  MESHLOCK_CHECK(ec && EC_KEY_generate_key(ec.get()));
  bssl::UniquePtr<EVP_PKEY> key(EVP_PKEY_new());
  MESHLOCK_CHECK(key && EVP_PKEY_set1_EC_KEY(key.get(), ec.get()));
  return key;
}

inline void addExtension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  bssl::UniquePtr<X509_EXTENSION> ext(X509V3_EXT_nconf_nid(nullptr, &ctx, nid, value));
  MESHLOCK_CHECK(ext && X509_add_ext(cert, ext.get(), -1));
}

// A certificate for `key` named CN=`name`, signed by issuer (self-signed when null).
inline bssl::UniquePtr<X509> makeCertificate(EVP_PKEY* key, const std::string& name, X509* issuer,
                                             EVP_PKEY* issuerKey, bool ca, const std::string& sans) {
  static int serial = 1000;
  bssl::UniquePtr<X509> cert(X509_new());
  MESHLOCK_CHECK(cert && X509_set_version(cert.get(), X509_VERSION_3));
  MESHLOCK_CHECK(ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), ++serial));
  MESHLOCK_CHECK(X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600));
  MESHLOCK_CHECK(X509_gmtime_adj(X509_getm_notAfter(cert.get()), 86400));
  bssl::UniquePtr<X509_NAME> subject(X509_NAME_new());
  MESHLOCK_CHECK(X509_NAME_add_entry_by_txt(subject.get(), "O", MBSTRING_UTF8,
                                            reinterpret_cast<const uint8_t*>("meshlock-test"), -1, -1, 0));
  MESHLOCK_CHECK(X509_NAME_add_entry_by_txt(subject.get(), "CN", MBSTRING_UTF8,
                                            reinterpret_cast<const uint8_t*>(name.c_str()), -1, -1, 0));
  MESHLOCK_CHECK(X509_set_subject_name(cert.get(), subject.get()));
  MESHLOCK_CHECK(X509_set_issuer_name(cert.get(), issuer ? X509_get_subject_name(issuer) : subject.get()));
  MESHLOCK_CHECK(X509_set_pubkey(cert.get(), key));
  X509* signer = issuer ? issuer : cert.get();
  addExtension(cert.get(), signer, NID_subject_key_identifier, "hash");
  addExtension(cert.get(), signer, NID_authority_key_identifier, "keyid:always");
  if (ca) {
    addExtension(cert.get(), signer, NID_basic_constraints, "critical,CA:TRUE");
    addExtension(cert.get(), signer, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    addExtension(cert.get(), signer, NID_basic_constraints, "critical,CA:FALSE");
    addExtension(cert.get(), signer, NID_key_usage, "critical,digitalSignature");
    addExtension(cert.get(), signer, NID_ext_key_usage, "serverAuth");
    addExtension(cert.get(), signer, NID_subject_alt_name, sans.c_str());
  }
  MESHLOCK_CHECK(X509_sign(cert.get(), issuerKey ? issuerKey : key, EVP_sha256()));
  return cert;
}

// A root CA that signs serving certificates.
struct TestCa {
  bssl::UniquePtr<EVP_PKEY> key;
  bssl::UniquePtr<X509> cert;
  std::string pem;

  explicit TestCa(const std::string& name) : key(newP256Key()) {
    cert = makeCertificate(key.get(), name + " Root", nullptr, nullptr, true, "");
    pem = pemOf(cert.get());
  }

  struct Serving {
    std::string chainPem;  // leaf first
    std::string keyPem;
    std::string leafPem;
  };
  // For grpc.test and 127.0.0.1 (and ::1) unless told otherwise.
  [[nodiscard]] Serving issue(const std::string& sans = "DNS:grpc.test,IP:127.0.0.1,IP:::1") const {
    auto leafKey = newP256Key();
    auto leaf = makeCertificate(leafKey.get(), "grpc.test", cert.get(), key.get(), false, sans);
    Serving out;
    out.leafPem = pemOf(leaf.get());
    out.chainPem = out.leafPem + pem;
    out.keyPem = pemOf(leafKey.get());
    return out;
  }
};

// A fresh directory under $TMPDIR, removed at the end of the test.
class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "meshlock-grpc-XXXXXX").string();
    MESHLOCK_CHECK(::mkdtemp(pattern.data()) != nullptr);
    path_ = pattern;
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  [[nodiscard]] std::filesystem::path operator/(const std::string& name) const { return path_ / name; }
  // Writes `text` to a file in the directory; returns its path.
  std::string write(const std::string& name, const std::string& text) const {
    std::ofstream out(path_ / name, std::ios::binary | std::ios::trunc);
    out << text;
    MESHLOCK_CHECK(out.good());
    return (path_ / name).string();
  }

 private:
  std::filesystem::path path_;
};

struct CommandResult {
  int status = -1;
  std::string output;  // stdout only; stderr goes to the test's log
};

// Runs a shell command, bounded by `timeoutSeconds`.
inline CommandResult run(const std::string& command, int timeoutSeconds = 30) {
  std::string full = "timeout " + std::to_string(timeoutSeconds) + " " + command;
  CommandResult result;
  FILE* pipe = ::popen(full.c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buffer;
  size_t n = 0;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) result.output.append(buffer.data(), n);
  int status = ::pclose(pipe);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

// Single-quoted for sh.
inline std::string shellQuote(std::string_view text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out.push_back(c);
    }
  }
  return out + "'";
}

inline std::string hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

// A blocking TCP connection to 127.0.0.1:port.
inline UniqueFd connectLoopback(uint16_t port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) return UniqueFd();
  return fd;
}

// How long until the server closes the connection (EOF or reset), reading and
// dropping whatever it sends; nullopt when it is still open after `limit`.
inline std::optional<std::chrono::milliseconds> timeUntilClosed(int fd, std::chrono::milliseconds limit) {
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + limit;
  std::array<char, 4096> buffer;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
    if (n <= 0)
      return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
  }
}

}  // namespace meshlock::grpc::testing
