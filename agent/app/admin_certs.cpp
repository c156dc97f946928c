// /certs: every identity's certificate, its chain and the trust roots.
#include <nlohmann/json.hpp>

#include <chrono>
#include <string>

#include "app/admin_json.h"
#include "app/agent_parts.h"
#include "identity/trust_bundle.h"
#include "identity/x509_util.h"

namespace meshlock::app {

using nlohmann::json;

namespace {

// One certificate as /certs lists chain entries and roots.
json certificateJson(X509* cert, std::chrono::system_clock::time_point now) {
  char issuer[512] = "";
  X509_NAME_oneline(X509_get_issuer_name(cert), issuer, sizeof issuer);
  const auto not_after = identity::notAfter(cert);
  return {{"subject", identity::subjectText(cert)}, {"issuer", issuer},
          {"serial", lowerHex(identity::serialHex(cert))}, {"not_after", rfc3339(not_after)},
          {"expires_in_seconds", std::chrono::duration<double>(not_after - now).count()}};
}

}  // namespace


admin::Handler Agent::Parts::certsHandler() {
  return [this](const admin::Request&) {
    const auto now = std::chrono::system_clock::now();
    json list = json::array();
    std::map<std::string, std::vector<std::string>> pods_by_identity;
    {
      std::lock_guard lock(served_mutex);
      for (const auto& [uid, pod] : served) pods_by_identity[pod.id.uri()].push_back(pod.name);
    }
    for (const identity::CertificateStatus& cert : identities->certificates()) {
      const std::string serial = lowerHex(cert.serial);
      json chain = json::array();
      if (auto certs = identity::parseCertificatesPem(cert.chainPem, cert.id.uri())) {
        for (std::size_t i = 1; i < certs->size(); ++i) chain.push_back(certificateJson((*certs)[i].get(), now));
      }
      list.push_back({
          {"identity", cert.id.uri()}, {"serial", serial},
          {"not_before", rfc3339(cert.notBefore)}, {"not_after", rfc3339(cert.notAfter)},
          {"expires_in_seconds", std::chrono::duration<double>(cert.notAfter - now).count()},
          {"lifetime_seconds", std::chrono::duration<double>(cert.notAfter - cert.notBefore).count()},
          {"pods", pods_by_identity[cert.id.uri()]},
          {"chain", chain},
          {"state", cert.state},
          {"last_error", cert.lastError.empty() ? json(nullptr) : json(cert.lastError)},
      });
    }
    // Not issued yet (remote CA): their pods are not served.
    for (const identity::PendingCertificate& wait : identities->pending()) {
      list.push_back({{"identity", wait.id.uri()}, {"state", wait.state}, {"pods", json::array()},
                      {"last_error", wait.lastError.empty() ? json(nullptr) : json(wait.lastError)},
                      {"failures", wait.failures},
                      {"retry_in_seconds", wait.retryIn ? json(std::chrono::duration<double>(*wait.retryIn).count())
                                                        : json(nullptr)}});
    }
    json ca = {{"mode", identities->remote() ? "istiod" : "local"}};
    if (const auto& remote = identities->remoteCa()) {
      ca["address"] = remote->client.address;
      ca["root_file"] = remote->client.rootFile.string();
      ca["requests"] = identities->caRequests();
    }
    json roots = json::array();
    for (const auto& root : identities->trustBundle()->roots()) roots.push_back(certificateJson(root.get(), now));
    json body = {{"trust_domain", identities->trustDomain().name()}, {"certificates", list}, {"roots", roots}, {"ca", ca}};
    return jsonResponse(200, body);
  };
}

}  // namespace meshlock::app
