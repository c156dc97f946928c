// Objects from the Kubernetes API (JSON) decode into exactly what the same
// object gives from a manifest file, for every kind the agent reads.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "config/manifest.h"

namespace meshlock::config {
namespace {

// JSON is YAML, so one text feeds both paths.
const char* const kObjects[] = {
    R"({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"shop","uid":"n1","labels":{"meshlock.io/mtls":"enabled"}}})",
    R"({"apiVersion":"v1","kind":"Pod","metadata":{"name":"web-1","namespace":"shop","uid":"u1","labels":{"app":"web"},
        "creationTimestamp":"2026-01-01T00:00:00Z",
        "ownerReferences":[{"kind":"ReplicaSet","name":"web-7f","controller":true}]},
       "spec":{"nodeName":"node-a","serviceAccountName":"web","hostNetwork":false,
               "containers":[{"name":"c","ports":[{"containerPort":8080,"name":"http","protocol":"TCP"}]}],
               "initContainers":[{"name":"s","restartPolicy":"Always","ports":[{"containerPort":9090}]}]},
       "status":{"phase":"Running","podIP":"10.20.1.7","podIPs":[{"ip":"10.20.1.7"},{"ip":"fd00::7"}]}})",
    R"({"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"shop"},
       "spec":{"type":"ClusterIP","clusterIP":"10.96.0.10","clusterIPs":["10.96.0.10"],"selector":{"app":"web"},
               "ports":[{"name":"http","port":80,"targetPort":"http"},{"port":81,"targetPort":8081}]}})",
    R"({"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"web-x","namespace":"shop",
        "labels":{"kubernetes.io/service-name":"web"}},"addressType":"IPv4",
       "endpoints":[{"addresses":["10.20.1.7"],"targetRef":{"kind":"Pod","name":"web-1","namespace":"shop"}}],
       "ports":[{"name":"http","port":8080}]})",
    R"({"apiVersion":"security.istio.io/v1","kind":"PeerAuthentication","metadata":{"name":"p","namespace":"shop"},
       "spec":{"selector":{"matchLabels":{"app":"web"}},"mtls":{"mode":"STRICT"},"portLevelMtls":{"8080":{"mode":"PERMISSIVE"}}}})",
    R"({"apiVersion":"networking.istio.io/v1beta1","kind":"DestinationRule","metadata":{"name":"d","namespace":"shop"},
       "spec":{"host":"web","exportTo":["."],"trafficPolicy":{"tls":{"mode":"ISTIO_MUTUAL","sni":"web"},
               "portLevelSettings":[{"port":{"number":80},"tls":{"mode":"DISABLE","insecureSkipVerify":true}}]}}})",
    R"({"apiVersion":"sailoperator.io/v1","kind":"Istio","metadata":{"name":"default"},
       "spec":{"namespace":"istio-system","values":{"meshConfig":{"enableAutoMtls":false,"trustDomain":"td.local",
               "meshMTLS":{"minProtocolVersion":"TLSV1_3"}}}}})",
    R"({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"istio","namespace":"istio-system"},
       "data":{"mesh":"enableAutoMtls: true\ntrustDomain: cm.local\n"}})",
    R"({"apiVersion":"maistra.io/v1","kind":"ServiceMeshControlPlane","metadata":{"name":"basic","namespace":"istio-system"},
       "spec":{"istio":{"global":{"mtls":{"enabled":true,"auto":false},"trustDomain":"m1.local"}}}})",
    R"({"apiVersion":"maistra.io/v2","kind":"ServiceMeshControlPlane","metadata":{"name":"basic","namespace":"istio-system"},
       "spec":{"security":{"dataPlane":{"mtls":true,"automtls":true},"trust":{"domain":"m2.local"}}}})",
    R"({"apiVersion":"authentication.maistra.io/v1","kind":"ServiceMeshPolicy","metadata":{"name":"default","namespace":"istio-system"},
       "spec":{"peers":[{"mtls":{}}]}})",
    R"({"apiVersion":"authentication.maistra.io/v1","kind":"Policy","metadata":{"name":"default","namespace":"shop"},
       "spec":{"peers":[{"mtls":{"mode":"PERMISSIVE"}}],"targets":[{"name":"web","ports":[{"number":80},{"name":"http"}]}]}})",
    R"({"apiVersion":"v1","kind":"Endpoints","metadata":{"name":"web","namespace":"shop"},
       "subsets":[{"addresses":[{"ip":"10.20.1.7","targetRef":{"kind":"Pod","name":"web-1"}}],"ports":[{"port":8080}]}]})",
};

template <typename T>
void clearSources(SharedList<T>& objects) {
  for (std::size_t i = 0; i < objects.size(); ++i) objects.edit(i).meta.source = {};
}

void clearSources(ClusterState& s) {
  clearSources(s.namespaces);
  clearSources(s.pods);
  clearSources(s.services);
  clearSources(s.endpoints);
  clearSources(s.peer_authentications);
  clearSources(s.destination_rules);
  clearSources(s.control_planes);
}

bool sameState(const ClusterState& a, const ClusterState& b) {
  return a.namespaces == b.namespaces && a.pods == b.pods && a.services == b.services && a.endpoints == b.endpoints &&
         a.peer_authentications == b.peer_authentications && a.destination_rules == b.destination_rules &&
         a.control_planes == b.control_planes;
}

TEST(ApiDecode, EveryKindDecodesAsFromAManifest) {
  for (const char* text : kObjects) {
    SCOPED_TRACE(text);
    ParsedManifests from_yaml = parseManifests(text, "file.yaml");
    ParsedManifests from_json = decodeApiObject(nlohmann::json::parse(text), "api");
    ASSERT_TRUE(from_yaml.errors.empty()) << from_yaml.errors[0].describe();
    ASSERT_TRUE(from_json.errors.empty()) << from_json.errors[0].describe();
    ASSERT_EQ(from_json.state.objectCount(), 1u);
    clearSources(from_yaml.state);
    clearSources(from_json.state);
    EXPECT_TRUE(sameState(from_yaml.state, from_json.state));
  }
}

TEST(ApiDecode, JsonNumbersAndBooleansReadLikeYamlScalars) {
  auto parsed = decodeApiObject(nlohmann::json::parse(kObjects[1]), "api");
  ASSERT_EQ(parsed.state.pods.size(), 1u);
  const Pod& pod = parsed.state.pods[0];
  EXPECT_EQ(pod.uid.str(), "u1");
  EXPECT_EQ(pod.service_account, "web");
  ASSERT_EQ(pod.ports.size(), 2u);
  EXPECT_EQ(pod.ports[0].port, 8080);
  EXPECT_EQ(pod.ips.size(), 2u);
  ASSERT_TRUE(pod.meta.owner);
  EXPECT_EQ(pod.meta.owner->name, "web-7f");
}

TEST(ApiDecode, ListItemsTakeApiVersionAndKindFromTheList) {
  // List responses leave apiVersion/kind out of their items.
  auto item = nlohmann::json::parse(R"({"metadata":{"name":"p","namespace":"shop"},"spec":{"mtls":{"mode":"STRICT"}}})");
  auto parsed = decodeApiObject(item, "api", "security.istio.io/v1beta1", "PeerAuthentication");
  ASSERT_TRUE(parsed.errors.empty());
  ASSERT_EQ(parsed.state.peer_authentications.size(), 1u);
  EXPECT_EQ(parsed.state.peer_authentications[0].meta.api_version, "security.istio.io/v1beta1");
  EXPECT_EQ(parsed.state.peer_authentications[0].mode, PeerMode::kStrict);
}

TEST(ApiDecode, AMalformedObjectIsNamedWithItsField) {
  auto bad = nlohmann::json::parse(
      R"({"apiVersion":"security.istio.io/v1","kind":"PeerAuthentication","metadata":{"name":"p","namespace":"shop"},"spec":{"mtls":{"mode":"STRICTEST"}}})");
  auto parsed = decodeApiObject(bad, "PeerAuthentication/shop/p");
  EXPECT_EQ(parsed.state.objectCount(), 0u);
  ASSERT_EQ(parsed.errors.size(), 1u);
  EXPECT_EQ(parsed.errors[0].describe(),
            "PeerAuthentication/shop/p: spec.mtls.mode: unknown mode \"STRICTEST\" (want UNSET, DISABLE, PERMISSIVE or STRICT)");
  auto wrong_type = nlohmann::json::parse(
      R"({"apiVersion":"v1","kind":"Pod","metadata":{"name":"x","namespace":"shop"},"spec":{"containers":{"a":1}}})");
  auto parsed2 = decodeApiObject(wrong_type, "Pod/shop/x");
  ASSERT_EQ(parsed2.errors.size(), 1u);
  EXPECT_EQ(parsed2.errors[0].field, "spec.containers");
  EXPECT_EQ(parsed2.errors[0].message, "expected a list, found a map");
}

// A ConfigMap other than the mesh config is what a configmap:// credentialName
// may name: kept with its data (config/credentials.h), not a control plane.
TEST(ApiDecode, OtherConfigMapsAreKeptForConfigMapCredentials) {
  auto cm = nlohmann::json::parse(
      R"({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","namespace":"a"},"data":{"ca.crt":"PEM"}})");
  auto parsed = decodeApiObject(cm, "api");
  EXPECT_TRUE(parsed.errors.empty());
  EXPECT_TRUE(parsed.ignored.empty());
  EXPECT_TRUE(parsed.state.control_planes.empty());
  ASSERT_EQ(parsed.state.config_maps.size(), 1u);
  EXPECT_EQ(parsed.state.config_maps[0].meta.ref.toString(), "ConfigMap/a/x");
  EXPECT_EQ(parsed.state.config_maps[0].data.at("ca.crt"), "PEM");
}

}  // namespace
}  // namespace meshlock::config
