// PKCS#10 requests with the SPIFFE URI SAN (csr.h).
#include "identity/csr.h"

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

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

}  // namespace meshlock::identity
