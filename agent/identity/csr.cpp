// PKCS#10 requests with the SPIFFE URI SAN (csr.h).
#include "identity/csr.h"

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/obj.h>

#include <fmt/format.h>

#include "identity/x509_util.h"

namespace meshlock::identity {

Result<std::string> buildCsrPem(EVP_PKEY* key, const SpiffeId& id) {
  bssl::UniquePtr<X509_REQ> request(X509_REQ_new());
  if (!request || !X509_REQ_set_version(request.get(), 0) || !X509_REQ_set_pubkey(request.get(), key))
    return fail(takeSslErrors("CSR for " + id.uri()));
  bssl::UniquePtr<GENERAL_NAMES> names(sk_GENERAL_NAME_new_null());
  bssl::UniquePtr<GENERAL_NAME> uri(GENERAL_NAME_new());
  bssl::UniquePtr<ASN1_IA5STRING> text(ASN1_IA5STRING_new());
  if (!names || !uri || !text ||
      !ASN1_STRING_set(text.get(), id.uri().data(), static_cast<int>(id.uri().size())))
    return fail(takeSslErrors("CSR SAN for " + id.uri()));
  GENERAL_NAME_set0_value(uri.get(), GEN_URI, text.release());
  if (!bssl::PushToStack(names.get(), std::move(uri))) return fail(takeSslErrors("CSR SAN"));
  bssl::UniquePtr<STACK_OF(X509_EXTENSION)> extensions(sk_X509_EXTENSION_new_null());
  bssl::UniquePtr<X509_EXTENSION> san(X509V3_EXT_i2d(NID_subject_alt_name, /*crit=*/1, names.get()));
  if (!extensions || !san || !bssl::PushToStack(extensions.get(), std::move(san)) ||
      !X509_REQ_add_extensions(request.get(), extensions.get()))
    return fail(takeSslErrors("CSR extensions for " + id.uri()));
  if (!X509_REQ_sign(request.get(), key, EVP_sha256())) return fail(takeSslErrors("signing the CSR for " + id.uri()));
  bssl::UniquePtr<BIO> bio(BIO_new(BIO_s_mem()));
  if (!bio || !PEM_write_bio_X509_REQ(bio.get(), request.get())) return fail(takeSslErrors("CSR PEM"));
  const uint8_t* data = nullptr;
  size_t length = 0;
  BIO_mem_contents(bio.get(), &data, &length);
  return std::string(reinterpret_cast<const char*>(data), length);
}

Result<ReceivedCsr> parseCsrPem(std::string_view pem) {
  // A CSR of ~1 KiB is usual; the bound keeps a hostile caller from making us parse megabytes.
  constexpr std::size_t kMaxCsrBytes = 16 * 1024;
  if (pem.empty()) return fail("empty CSR");
  if (pem.size() > kMaxCsrBytes) return fail(fmt::format("CSR of {} bytes (at most {})", pem.size(), kMaxCsrBytes));
  bssl::UniquePtr<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  bssl::UniquePtr<X509_REQ> request(bio ? PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!request) return fail(takeSslErrors("not a PEM certificate request"));
  ReceivedCsr out;
  out.publicKey.reset(X509_REQ_get_pubkey(request.get()));
  if (!out.publicKey) return fail(takeSslErrors("CSR without a usable public key"));
  if (X509_REQ_verify(request.get(), out.publicKey.get()) != 1)
    return fail(takeSslErrors("CSR signature does not verify"));
  switch (EVP_PKEY_id(out.publicKey.get())) {
    case EVP_PKEY_EC: {
      const EC_KEY* ec = EVP_PKEY_get0_EC_KEY(out.publicKey.get());
      const int curve = ec ? EC_GROUP_get_curve_name(EC_KEY_get0_group(ec)) : NID_undef;
      if (curve != NID_X9_62_prime256v1 && curve != NID_secp384r1)
        return fail(fmt::format("CSR key on curve {} (P-256 or P-384 only)", curve == NID_undef ? "unknown" : OBJ_nid2sn(curve)));
      break;
    }
    case EVP_PKEY_RSA:
      if (EVP_PKEY_bits(out.publicKey.get()) < 2048)
        return fail(fmt::format("CSR RSA key of {} bits (at least 2048)", EVP_PKEY_bits(out.publicKey.get())));
      break;
    default:
      return fail("CSR key type not accepted (ECDSA P-256/P-384 or RSA 2048+)");
  }
  bssl::UniquePtr<STACK_OF(X509_EXTENSION)> extensions(X509_REQ_get_extensions(request.get()));
  for (size_t i = 0; extensions && i < sk_X509_EXTENSION_num(extensions.get()); ++i) {
    X509_EXTENSION* extension = sk_X509_EXTENSION_value(extensions.get(), i);
    if (OBJ_obj2nid(X509_EXTENSION_get_object(extension)) != NID_subject_alt_name) continue;
    bssl::UniquePtr<GENERAL_NAMES> names(static_cast<GENERAL_NAMES*>(X509V3_EXT_d2i(extension)));
    if (!names) return fail(takeSslErrors("CSR subjectAltName does not parse"));
    for (size_t j = 0; j < sk_GENERAL_NAME_num(names.get()); ++j) {
      const GENERAL_NAME* name = sk_GENERAL_NAME_value(names.get(), j);
      if (name->type != GEN_URI) continue;
      const ASN1_STRING* uri = name->d.uniformResourceIdentifier;
      out.uriSans.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                               static_cast<std::size_t>(ASN1_STRING_length(uri)));
    }
  }
  return out;
}

}  // namespace meshlock::identity
