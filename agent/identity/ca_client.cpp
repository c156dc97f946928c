// Istio CA client (ca_client.h): what ztunnel's src/identity/caclient.rs
// does — CSR with the SPIFFE URI SAN, "authorization: Bearer <token>" and
// "clusterid" headers, ImpersonatedIdentity in the request metadata, and the
// leaf's identity checked against the one asked for.
#include "identity/ca_client.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <algorithm>

#include "identity/proto/ca.pb.h"
#include "identity/csr.h"
#include "identity/peer_verifier.h"

namespace meshlock::identity {
namespace {

CaError localError(std::string message) { return CaError{"local", std::move(message)}; }
CaError invalid(const SpiffeId& id, std::string message) {
  return CaError{"invalid_response", fmt::format("CA answer for {} refused: {}", id.uri(), message)};
}

}  // namespace

std::string fileSignature(const std::filesystem::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return "absent";
  return fmt::format("{}:{}:{}.{}", st.st_ino, st.st_size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
}

CaClient::CaClient(CaClientConfig config, TrustDomain trustDomain)
    : config_(std::move(config)), trustDomain_(std::move(trustDomain)) {}

Result<std::unique_ptr<CaClient>> CaClient::create(CaClientConfig config, TrustDomain trustDomain) {
  auto endpoint = grpc::parseEndpoint(config.address);
  if (!endpoint) return std::unexpected(endpoint.error().context("caAddress"));
  std::unique_ptr<CaClient> client(new CaClient(std::move(config), std::move(trustDomain)));
  client->endpoint_ = *endpoint;
  if (auto roots = client->refreshRoots(); !roots) return fail(roots.error().message);
  return client;
}

std::expected<void, CaError> CaClient::refreshRoots() {
  std::string signature = fileSignature(config_.rootFile);
  if (channel_ && signature == rootSignature_) return {};
  auto pem = readFile(config_.rootFile);
  if (!pem) return std::unexpected(localError(fmt::format("caRootFile {}: {}", config_.rootFile.string(), pem.error().describe())));
  auto roots = parseCertificatesPem(*pem, config_.rootFile.string());
  if (!roots) return std::unexpected(localError(roots.error().describe()));
  auto bundle = TrustBundle::create(std::move(*roots), 1);
  if (!bundle) return std::unexpected(localError(bundle.error().context("caRootFile " + config_.rootFile.string()).describe()));
  auto channel = grpc::UnaryChannel::create({.endpoint = endpoint_,
                                             .serverName = config_.serverName,
                                             .rootsPem = *pem,
                                             .rootsOrigin = config_.rootFile.string(),
                                             .connectTimeout = std::min(config_.timeout, std::chrono::milliseconds(5000))});
  if (!channel) return std::unexpected(localError(channel.error().describe()));
  bundle_ = std::move(*bundle);
  channel_ = std::move(*channel);
  rootSignature_ = std::move(signature);
  return {};
}

std::expected<WorkloadCertificate, CaError> CaClient::fetch(const SpiffeId& id, std::chrono::seconds lifetime,
                                                            Seconds now) {
  if (auto roots = refreshRoots(); !roots) {
    if (!channel_) return std::unexpected(roots.error());
    // The file is being rewritten or went bad: keep the roots we had (ztunnel does the same).
  }
  auto token = readFile(config_.tokenFile);
  if (!token) return std::unexpected(localError(fmt::format("caTokenFile {}: {}", config_.tokenFile.string(), token.error().describe())));
  while (!token->empty() && std::isspace(static_cast<unsigned char>(token->back()))) token->pop_back();
  if (token->empty()) return std::unexpected(localError(fmt::format("caTokenFile {} is empty", config_.tokenFile.string())));

  auto key = generateP256Key();
  if (!key) return std::unexpected(localError(key.error().describe()));
  auto csr = buildCsrPem(key->get(), id);
  if (!csr) return std::unexpected(localError(csr.error().describe()));

  istio::v1::auth::IstioCertificateRequest request;
  request.set_csr(*csr);
  request.set_validity_duration(lifetime.count());
  if (config_.impersonate) {
    (*request.mutable_metadata()->mutable_fields())[kImpersonatedIdentityKey].set_string_value(id.uri());
  }
  std::string bytes;
  if (!request.SerializeToString(&bytes)) return std::unexpected(localError("serializing IstioCertificateRequest"));

  grpc::CallOptions options;
  options.timeout = config_.timeout;
  options.metadata = {{"authorization", "Bearer " + *token}, {"clusterid", config_.clusterId}};
  grpc::CallResult answer = channel_->call(kCreateCertificatePath, bytes, options);
  if (!answer) {
    return std::unexpected(CaError{grpc::metricLabel(answer.error().code),
                                   fmt::format("CA {} refused or failed CreateCertificate for {}: {}", config_.address,
                                               id.uri(), answer.error().describe())});
  }
  istio::v1::auth::IstioCertificateResponse response;
  if (!response.ParseFromString(*answer)) return std::unexpected(invalid(id, "not an IstioCertificateResponse"));
  std::vector<std::string> chain(response.cert_chain().begin(), response.cert_chain().end());
  return acceptIssuedChain(chain, id, std::move(*key), *bundle_, trustDomain_, now);
}

std::expected<WorkloadCertificate, CaError> acceptIssuedChain(const std::vector<std::string>& certChain,
                                                              const SpiffeId& id, bssl::UniquePtr<EVP_PKEY> key,
                                                              const TrustBundle& bundle, const TrustDomain& trustDomain,
                                                              Seconds now) {
  if (certChain.empty()) return std::unexpected(invalid(id, "empty cert_chain"));
  // Each element may hold several certificates (istiod expands them; others may not).
  CertificateList all;
  for (std::size_t i = 0; i < certChain.size(); ++i) {
    auto certs = parseCertificatesPem(certChain[i], fmt::format("cert_chain[{}]", i));
    if (!certs) return std::unexpected(invalid(id, certs.error().describe()));
    for (auto& cert : *certs) all.push_back(std::move(cert));
  }
  X509* leaf = all.front().get();
  bssl::UniquePtr<EVP_PKEY> leafKey(X509_get_pubkey(leaf));
  if (!leafKey || EVP_PKEY_cmp(leafKey.get(), key.get()) != 1)
    return std::unexpected(invalid(id, "the leaf certificate does not carry the public key of our CSR"));
  std::vector<X509*> presented;
  for (const auto& cert : all) presented.push_back(cert.get());
  // Used for both directions, so it must pass as a server and as a client.
  for (PeerRole role : {PeerRole::kServer, PeerRole::kClient}) {
    VerifyResult verified = verifyPeerChain(presented, bundle, trustDomain, ExpectedPeers::oneOf({id}),
                                            VerifyOptions{.peerRole = role, .now = now, .skew = std::chrono::seconds(60)});
    if (!verified) return std::unexpected(invalid(id, verified.error().describe()));
  }
  // Intermediates after the leaf; self-signed roots are left out (peers have them).
  CertificateList intermediates;
  for (std::size_t i = 1; i < all.size(); ++i) {
    X509* cert = all[i].get();
    if (X509_NAME_cmp(X509_get_subject_name(cert), X509_get_issuer_name(cert)) == 0) continue;
    intermediates.push_back(copyCertificate(cert));
  }
  return WorkloadCertificate{.id = id,
                             .key = std::move(key),
                             .leaf = std::move(all.front()),
                             .chain = std::move(intermediates),
                             .issuedAt = now,
                             .notBefore = notBefore(leaf),
                             .notAfter = notAfter(leaf),
                             .serial = serialHex(leaf)};
}

}  // namespace meshlock::identity
