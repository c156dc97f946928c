// BoringSSL certificate and key helpers (see x509_util.h).
#include "identity/x509_util.h"

#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/bytestring.h>
#include <openssl/ec_key.h>
#include <openssl/err.h>
#include <openssl/mem.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <cctype>
#include <fstream>
#include <sstream>

namespace meshlock::identity {
namespace {

std::string hex(const uint8_t* data, std::size_t len) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(len * 2);
  for (std::size_t i = 0; i < len; ++i) {
    out += kDigits[data[i] >> 4];
    out += kDigits[data[i] & 0xf];
  }
  return out;
}

Seconds asn1ToSeconds(const ASN1_TIME* time) {
  bssl::UniquePtr<ASN1_TIME> epoch(ASN1_TIME_set(nullptr, 0));
  int days = 0;
  int secs = 0;
  MESHLOCK_CHECK(epoch && ASN1_TIME_diff(&days, &secs, epoch.get(), time));
  return Seconds(std::chrono::seconds(static_cast<int64_t>(days) * 86400 + secs));
}

bool addNameEntry(X509_NAME* name, const char* field, const std::string& value) {
  if (value.empty()) return true;
  return X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8,
                                    reinterpret_cast<const uint8_t*>(value.data()),
                                    static_cast<int>(value.size()), -1, 0) == 1;
}

bool setTime(ASN1_TIME* field, Seconds when) {
  return ASN1_TIME_set(field, static_cast<time_t>(when.time_since_epoch().count())) != nullptr;
}

bool addGeneralName(GENERAL_NAMES* names, int type, const std::string& value) {
  bssl::UniquePtr<ASN1_IA5STRING> text(ASN1_IA5STRING_new());
  if (!text || !ASN1_STRING_set(text.get(), value.data(), static_cast<int>(value.size()))) {
    return false;
  }
  bssl::UniquePtr<GENERAL_NAME> name(GENERAL_NAME_new());
  if (!name) return false;
  GENERAL_NAME_set0_value(name.get(), type, text.release());
  if (!sk_GENERAL_NAME_push(names, name.get())) return false;
  name.release();
  return true;
}

Status addExtensions(const CertificateSpec& spec, X509* cert, X509* issuer) {
  auto failed = [](std::string_view what) { return fail(takeSslErrors(what)); };

  bssl::UniquePtr<BASIC_CONSTRAINTS> constraints(BASIC_CONSTRAINTS_new());
  if (!constraints) return failed("BASIC_CONSTRAINTS_new");
  constraints->ca = spec.isCa ? 0xff : 0;
  if (spec.isCa && spec.pathLength) {
    constraints->pathlen = ASN1_INTEGER_new();
    if (!constraints->pathlen || !ASN1_INTEGER_set(constraints->pathlen, *spec.pathLength)) {
      return failed("path length");
    }
  }
  if (!X509_add1_ext_i2d(cert, NID_basic_constraints, constraints.get(), 1, X509V3_ADD_DEFAULT)) {
    return failed("basicConstraints");
  }

  if (spec.addKeyUsage) {
    bssl::UniquePtr<ASN1_BIT_STRING> usage(ASN1_BIT_STRING_new());
    if (!usage) return failed("ASN1_BIT_STRING_new");
    // Bit numbers from RFC 5280 4.2.1.3.
    if ((spec.digitalSignature && !ASN1_BIT_STRING_set_bit(usage.get(), 0, 1)) ||
        (spec.keyCertSign && !ASN1_BIT_STRING_set_bit(usage.get(), 5, 1)) ||
        (spec.crlSign && !ASN1_BIT_STRING_set_bit(usage.get(), 6, 1)) ||
        !X509_add1_ext_i2d(cert, NID_key_usage, usage.get(), 1, X509V3_ADD_DEFAULT)) {
      return failed("keyUsage");
    }
  }

  if (spec.addExtendedKeyUsage) {
    bssl::UniquePtr<EXTENDED_KEY_USAGE> eku(sk_ASN1_OBJECT_new_null());
    if (!eku) return failed("EXTENDED_KEY_USAGE");
    // OBJ_nid2obj returns static objects; freeing the stack leaves them alone.
    if ((spec.serverAuth && !sk_ASN1_OBJECT_push(eku.get(), OBJ_nid2obj(NID_server_auth))) ||
        (spec.clientAuth && !sk_ASN1_OBJECT_push(eku.get(), OBJ_nid2obj(NID_client_auth))) ||
        !X509_add1_ext_i2d(cert, NID_ext_key_usage, eku.get(), 0, X509V3_ADD_DEFAULT)) {
      return failed("extendedKeyUsage");
    }
  }

  if (!spec.uriSans.empty() || !spec.dnsSans.empty()) {
    bssl::UniquePtr<GENERAL_NAMES> names(sk_GENERAL_NAME_new_null());
    if (!names) return failed("GENERAL_NAMES");
    for (const auto& uri : spec.uriSans) {
      if (!addGeneralName(names.get(), GEN_URI, uri)) return failed("URI SAN");
    }
    for (const auto& dns : spec.dnsSans) {
      if (!addGeneralName(names.get(), GEN_DNS, dns)) return failed("DNS SAN");
    }
    if (!X509_add1_ext_i2d(cert, NID_subject_alt_name, names.get(), spec.sanCritical ? 1 : 0,
                           X509V3_ADD_DEFAULT)) {
      return failed("subjectAltName");
    }
  }

  // Key identifiers let verifiers pick the right issuer during root rotation.
  uint8_t digest[EVP_MAX_MD_SIZE];
  unsigned digestLength = 0;
  if (!X509_pubkey_digest(cert, EVP_sha1(), digest, &digestLength)) return failed("key id");
  bssl::UniquePtr<ASN1_OCTET_STRING> keyId(ASN1_OCTET_STRING_new());
  if (!keyId || !ASN1_OCTET_STRING_set(keyId.get(), digest, static_cast<int>(digestLength))) {
    return failed("key id");
  }
  if (spec.isCa &&
      !X509_add1_ext_i2d(cert, NID_subject_key_identifier, keyId.get(), 0, X509V3_ADD_DEFAULT)) {
    return failed("subjectKeyIdentifier");
  }
  const ASN1_OCTET_STRING* issuerKeyId =
      issuer != nullptr ? X509_get0_subject_key_id(issuer) : (spec.isCa ? keyId.get() : nullptr);
  if (issuerKeyId != nullptr) {
    bssl::UniquePtr<AUTHORITY_KEYID> authority(AUTHORITY_KEYID_new());
    if (!authority) return failed("AUTHORITY_KEYID_new");
    authority->keyid = ASN1_OCTET_STRING_dup(issuerKeyId);
    if (!authority->keyid ||
        !X509_add1_ext_i2d(cert, NID_authority_key_identifier, authority.get(), 0,
                           X509V3_ADD_DEFAULT)) {
      return failed("authorityKeyIdentifier");
    }
  }
  return {};
}

}  // namespace

Result<bssl::UniquePtr<EVP_PKEY>> generateP256Key() {
  bssl::UniquePtr<EC_KEY> ec(EC_KEY_new_by_curve_name(NID_X9_62_prime256v1));
  if (!ec || !EC_KEY_generate_key(ec.get())) return fail(takeSslErrors("P-256 key generation"));
  bssl::UniquePtr<EVP_PKEY> key(EVP_PKEY_new());
  if (!key || !EVP_PKEY_assign_EC_KEY(key.get(), ec.get())) {
    return fail(takeSslErrors("EVP_PKEY_assign_EC_KEY"));
  }
  ec.release();  // owned by key now
  return key;
}

Result<std::string> readFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return failErrno(fmt::format("{}: open", path.string()));
  std::ostringstream content;
  content << in.rdbuf();
  if (in.bad()) return failErrno(fmt::format("{}: read", path.string()));
  return content.str();
}

Status writeFileAtomically(const std::filesystem::path& path, std::string_view data,
                           unsigned mode) {
  std::string temporary = path.string() + ".tmp";
  int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return failErrno(fmt::format("{}: open", temporary));
  // O_CREAT does not change the mode of a leftover file: set it explicitly.
  bool ok = ::fchmod(fd, mode) == 0;
  std::size_t written = 0;
  while (ok && written < data.size()) {
    ssize_t n = ::write(fd, data.data() + written, data.size() - written);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) written += static_cast<std::size_t>(n);
  }
  ok = ok && ::fsync(fd) == 0;
  int savedErrno = errno;
  ::close(fd);
  if (!ok) {
    ::unlink(temporary.c_str());
    return failErrno(fmt::format("{}: write", temporary), savedErrno);
  }
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    return failErrno(fmt::format("{}: rename", path.string()));
  }
  return {};
}

Result<CertificateList> parseCertificatesPem(std::string_view pem, std::string_view what) {
  bssl::UniquePtr<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return fail(takeSslErrors(what));
  CertificateList certs;
  while (true) {
    bssl::UniquePtr<X509> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (!cert) break;
    certs.push_back(std::move(cert));
  }
  uint32_t last = ERR_peek_last_error();
  if (ERR_GET_LIB(last) == ERR_LIB_PEM && ERR_GET_REASON(last) == PEM_R_NO_START_LINE) {
    ERR_clear_error();  // the normal end of the input
  } else if (last != 0) {
    return fail(takeSslErrors(fmt::format("{}: bad certificate PEM", what)));
  }
  if (certs.empty()) return fail(fmt::format("{}: no certificate in it", what));
  return certs;
}

Result<CertificateList> readCertificatesPem(const std::filesystem::path& path) {
  auto text = readFile(path);
  if (!text) return std::unexpected(text.error());
  return parseCertificatesPem(*text, path.string());
}

Result<bssl::UniquePtr<EVP_PKEY>> parsePrivateKeyPem(std::string_view pem, std::string_view what) {
  bssl::UniquePtr<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return fail(takeSslErrors(what));
  bssl::UniquePtr<EVP_PKEY> key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) return fail(takeSslErrors(fmt::format("{}: no usable private key", what)));
  return key;
}

Result<bssl::UniquePtr<EVP_PKEY>> readPrivateKeyPem(const std::filesystem::path& path) {
  auto text = readFile(path);
  if (!text) return std::unexpected(text.error());
  return parsePrivateKeyPem(*text, path.string());
}

std::string certificatePem(X509* cert) {
  bssl::UniquePtr<BIO> bio(BIO_new(BIO_s_mem()));
  MESHLOCK_CHECK(bio && PEM_write_bio_X509(bio.get(), cert));
  const uint8_t* data = nullptr;
  size_t len = 0;
  MESHLOCK_CHECK(BIO_mem_contents(bio.get(), &data, &len));
  return std::string(reinterpret_cast<const char*>(data), len);
}

std::string privateKeyPem(EVP_PKEY* key) {
  bssl::UniquePtr<BIO> bio(BIO_new(BIO_s_mem()));
  MESHLOCK_CHECK(bio &&
                 PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr));
  const uint8_t* data = nullptr;
  size_t len = 0;
  MESHLOCK_CHECK(BIO_mem_contents(bio.get(), &data, &len));
  std::string out(reinterpret_cast<const char*>(data), len);
  return out;
}

bssl::UniquePtr<X509> copyCertificate(X509* cert) {
  X509_up_ref(cert);
  return bssl::UniquePtr<X509>(cert);
}

CertificateList copyCertificates(const CertificateList& certs) {
  CertificateList out;
  out.reserve(certs.size());
  for (const auto& cert : certs) out.push_back(copyCertificate(cert.get()));
  return out;
}

std::string serialHex(X509* cert) {
  bssl::UniquePtr<BIGNUM> serial(ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr));
  MESHLOCK_CHECK(serial);
  bssl::UniquePtr<char> text(BN_bn2hex(serial.get()));
  MESHLOCK_CHECK(text);
  std::string out = text.get();
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

std::string sha256Fingerprint(X509* cert) {
  uint8_t digest[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  MESHLOCK_CHECK(X509_digest(cert, EVP_sha256(), digest, &len));
  return hex(digest, len);
}

std::string subjectText(X509* cert) {
  bssl::UniquePtr<BIO> bio(BIO_new(BIO_s_mem()));
  MESHLOCK_CHECK(bio);
  X509_NAME_print_ex(bio.get(), X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
  const uint8_t* data = nullptr;
  size_t len = 0;
  MESHLOCK_CHECK(BIO_mem_contents(bio.get(), &data, &len));
  return std::string(reinterpret_cast<const char*>(data), len);
}

Seconds notBefore(X509* cert) { return asn1ToSeconds(X509_get0_notBefore(cert)); }
Seconds notAfter(X509* cert) { return asn1ToSeconds(X509_get0_notAfter(cert)); }

Result<bssl::UniquePtr<X509>> buildCertificate(const CertificateSpec& spec, EVP_PKEY* subjectKey,
                                               X509* issuer, EVP_PKEY* issuerKey) {
  auto failed = [](std::string_view what) { return fail(takeSslErrors(what)); };
  bssl::UniquePtr<X509> cert(X509_new());
  if (!cert || !X509_set_version(cert.get(), X509_VERSION_3)) return failed("X509_new");

  // 128 random bits, positive and non-zero, as CA/B Forum and Istio do.
  uint8_t serialBytes[16];
  RAND_bytes(serialBytes, sizeof(serialBytes));
  serialBytes[0] = (serialBytes[0] & 0x7f) | 0x01;
  bssl::UniquePtr<BIGNUM> serialNumber(BN_bin2bn(serialBytes, sizeof(serialBytes), nullptr));
  if (!serialNumber ||
      !BN_to_ASN1_INTEGER(serialNumber.get(), X509_get_serialNumber(cert.get()))) {
    return failed("serial number");
  }

  X509_NAME* subject = X509_get_subject_name(cert.get());
  if (!addNameEntry(subject, "O", spec.organization) ||
      !addNameEntry(subject, "CN", spec.commonName)) {
    return failed("subject name");
  }
  X509_NAME* issuerName = issuer != nullptr ? X509_get_subject_name(issuer) : subject;
  if (!X509_set_issuer_name(cert.get(), issuerName)) return failed("issuer name");
  if (!setTime(X509_getm_notBefore(cert.get()), spec.notBefore) ||
      !setTime(X509_getm_notAfter(cert.get()), spec.notAfter)) {
    return failed("validity");
  }
  if (!X509_set_pubkey(cert.get(), subjectKey)) return failed("public key");
  if (auto ok = addExtensions(spec, cert.get(), issuer); !ok) return std::unexpected(ok.error());
  if (!X509_sign(cert.get(), issuerKey, EVP_sha256())) return failed("X509_sign");
  return cert;
}

}  // namespace meshlock::identity
