#include "config/credentials.h"

#include <algorithm>
#include <initializer_list>
#include <vector>

namespace meshlock::config {

Result<SecretName> credentialSecret(std::string_view credential_name, std::string_view client_ns) {
  if (credential_name.starts_with(kConfigMapCredentialPrefix)) {
    return fail("credentialName \"" + std::string(credential_name) +
                "\" names a ConfigMap; meshlock reads CA certificates from Secrets only");
  }
  std::string_view name = credential_name;
  if (name.starts_with(kSecretCredentialPrefix)) name.remove_prefix(kSecretCredentialPrefix.size());
  if (name.empty()) return fail("credentialName is empty");
  if (name.find('/') != std::string_view::npos) {
    return fail("credentialName \"" + std::string(credential_name) +
                "\" names a Secret of another namespace; a sidecar reads only its own namespace's (" +
                std::string(client_ns) + ")");
  }
  return SecretName{std::string(client_ns), std::string(name)};
}

bool credentialApplies(const DestinationRule& rule) { return rule.workload_selector.has_value(); }

namespace {

// Each (pod on `node`, TLS setting with a credentialName) of the rules with
// a workloadSelector, in the pod's namespace.
template <typename F>
void forEachCredentialUse(const ClusterState& state, std::string_view node, F&& use) {
  for (const DestinationRule& rule : state.destination_rules) {
    if (!credentialApplies(rule)) continue;
    std::vector<const ClientTlsSettings*> settings;
    if (rule.tls && !rule.tls->credential_name.empty()) settings.push_back(&*rule.tls);
    for (const PortTlsSettings& port : rule.port_level) {
      if (port.tls && !port.tls->credential_name.empty()) settings.push_back(&*port.tls);
    }
    if (settings.empty()) continue;
    for (const Pod& pod : state.pods) {
      if (!node.empty() && pod.node_name != node) continue;
      if (pod.ns() != rule.meta.ref.ns || !selectorMatches(*rule.workload_selector, pod.labels())) continue;
      for (const ClientTlsSettings* tls : settings) use(pod, *tls);
    }
  }
}

}  // namespace

std::set<SecretName> referencedSecrets(const ClusterState& state, std::string_view node) {
  std::set<SecretName> wanted;
  forEachCredentialUse(state, node, [&](const Pod& pod, const ClientTlsSettings& tls) {
    auto secret = credentialSecret(tls.credential_name, pod.ns());
    if (!secret) return;
    wanted.insert(*secret);
    wanted.insert(SecretName{secret->ns, secret->name + std::string(kCaSecretSuffix)});
  });
  return wanted;
}

std::set<SecretName> credentialUsers(const ClusterState& state, std::string_view node) {
  std::set<SecretName> users;
  forEachCredentialUse(state, node, [&](const Pod& pod, const ClientTlsSettings& tls) {
    if (tls.mode == TlsMode::kMutual) users.insert(SecretName{pod.ns(), pod.service_account});
  });
  return users;
}

namespace {

const Secret* findSecret(const SharedList<Secret>& secrets, const SecretName& name) {
  for (const Secret& secret : secrets) {
    if (secret.meta.ref.ns == name.ns && secret.meta.ref.name == name.name) return &secret;
  }
  return nullptr;
}

bool hasKeys(const Secret& s, std::initializer_list<const char*> keys) {
  return std::all_of(keys.begin(), keys.end(), [&](const char* k) { return s.data.contains(k); });
}
bool hasValues(const Secret& s, std::initializer_list<const char*> keys) {
  return std::all_of(keys.begin(), keys.end(), [&](const char* k) {
    auto it = s.data.find(k);
    return it != s.data.end() && !it->second.empty();
  });
}

// "a, b, c, and 2 more..." as Istio's truncatedKeysMessage writes it.
std::string foundKeys(const Secret& s) {
  std::vector<std::string> keys;
  for (const auto& [key, value] : s.data) keys.push_back(key);
  std::string out;
  for (std::size_t i = 0; i < keys.size() && i < 3; ++i) out += (i ? ", " : "") + keys[i];
  if (keys.size() > 3) out += ", and " + std::to_string(keys.size() - 3) + " more...";
  return out;
}

std::string describe(const SecretName& name) { return "Secret " + name.toString(); }

Status refuseCrl(const Secret& s, const char* key, const SecretName& name) {
  if (auto it = s.data.find(key); it != s.data.end() && !it->second.empty()) {
    return fail(describe(name) + " has a CRL (" + key +
                "); meshlock does not check CRLs and refuses rather than accept revoked certificates");
  }
  return {};
}

}  // namespace

Result<ClientCredential> clientCredential(const ClientTlsSettings& tls, const Pod& client, const ClusterState& state) {
  const SharedList<Secret>& secrets = state.secrets;
  auto name = credentialSecret(tls.credential_name, client.ns());
  if (!name) return std::unexpected(name.error());
  ClientCredential out;
  out.source = describe(*name);
  if (tls.mode == TlsMode::kMutual && state.secret_access_reviewed) {
    // Authorize (secrets.go): "%s/%s is not authorized to read secrets: %v".
    const SecretAccess* access = nullptr;
    for (const SecretAccess& a : state.secret_access) {
      if (a.ns == client.ns() && a.service_account == client.service_account) access = &a;
    }
    if (access == nullptr) {
      return fail(client.service_account + "/" + client.ns() + ": whether it may read secrets is not known yet");
    }
    if (!access->allowed) {
      return fail(client.service_account + "/" + client.ns() + " is not authorized to read secrets: " +
                  (access->reason.empty() ? "no RBAC rule lets it list secrets in its namespace" : access->reason));
    }
  }
  if (tls.mode == TlsMode::kMutual) {
    const Secret* s = findSecret(secrets, *name);
    if (!s) return fail(describe(*name) + " not found (credentialName of a MUTUAL setting)");
    const char* cert = nullptr;
    const char* key = nullptr;
    const char* crl = nullptr;
    if (hasValues(*s, {"cert", "key"})) {
      cert = "cert", key = "key", crl = "crl";
    } else if (hasValues(*s, {"tls.crt", "tls.key"})) {
      cert = "tls.crt", key = "tls.key", crl = "ca.crl";
    } else if (hasKeys(*s, {"cert", "key"})) {
      return fail(describe(*name) + ": found keys \"cert\" and \"key\", but they were empty");
    } else if (hasKeys(*s, {"tls.crt", "tls.key"})) {
      return fail(describe(*name) + ": found keys \"tls.crt\" and \"tls.key\", but they were empty");
    } else {
      return fail(describe(*name) + ": found secret, but didn't have expected keys (cert and key) or (tls.crt and "
                  "tls.key); found: " + foundKeys(*s));
    }
    if (Status ok = refuseCrl(*s, crl, *name); !ok) return std::unexpected(ok.error());
    out.certificate_chain = s->data.at(cert);
    out.private_key = s->data.at(key);
  }
  // insecureSkipVerify is read, not applied (validate ML025): the CA is needed.
  // GetCaCert: `<name>-cacert` if it exists (even without the keys), else `<name>`.
  SecretName ca_name{name->ns, name->name + std::string(kCaSecretSuffix)};
  const Secret* ca = findSecret(secrets, ca_name);
  if (!ca) {
    ca_name = *name;
    ca = findSecret(secrets, ca_name);
  }
  if (!ca) return fail(describe(*name) + " not found (and no " + name->name + std::string(kCaSecretSuffix) + ")");
  out.ca_source = describe(ca_name);
  const char* crl = nullptr;
  if (hasValues(*ca, {"cacert"})) {
    out.ca_certificates = ca->data.at("cacert");
    crl = "crl";
  } else if (hasValues(*ca, {"ca.crt"})) {
    out.ca_certificates = ca->data.at("ca.crt");
    crl = "ca.crl";
  } else if (hasKeys(*ca, {"cacert"})) {
    return fail(describe(ca_name) + ": found key \"cacert\", but it was empty");
  } else if (hasKeys(*ca, {"ca.crt"})) {
    return fail(describe(ca_name) + ": found key \"ca.crt\", but it was empty");
  } else {
    return fail(describe(ca_name) + ": found secret, but didn't have expected keys cacert or ca.crt; found: " +
                foundKeys(*ca));
  }
  if (Status ok = refuseCrl(*ca, crl, ca_name); !ok) return std::unexpected(ok.error());
  return out;
}

}  // namespace meshlock::config
