// DestinationRule credentialName: which Secret a setting names and which
// Secrets the agent must read for the pods it serves. Istio's rules
// (pilot/pkg/networking/core/cluster_tls.go, pilot/pkg/xds/sds.go,
// pilot/pkg/credentials/kube/secrets.go):
//  - a sidecar applies credentialName only from a rule with a
//    workloadSelector; from any other rule SIMPLE/MUTUAL yields no TLS at all;
//  - the Secret is read in the namespace of the proxy that uses it (the
//    client pod's), never another: sidecars get no cross-namespace grant;
//  - the CA comes from `<name>-cacert`, else from `<name>` itself;
//  - a `configmap://ns/name` reads the CA of a ConfigMap instead: with or
//    without workloadSelector, for any client (sds.go
//    filterAuthorizedResources: "we allow any configmap references. We only
//    expose the ca.crt field"), never a client key.
#pragma once

#include <compare>
#include <set>
#include <string>
#include <string_view>

#include "common/error.h"
#include "config/types.h"

namespace meshlock::config {

inline constexpr std::string_view kCaSecretSuffix = "-cacert";       // Istio's SdsCaSuffix
inline constexpr std::string_view kConfigMapCredentialPrefix = "configmap://";
inline constexpr std::string_view kSecretCredentialPrefix = "kubernetes://";

struct SecretName {
  std::string ns;
  std::string name;
  [[nodiscard]] std::string toString() const { return ns + "/" + name; }
  auto operator<=>(const SecretName&) const = default;
};

// The Secret a credentialName names for a client in `client_ns`: the name
// with an optional "kubernetes://" prefix. A ConfigMap reference, another
// namespace ("kubernetes://ns/name") or an empty name is an error that says so.
[[nodiscard]] Result<SecretName> credentialSecret(std::string_view credential_name, std::string_view client_ns);

// Whether a credentialName names a ConfigMap ("configmap://").
[[nodiscard]] bool namesConfigMap(std::string_view credential_name);

// The ConfigMap a "configmap://ns/name" credentialName names, as
// ParseResourceName (pilot/pkg/model/credentials/resource.go) reads it:
// both parts required, in that namespace whichever the rule's is (Istio's
// validation refuses another namespace than the rule's; validate ML024 too).
[[nodiscard]] Result<SecretName> credentialConfigMap(std::string_view credential_name);

// Whether a rule's credentialName applies at a sidecar (and so at meshlock):
// only when the rule has a workloadSelector (cluster_tls.go).
[[nodiscard]] bool credentialApplies(const DestinationRule& rule);

// Every ConfigMap a DestinationRule names with configmap://. Not per node:
// a rule without workloadSelector may apply to any client.
[[nodiscard]] std::set<SecretName> referencedConfigMaps(const ClusterState& state);

// The service accounts (namespace, name) of the pods on `node` that a MUTUAL
// credentialName applies to: each needs a SubjectAccessReview ("may it list
// secrets in its namespace?", secrets.go Authorize) before its key is used.
[[nodiscard]] std::set<SecretName> credentialUsers(const ClusterState& state, std::string_view node);

// Every Secret the agent needs for the pods on `node` (empty: every node):
// for each rule with a workloadSelector and a credentialName, each pod it
// selects (selectors do not cross namespaces, PushContext.destinationRule)
// wants `<name>` and `<name>-cacert` in its own namespace.
[[nodiscard]] std::set<SecretName> referencedSecrets(const ClusterState& state, std::string_view node);

// What a SIMPLE/MUTUAL setting with a credentialName uses, read from the
// Secrets as istiod's credentials controller reads them (ExtractCertInfo,
// ExtractRoot, GetCaCert): the client certificate and key from `cert`/`key`,
// else `tls.crt`/`tls.key` (MUTUAL); the CA from `cacert`, else `ca.crt`, of
// `<name>-cacert` if that Secret exists, else of `<name>`. A configmap://
// name gives the CA from the ConfigMap's data (GetConfigMapCaCert, the same
// keys), and MUTUAL from one is refused: a ConfigMap holds no client key.
struct ClientCredential {
  std::string source;             // "Secret shop/db-client", for errors and reports
  std::string certificate_chain;  // PEM, MUTUAL only
  std::string private_key;        // PEM, MUTUAL only
  std::string ca_certificates;    // PEM (insecureSkipVerify is not applied: always read)
  std::string ca_source;          // the Secret the CA came from
  bool operator==(const ClientCredential&) const = default;
};

// Fails, with Istio's wording where it has one, when a Secret is missing, has
// none of the keys, or carries a CRL (meshlock does not check CRLs and will
// not quietly accept what the Secret says is revoked).
//
// MUTUAL needs, when `state.secret_access_reviewed`, the client's service
// account allowed to list secrets in its namespace (sds.go: a sidecar gets a
// Secret's key only if authorized; a CA-only `-cacert` needs nothing).
[[nodiscard]] Result<ClientCredential> clientCredential(const ClientTlsSettings& tls, const Pod& client,
                                                        const ClusterState& state);

}  // namespace meshlock::config
