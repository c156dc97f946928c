// DestinationRule credentialName: the Secret it names, the Secrets a node's
// agent must read, and the keys read from them, as istiod reads them:
//  - pilot/pkg/networking/core/cluster_tls.go (buildUpstreamClusterTLSContext:
//    a sidecar ignores credentialName in a rule without workloadSelector),
//  - pilot/pkg/xds/sds.go (a sidecar reads only its own namespace's Secrets),
//  - pilot/pkg/credentials/kube/secrets.go (ExtractCertInfo, ExtractRoot,
//    GetCaCert, GetConfigMapCaCert and their error messages),
//  - pilot/pkg/model/credentials/resource.go (ParseResourceName: configmap://).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "config/credentials.h"
#include "config/manifest.h"

namespace meshlock::config {
namespace {

using testing::HasSubstr;

ClusterState parse(std::string_view yaml) {
  ParsedManifests p = parseManifests(yaml, "test.yaml");
  EXPECT_TRUE(p.errors.empty()) << (p.errors.empty() ? "" : p.errors.front().describe());
  return p.state;
}

Secret secret(std::string ns, std::string name, std::map<std::string, std::string> data) {
  Secret s;
  s.meta.ref = ObjectRef{"Secret", std::move(ns), std::move(name)};
  s.data = std::move(data);
  return s;
}

// clientCredential for a pod of `ns` (service account "client") with these Secrets.
Result<ClientCredential> credentialFor(const ClientTlsSettings& tls, const std::string& ns, const SharedList<Secret>& secrets,
                                       const ClusterState* base = nullptr) {
  ClusterState state = base ? *base : ClusterState{};
  state.secrets = secrets;
  Pod pod;
  pod.meta.ref = ObjectRef{"Pod", ns, "client"};
  pod.service_account = "client";
  return clientCredential(tls, pod, state);
}

ClientTlsSettings tlsSettings(TlsMode mode, std::string credential) {
  ClientTlsSettings tls;
  tls.mode = mode;
  tls.credential_name = std::move(credential);
  return tls;
}

TEST(CredentialSecret, IsTheClientNamespacesSecretByName) {
  EXPECT_EQ(*credentialSecret("db-client", "shop"), (SecretName{"shop", "db-client"}));
  EXPECT_EQ(*credentialSecret("kubernetes://db-client", "shop"), (SecretName{"shop", "db-client"}));
  // A sidecar may not read another namespace's Secret (sds.go: cross namespace needs a ReferenceGrant, which
  // only gateways get).
  EXPECT_THAT(credentialSecret("kubernetes://other/db-client", "shop").error().describe(), HasSubstr("another namespace"));
  EXPECT_THAT(credentialSecret("configmap://ca", "shop").error().describe(), HasSubstr("ConfigMap"));
  EXPECT_FALSE(credentialSecret("kubernetes://", "shop"));
}

TEST(ManifestSecret, DecodesDataAndMergesStringData) {
  ClusterState st = parse(R"(
apiVersion: v1
kind: Secret
metadata: {name: db-client, namespace: shop}
type: kubernetes.io/tls
data:
  tls.crt: Y2VydA==
  tls.key: |
    a2V5
stringData:
  ca.crt: plain
  tls.key: overrides
)");
  ASSERT_EQ(st.secrets.size(), 1u);
  const Secret& s = st.secrets[0];
  EXPECT_EQ(s.type, "kubernetes.io/tls");
  EXPECT_EQ(s.data.at("tls.crt"), "cert");
  EXPECT_EQ(s.data.at("tls.key"), "overrides");  // stringData wins, as the API server merges it
  EXPECT_EQ(s.data.at("ca.crt"), "plain");

  ParsedManifests bad = parseManifests("apiVersion: v1\nkind: Secret\nmetadata: {name: x, namespace: shop}\ndata: {cert: '%%%'}\n",
                                       "bad.yaml");
  ASSERT_EQ(bad.errors.size(), 1u);
  EXPECT_THAT(bad.errors[0].describe(), HasSubstr("data.cert: not valid base64"));
}

TEST(DecodeBase64, IgnoresWhitespaceAndRefusesOtherCharacters) {
  EXPECT_EQ(*decodeBase64("aGVs\nbG8=\n"), "hello");
  EXPECT_EQ(*decodeBase64(""), "");
  EXPECT_FALSE(decodeBase64("not base64!"));
}

constexpr std::string_view kRules = R"(
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, uid: u1, labels: {app: client}}
spec: {nodeName: node-a, containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: shop, uid: u2, labels: {app: other}}
spec: {nodeName: node-a, containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: billing, uid: u3, labels: {app: client}}
spec: {nodeName: node-b, containers: [{name: c}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db, namespace: shop}
spec:
  host: db.legacy.svc.cluster.local
  workloadSelector: {matchLabels: {app: client}}
  trafficPolicy:
    tls: {mode: MUTUAL, credentialName: db-client}
    portLevelSettings:
    - port: {number: 6432}
      tls: {mode: SIMPLE, credentialName: "kubernetes://db-ca"}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: gateway-only, namespace: shop}
spec:
  host: api.example.com
  trafficPolicy: {tls: {mode: MUTUAL, credentialName: api-client}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db, namespace: billing}
spec:
  host: db.legacy.svc.cluster.local
  workloadSelector: {matchLabels: {app: client}}
  trafficPolicy: {tls: {mode: SIMPLE, credentialName: "configmap://ca"}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: bank, namespace: billing}
spec:
  host: bank.example.com
  trafficPolicy:
    tls: {mode: SIMPLE, credentialName: "configmap://billing/bank-ca"}
    portLevelSettings:
    - port: {number: 8443}
      tls: {mode: SIMPLE, credentialName: "configmap://billing/bank-ca-8443/ignored"}
)";

TEST(ReferencedSecrets, OnlyThoseOfSelectorRulesForThisNodesPods) {
  ClusterState st = parse(kRules);
  // node-a: shop/client is selected; the rule without selector names nothing a
  // sidecar reads; billing's pod is on node-b and its name is a ConfigMap.
  EXPECT_THAT(referencedSecrets(st, "node-a"),
              testing::ElementsAre(SecretName{"shop", "db-ca"}, SecretName{"shop", "db-ca-cacert"},
                                   SecretName{"shop", "db-client"}, SecretName{"shop", "db-client-cacert"}));
  EXPECT_TRUE(referencedSecrets(st, "node-b").empty());
  EXPECT_EQ(referencedSecrets(st, "").size(), 4u);
  EXPECT_FALSE(credentialApplies(st.destination_rules[1]));
  EXPECT_TRUE(credentialApplies(st.destination_rules[0]));
}

TEST(CredentialConfigMap, NamespaceAndNameBothRequiredAsParseResourceNameSays) {
  EXPECT_EQ(*credentialConfigMap("configmap://shop/db-ca"), (SecretName{"shop", "db-ca"}));
  EXPECT_EQ(*credentialConfigMap("configmap://shop/db-ca/extra"), (SecretName{"shop", "db-ca"}));  // Split()[1]
  EXPECT_THAT(credentialConfigMap("configmap://db-ca").error().describe(),
              HasSubstr("invalid resource name \"configmap://db-ca\". Expected namespace and name"));
  EXPECT_THAT(credentialConfigMap("configmap:///db-ca").error().describe(), HasSubstr("Expected namespace"));
  EXPECT_THAT(credentialConfigMap("configmap://shop/").error().describe(), HasSubstr("Expected name"));
  EXPECT_FALSE(credentialConfigMap("db-ca"));
  EXPECT_TRUE(namesConfigMap("configmap://shop/db-ca"));
  EXPECT_FALSE(namesConfigMap("kubernetes://db-ca"));
}

TEST(ReferencedConfigMaps, EveryRulesConfigMapWithOrWithoutSelector) {
  ClusterState st = parse(kRules);
  // "configmap://ca" is malformed: nothing to read. The rest whatever node or selector.
  EXPECT_THAT(referencedConfigMaps(st), testing::ElementsAre(SecretName{"billing", "bank-ca"},
                                                             SecretName{"billing", "bank-ca-8443"}));
}

// GetConfigMapCaCert: the CA from the ConfigMap's data (ExtractRootFromString:
// cacert, else ca.crt), for any client; never a client key.
TEST(ClientCredential, AConfigMapGivesTheCaOnly) {
  ClusterState state;
  ConfigMap map;
  map.meta.ref = ObjectRef{"ConfigMap", "billing", "bank-ca"};
  map.data = {{"ca.crt", "CA"}, {"cacert", "FIRST"}};
  state.config_maps.push_back(map);
  Pod pod;
  pod.meta.ref = ObjectRef{"Pod", "shop", "client"};  // another namespace: allowed (sds.go)
  auto simple = clientCredential(tlsSettings(TlsMode::kSimple, "configmap://billing/bank-ca"), pod, state);
  ASSERT_TRUE(simple) << simple.error().describe();
  EXPECT_EQ(simple->ca_certificates, "FIRST");
  EXPECT_EQ(simple->ca_source, "ConfigMap billing/bank-ca");
  EXPECT_TRUE(simple->private_key.empty());
  auto mutual = clientCredential(tlsSettings(TlsMode::kMutual, "configmap://billing/bank-ca"), pod, state);
  ASSERT_FALSE(mutual);
  EXPECT_THAT(mutual.error().describe(), HasSubstr("holds no client certificate and key"));
  auto missing = clientCredential(tlsSettings(TlsMode::kSimple, "configmap://billing/gone"), pod, state);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().describe(), "configmap billing/gone not found");
  map.data = {{"ca.crt", "CA"}, {"ca.crl", "L"}};
  state.config_maps = SharedList<ConfigMap>();
  state.config_maps.push_back(map);
  auto revoking = clientCredential(tlsSettings(TlsMode::kSimple, "configmap://billing/bank-ca"), pod, state);
  ASSERT_FALSE(revoking);
  EXPECT_THAT(revoking.error().describe(), HasSubstr("ConfigMap billing/bank-ca has a CRL (ca.crl)"));
}

TEST(ClientCredential, MutualReadsGenericKeysFirstThenTlsKeys) {
  SharedList<Secret> secrets;
  secrets.push_back(secret("shop", "generic", {{"cert", "C"}, {"key", "K"}, {"cacert", "CA"}, {"tls.crt", "no"}}));
  secrets.push_back(secret("shop", "tls", {{"tls.crt", "C2"}, {"tls.key", "K2"}, {"ca.crt", "CA2"}}));
  auto generic = credentialFor(tlsSettings(TlsMode::kMutual, "generic"), "shop", secrets);
  ASSERT_TRUE(generic) << generic.error().describe();
  EXPECT_EQ(generic->certificate_chain, "C");
  EXPECT_EQ(generic->private_key, "K");
  EXPECT_EQ(generic->ca_certificates, "CA");
  EXPECT_EQ(generic->source, "Secret shop/generic");
  auto tls = credentialFor(tlsSettings(TlsMode::kMutual, "tls"), "shop", secrets);
  ASSERT_TRUE(tls);
  EXPECT_EQ(tls->certificate_chain, "C2");
  EXPECT_EQ(tls->ca_certificates, "CA2");
  // Another namespace's client does not see them.
  EXPECT_THAT(credentialFor(tlsSettings(TlsMode::kMutual, "tls"), "billing", secrets).error().describe(),
              HasSubstr("Secret billing/tls not found"));
}

TEST(ClientCredential, CaFromTheCacertSecretWhenItExistsElseFromTheSecretItself) {
  SharedList<Secret> secrets;
  secrets.push_back(secret("shop", "db", {{"tls.crt", "C"}, {"tls.key", "K"}, {"ca.crt", "OWN"}}));
  secrets.push_back(secret("shop", "db-cacert", {{"cacert", "SEPARATE"}}));
  secrets.push_back(secret("shop", "solo", {{"ca.crt", "OWN"}}));
  secrets.push_back(secret("shop", "broken", {{"ca.crt", "OWN"}}));
  secrets.push_back(secret("shop", "broken-cacert", {{"other", "x"}}));
  auto db = credentialFor(tlsSettings(TlsMode::kMutual, "db"), "shop", secrets);
  ASSERT_TRUE(db);
  EXPECT_EQ(db->ca_certificates, "SEPARATE");
  EXPECT_EQ(db->ca_source, "Secret shop/db-cacert");
  auto solo = credentialFor(tlsSettings(TlsMode::kSimple, "solo"), "shop", secrets);
  ASSERT_TRUE(solo);
  EXPECT_EQ(solo->ca_certificates, "OWN");
  EXPECT_TRUE(solo->certificate_chain.empty());  // SIMPLE reads no client certificate
  // GetCaCert does not fall back when <name>-cacert exists without the keys.
  EXPECT_THAT(credentialFor(tlsSettings(TlsMode::kSimple, "broken"), "shop", secrets).error().describe(),
              HasSubstr("Secret shop/broken-cacert: found secret, but didn't have expected keys cacert or ca.crt; found: other"));
}

TEST(ClientCredential, SaysWhatIsMissingInIstiosWords) {
  SharedList<Secret> secrets;
  secrets.push_back(secret("shop", "empty", {{"tls.crt", ""}, {"tls.key", ""}}));
  secrets.push_back(secret("shop", "odd", {{"a", "1"}, {"b", "2"}, {"c", "3"}, {"d", "4"}, {"e", "5"}}));
  secrets.push_back(secret("shop", "no-ca", {{"cert", "C"}, {"key", "K"}, {"cacert", ""}}));
  EXPECT_THAT(credentialFor(tlsSettings(TlsMode::kMutual, "empty"), "shop", secrets).error().describe(),
              HasSubstr("found keys \"tls.crt\" and \"tls.key\", but they were empty"));
  EXPECT_THAT(credentialFor(tlsSettings(TlsMode::kMutual, "odd"), "shop", secrets).error().describe(),
              HasSubstr("didn't have expected keys (cert and key) or (tls.crt and tls.key); found: a, b, c, and 2 more..."));
  EXPECT_THAT(credentialFor(tlsSettings(TlsMode::kMutual, "no-ca"), "shop", secrets).error().describe(),
              HasSubstr("found key \"cacert\", but it was empty"));
  EXPECT_THAT(credentialFor(tlsSettings(TlsMode::kSimple, "absent"), "shop", secrets).error().describe(),
              HasSubstr("Secret shop/absent not found"));
}

TEST(ClientCredential, RefusesASecretWithACrlRatherThanIgnoreIt) {
  SharedList<Secret> secrets;
  secrets.push_back(secret("shop", "revoking", {{"tls.crt", "C"}, {"tls.key", "K"}, {"ca.crt", "CA"}, {"ca.crl", "L"}}));
  secrets.push_back(secret("shop", "ca-revoking", {{"cacert", "CA"}, {"crl", "L"}}));
  EXPECT_THAT(credentialFor(tlsSettings(TlsMode::kMutual, "revoking"), "shop", secrets).error().describe(),
              HasSubstr("has a CRL (ca.crl)"));
  EXPECT_THAT(credentialFor(tlsSettings(TlsMode::kSimple, "ca-revoking"), "shop", secrets).error().describe(),
              HasSubstr("has a CRL (crl)"));
}

// sds.go: a sidecar gets a Secret's key only when its service account may
// list secrets in its namespace (Authorize, a SubjectAccessReview); the
// CA-only `<name>-cacert` needs nothing, so SIMPLE is never reviewed.
TEST(ClientCredential, MutualNeedsTheClientsAccountAllowedWhenTheSourceReviews) {
  SharedList<Secret> secrets;
  secrets.push_back(secret("shop", "db", {{"tls.crt", "C"}, {"tls.key", "K"}, {"ca.crt", "CA"}}));
  ClusterState reviewed;
  reviewed.secret_access_reviewed = true;
  auto unknown = credentialFor(tlsSettings(TlsMode::kMutual, "db"), "shop", secrets, &reviewed);
  EXPECT_THAT(unknown.error().describe(), HasSubstr("client/shop: whether it may read secrets is not known yet"));
  reviewed.secret_access.push_back(SecretAccess{"shop", "client", false, ""});
  auto denied = credentialFor(tlsSettings(TlsMode::kMutual, "db"), "shop", secrets, &reviewed);
  EXPECT_THAT(denied.error().describe(), HasSubstr("client/shop is not authorized to read secrets"));
  EXPECT_TRUE(credentialFor(tlsSettings(TlsMode::kSimple, "db"), "shop", secrets, &reviewed));  // CA only
  reviewed.secret_access = {};
  reviewed.secret_access.push_back(SecretAccess{"shop", "client", true, ""});
  EXPECT_TRUE(credentialFor(tlsSettings(TlsMode::kMutual, "db"), "shop", secrets, &reviewed));
  // Manifests are not reviewed: what their writer gave is used.
  EXPECT_TRUE(credentialFor(tlsSettings(TlsMode::kMutual, "db"), "shop", secrets));
}

TEST(CredentialUsers, TheAccountsOfSelectedPodsWithAMutualCredential) {
  ClusterState st = parse(kRules);
  // shop/client is selected by db (MUTUAL at the top, SIMPLE on 6432); its account is "default".
  EXPECT_THAT(credentialUsers(st, "node-a"), testing::ElementsAre(SecretName{"shop", "default"}));
  EXPECT_TRUE(credentialUsers(st, "node-b").empty());  // billing's rule is SIMPLE (and a ConfigMap)
}

}  // namespace
}  // namespace meshlock::config
