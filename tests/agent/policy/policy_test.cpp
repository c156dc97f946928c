// Table tests, one rule each: inbound precedence, outbound rule lookup, auto
// mTLS, secure naming, destination resolution, the outcome table.
#include <gmock/gmock.h>

#include "fixture.h"

namespace meshlock::policy {
namespace {

using testing::cluster;
using testing::check;
using testing::inboundMode;
using ::testing::ElementsAre;

const char* kIstio = R"(
apiVersion: sailoperator.io/v1
kind: Istio
metadata: {name: default}
spec: {namespace: istio-system}
)";

std::string pa(const std::string& ns, const std::string& name, const std::string& body,
               const std::string& created = "") {
  return "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: " + name +
         ", namespace: " + ns + (created.empty() ? "" : ", creationTimestamp: \"" + created + "\"") +
         "}\nspec: " + body + "\n---\n";
}

std::string dr(const std::string& ns, const std::string& name, const std::string& body,
               const std::string& created = "") {
  return "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: " + name +
         ", namespace: " + ns + (created.empty() ? "" : ", creationTimestamp: \"" + created + "\"") +
         "}\nspec: " + body + "\n---\n";
}

// ---- Outcome table ---------------------------------------------------------------

TEST(Combine, EveryPair) {
  struct Row {
    ClientTls c;
    ServerMode s;
    Outcome o;
  };
  const Row rows[] = {
      {ClientTls::kNone, ServerMode::kNone, Outcome::kPlaintext},
      {ClientTls::kNone, ServerMode::kDisable, Outcome::kPlaintext},
      {ClientTls::kNone, ServerMode::kPermissive, Outcome::kPlaintext},
      {ClientTls::kNone, ServerMode::kStrict, Outcome::kRefused},
      {ClientTls::kDisable, ServerMode::kNone, Outcome::kPlaintext},
      {ClientTls::kDisable, ServerMode::kPermissive, Outcome::kPlaintext},
      {ClientTls::kDisable, ServerMode::kStrict, Outcome::kRefused},
      {ClientTls::kIstioMutual, ServerMode::kNone, Outcome::kBroken},
      {ClientTls::kIstioMutual, ServerMode::kDisable, Outcome::kBroken},
      {ClientTls::kIstioMutual, ServerMode::kPermissive, Outcome::kMtls},
      {ClientTls::kIstioMutual, ServerMode::kStrict, Outcome::kMtls},
      {ClientTls::kSimple, ServerMode::kNone, Outcome::kTls},
      {ClientTls::kSimple, ServerMode::kDisable, Outcome::kTls},
      {ClientTls::kSimple, ServerMode::kPermissive, Outcome::kTls},
      {ClientTls::kSimple, ServerMode::kStrict, Outcome::kBroken},
      {ClientTls::kMutual, ServerMode::kNone, Outcome::kTls},
      {ClientTls::kMutual, ServerMode::kStrict, Outcome::kBroken},
  };
  for (const Row& r : rows) {
    EXPECT_EQ(combine(r.c, r.s), r.o) << toString(r.c) << " x " << toString(r.s);
  }
}

TEST(Names, RoundTrip) {
  for (auto m : {ServerMode::kNone, ServerMode::kDisable, ServerMode::kPermissive, ServerMode::kStrict}) {
    EXPECT_EQ(parseServerMode(toString(m)), m);
  }
  for (auto t : {ClientTls::kNone, ClientTls::kDisable, ClientTls::kSimple, ClientTls::kMutual, ClientTls::kIstioMutual}) {
    EXPECT_EQ(parseClientTls(toString(t)), t);
  }
  for (auto o : {Outcome::kMtls, Outcome::kTls, Outcome::kPlaintext, Outcome::kRefused, Outcome::kBroken}) {
    EXPECT_EQ(parseOutcome(toString(o)), o);
  }
}

// ---- Inbound ---------------------------------------------------------------------

// Issue 14 "Also": a served pod's reason names what enrolled it (it said
// "pod opted out" for every served pod in `meshlockctl workloads`).
TEST(Served, TheReasonNamesWhatEnrolledOrExcludedThePod) {
  auto ix = cluster(R"(apiVersion: v1
kind: Namespace
metadata: {name: amb, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: amb, uid: uid-amb}
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: out, namespace: shop, uid: uid-out, labels: {meshlock.io/mtls: disabled}}
spec: {containers: [{name: c}]}
)");
  auto reason = [&](const char* ns, const char* name) { return ix->servedReason(*ix->podByName(ns, name)).describe(); };
  EXPECT_EQ(reason("shop", "web"), "namespace label meshlock.io/mtls=enabled");
  EXPECT_EQ(reason("amb", "a"), "namespace label istio.io/dataplane-mode=ambient");
  EXPECT_EQ(reason("shop", "out"), "pod opted out");
  EXPECT_EQ(reason("legacy", "db"), "namespace not enrolled");
}

TEST(Inbound, DefaultIsPermissive) {
  auto ix = cluster(kIstio);
  auto d = ix->inbound(config::PodUid("uid-web"), 8080);
  EXPECT_EQ(d.mode, ServerMode::kPermissive);
  EXPECT_THAT(d.decided_by.describe(), ElementsAre("default"));
}

TEST(Inbound, UnservedPodsHaveNoMode) {
  auto ix = cluster(kIstio);
  auto d = ix->inbound(config::PodUid("uid-db"), 5432);
  EXPECT_EQ(d.mode, ServerMode::kNone);
  EXPECT_THAT(d.decided_by.describe(), ElementsAre("namespace not enrolled"));
  EXPECT_EQ(inboundMode(*ix, "no-such-uid", 1), ServerMode::kNone);
}

TEST(Inbound, NamespaceOverridesMeshAndWorkloadOverridesNamespace) {
  auto ix = cluster(std::string(kIstio) + "\n---\n" + pa("istio-system", "default", "{mtls: {mode: STRICT}}") +
                    pa("shop", "default", "{mtls: {mode: PERMISSIVE}}") +
                    pa("shop", "web", "{selector: {matchLabels: {app: web}}, mtls: {mode: DISABLE}}"));
  EXPECT_EQ(inboundMode(*ix, "uid-web", 8080), ServerMode::kDisable);
  auto ix2 = cluster(std::string(kIstio) + "\n---\n" + pa("istio-system", "default", "{mtls: {mode: STRICT}}") +
                     pa("shop", "default", "{mtls: {mode: PERMISSIVE}}"));
  EXPECT_EQ(inboundMode(*ix2, "uid-web", 8080), ServerMode::kPermissive);
  auto ix3 = cluster(std::string(kIstio) + "\n---\n" + pa("istio-system", "default", "{mtls: {mode: STRICT}}"));
  EXPECT_EQ(inboundMode(*ix3, "uid-web", 8080), ServerMode::kStrict);
  EXPECT_THAT(ix3->inbound(config::PodUid("uid-web"), 8080).decided_by.describe(),
              ElementsAre("PeerAuthentication/istio-system/default"));
}

TEST(Inbound, UnsetInherits) {
  auto ix = cluster(pa("istio-system", "default", "{mtls: {mode: STRICT}}") + pa("shop", "default", "{mtls: {mode: UNSET}}") +
                    pa("shop", "web", "{selector: {matchLabels: {app: web}}}"));
  auto d = ix->inbound(config::PodUid("uid-web"), 8080);
  EXPECT_EQ(d.mode, ServerMode::kStrict);
  EXPECT_THAT(d.decided_by.describe(), ElementsAre("PeerAuthentication/istio-system/default"));
}

TEST(Inbound, PortLevelOnSelectorPolicies) {
  auto ix = cluster(pa("shop", "default", "{mtls: {mode: STRICT}}") +
                    pa("shop", "web",
                       "{selector: {matchLabels: {app: web}}, portLevelMtls: {'9090': {mode: DISABLE}, "
                       "'8080': {mode: UNSET}}}"));
  EXPECT_EQ(inboundMode(*ix, "uid-web", 9090), ServerMode::kDisable);
  EXPECT_EQ(inboundMode(*ix, "uid-web", 8080), ServerMode::kStrict);  // UNSET port inherits the workload's mode
  EXPECT_EQ(inboundMode(*ix, "uid-web", 7000), ServerMode::kStrict);
  EXPECT_THAT(ix->inbound(config::PodUid("uid-web"), 9090).decided_by.describe(),
              ElementsAre("PeerAuthentication/shop/web (port 9090)"));
}

TEST(Inbound, PortLevelWithoutSelectorIsIgnored) {
  auto ix = cluster(pa("shop", "default", "{mtls: {mode: STRICT}, portLevelMtls: {'9090': {mode: DISABLE}}}"));
  EXPECT_EQ(inboundMode(*ix, "uid-web", 9090), ServerMode::kStrict);
}

TEST(Inbound, OldestWinsThenName) {
  auto ix = cluster(pa("shop", "b-new", "{mtls: {mode: DISABLE}}", "2024-05-01T00:00:00Z") +
                    pa("shop", "a-old", "{mtls: {mode: STRICT}}", "2024-01-01T00:00:00Z"));
  EXPECT_EQ(inboundMode(*ix, "uid-web", 8080), ServerMode::kStrict);
  auto ix2 = cluster(pa("shop", "b", "{mtls: {mode: DISABLE}}", "2024-01-01T00:00:00Z") +
                     pa("shop", "a", "{mtls: {mode: STRICT}}", "2024-01-01T00:00:00Z"));
  EXPECT_EQ(inboundMode(*ix2, "uid-web", 8080), ServerMode::kStrict);
  auto ix3 = cluster(pa("shop", "w2", "{selector: {matchLabels: {app: web}}, mtls: {mode: DISABLE}}", "2024-02-01T00:00:00Z") +
                     pa("shop", "w1", "{selector: {matchLabels: {app: web}}, mtls: {mode: STRICT}}", "2024-01-01T00:00:00Z"));
  EXPECT_EQ(inboundMode(*ix3, "uid-web", 8080), ServerMode::kStrict);
}

TEST(Inbound, SelectorPoliciesInTheRootNamespaceAreIgnored) {
  auto ix = cluster(pa("istio-system", "web", "{selector: {matchLabels: {app: web}}, mtls: {mode: STRICT}}"));
  EXPECT_EQ(inboundMode(*ix, "uid-web", 8080), ServerMode::kPermissive);
}

TEST(Inbound, RootNamespaceComesFromTheIstioResource) {
  const char* istio = R"(
apiVersion: sailoperator.io/v1
kind: Istio
metadata: {name: default}
spec: {namespace: mesh-ctl}
)";
  auto ix = cluster(std::string(istio) + "\n---\n" + pa("mesh-ctl", "default", "{mtls: {mode: STRICT}}") +
                    pa("istio-system", "default", "{mtls: {mode: DISABLE}}"));
  EXPECT_EQ(ix->mesh().root_namespace, "mesh-ctl");
  EXPECT_EQ(inboundMode(*ix, "uid-web", 8080), ServerMode::kStrict);
}

TEST(Inbound, MaistraPolicy) {
  auto strict = cluster(R"(
apiVersion: authentication.maistra.io/v1
kind: Policy
metadata: {name: default, namespace: shop}
spec:
  peers:
  - mtls: {}
)");
  EXPECT_EQ(inboundMode(*strict, "uid-web", 8080), ServerMode::kStrict);
  EXPECT_THAT(strict->inbound(config::PodUid("uid-web"), 8080).decided_by.describe(), ElementsAre("Policy/shop/default"));
  auto permissive = cluster(R"(
apiVersion: authentication.maistra.io/v1
kind: Policy
metadata: {name: default, namespace: shop}
spec: {peers: [{mtls: {mode: PERMISSIVE}}]}
)");
  EXPECT_EQ(inboundMode(*permissive, "uid-web", 8080), ServerMode::kPermissive);
  auto bare_mtls = cluster("apiVersion: authentication.maistra.io/v1\nkind: Policy\nmetadata: {name: default, namespace: shop}\nspec:\n  peers:\n  - mtls:\n");
  EXPECT_EQ(inboundMode(*bare_mtls, "uid-web", 8080), ServerMode::kStrict);
  auto not_default = cluster(R"(
apiVersion: authentication.maistra.io/v1
kind: Policy
metadata: {name: other, namespace: shop}
spec: {peers: [{mtls: {}}]}
)");
  EXPECT_EQ(inboundMode(*not_default, "uid-web", 8080), ServerMode::kPermissive);
  auto no_peers = cluster(R"(
apiVersion: authentication.maistra.io/v1
kind: Policy
metadata: {name: default, namespace: shop}
spec: {}
)");
  EXPECT_EQ(inboundMode(*no_peers, "uid-web", 8080), ServerMode::kDisable);
}

TEST(Inbound, MaistraPolicyTargetsApplyToTheServicesPods) {
  auto ports = cluster(R"(
apiVersion: authentication.maistra.io/v1
kind: Policy
metadata: {name: web-http, namespace: shop}
spec:
  targets: [{name: web, ports: [{number: 80}]}]
  peers: [{mtls: {}}]
)");
  // Service port 80 → targetPort http → container port 8080.
  EXPECT_EQ(inboundMode(*ports, "uid-web", 8080), ServerMode::kStrict);
  EXPECT_EQ(inboundMode(*ports, "uid-web", 9090), ServerMode::kPermissive);
  EXPECT_THAT(ports->inbound(config::PodUid("uid-web"), 8080).decided_by.describe(),
              ElementsAre("Policy/shop/web-http (port 8080)"));
  auto named = cluster(R"(
apiVersion: authentication.maistra.io/v1
kind: Policy
metadata: {name: web-metrics, namespace: shop}
spec:
  targets: [{name: web, ports: [{name: metrics}]}]
  peers: [{mtls: {}}]
)");
  EXPECT_EQ(inboundMode(*named, "uid-web", 9090), ServerMode::kStrict);
  EXPECT_EQ(inboundMode(*named, "uid-web", 8080), ServerMode::kPermissive);
  // A service-specific policy beats the namespace's `default`.
  auto whole = cluster(R"(
apiVersion: authentication.maistra.io/v1
kind: Policy
metadata: {name: default, namespace: shop}
spec: {peers: [{mtls: {}}]}
---
apiVersion: authentication.maistra.io/v1
kind: Policy
metadata: {name: web-open, namespace: shop}
spec: {targets: [{name: web}]}
)");
  EXPECT_EQ(inboundMode(*whole, "uid-web", 8080), ServerMode::kDisable);
  EXPECT_EQ(inboundMode(*whole, "uid-client", 8080), ServerMode::kStrict);
}

TEST(Inbound, ServiceMeshPolicyIsMeshWide) {
  auto ix = cluster(R"(
apiVersion: authentication.maistra.io/v1
kind: ServiceMeshPolicy
metadata: {name: default, namespace: istio-system}
spec: {peers: [{mtls: {}}]}
)");
  EXPECT_EQ(inboundMode(*ix, "uid-web", 8080), ServerMode::kStrict);
}

TEST(Inbound, SmcpV1AndV2MeanMeshWideStrict) {
  for (const char* smcp : {R"(
apiVersion: maistra.io/v1
kind: ServiceMeshControlPlane
metadata: {name: basic-install, namespace: istio-system}
spec: {istio: {global: {mtls: {enabled: true}}}}
)",
                           R"(
apiVersion: maistra.io/v2
kind: ServiceMeshControlPlane
metadata: {name: basic, namespace: istio-system}
spec: {security: {dataPlane: {mtls: true}}}
)"}) {
    auto ix = cluster(smcp);
    EXPECT_EQ(inboundMode(*ix, "uid-web", 8080), ServerMode::kStrict);
    auto p = check(*ix, "shop/client", "web.shop.svc.cluster.local:80");
    EXPECT_EQ(p.client, ClientTls::kIstioMutual);
    EXPECT_EQ(p.outcome, Outcome::kMtls);
    EXPECT_EQ(check(*ix, "shop/client", "db.legacy.svc.cluster.local:5432").outcome, Outcome::kBroken);
    EXPECT_EQ(check(*ix, "legacy/client", "shop/web:8080").outcome, Outcome::kRefused);
  }
  auto off = cluster(R"(
apiVersion: maistra.io/v2
kind: ServiceMeshControlPlane
metadata: {name: basic, namespace: istio-system}
spec: {security: {dataPlane: {mtls: false}}}
)");
  EXPECT_EQ(inboundMode(*off, "uid-web", 8080), ServerMode::kPermissive);
}

// What the operator creates with mesh-wide mTLS (maistra/istio-operator
// resources/helm/overlays/mesh-config/templates/enable-mesh-mtls.yaml):
// besides STRICT and `*.local` ISTIO_MUTUAL, the `api-server` DISABLE rule,
// so pods keep reaching kubernetes.default, which has no proxy.
TEST(Outbound, SmcpMeshMtlsKeepsTheApiServerReachable) {
  auto ix = cluster(R"(
apiVersion: maistra.io/v2
kind: ServiceMeshControlPlane
metadata: {name: basic, namespace: istio-system}
spec: {security: {dataPlane: {mtls: true}}}
)");
  for (const char* api : {"kubernetes.default.svc.cluster.local:443", "10.96.0.1:443"}) {
    auto p = check(*ix, "shop/client", api);
    EXPECT_EQ(p.client, ClientTls::kDisable) << api;
    EXPECT_EQ(p.outcome, Outcome::kPlaintext) << api;
    EXPECT_EQ(p.decided_by[0], "ServiceMeshControlPlane/istio-system/basic") << api;
  }
}

// An SMCP v1 without mtls.auto: the v1.1 chart's default global.mtls.auto is
// false, written into the mesh config (maistra/istio-operator
// resources/helm/v1.1/istio/values.yaml, templates/configmap.yaml).
TEST(AutoMtls, SmcpV1WithoutAutoMeansOff) {
  auto v1 = cluster(R"(
apiVersion: maistra.io/v1
kind: ServiceMeshControlPlane
metadata: {name: basic-install, namespace: istio-system}
spec: {istio: {global: {mtls: {enabled: false}}}}
)");
  EXPECT_FALSE(v1->mesh().enable_auto_mtls);
  EXPECT_EQ(check(*v1, "shop/client", "web.shop.svc.cluster.local:80").client, ClientTls::kDisable);
  auto v1_auto = cluster(R"(
apiVersion: maistra.io/v1
kind: ServiceMeshControlPlane
metadata: {name: basic-install, namespace: istio-system}
spec: {istio: {global: {mtls: {enabled: false, auto: true}}}}
)");
  EXPECT_TRUE(v1_auto->mesh().enable_auto_mtls);
  auto v2 = cluster(R"(
apiVersion: maistra.io/v2
kind: ServiceMeshControlPlane
metadata: {name: basic, namespace: istio-system}
spec: {}
)");
  EXPECT_TRUE(v2->mesh().enable_auto_mtls) << "the 2.x charts default to auto mTLS";
}

// OSSM 2.x: spec.security.controlPlane.tls.minProtocolVersion is "the minimum
// TLS version used by mesh components"; Maistra spells versions TLSv1_x.
TEST(Mesh, SmcpV2TlsMinimum) {
  auto v13 = cluster(R"(
apiVersion: maistra.io/v2
kind: ServiceMeshControlPlane
metadata: {name: basic, namespace: istio-system}
spec: {security: {controlPlane: {tls: {minProtocolVersion: TLSv1_3}}}}
)");
  EXPECT_EQ(v13->mesh().min_protocol_version, config::TlsVersion::kTls13);
  auto v10 = cluster(R"(
apiVersion: maistra.io/v2
kind: ServiceMeshControlPlane
metadata: {name: basic, namespace: istio-system}
spec: {security: {controlPlane: {tls: {minProtocolVersion: TLSv1_0}}}}
)");
  EXPECT_EQ(v10->mesh().min_protocol_version, config::TlsVersion::kTls12) << "never below TLS 1.2";
}

// install.istio.io IstioOperator (istioctl installs): spec.meshConfig is the
// mesh config, spec.namespace the control plane's namespace.
TEST(Mesh, IstioOperatorMeshConfig) {
  auto ix = cluster(R"(
apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata: {name: installed-state, namespace: istio-system}
spec:
  namespace: istio-control
  meshConfig: {trustDomain: corp.example, enableAutoMtls: false, meshMTLS: {minProtocolVersion: TLSV1_3}}
)");
  EXPECT_EQ(ix->mesh().root_namespace, "istio-control");
  EXPECT_EQ(ix->mesh().trust_domain, "corp.example");
  EXPECT_FALSE(ix->mesh().enable_auto_mtls);
  EXPECT_EQ(ix->mesh().min_protocol_version, config::TlsVersion::kTls13);
  auto root = cluster(R"(
apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata: {name: installed-state, namespace: istio-system}
spec: {meshConfig: {rootNamespace: mesh-config}}
)");
  EXPECT_EQ(root->mesh().root_namespace, "mesh-config");
}

TEST(Inbound, SmcpNamespaceIsTheRootWithoutAnIstioResource) {
  auto ix = cluster(R"(
apiVersion: maistra.io/v2
kind: ServiceMeshControlPlane
metadata: {name: basic, namespace: mesh-cp}
spec: {}
---
)" + pa("mesh-cp", "default", "{mtls: {mode: STRICT}}"));
  EXPECT_EQ(ix->mesh().root_namespace, "mesh-cp");
  EXPECT_EQ(inboundMode(*ix, "uid-web", 8080), ServerMode::kStrict);
}

// Pods with an Istio sidecar (the injector's istio-proxy container; it also
// sets security.istio.io/tlsMode=istio, which istiod's auto mTLS reads from
// endpoints, and which meshlock pods may carry too): their sidecar does mTLS and
// applies the PeerAuthentications, so meshlock does not serve them, and its
// clients send them ISTIO_MUTUAL under auto mTLS, as a sidecar client would.
TEST(Sidecars, PodsWithAnIstioSidecarAreMeshPeersNotMeshlocks) {
  const std::string pods = R"(
apiVersion: v1
kind: Namespace
metadata: {name: bookinfo, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews, namespace: bookinfo, uid: uid-reviews, labels: {app: reviews, security.istio.io/tlsMode: istio}}
spec: {serviceAccountName: reviews, nodeName: node-a, containers: [{name: reviews, ports: [{containerPort: 9080}]}, {name: istio-proxy}]}
status: {podIP: 10.244.1.40}
---
apiVersion: v1
kind: Pod
metadata: {name: sidecar-in-shop, namespace: shop, uid: uid-sis, labels: {app: sis}}
spec: {nodeName: node-a, containers: [{name: c, ports: [{containerPort: 7000}]}], initContainers: [{name: istio-proxy, restartPolicy: Always}]}
status: {podIP: 10.244.1.41}
---
apiVersion: v1
kind: Pod
metadata: {name: labelled, namespace: shop, uid: uid-labelled, labels: {app: labelled, security.istio.io/tlsMode: istio}}
spec: {nodeName: node-a, containers: [{name: c, ports: [{containerPort: 7000}]}]}
status: {podIP: 10.244.1.42}
---
)";
  auto ix = cluster(pods + pa("bookinfo", "default", "{mtls: {mode: STRICT}}"));
  const config::Pod* reviews = ix->podByName("bookinfo", "reviews");
  ASSERT_NE(reviews, nullptr);
  EXPECT_FALSE(ix->served(*reviews));
  EXPECT_TRUE(ix->hasSidecar(*reviews));
  EXPECT_EQ(ix->inbound(*reviews, 9080).mode, ServerMode::kStrict);
  auto p = check(*ix, "shop/client", "bookinfo/reviews:9080");
  EXPECT_EQ(p.client, ClientTls::kIstioMutual);
  EXPECT_EQ(p.outcome, Outcome::kMtls);
  EXPECT_THAT(p.identities, ElementsAre("spiffe://cluster.local/ns/bookinfo/sa/reviews"));
  EXPECT_EQ(check(*ix, "legacy/client", "bookinfo/reviews:9080").outcome, Outcome::kRefused);
  // In an enrolled namespace too: the sidecar's, not meshlock's.
  const config::Pod* sis = ix->podByName("shop", "sidecar-in-shop");
  EXPECT_FALSE(ix->served(*sis));
  EXPECT_EQ(ix->servedReason(*sis).kind, ReasonKind::kSidecar);
  EXPECT_EQ(ix->inbound(*sis, 7000).mode, ServerMode::kPermissive);
  // The tlsMode label alone (set on meshlock pods for sidecar clients' auto mTLS) is not a sidecar.
  EXPECT_TRUE(ix->served(*ix->podByName("shop", "labelled")));
  // A sidecar client is not meshlock's either: it sends what its sidecar sends.
  EXPECT_EQ(check(*ix, "bookinfo/reviews", "shop/web:8080").client, ClientTls::kNone);
}

// Pods Istio's ztunnel captures (istio-cni's annotation
// ambient.istio.io/redirection=enabled) take mesh mTLS as HBONE only (port
// 15008): meshlock leaves them to ztunnel and sends them HBONE under auto
// mTLS and under ISTIO_MUTUAL, whatever their PeerAuthentication (ztunnel
// takes HBONE as mTLS in every mode); DISABLE still sends plaintext, which
// STRICT refuses. A pod labelled networking.istio.io/tunnel=http takes HBONE
// itself (istiod's setTunnelProtocol: a native tunnel), as meshlock's pods can;
// a sidecar's pod keeps Istio mTLS on its port.
TEST(Ztunnel, AmbientPodsAreNotMeshlocksAndGetHbone) {
  const std::string ambient = R"(
apiVersion: v1
kind: Namespace
metadata: {name: ambient, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: ambient, uid: uid-amb, labels: {app: api}, annotations: {ambient.istio.io/redirection: enabled}}
spec: {serviceAccountName: api, nodeName: node-a, containers: [{name: c, ports: [{containerPort: 8080}]}]}
status: {podIP: 10.244.1.50}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: ambient}
spec: {clusterIP: 10.96.50.1, selector: {app: api}, ports: [{port: 80, targetPort: 8080}]}
---
)";
  auto permissive = cluster(ambient);
  const config::Pod* api = permissive->podByName("ambient", "api");
  EXPECT_FALSE(permissive->served(*api));
  EXPECT_EQ(permissive->servedReason(*api).kind, ReasonKind::kZtunnel);
  EXPECT_TRUE(permissive->takesHbone(*api));
  auto p = check(*permissive, "shop/client", "ambient/api:8080");
  EXPECT_EQ(p.client, ClientTls::kIstioMutual);
  EXPECT_EQ(p.server, ServerMode::kPermissive);
  EXPECT_EQ(p.outcome, Outcome::kMtls);
  auto strict = cluster(ambient + pa("ambient", "default", "{mtls: {mode: STRICT}}"));
  auto via_service = checkConnection(*strict, {"shop", "client"}, *parseTarget("api.ambient.svc.cluster.local:80"));
  ASSERT_TRUE(via_service);
  EXPECT_EQ(via_service->outcome, Outcome::kMtls);
  EXPECT_EQ(via_service->tunnel, "hbone");
  EXPECT_EQ(via_service->expected_identities, std::vector<std::string>{"spiffe://cluster.local/ns/ambient/sa/api"});
  EXPECT_THAT(via_service->notes, ::testing::Contains(::testing::HasSubstr("ztunnel")));
  auto disabled = cluster(ambient + pa("ambient", "default", "{mtls: {mode: STRICT}}") + R"(apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: all, namespace: shop}
spec: {host: '*.local', trafficPolicy: {tls: {mode: DISABLE}}}
)");
  auto refused = checkConnection(*disabled, {"shop", "client"}, *parseTarget("api.ambient.svc.cluster.local:80"));
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->outcome, Outcome::kRefused);
  EXPECT_EQ(refused->tunnel, "none");
  auto forced = cluster(ambient + R"(apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: all, namespace: shop}
spec: {host: '*.local', trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}
)");
  auto report = checkConnection(*forced, {"shop", "client"}, *parseTarget("api.ambient.svc.cluster.local:80"));
  ASSERT_TRUE(report);
  EXPECT_EQ(report->outcome, Outcome::kMtls);
  EXPECT_EQ(report->tunnel, "hbone");
  ASSERT_EQ(report->backends.size(), 1u);
  EXPECT_EQ(report->backends[0].outcome, Outcome::kMtls);

  // Native tunnels: an enrolled pod labelled networking.istio.io/tunnel=http gets HBONE.
  auto native = cluster(R"(
apiVersion: v1
kind: Pod
metadata: {name: tunnelled, namespace: shop, uid: uid-tun, labels: {app: tunnelled, networking.istio.io/tunnel: http}}
spec: {serviceAccountName: tunnelled, nodeName: node-b, containers: [{name: c, ports: [{containerPort: 8080}]}]}
status: {podIP: 10.244.2.60}
---
)");
  const config::Pod* tunnelled = native->podByName("shop", "tunnelled");
  EXPECT_TRUE(native->served(*tunnelled));
  EXPECT_TRUE(native->takesHbone(*tunnelled));
  auto to_native = checkConnection(*native, {"shop", "client"}, *parseTarget("shop/tunnelled:8080"));
  ASSERT_TRUE(to_native);
  EXPECT_EQ(to_native->tunnel, "hbone");
  EXPECT_EQ(to_native->outcome, Outcome::kMtls);
  // meshlock's own pods take HBONE, labelled or not; a DISABLE port gets plaintext still.
  auto to_meshlock = checkConnection(*native, {"shop", "client"}, *parseTarget("shop/web:8080"));
  ASSERT_TRUE(to_meshlock);
  EXPECT_EQ(to_meshlock->tunnel, "hbone");
  auto disable = cluster(pa("shop", "default", "{mtls: {mode: DISABLE}}"));
  auto to_disabled = checkConnection(*disable, {"shop", "client"}, *parseTarget("shop/web:8080"));
  ASSERT_TRUE(to_disabled);
  EXPECT_EQ(to_disabled->tunnel, "none");
  EXPECT_EQ(to_disabled->outcome, Outcome::kPlaintext);
}

// Several control planes (OSSM 3 multi-tenancy: two Istio resources whose
// meshConfig.discoverySelectors split the namespaces; sail-operator docs
// "Deploying multiple service meshes on a single cluster"): each namespace is
// governed by its own control plane's root namespace and mesh config only.
TEST(Meshes, DiscoverySelectorsGiveEachNamespaceItsOwnControlPlane) {
  const std::string tenants = R"(
apiVersion: sailoperator.io/v1
kind: Istio
metadata: {name: tenant-a}
spec: {namespace: istio-a, values: {meshConfig: {discoverySelectors: [{matchLabels: {tenant: a}}]}}}
---
apiVersion: sailoperator.io/v1
kind: Istio
metadata: {name: tenant-b}
spec:
  namespace: istio-b
  values:
    meshConfig:
      trustDomain: b.example
      enableAutoMtls: false
      discoverySelectors: [{matchExpressions: [{key: tenant, operator: In, values: [b]}]}]
---
apiVersion: v1
kind: Namespace
metadata: {name: app-a, labels: {tenant: a, meshlock.io/mtls: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: app-b, labels: {tenant: b, meshlock.io/mtls: enabled}}
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: app-a, uid: uid-a, labels: {app: api}}
spec: {serviceAccountName: api, nodeName: node-a, containers: [{name: c, ports: [{containerPort: 8080}]}]}
status: {podIP: 10.244.3.10}
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: app-b, uid: uid-b, labels: {app: api}}
spec: {serviceAccountName: api, nodeName: node-a, containers: [{name: c, ports: [{containerPort: 8080}]}]}
status: {podIP: 10.244.3.20}
---
)";
  auto ix = cluster(tenants + pa("istio-a", "default", "{mtls: {mode: STRICT}}") +
                    pa("istio-b", "default", "{mtls: {mode: DISABLE}}"));
  EXPECT_EQ(ix->meshFor("app-a").root_namespace, "istio-a");
  EXPECT_EQ(ix->meshFor("app-b").root_namespace, "istio-b");
  EXPECT_EQ(inboundMode(*ix, "uid-a", 8080), ServerMode::kStrict) << "tenant a's mesh-wide policy";
  EXPECT_EQ(inboundMode(*ix, "uid-b", 8080), ServerMode::kDisable) << "tenant b's, never a's";
  EXPECT_EQ(ix->identityOf(*ix->podByName("app-b", "api")).str(), "spiffe://b.example/ns/app-b/sa/api");
  EXPECT_EQ(ix->identityOf(*ix->podByName("app-a", "api")).str(), "spiffe://cluster.local/ns/app-a/sa/api");
  // Auto mTLS is the client's mesh's: off in b.
  EXPECT_EQ(check(*ix, "app-b/api", "app-a/api:8080").client, ClientTls::kDisable);
  EXPECT_EQ(check(*ix, "app-a/api", "app-a/api:8080").client, ClientTls::kIstioMutual);
  // shop is discovered by neither: no root namespace reaches it (defaults).
  EXPECT_EQ(ix->meshFor("shop").root_namespace, "");
  EXPECT_EQ(inboundMode(*ix, "uid-web", 8080), ServerMode::kPermissive);

  // A root namespace's DestinationRule and AuthorizationPolicy reach only its mesh.
  auto rules = cluster(tenants + R"(
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: catch-all, namespace: istio-a}
spec: {host: '*.local', trafficPolicy: {tls: {mode: DISABLE}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: istio-b}
spec: {}
---
)");
  auto from_a = check(*rules, "app-a/api", "web.shop.svc.cluster.local:80");
  EXPECT_EQ(from_a.client, ClientTls::kDisable);
  EXPECT_EQ(from_a.decided_by[0], "DestinationRule/istio-a/catch-all");
  EXPECT_EQ(check(*rules, "app-b/api", "web.shop.svc.cluster.local:80").decided_by[0], "auto mTLS disabled")
      << "tenant a's root rule is not b's";
  const auto to_a = checkConnection(*rules, {"app-b", "api"}, *parseTarget("app-a/api:8080"));
  ASSERT_TRUE(to_a);
  EXPECT_EQ(to_a->authorization, "allow") << "tenant b's allow-nothing is not a's";
  const auto to_b = checkConnection(*rules, {"app-a", "api"}, *parseTarget("app-b/api:8080"));
  ASSERT_TRUE(to_b);
  EXPECT_EQ(to_b->authorization, "deny");
}

// OSSM 2: a ServiceMeshMemberRoll lists the namespaces of its SMCP's mesh;
// the SMCP's mesh-wide mTLS reaches them only.
TEST(Meshes, MemberRollLimitsAnSmcpsMesh) {
  // An SMCP with mesh-wide mTLS and its member roll (spec given).
  auto smcp = [](const std::string& roll_spec) {
    return "apiVersion: maistra.io/v2\nkind: ServiceMeshControlPlane\n"
           "metadata: {name: basic, namespace: istio-system}\nspec: {security: {dataPlane: {mtls: true}}}\n---\n"
           "apiVersion: maistra.io/v1\nkind: ServiceMeshMemberRoll\n"
           "metadata: {name: default, namespace: istio-system}\nspec: " + roll_spec + "\n---\n";
  };
  auto ix = cluster(smcp("{members: [shop]}") + R"(
apiVersion: v1
kind: Namespace
metadata: {name: outside, labels: {meshlock.io/mtls: enabled}}
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: outside, uid: uid-outside, labels: {app: api}}
spec: {nodeName: node-a, containers: [{name: c, ports: [{containerPort: 8080}]}]}
status: {podIP: 10.244.3.30}
)");
  EXPECT_EQ(inboundMode(*ix, "uid-web", 8080), ServerMode::kStrict);
  EXPECT_EQ(inboundMode(*ix, "uid-outside", 8080), ServerMode::kPermissive) << "not a member";
  auto selected = cluster(smcp("{memberSelectors: [{matchLabels: {meshlock.io/mtls: enabled}}]}"));
  EXPECT_EQ(inboundMode(*selected, "uid-web", 8080), ServerMode::kStrict);
}

// ---- Enrollment ------------------------------------------------------------------

TEST(Enrollment, NamespaceLabelsAndPodOptOut) {
  auto ix = cluster(R"(
apiVersion: v1
kind: Namespace
metadata: {name: amb, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: amb, uid: uid-a}
spec: {containers: [{name: a}]}
---
apiVersion: v1
kind: Pod
metadata: {name: out, namespace: shop, uid: uid-out, labels: {meshlock.io/mtls: disabled}}
spec: {containers: [{name: a, ports: [{containerPort: 80}]}]}
status: {podIP: 10.244.3.3}
---
apiVersion: v1
kind: Pod
metadata: {name: orphan, namespace: nowhere, uid: uid-orphan}
spec: {containers: [{name: a}]}
)");
  EXPECT_TRUE(ix->served(*ix->podByUid(config::PodUid("uid-a"))));
  EXPECT_FALSE(ix->served(*ix->podByUid(config::PodUid("uid-out"))));
  EXPECT_FALSE(ix->served(*ix->podByUid(config::PodUid("uid-orphan"))));
  EXPECT_EQ(ix->servedReason(*ix->podByUid(config::PodUid("uid-out"))).kind, ReasonKind::kOptedOut);
  auto p = check(*ix, "shop/out", "web.shop.svc.cluster.local:80");
  EXPECT_EQ(p.client, ClientTls::kNone);
  EXPECT_EQ(p.outcome, Outcome::kPlaintext);
  auto q = check(*ix, "shop/client", "shop/out:80");
  EXPECT_EQ(q.client, ClientTls::kDisable);  // auto mTLS: the opted-out pod has no proxy
  EXPECT_EQ(q.server, ServerMode::kNone);
}

// ---- Outbound: DestinationRule lookup --------------------------------------------

TEST(Outbound, ClientNamespaceBeforeServiceNamespaceBeforeRoot) {
  auto ix = cluster(dr("istio-system", "root", "{host: '*.local', trafficPolicy: {tls: {mode: DISABLE}}}") +
                    dr("legacy", "svc-ns", "{host: db, trafficPolicy: {tls: {mode: SIMPLE}}}") +
                    dr("shop", "client-ns", "{host: '*.legacy.svc.cluster.local', trafficPolicy: {tls: {mode: MUTUAL}}}"));
  auto p = check(*ix, "shop/client", "db.legacy.svc.cluster.local:5432");
  EXPECT_EQ(p.client, ClientTls::kMutual);  // a wildcard in the client's namespace beats an exact host elsewhere
  EXPECT_THAT(p.decided_by[0], "DestinationRule/shop/client-ns");
  auto ix2 = cluster(dr("istio-system", "root", "{host: '*.local', trafficPolicy: {tls: {mode: DISABLE}}}") +
                     dr("legacy", "svc-ns", "{host: db, trafficPolicy: {tls: {mode: SIMPLE}}}"));
  EXPECT_EQ(check(*ix2, "shop/client", "db.legacy.svc.cluster.local:5432").client, ClientTls::kSimple);
  EXPECT_EQ(check(*ix2, "shop/client", "web.shop.svc.cluster.local:80").client, ClientTls::kDisable);
}

TEST(Outbound, MostSpecificHostWins) {
  auto ix = cluster(dr("shop", "all", "{host: '*', trafficPolicy: {tls: {mode: DISABLE}}}") +
                    dr("shop", "local", "{host: '*.local', trafficPolicy: {tls: {mode: SIMPLE}}}") +
                    dr("shop", "ns", "{host: '*.shop.svc.cluster.local', trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}"));
  EXPECT_EQ(check(*ix, "shop/client", "web.shop.svc.cluster.local:80").client, ClientTls::kIstioMutual);
  EXPECT_EQ(check(*ix, "shop/client", "db.legacy.svc.cluster.local:5432").client, ClientTls::kSimple);
  EXPECT_EQ(check(*ix, "shop/client", "api.example.com:443").client, ClientTls::kDisable);
}

TEST(Outbound, ShortHostsResolveInTheRulesNamespace) {
  // "web" in namespace legacy means web.legacy.svc.cluster.local, not shop's web.
  auto ix = cluster(dr("legacy", "web", "{host: web, trafficPolicy: {tls: {mode: DISABLE}}}") +
                    dr("shop", "db", "{host: db, trafficPolicy: {tls: {mode: DISABLE}}}"));
  EXPECT_EQ(check(*ix, "shop/client", "web.shop.svc.cluster.local:80").client, ClientTls::kIstioMutual);
  EXPECT_EQ(check(*ix, "shop/client", "db.legacy.svc.cluster.local:5432").client, ClientTls::kDisable);  // auto: no proxy
  auto ix2 = cluster(dr("shop", "web", "{host: web, trafficPolicy: {tls: {mode: DISABLE}}}"));
  EXPECT_EQ(check(*ix2, "shop/client", "web.shop.svc.cluster.local:80").decided_by[0], "DestinationRule/shop/web");
}

TEST(Outbound, ExportToLimitsVisibility) {
  auto ix = cluster(dr("legacy", "private", "{host: db, exportTo: ['.'], trafficPolicy: {tls: {mode: SIMPLE}}}"));
  EXPECT_EQ(check(*ix, "shop/client", "db.legacy.svc.cluster.local:5432").client, ClientTls::kDisable);
  auto ix2 = cluster(dr("legacy", "to-shop", "{host: db, exportTo: [shop], trafficPolicy: {tls: {mode: SIMPLE}}}"));
  EXPECT_EQ(check(*ix2, "shop/client", "db.legacy.svc.cluster.local:5432").client, ClientTls::kSimple);
  auto ix3 = cluster(dr("legacy", "to-other", "{host: db, exportTo: [other], trafficPolicy: {tls: {mode: SIMPLE}}}"));
  EXPECT_EQ(check(*ix3, "shop/client", "db.legacy.svc.cluster.local:5432").client, ClientTls::kDisable);
  // A private rule still applies to its own namespace's clients.
  auto ix4 = cluster(dr("shop", "private", "{host: web, exportTo: ['.'], trafficPolicy: {tls: {mode: DISABLE}}}"));
  EXPECT_EQ(check(*ix4, "shop/client", "web.shop.svc.cluster.local:80").client, ClientTls::kDisable);
}

// meshConfig.defaultDestinationRuleExportTo (istio/istio pilot/pkg/model
// push_context.go initDefaultExportMaps and setDestinationRules, 86c9f01f): a
// rule without exportTo is private when the default is "." (istiod honours
// only "." and "*" there), public otherwise; a rule's own exportTo wins.
TEST(Outbound, DefaultDestinationRuleExportToMakesRulesWithoutExportToPrivate) {
  const std::string istio_private = R"(apiVersion: sailoperator.io/v1
kind: Istio
metadata: {name: default}
spec: {namespace: istio-system, values: {meshConfig: {defaultDestinationRuleExportTo: ['.']}}}
---
)";
  const std::string rule = dr("legacy", "db", "{host: db, trafficPolicy: {tls: {mode: SIMPLE}}}");
  auto ix = cluster(istio_private + rule);
  EXPECT_EQ(check(*ix, "shop/client", "db.legacy.svc.cluster.local:5432").client, ClientTls::kDisable);
  EXPECT_EQ(check(*ix, "legacy/client", "db.legacy.svc.cluster.local:5432").client, ClientTls::kNone)
      << "legacy is not served: the rule reaches its own namespace, meshlock sends nothing there";
  auto explicit_public = cluster(istio_private + dr("legacy", "db", "{host: db, exportTo: ['*'], trafficPolicy: {tls: {mode: SIMPLE}}}"));
  EXPECT_EQ(check(*explicit_public, "shop/client", "db.legacy.svc.cluster.local:5432").client, ClientTls::kSimple);
  const std::string istio_public = R"(apiVersion: sailoperator.io/v1
kind: Istio
metadata: {name: default}
spec: {namespace: istio-system, values: {meshConfig: {defaultDestinationRuleExportTo: ['*']}}}
---
)";
  auto public_default = cluster(istio_public + rule);
  EXPECT_EQ(check(*public_default, "shop/client", "db.legacy.svc.cluster.local:5432").client, ClientTls::kSimple);
}

TEST(Outbound, PortLevelSettingsOverrideTheRule) {
  auto ix = cluster(dr("shop", "web",
                       "{host: web, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}, portLevelSettings: "
                       "[{port: {number: 9090}, tls: {mode: DISABLE}}]}}"));
  EXPECT_EQ(check(*ix, "shop/client", "web.shop.svc.cluster.local:80").client, ClientTls::kIstioMutual);
  auto p = check(*ix, "shop/client", "web.shop.svc.cluster.local:9090");
  EXPECT_EQ(p.client, ClientTls::kDisable);
  EXPECT_EQ(p.decided_by[0], "DestinationRule/shop/web (port 9090)");
}

// A port-level entry replaces trafficPolicy for its port, it does not inherit
// from it (networking/v1 DestinationRule API: "destination-level settings ...
// will not be inherited when overridden by port-level settings"; istiod:
// pilot/pkg/networking/util/util.go GetPortLevelTrafficPolicy, first entry for
// the port wins): an entry without tls leaves that port to auto mTLS.
TEST(Outbound, APortLevelEntryWithoutTlsDoesNotInheritTheRulesTls) {
  auto ix = cluster(dr("shop", "web",
                       "{host: web, trafficPolicy: {tls: {mode: DISABLE}, portLevelSettings: "
                       "[{port: {number: 9090}, connectionPool: {tcp: {maxConnections: 10}}}, "
                       "{port: {number: 9090}, tls: {mode: SIMPLE}}]}}"));
  EXPECT_EQ(check(*ix, "shop/client", "web.shop.svc.cluster.local:80").client, ClientTls::kDisable);
  auto p = check(*ix, "shop/client", "web.shop.svc.cluster.local:9090");
  EXPECT_EQ(p.client, ClientTls::kIstioMutual);  // auto mTLS: web is served
  EXPECT_EQ(p.outcome, Outcome::kMtls);
  EXPECT_EQ(p.decided_by[0], "auto mTLS");
}

TEST(Outbound, WorkloadSelectorRulesApplyToMatchingClientsOnly) {
  auto ix = cluster(dr("shop", "for-client", "{host: web, workloadSelector: {matchLabels: {app: client}}, "
                                             "trafficPolicy: {tls: {mode: DISABLE}}}") +
                    R"(apiVersion: v1
kind: Pod
metadata: {name: other, namespace: shop, uid: uid-other, labels: {app: other}}
spec: {containers: [{name: c}]}
)");
  EXPECT_EQ(check(*ix, "shop/client", "web.shop.svc.cluster.local:80").client, ClientTls::kDisable);
  EXPECT_EQ(check(*ix, "shop/other", "web.shop.svc.cluster.local:80").client, ClientTls::kIstioMutual);
}

TEST(Outbound, ARuleWithoutTlsLeavesAutoMtls) {
  auto ix = cluster(dr("shop", "web", "{host: web, trafficPolicy: {connectionPool: {tcp: {maxConnections: 10}}}}"));
  auto p = check(*ix, "shop/client", "web.shop.svc.cluster.local:80");
  EXPECT_EQ(p.client, ClientTls::kIstioMutual);
  EXPECT_EQ(p.decided_by[0], "auto mTLS");
}

// Several rules for one host are merged, not "oldest wins whole"
// (istio/istio pilot/pkg/model/destination_rule.go mergeDestinationRule at
// 86c9f01f): the first trafficPolicy present is kept, whatever it holds, and
// a later rule's subsets are added. An older rule with only subsets therefore
// takes a newer rule's TLS; an older trafficPolicy without tls keeps a newer
// rule's tls out.
TEST(Outbound, RulesForOneHostAreMergedTheFirstTrafficPolicyWins) {
  auto subsets_first = cluster(
      dr("shop", "subsets", "{host: web, subsets: [{name: v1, labels: {version: v1}}]}", "2026-01-01T00:00:00Z") +
      dr("shop", "tls", "{host: web, trafficPolicy: {tls: {mode: DISABLE}}}", "2026-02-01T00:00:00Z"));
  auto p = check(*subsets_first, "shop/client", "web.shop.svc.cluster.local:80");
  EXPECT_EQ(p.client, ClientTls::kDisable);
  EXPECT_EQ(p.decided_by[0], "DestinationRule/shop/tls");
  auto pool_first = cluster(
      dr("shop", "pool", "{host: web, trafficPolicy: {connectionPool: {tcp: {maxConnections: 5}}}}",
         "2026-01-01T00:00:00Z") +
      dr("shop", "tls", "{host: web, trafficPolicy: {tls: {mode: DISABLE}}}", "2026-02-01T00:00:00Z"));
  EXPECT_EQ(check(*pool_first, "shop/client", "web.shop.svc.cluster.local:80").client, ClientTls::kIstioMutual)
      << "the older trafficPolicy (no tls) is the merged rule's: auto mTLS";
}

// With ENABLE_ENHANCED_DESTINATIONRULE_MERGE (default true,
// pilot/pkg/features/experimental.go) rules merge only with the same exportTo;
// otherwise both are candidates, and SidecarScope.DestinationRule takes the
// last one without a selector: here the newer.
TEST(Outbound, RulesWithDifferentExportToAreNotMergedTheLastCandidateWins) {
  auto ix = cluster(
      dr("shop", "private", "{host: web, exportTo: ['.'], trafficPolicy: {tls: {mode: DISABLE}}}",
         "2026-01-01T00:00:00Z") +
      dr("shop", "public", "{host: web, trafficPolicy: {tls: {mode: SIMPLE}}}", "2026-02-01T00:00:00Z"));
  auto p = check(*ix, "shop/client", "web.shop.svc.cluster.local:80");
  EXPECT_EQ(p.client, ClientTls::kSimple);
  EXPECT_EQ(p.decided_by[0], "DestinationRule/shop/public");
}

// PushContext.destinationRule step 1 for a client in the root namespace looks
// only at the root namespace's private rules, so the service namespace's
// exported rule beats a public catch-all in the root namespace.
TEST(Outbound, RootNamespaceClientsSeeTheServiceNamespaceFirst) {
  const std::string root_client = R"(apiVersion: v1
kind: Namespace
metadata: {name: istio-system, labels: {meshlock.io/mtls: enabled}}
---
apiVersion: v1
kind: Pod
metadata: {name: tool, namespace: istio-system, uid: uid-tool, labels: {app: tool}}
spec: {nodeName: node-b, containers: [{name: c}]}
status: {podIP: 10.244.2.30}
---
)";
  auto ix = cluster(root_client + dr("istio-system", "catch-all", "{host: '*.local', trafficPolicy: {tls: {mode: DISABLE}}}") +
                    dr("shop", "web", "{host: web, trafficPolicy: {tls: {mode: SIMPLE}}}"));
  EXPECT_EQ(check(*ix, "istio-system/tool", "web.shop.svc.cluster.local:80").client, ClientTls::kSimple);
  EXPECT_EQ(check(*ix, "istio-system/tool", "db.legacy.svc.cluster.local:5432").client, ClientTls::kDisable);
  auto private_root = cluster(root_client +
                              dr("istio-system", "mine", "{host: '*.local', exportTo: ['.'], trafficPolicy: {tls: {mode: DISABLE}}}") +
                              dr("shop", "web", "{host: web, trafficPolicy: {tls: {mode: SIMPLE}}}"));
  EXPECT_EQ(check(*private_root, "istio-system/tool", "web.shop.svc.cluster.local:80").client, ClientTls::kDisable)
      << "the root namespace's private rules come first for its own clients";
}

// The first step whose most specific host matches gives the candidates even
// when none applies to the client: no fall-through to later namespaces.
TEST(Outbound, AHostMatchInTheClientNamespaceStopsTheSearch) {
  auto ix = cluster(dr("shop", "for-other", "{host: web, workloadSelector: {matchLabels: {app: other}}, "
                                            "trafficPolicy: {tls: {mode: DISABLE}}}") +
                    dr("istio-system", "catch-all", "{host: '*.local', trafficPolicy: {tls: {mode: SIMPLE}}}"));
  auto p = check(*ix, "shop/client", "web.shop.svc.cluster.local:80");
  EXPECT_EQ(p.client, ClientTls::kIstioMutual);
  EXPECT_EQ(p.decided_by[0], "auto mTLS");
}

// setDestinationRules: a rule with a workloadSelector is private to its
// namespace whatever its exportTo says.
TEST(Outbound, SelectorRulesArePrivateWhateverTheirExportTo) {
  auto ix = cluster(dr("shop", "for-client", "{host: web, exportTo: [legacy], workloadSelector: {matchLabels: {app: client}}, "
                                             "trafficPolicy: {tls: {mode: DISABLE}}}"));
  EXPECT_EQ(check(*ix, "shop/client", "web.shop.svc.cluster.local:80").client, ClientTls::kDisable);
  EXPECT_EQ(check(*ix, "legacy/client", "web.shop.svc.cluster.local:80").client, ClientTls::kNone);
}

// ---- Auto mTLS -------------------------------------------------------------------

TEST(AutoMtls, MeshMtlsToServedPodsPlaintextElsewhere) {
  auto ix = cluster(kIstio);
  auto p = check(*ix, "shop/client", "web.shop.svc.cluster.local:80");
  EXPECT_EQ(p.client, ClientTls::kIstioMutual);
  EXPECT_EQ(p.server, ServerMode::kPermissive);
  EXPECT_EQ(p.outcome, Outcome::kMtls);
  EXPECT_THAT(p.decided_by, ElementsAre("auto mTLS", "default"));
  auto q = check(*ix, "shop/client", "db.legacy.svc.cluster.local:5432");
  EXPECT_EQ(q.client, ClientTls::kDisable);
  EXPECT_EQ(q.outcome, Outcome::kPlaintext);
}

TEST(AutoMtls, PlaintextToADisabledPort) {
  auto ix = cluster(pa("shop", "web", "{selector: {matchLabels: {app: web}}, portLevelMtls: {'9090': {mode: DISABLE}}}"));
  EXPECT_EQ(check(*ix, "shop/client", "web.shop.svc.cluster.local:80").client, ClientTls::kIstioMutual);
  auto p = check(*ix, "shop/client", "web.shop.svc.cluster.local:9090");
  EXPECT_EQ(p.client, ClientTls::kDisable);
  EXPECT_EQ(p.server, ServerMode::kDisable);
  EXPECT_EQ(p.outcome, Outcome::kPlaintext);
}

TEST(AutoMtls, OffMeansPlaintextWithoutARule) {
  auto ix = cluster(R"(
apiVersion: sailoperator.io/v1
kind: Istio
metadata: {name: default}
spec: {namespace: istio-system, values: {meshConfig: {enableAutoMtls: false}}}
---
)" + pa("shop", "default", "{mtls: {mode: STRICT}}"));
  auto p = check(*ix, "shop/client", "web.shop.svc.cluster.local:80");
  EXPECT_EQ(p.client, ClientTls::kDisable);
  EXPECT_EQ(p.outcome, Outcome::kRefused);
  EXPECT_EQ(p.decided_by[0], "auto mTLS disabled");
}

TEST(AutoMtls, MeshConfigMapCanTurnItOff) {
  auto ix = cluster(R"(
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    enableAutoMtls: false
    trustDomain: corp.example
    meshMTLS:
      minProtocolVersion: TLSV1_3
)");
  EXPECT_FALSE(ix->mesh().enable_auto_mtls);
  EXPECT_EQ(ix->mesh().trust_domain, "corp.example");
  EXPECT_EQ(ix->mesh().min_protocol_version, config::TlsVersion::kTls13);
  // A ConfigMap named istio elsewhere is not the mesh config.
  auto other = cluster("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: shop}\ndata: {mesh: 'enableAutoMtls: false'}\n");
  EXPECT_TRUE(other->mesh().enable_auto_mtls);
}

// ---- Secure naming, TLS version --------------------------------------------------

TEST(Identity, ServiceAccountsBehindTheDestinationOrSubjectAltNames) {
  auto ix = cluster(R"(
apiVersion: sailoperator.io/v1
kind: Istio
metadata: {name: default}
spec: {namespace: istio-system, values: {meshConfig: {trustDomain: corp.example, meshMTLS: {minProtocolVersion: TLSV1_3}}}}
---
apiVersion: v1
kind: Pod
metadata: {name: web2, namespace: shop, uid: uid-web2, labels: {app: web}}
spec: {serviceAccountName: web-canary, containers: [{name: web, ports: [{containerPort: 8080, name: http}]}]}
status: {podIP: 10.244.1.11}
)");
  auto p = check(*ix, "shop/client", "web.shop.svc.cluster.local:80");
  EXPECT_THAT(p.identities, ElementsAre("spiffe://corp.example/ns/shop/sa/web", "spiffe://corp.example/ns/shop/sa/web-canary"));
  auto direct = check(*ix, "shop/client", "shop/web2:8080");
  EXPECT_THAT(direct.identities, ElementsAre("spiffe://corp.example/ns/shop/sa/web-canary"));
  auto d = ix->outbound(config::PodUid("uid-client"), Destination{config::IpAddress::parse("10.96.10.10"), {}}, 80);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->min_tls_version, config::TlsVersion::kTls13);
  auto sans = cluster(dr("shop", "web", "{host: web, trafficPolicy: {tls: {mode: ISTIO_MUTUAL, subjectAltNames: [spiffe://x/ns/y/sa/z]}}}"));
  EXPECT_THAT(check(*sans, "shop/client", "web.shop.svc.cluster.local:80").identities, ElementsAre("spiffe://x/ns/y/sa/z"));
  auto none = cluster(dr("shop", "web", "{host: web, trafficPolicy: {tls: {mode: DISABLE}}}"));
  EXPECT_TRUE(check(*none, "shop/client", "web.shop.svc.cluster.local:80").identities.empty());
}

// ---- Destination resolution ------------------------------------------------------

TEST(Destinations, ClusterIpPodIpNamesAndOutside) {
  auto ix = cluster(pa("shop", "default", "{mtls: {mode: STRICT}}"));
  EXPECT_EQ(check(*ix, "legacy/client", "10.96.10.10:80").outcome, Outcome::kRefused);   // ClusterIP
  EXPECT_EQ(check(*ix, "legacy/client", "10.244.1.10:8080").outcome, Outcome::kRefused);  // pod IP
  EXPECT_EQ(check(*ix, "shop/client", "web:80").outcome, Outcome::kMtls);                  // short name
  EXPECT_EQ(check(*ix, "shop/client", "web.shop:80").outcome, Outcome::kMtls);
  EXPECT_EQ(check(*ix, "shop/client", "web.shop.svc:80").outcome, Outcome::kMtls);
  EXPECT_EQ(check(*ix, "shop/client", "WEB.shop.svc.cluster.local.:80").outcome, Outcome::kMtls);
  auto out = check(*ix, "shop/client", "192.0.2.1:443");
  EXPECT_EQ(out.client, ClientTls::kDisable);
  EXPECT_EQ(out.server, ServerMode::kNone);
  EXPECT_EQ(out.outcome, Outcome::kPlaintext);
  EXPECT_EQ(check(*ix, "shop/client", "example.com:443").server, ServerMode::kNone);
}

TEST(Destinations, NamedTargetPortsReachTheContainerPort) {
  auto ix = cluster(pa("shop", "web", "{selector: {matchLabels: {app: web}}, portLevelMtls: {'8080': {mode: STRICT}}}"));
  // Service port 80 → targetPort "http" → container port 8080 → STRICT.
  EXPECT_EQ(check(*ix, "legacy/client", "10.96.10.10:80").server, ServerMode::kStrict);
  EXPECT_EQ(check(*ix, "legacy/client", "10.96.10.10:9090").server, ServerMode::kPermissive);
  auto backends = ix->backendsOf(*ix->serviceByIp(*config::IpAddress::parse("10.96.10.10")), 80);
  ASSERT_EQ(backends.size(), 1u);
  EXPECT_EQ(backends[0].port, 8080);
}

TEST(Destinations, PodTargetsUseTheServiceThatSelectsThem) {
  auto ix = cluster(dr("shop", "web", "{host: web, trafficPolicy: {portLevelSettings: [{port: {number: 80}, tls: {mode: DISABLE}}]}}"));
  // shop/web:8080 is service port 80's backend, so the port-80 setting applies.
  EXPECT_EQ(check(*ix, "shop/client", "shop/web:8080").client, ClientTls::kDisable);
  EXPECT_EQ(check(*ix, "shop/client", "shop/web:9090").client, ClientTls::kIstioMutual);
}

TEST(Destinations, SelectorlessServicesUseEndpointsAndEndpointSlices) {
  auto ix = cluster(R"(
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: shop}
spec: {clusterIP: 10.96.30.30, ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ext-1, namespace: shop, labels: {kubernetes.io/service-name: ext}}
endpoints: [{addresses: [10.244.1.10]}]
ports: [{name: http, port: 8080}]
)");
  auto p = check(*ix, "shop/client", "ext.shop.svc.cluster.local:80");
  EXPECT_EQ(p.client, ClientTls::kIstioMutual);
  EXPECT_EQ(p.server, ServerMode::kPermissive);
  auto api = check(*ix, "shop/client", "kubernetes.default.svc.cluster.local:443");
  EXPECT_EQ(api.server, ServerMode::kNone);
  EXPECT_EQ(api.client, ClientTls::kDisable);
}

TEST(Destinations, TerminatedPodsAreNotBackends) {
  auto ix = cluster(R"(
apiVersion: v1
kind: Pod
metadata: {name: old, namespace: legacy, uid: uid-old, labels: {app: db}}
spec: {containers: [{name: db, ports: [{containerPort: 5432}]}]}
status: {phase: Succeeded, podIP: 10.244.9.9}
)");
  EXPECT_EQ(ix->backendsOf(*ix->serviceByIp(*config::IpAddress::parse("10.96.20.20")), 5432).size(), 1u);
}

TEST(Destinations, BackendsThatDisagreeAreFlagged) {
  auto ix = cluster(R"(
apiVersion: v1
kind: Pod
metadata: {name: web-out, namespace: shop, uid: uid-web-out, labels: {app: web, meshlock.io/mtls: disabled}}
spec: {containers: [{name: web, ports: [{containerPort: 8080, name: http}]}]}
status: {podIP: 10.244.1.12}
)");
  auto d = ix->outbound(config::PodUid("uid-client"), Destination{std::nullopt, "web.shop.svc.cluster.local"}, 80);
  ASSERT_TRUE(d);
  EXPECT_TRUE(d->backends_disagree);
  EXPECT_EQ(d->backends.size(), 2u);
  auto r = checkConnection(*ix, PodRef{"shop", "client"}, *parseTarget("web.shop.svc.cluster.local:80"));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->backends.size(), 2u);
  EXPECT_EQ(r->backends[0].pod, "shop/web");
  EXPECT_EQ(r->backends[0].client_tls, ClientTls::kIstioMutual);
  EXPECT_EQ(r->backends[0].outcome, Outcome::kMtls);
  EXPECT_EQ(r->backends[1].pod, "shop/web-out");
  EXPECT_EQ(r->backends[1].client_tls, ClientTls::kDisable);
  EXPECT_EQ(r->backends[1].server_mode, ServerMode::kNone);
  EXPECT_EQ(r->backends[1].outcome, Outcome::kPlaintext);
}

TEST(Api, PerConnectionLookups) {
  auto ix = cluster(pa("shop", "default", "{mtls: {mode: STRICT}}"));
  EXPECT_EQ(ix->podByIp(*config::IpAddress::parse("10.244.1.10"))->name(), "web");
  EXPECT_EQ(ix->podsOnNode("node-a").size(), 2u);
  EXPECT_EQ(ix->identityOf(*ix->podByName("shop", "web")).str(), "spiffe://cluster.local/ns/shop/sa/web");
  auto d = ix->outbound(config::PodUid("uid-client"), Destination{config::IpAddress::parse("10.244.1.10"), {}}, 8080);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->client_tls, ClientTls::kIstioMutual);
  EXPECT_EQ(d->pod->name(), "web");
  ASSERT_EQ(d->expected_identities.size(), 1u);
  EXPECT_FALSE(ix->outbound(config::PodUid("nope"), Destination{}, 80));
}

// ---- Targets ---------------------------------------------------------------------

TEST(Targets, Parse) {
  auto pod = parseTarget("shop/web:8080");
  ASSERT_TRUE(pod);
  EXPECT_EQ(pod->kind, Target::Kind::kPod);
  EXPECT_EQ(pod->pod.name, "web");
  auto ip = parseTarget("10.0.0.1:80");
  ASSERT_TRUE(ip);
  EXPECT_EQ(ip->kind, Target::Kind::kIp);
  auto v6 = parseTarget("[fd00::1]:443");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->ip.toString(), "fd00::1");
  auto host = parseTarget("web.shop.svc.cluster.local:80");
  ASSERT_TRUE(host);
  EXPECT_EQ(host->kind, Target::Kind::kHost);
  for (const char* bad : {"web", "web:", "web:0", "web:70000", "web:http", ":80", "a/b/c:80", "fd00::1:80", "we b:80"}) {
    EXPECT_FALSE(parseTarget(bad)) << bad;
  }
  EXPECT_TRUE(parsePodRef("shop/web"));
  for (const char* bad : {"shop", "/web", "shop/", "a/b/c"}) EXPECT_FALSE(parsePodRef(bad)) << bad;
}

TEST(Check, UnknownPodsAreErrors) {
  auto ix = cluster();
  auto r = checkConnection(*ix, PodRef{"shop", "nope"}, *parseTarget("web:80"));
  ASSERT_FALSE(r);
  EXPECT_THAT(r.error().message, ::testing::HasSubstr("unknown pod shop/nope"));
  auto r2 = checkConnection(*ix, PodRef{"shop", "client"}, *parseTarget("shop/nope:80"));
  ASSERT_FALSE(r2);
}

}  // namespace
}  // namespace meshlock::policy
