#include "config/credentials.h"

#include <algorithm>
#include <initializer_list>
#include <vector>

namespace meshlock::config {

Result<SecretName> credentialSecret(std::string_view credential_name, std::string_view client_ns) {
  if (namesConfigMap(credential_name)) {
    return fail("credentialName \"" + std::string(credential_name) + "\" names a ConfigMap, not a Secret");
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

bool namesConfigMap(std::string_view credential_name) {
  return credential_name.starts_with(kConfigMapCredentialPrefix);
}

Result<SecretName> credentialConfigMap(std::string_view credential_name) {
  if (!namesConfigMap(credential_name)) {
    return fail("credentialName \"" + std::string(credential_name) + "\" does not name a ConfigMap");
  }
  // ParseResourceName: strings.Split(res, "/"); parts after the second are ignored.
  const std::string_view rest = credential_name.substr(kConfigMapCredentialPrefix.size());
  const size_t slash = rest.find('/');
  const std::string quoted = "\"" + std::string(credential_name) + "\"";
  if (slash == std::string_view::npos) return fail("invalid resource name " + quoted + ". Expected namespace and name");
  const std::string_view ns = rest.substr(0, slash);
  const std::string_view name = rest.substr(slash + 1, rest.find('/', slash + 1) - slash - 1);
  if (ns.empty()) return fail("invalid resource name " + quoted + ". Expected namespace");
  if (name.empty()) return fail("invalid resource name " + quoted + ". Expected name");
  return SecretName{std::string(ns), std::string(name)};
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

std::set<SecretName> referencedConfigMaps(const ClusterState& state) {
  std::set<SecretName> wanted;
  for (const DestinationRule& rule : state.destination_rules) {
    auto want = [&](const std::optional<ClientTlsSettings>& tls) {
      if (!tls || !namesConfigMap(tls->credential_name)) return;
      if (auto name = credentialConfigMap(tls->credential_name)) wanted.insert(*name);
    };
    want(rule.tls);
    for (const PortTlsSettings& port : rule.port_level) want(port.tls);
  }
  return wanted;
}

namespace {

using Data = std::map<std::string, std::string>;

const Secret* findSecret(const SharedList<Secret>& secrets, const SecretName& name) {
  for (const Secret& secret : secrets) {
    if (secret.meta.ref.ns == name.ns && secret.meta.ref.name == name.name) return &secret;
  }
  return nullptr;
}

const ConfigMap* findConfigMap(const SharedList<ConfigMap>& maps, const SecretName& name) {
  for (const ConfigMap& map : maps) {
    if (map.meta.ref.ns == name.ns && map.meta.ref.name == name.name) return &map;
  }
  return nullptr;
}

bool hasKeys(const Data& data, std::initializer_list<const char*> keys) {
  return std::all_of(keys.begin(), keys.end(), [&](const char* k) { return data.contains(k); });
}
bool hasValues(const Data& data, std::initializer_list<const char*> keys) {
  return std::all_of(keys.begin(), keys.end(), [&](const char* k) {
    auto it = data.find(k);
    return it != data.end() && !it->second.empty();
  });
}

// "a, b, c, and 2 more..." as Istio's truncatedKeysMessage writes it.
std::string foundKeys(const Data& data) {
  std::vector<std::string> keys;
  for (const auto& [key, value] : data) keys.push_back(key);
  std::string out;
  for (std::size_t i = 0; i < keys.size() && i < 3; ++i) out += (i ? ", " : "") + keys[i];
  if (keys.size() > 3) out += ", and " + std::to_string(keys.size() - 3) + " more...";
  return out;
}

std::string describe(const SecretName& name) { return "Secret " + name.toString(); }

// `what`: "Secret shop/db", "ConfigMap shop/ca".
Status refuseCrl(const Data& data, const char* key, const std::string& what) {
  if (auto it = data.find(key); it != data.end() && !it->second.empty()) {
    return fail(what + " has a CRL (" + key +
                "); meshlock does not check CRLs and refuses rather than accept revoked certificates");
  }
  return {};
}

// ExtractRoot (secrets.go): `cacert`, else `ca.crt`, with Istio's wording
// (a ConfigMap's too: it is the same function there).
Result<std::string> extractRoot(const Data& data, const std::string& what) {
  const char* key = nullptr;
  const char* crl = nullptr;
  if (hasValues(data, {"cacert"})) {
    key = "cacert", crl = "crl";
  } else if (hasValues(data, {"ca.crt"})) {
    key = "ca.crt", crl = "ca.crl";
  } else if (hasKeys(data, {"cacert"})) {
    return fail(what + ": found key \"cacert\", but it was empty");
  } else if (hasKeys(data, {"ca.crt"})) {
    return fail(what + ": found key \"ca.crt\", but it was empty");
  } else {
    return fail(what + ": found secret, but didn't have expected keys cacert or ca.crt; found: " + foundKeys(data));
  }
  if (Status ok = refuseCrl(data, crl, what); !ok) return std::unexpected(ok.error());
  return data.at(key);
}

// configmap://: the CA only (GetConfigMapCaCert), for any client.
Result<ClientCredential> configMapCredential(const ClientTlsSettings& tls, const ClusterState& state) {
  auto name = credentialConfigMap(tls.credential_name);
  if (!name) return std::unexpected(name.error());
  ClientCredential out;
  out.source = out.ca_source = "ConfigMap " + name->toString();
  if (tls.mode == TlsMode::kMutual) {
    return fail("credentialName \"" + tls.credential_name + "\" names " + out.source +
                ", which holds no client certificate and key (istiod serves only a ConfigMap's CA); MUTUAL needs a "
                "Secret");
  }
  const ConfigMap* map = findConfigMap(state.config_maps, *name);
  if (!map) return fail("configmap " + name->toString() + " not found");
  auto ca = extractRoot(map->data, out.source);
  if (!ca) return std::unexpected(ca.error());
  out.ca_certificates = std::move(*ca);
  return out;
}

}  // namespace

Result<ClientCredential> clientCredential(const ClientTlsSettings& tls, const Pod& client, const ClusterState& state) {
  if (namesConfigMap(tls.credential_name)) return configMapCredential(tls, state);
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
    const Data& data = s->data;
    if (hasValues(data, {"cert", "key"})) {
      cert = "cert", key = "key", crl = "crl";
    } else if (hasValues(data, {"tls.crt", "tls.key"})) {
      cert = "tls.crt", key = "tls.key", crl = "ca.crl";
    } else if (hasKeys(data, {"cert", "key"})) {
      return fail(describe(*name) + ": found keys \"cert\" and \"key\", but they were empty");
    } else if (hasKeys(data, {"tls.crt", "tls.key"})) {
      return fail(describe(*name) + ": found keys \"tls.crt\" and \"tls.key\", but they were empty");
    } else {
      return fail(describe(*name) + ": found secret, but didn't have expected keys (cert and key) or (tls.crt and "
                  "tls.key); found: " + foundKeys(data));
    }
    if (Status ok = refuseCrl(data, crl, describe(*name)); !ok) return std::unexpected(ok.error());
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
  auto root = extractRoot(ca->data, out.ca_source);
  if (!root) return std::unexpected(root.error());
  out.ca_certificates = std::move(*root);
  return out;
}

}  // namespace meshlock::config
