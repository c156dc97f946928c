// Each validation code fires on the configuration it is about, and not on a clean one.
#include <gmock/gmock.h>

#include "fixture.h"
#include "policy/validate.h"

namespace meshlock::policy {
namespace {

using testing::cluster;

std::vector<std::string> codes(const std::string& extra) {
  std::vector<std::string> out;
  for (const auto& f : validate(*cluster(extra))) out.push_back(f.code + " " + f.resource);
  return out;
}

TEST(Validate, CleanClusterHasNoFindings) { EXPECT_TRUE(codes("").empty()); }

struct Row {
  const char* name;
  const char* yaml;
  const char* expected;  // "CODE Kind/ns/name"
};

class ValidateRule : public ::testing::TestWithParam<Row> {};

TEST_P(ValidateRule, Fires) {
  EXPECT_THAT(codes(GetParam().yaml), ::testing::Contains(std::string(GetParam().expected)));
}

const Row kRows[] = {
    {"ML001_DisableTowardsStrict", R"(
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: STRICT}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: off, namespace: shop}
spec: {host: web, trafficPolicy: {tls: {mode: DISABLE}}}
)",
     "ML001 DestinationRule/shop/off"},
    {"ML002_IstioMutualWithoutProxy", R"(
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: default, namespace: istio-system}
spec: {host: '*.local', trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}
)",
     "ML002 DestinationRule/istio-system/default"},
    {"ML003_TwoNamespaceWidePolicies", R"(
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: a, namespace: shop, creationTimestamp: "2024-01-01T00:00:00Z"}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: b, namespace: shop, creationTimestamp: "2024-02-01T00:00:00Z"}
spec: {mtls: {mode: PERMISSIVE}}
)",
     "ML003 PeerAuthentication/shop/b"},
    {"ML004_PortLevelWithoutSelector", R"(
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {portLevelMtls: {'8080': {mode: STRICT}}}
)",
     "ML004 PeerAuthentication/shop/default"},
    {"ML005_PortNotAContainerPort", R"(
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: web, namespace: shop}
spec: {selector: {matchLabels: {app: web}}, portLevelMtls: {'80': {mode: STRICT}}}
)",
     "ML005 PeerAuthentication/shop/web"},
    {"ML006_SelectorMatchesNothing", R"(
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ghost, namespace: shop}
spec: {selector: {matchLabels: {app: ghost}}, mtls: {mode: STRICT}}
)",
     "ML006 PeerAuthentication/shop/ghost"},
    {"ML007_TwoWorkloadPolicies", R"(
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: a, namespace: shop}
spec: {selector: {matchLabels: {app: web}}, mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: b, namespace: shop}
spec: {selector: {matchLabels: {app: web}}, mtls: {mode: DISABLE}}
)",
     "ML007 PeerAuthentication/shop/b"},
    {"ML008_SelectorInRoot", R"(
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: web, namespace: istio-system}
spec: {selector: {matchLabels: {app: web}}, mtls: {mode: STRICT}}
)",
     "ML008 PeerAuthentication/istio-system/web"},
    {"ML009_HostWithoutService", R"(
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: typo, namespace: shop}
spec: {host: wbe, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}
)",
     "ML009 DestinationRule/shop/typo"},
    // istiod keeps no rule for a host without a service (push_context.go destinationRule).
    {"ML009_ExternalHostWithoutServiceEntry", R"(
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: shop}
spec: {host: api.example.com, trafficPolicy: {tls: {mode: SIMPLE}}}
)",
     "ML009 DestinationRule/shop/api"},
    {"ML010_TwoRulesSameHost", R"(
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a, namespace: shop}
spec: {host: web, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: b, namespace: shop}
spec: {host: web.shop.svc.cluster.local, trafficPolicy: {tls: {mode: DISABLE}}}
)",
     "ML010 DestinationRule/shop/b"},
    {"ML011_SimpleTowardsStrict", R"(
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: STRICT}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: simple, namespace: shop}
spec: {host: web, trafficPolicy: {tls: {mode: SIMPLE}}}
)",
     "ML011 DestinationRule/shop/simple"},
    {"ML012_LegacyPolicyTargetMissing", R"(
apiVersion: authentication.maistra.io/v1
kind: Policy
metadata: {name: web, namespace: shop}
spec: {targets: [{name: ghost}], peers: [{mtls: {}}]}
)",
     "ML012 Policy/shop/web"},
    {"ML013_TwoIstioResources", R"(
apiVersion: sailoperator.io/v1
kind: Istio
metadata: {name: a}
spec: {namespace: istio-system}
---
apiVersion: sailoperator.io/v1
kind: Istio
metadata: {name: b}
spec: {namespace: istio-system}
)",
     "ML013 Istio/b"},
    {"ML014_MutualWithoutCertificates", R"(
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: mutual, namespace: shop}
spec: {host: db.legacy.svc.cluster.local, trafficPolicy: {tls: {mode: MUTUAL}}}
)",
     "ML014 DestinationRule/shop/mutual"},
    {"ML015_NamedTargetPortMissing", R"(
apiVersion: v1
kind: Service
metadata: {name: web-grpc, namespace: shop}
spec: {selector: {app: web}, ports: [{port: 81, targetPort: grpc}]}
)",
     "ML015 Service/shop/web-grpc"},
    // istio/istio pkg/config/validation/testdata/crds/peerauth-invalid.yaml: empty-port-level.
    {"ML023_EmptyPortLevelMtls", R"(
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: web, namespace: shop}
spec: {selector: {matchLabels: {app: web}}, portLevelMtls: {}}
)",
     "ML023 PeerAuthentication/shop/web"},
    {"ML024_CredentialName", R"(
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db, namespace: shop}
spec: {host: db.legacy.svc.cluster.local, trafficPolicy: {tls: {mode: MUTUAL, credentialName: db-client}}}
)",
     "ML024 DestinationRule/shop/db"},
    {"ML025_InsecureSkipVerify", R"(
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db, namespace: shop}
spec: {host: db.legacy.svc.cluster.local, trafficPolicy: {tls: {mode: SIMPLE, insecureSkipVerify: true}}}
)",
     "ML025 DestinationRule/shop/db"},
    // istioctl analyze IST0128 (destination level) and IST0129 (port level).
    {"ML026_NoCaCertificates", R"(
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db, namespace: shop}
spec: {host: db.legacy.svc.cluster.local, trafficPolicy: {portLevelSettings: [{port: {number: 5432}, tls: {mode: SIMPLE}}]}}
)",
     "ML026 DestinationRule/shop/db"},
    {"ML027_SubsetTls", R"(
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: shop}
spec: {host: web, subsets: [{name: v1, labels: {v: "1"}, trafficPolicy: {tls: {mode: DISABLE}}}]}
)",
     "ML027 DestinationRule/shop/web"},
    {"ML028_EnrolledAndInjected", R"(
apiVersion: v1
kind: Namespace
metadata: {name: both, labels: {meshlock.io/mtls: enabled, istio.io/rev: prod-stable}}
)",
     "ML028 Namespace/both"},
    {"ML030_UnappliedField", R"(
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: shop}
spec: {host: web, trafficPolicy: {portLevelSettings: [{port: {number: 80}, tls: {mode: ISTIO_MUTUAL, caCrl: /etc/crl.pem}}]}}
)",
     "ML030 DestinationRule/shop/web"},
    {"ML030_MeshConfigAliases", R"(
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    trustDomainAliases: [old.example]
)",
     "ML030 ConfigMap/istio-system/istio"},
    {"ML029_OverlappingDiscovery", R"(
apiVersion: sailoperator.io/v1
kind: Istio
metadata: {name: a}
spec: {namespace: istio-a}
---
apiVersion: sailoperator.io/v1
kind: Istio
metadata: {name: b}
spec: {namespace: istio-b, values: {meshConfig: {discoverySelectors: [{matchLabels: {meshlock.io/mtls: enabled}}]}}}
)",
     "ML029 Namespace/shop"},
    {"ML031_ServedUnderAnotherTrustDomain", R"(
apiVersion: sailoperator.io/v1
kind: Istio
metadata: {name: a, creationTimestamp: "2026-01-01T00:00:00Z"}
spec: {namespace: istio-a, values: {meshConfig: {discoverySelectors: [{matchLabels: {mesh: a}}]}}}
---
apiVersion: sailoperator.io/v1
kind: Istio
metadata: {name: b, creationTimestamp: "2026-02-01T00:00:00Z"}
spec:
  namespace: istio-b
  values: {meshConfig: {trustDomain: other.example, discoverySelectors: [{matchLabels: {meshlock.io/mtls: enabled}}]}}
)",
     "ML031 Namespace/shop"},
    {"ML017_PodWithoutNamespace", R"(
apiVersion: v1
kind: Pod
metadata: {name: lost, namespace: nowhere}
spec: {containers: [{name: a}]}
)",
     "ML017 Pod/nowhere/lost"},
    {"ML016_DefinedTwice", R"(
apiVersion: v1
kind: Namespace
metadata: {name: shop}
)",
     "ML016 Namespace/shop"},
    {"ML018_CustomAuthorization", R"(
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: shop}
spec: {action: CUSTOM, provider: {name: opa}, rules: [{}]}
)",
     "ML018 AuthorizationPolicy/shop/ext"},
    {"ML019_AllowNeedsHttp", R"(
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: get-only, namespace: shop}
spec: {rules: [{to: [{operation: {methods: [GET]}}]}]}
)",
     "ML019 AuthorizationPolicy/shop/get-only"},
    {"ML020_DenyNeedsHttp", R"(
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-post, namespace: shop}
spec: {action: DENY, rules: [{to: [{operation: {ports: ["8080"], methods: [POST]}}]}]}
)",
     "ML020 AuthorizationPolicy/shop/no-post"},
    {"ML021_TargetRefs", R"(
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: gw, namespace: shop}
spec: {targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}], rules: [{}]}
)",
     "ML021 AuthorizationPolicy/shop/gw"},
    {"ML022_BadIpBlock", R"(
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: typo, namespace: shop}
spec: {rules: [{from: [{source: {ipBlocks: [10.0.0.0/33]}}]}]}
)",
     "ML022 AuthorizationPolicy/shop/typo"},
};

INSTANTIATE_TEST_SUITE_P(Codes, ValidateRule, ::testing::ValuesIn(kRows),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(Validate, AServiceEntryPutsAnExternalHostInTheRegistry) {
  const std::string rule = R"(
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: shop}
spec: {host: api.example.com, trafficPolicy: {tls: {mode: SIMPLE}}}
---
)";
  EXPECT_THAT(codes(rule), ::testing::Contains("ML009 DestinationRule/shop/api"));
  for (const char* hosts : {"[api.example.com]", "['*.example.com']"}) {
    const std::string entry = std::string("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n") +
                              "metadata: {name: api, namespace: legacy}\nspec: {hosts: " + hosts +
                              ", ports: [{number: 443, name: tls, protocol: TLS}]}\n";
    EXPECT_THAT(codes(rule + entry), ::testing::Not(::testing::Contains("ML009 DestinationRule/shop/api"))) << hosts;
  }
}

// What Istio's own validation rejects is an error, not a warning.
TEST(Validate, IstioRejectsArePortedAsErrors) {
  auto findings = validate(*cluster(R"(
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {portLevelMtls: {'8080': {mode: STRICT}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db, namespace: shop}
spec: {host: db.legacy.svc.cluster.local, trafficPolicy: {tls: {mode: SIMPLE, caCertificates: /etc/ca.pem}}}
)"));
  ASSERT_EQ(findings.size(), 1u) << findings[0].describe();
  EXPECT_EQ(findings[0].code, "ML004");
  EXPECT_EQ(findings[0].severity, Severity::kError);
}

// credentialName as a sidecar applies it (cluster_tls.go, sds.go, secrets.go;
// config/credentials.h): without workloadSelector it yields no TLS (a
// warning), a ConfigMap or another namespace's Secret is refused (an error),
// and Secrets among the inputs are read as the agent reads them.
TEST(Validate, CredentialNameAsASidecarAppliesIt) {
  auto only = [](const std::string& yaml) {
    std::vector<Finding> out;
    for (const Finding& f : validate(*cluster(yaml))) {
      if (f.code == "ML024") out.push_back(f);
    }
    return out;
  };
  const std::string rule = R"(
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db, namespace: shop}
spec:
  host: db.legacy.svc.cluster.local
  workloadSelector: {matchLabels: {app: web}}
  trafficPolicy: {tls: {mode: MUTUAL, credentialName: CREDENTIAL}}
)";
  auto with = [&](const std::string& credential, const std::string& extra = "") {
    std::string yaml = rule;
    yaml.replace(yaml.find("CREDENTIAL"), 10, credential);
    return only(yaml + extra);
  };
  // Applied, the Secret not among the inputs: the agent reads it at run time.
  EXPECT_TRUE(with("db-client").empty());
  // configmap://: Istio's ValidateTLS and ParseResourceName (resource.go).
  auto configmap = with("configmap://db-ca");
  ASSERT_EQ(configmap.size(), 1u);
  EXPECT_EQ(configmap[0].severity, Severity::kError);
  EXPECT_THAT(configmap[0].message, ::testing::HasSubstr("Expected namespace and name"));
  auto elsewhere = with("configmap://billing/db-ca");
  ASSERT_EQ(elsewhere.size(), 1u);
  EXPECT_THAT(elsewhere[0].message, ::testing::HasSubstr("namespace must match the configuration namespace \"shop\""));
  auto no_key = with("configmap://shop/db-ca");  // MUTUAL: a ConfigMap has no client key
  ASSERT_EQ(no_key.size(), 1u);
  EXPECT_THAT(no_key[0].message, ::testing::HasSubstr("holds no client certificate and key"));
  auto cross = with("kubernetes://billing/db-client");
  ASSERT_EQ(cross.size(), 1u);
  EXPECT_THAT(cross[0].message, ::testing::HasSubstr("another namespace"));
  // A Secret given without the keys Istio reads.
  auto bad = with("db-client", "---\napiVersion: v1\nkind: Secret\nmetadata: {name: db-client, namespace: shop}\n"
                                "stringData: {tls.crt: x}\n");
  ASSERT_EQ(bad.size(), 1u);
  EXPECT_EQ(bad[0].severity, Severity::kError);
  EXPECT_THAT(bad[0].message, ::testing::HasSubstr("didn't have expected keys (cert and key) or (tls.crt and tls.key)"));
  auto good = with("db-client", "---\napiVersion: v1\nkind: Secret\nmetadata: {name: db-client, namespace: shop}\n"
                                 "stringData: {tls.crt: x, tls.key: y, ca.crt: z}\n");
  EXPECT_TRUE(good.empty()) << good[0].describe();
  // Without a selector: a warning that no TLS is originated at all.
  auto gateway = only(R"(
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db, namespace: shop}
spec: {host: db.legacy.svc.cluster.local, trafficPolicy: {tls: {mode: MUTUAL, credentialName: db-client}}}
)");
  ASSERT_EQ(gateway.size(), 1u);
  EXPECT_EQ(gateway[0].severity, Severity::kWarning);
  EXPECT_THAT(gateway[0].message, ::testing::HasSubstr("originate no TLS at all"));
  // A configmap:// CA applies without a selector too (cluster_tls.go); a given
  // ConfigMap is read as the agent reads it.
  const std::string simple = R"(
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db, namespace: shop}
spec: {host: db.legacy.svc.cluster.local, trafficPolicy: {tls: {mode: SIMPLE, credentialName: "configmap://shop/db-ca"}}}
)";
  EXPECT_TRUE(only(simple).empty());
  auto unusable = only(simple + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: db-ca, namespace: shop}\n"
                                "data: {other: x}\n");
  ASSERT_EQ(unusable.size(), 1u);
  EXPECT_THAT(unusable[0].message, ::testing::HasSubstr("didn't have expected keys cacert or ca.crt; found: other"));
  EXPECT_TRUE(only(simple + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: db-ca, namespace: shop}\n"
                            "data: {ca.crt: x}\n").empty());
}

// Each finding names the field path, so a user can find it.
TEST(Validate, UnappliedFieldsNameTheirPath) {
  auto findings = validate(*cluster(R"(
apiVersion: maistra.io/v2
kind: ServiceMeshControlPlane
metadata: {name: basic, namespace: istio-system}
spec: {security: {trust: {additionalDomains: [old.example]}, controlPlane: {tls: {cipherSuites: [TLS_AES_128_GCM_SHA256]}}}}
)"));
  std::vector<std::string> messages;
  for (const auto& f : findings) {
    if (f.code == "ML030") messages.push_back(f.message);
  }
  EXPECT_THAT(messages, ::testing::UnorderedElementsAre(::testing::HasSubstr("spec.security.trust.additionalDomains"),
                                                        ::testing::HasSubstr("spec.security.controlPlane.tls.cipherSuites")));
}

TEST(Validate, FindingsDescribeThemselves) {
  auto findings = validate(*cluster(kRows[0].yaml));
  ASSERT_FALSE(findings.empty());
  EXPECT_THAT(findings[0].describe(),
              ::testing::HasSubstr("warning ML001 DestinationRule/shop/off: sends plaintext to web.shop.svc.cluster.local:80"));
}

TEST(Validate, ApiServerExemptionSilencesML002) {
  auto with = codes(std::string(kRows[1].yaml) + R"(
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api-server, namespace: istio-system}
spec: {host: kubernetes.default.svc.cluster.local, trafficPolicy: {tls: {mode: DISABLE}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db, namespace: istio-system}
spec: {host: db.legacy.svc.cluster.local, trafficPolicy: {tls: {mode: DISABLE}}}
)");
  EXPECT_THAT(with, ::testing::Not(::testing::Contains(::testing::StartsWith("ML002"))));
}

}  // namespace
}  // namespace meshlock::policy
