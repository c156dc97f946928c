// The admin API's views of cluster state and policy (app/config_dump.h): the
// keys meshlockctl and operators read from /config_dump, the per-pod policy
// with its deciding resources, and the decision columns of /connections.
#include <gtest/gtest.h>

#include "../policy/fixture.h"
#include "app/config_dump.h"
#include "policy/report_json.h"

namespace meshlock::app {
namespace {

using nlohmann::json;
using policy::testing::cluster;

const std::string kStrictWeb = R"(
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: web-metrics, namespace: shop}
spec: {selector: {matchLabels: {app: web}}, portLevelMtls: {9090: {mode: PERMISSIVE}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db-plain, namespace: shop}
spec: {host: db.legacy.svc.cluster.local, trafficPolicy: {tls: {mode: DISABLE}}}
)";

json findBy(const json& list, const std::string& key, const std::string& value) {
  for (const auto& item : list)
    if (item.value(key, "") == value) return item;
  ADD_FAILURE() << "no " << key << "=" << value << " in " << list.dump();
  return json::object();
}

TEST(ConfigDump, HasEveryDocumentedKey) {
  auto ix = cluster(kStrictWeb);
  json dump = configDumpJson(*ix, "node-a", json::array({{{"identity", "spiffe://cluster.local/ns/shop/sa/web"}}}));
  for (const char* key : {"node", "cluster", "mesh", "synthetic_destination_rules", "policy", "identities", "warnings"})
    EXPECT_TRUE(dump.contains(key)) << key;
  for (const char* key : {"namespaces", "pods", "services", "endpoints", "peer_authentications", "destination_rules",
                          "control_planes"})
    EXPECT_TRUE(dump["cluster"][key].is_array()) << key;
  EXPECT_EQ(dump["node"], "node-a");
  EXPECT_EQ(dump["identities"][0]["identity"], "spiffe://cluster.local/ns/shop/sa/web");
  EXPECT_EQ(dump["mesh"]["root_namespace"], "istio-system");
  EXPECT_EQ(dump["mesh"]["trust_domain"], "cluster.local");
  EXPECT_EQ(dump["mesh"]["enable_auto_mtls"], true);
  EXPECT_EQ(dump["mesh"]["min_protocol_version"], "TLSV1_2");
}

TEST(ConfigDump, ClusterStateAsRead) {
  auto ix = cluster(kStrictWeb);
  const json c = clusterStateJson(ix->state());
  const json shop = findBy(c["namespaces"], "name", "shop");
  EXPECT_EQ(shop["labels"]["meshlock.io/mtls"], "enabled");
  EXPECT_EQ(shop["kind"], "Namespace");

  const json web = findBy(c["pods"], "name", "web");
  EXPECT_EQ(web["namespace"], "shop");
  EXPECT_EQ(web["node"], "node-a");
  EXPECT_EQ(web["ip"], "10.244.1.10");
  EXPECT_EQ(web["service_account"], "web");
  EXPECT_EQ(web["labels"]["app"], "web");
  ASSERT_EQ(web["ports"].size(), 2u);
  EXPECT_EQ(web["ports"][0]["port"], 8080);
  EXPECT_EQ(web["ports"][0]["name"], "http");
  EXPECT_TRUE(web["ports"][1]["name"].is_null());

  const json svc = findBy(c["services"], "name", "web");
  EXPECT_EQ(svc["cluster_ip"], "10.96.10.10");
  EXPECT_EQ(svc["selector"]["app"], "web");
  EXPECT_EQ(svc["ports"][0]["target_port"], "http");
  EXPECT_EQ(svc["ports"][1]["target_port"], 9090);
  EXPECT_TRUE(findBy(c["services"], "name", "kubernetes")["selector"].is_null());

  const json pa = findBy(c["peer_authentications"], "name", "web-metrics");
  EXPECT_EQ(pa["mode"], "UNSET");
  EXPECT_EQ(pa["port_level"]["9090"], "PERMISSIVE");
  EXPECT_EQ(pa["selector"]["app"], "web");
  EXPECT_EQ(findBy(c["peer_authentications"], "name", "default")["mode"], "STRICT");

  const json rule = findBy(c["destination_rules"], "name", "db-plain");
  EXPECT_EQ(rule["host"], "db.legacy.svc.cluster.local");
  EXPECT_EQ(rule["tls"]["mode"], "DISABLE");
  EXPECT_EQ(rule["source"].get<std::string>().rfind("test.yaml", 0), 0u) << rule["source"];
}

TEST(ConfigDump, PolicyPerLocalPodAndPortWithTheDecidingResource) {
  auto ix = cluster(kStrictWeb);
  const json dump = configDumpJson(*ix, "node-a", json::array());
  // node-a holds shop/web and legacy/db.
  ASSERT_EQ(dump["policy"].size(), 2u) << dump["policy"].dump();
  const json web = findBy(dump["policy"], "pod", "shop/web");
  EXPECT_EQ(web["namespace"], "shop");
  EXPECT_EQ(web["name"], "web");
  EXPECT_EQ(web["served"], true);
  EXPECT_EQ(web["identity"], "spiffe://cluster.local/ns/shop/sa/web");
  ASSERT_EQ(web["inbound"].size(), 2u);
  EXPECT_EQ(web["inbound"][0]["port"], 8080);
  EXPECT_EQ(web["inbound"][0]["mode"], "STRICT");
  EXPECT_EQ(web["inbound"][0]["decided_by"], json::array({"PeerAuthentication/shop/default"}));
  EXPECT_EQ(web["inbound"][1]["port"], 9090);
  EXPECT_EQ(web["inbound"][1]["mode"], "PERMISSIVE");
  EXPECT_EQ(web["inbound"][1]["decided_by"], json::array({"PeerAuthentication/shop/web-metrics (port 9090)"}));
  EXPECT_EQ(web["inbound_other_ports"]["mode"], "STRICT");

  const json to_db = findBy(web["outbound"], "to", "db.legacy.svc.cluster.local:5432");
  EXPECT_EQ(to_db["client_tls"], "DISABLE");
  EXPECT_EQ(to_db["client_decided_by"], json::array({"DestinationRule/shop/db-plain"}));
  const json db = findBy(dump["policy"], "pod", "legacy/db");
  EXPECT_EQ(db["served"], false);
}

TEST(ConfigDump, WarningsCarryCodeSeverityResource) {
  // A DestinationRule for a host no service has draws a validation finding.
  auto ix = cluster(R"(
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: nowhere, namespace: shop}
spec: {host: nowhere.shop.svc.cluster.local, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}
)");
  const json dump = configDumpJson(*ix, "node-a", json::array());
  ASSERT_TRUE(dump["warnings"].is_array());
  for (const auto& w : dump["warnings"]) {
    EXPECT_TRUE(w.contains("code") && w.contains("severity") && w.contains("resource") && w.contains("message"));
  }
}

TEST(DecideConnection, OutboundNamesServiceAndRule) {
  auto ix = cluster(kStrictWeb);
  const config::Pod* web = ix->podByName("shop", "web");
  ASSERT_NE(web, nullptr);
  auto d = decideConnection(*ix, *web, true, config::IpAddress::parse("10.96.20.20"), 5432);
  EXPECT_EQ(d.destination_service, "db.legacy.svc.cluster.local");
  EXPECT_EQ(d.decided_by, "DestinationRule/shop/db-plain (DISABLE)");

  const config::Pod* client = ix->podByName("shop", "client");
  d = decideConnection(*ix, *client, true, config::IpAddress::parse("10.96.10.10"), 80);
  EXPECT_EQ(d.destination_service, "web.shop.svc.cluster.local");
  EXPECT_EQ(d.decided_by, "auto mTLS (ISTIO_MUTUAL)");
}

TEST(DecideConnection, InboundNamesPeerAuthenticationAndService) {
  auto ix = cluster(kStrictWeb);
  const config::Pod* web = ix->podByName("shop", "web");
  auto d = decideConnection(*ix, *web, false, config::IpAddress::parse("10.244.1.10"), 8080);
  EXPECT_EQ(d.destination_service, "web.shop.svc.cluster.local");
  EXPECT_EQ(d.decided_by, "PeerAuthentication/shop/default (STRICT)");
  d = decideConnection(*ix, *web, false, config::IpAddress::parse("10.244.1.10"), 9090);
  EXPECT_EQ(d.decided_by, "PeerAuthentication/shop/web-metrics (port 9090) (PERMISSIVE)");
}

TEST(DecideConnection, OutboundToAnAddressNoServiceKnows) {
  auto ix = cluster(kStrictWeb);
  const config::Pod* web = ix->podByName("shop", "web");
  auto d = decideConnection(*ix, *web, true, config::IpAddress::parse("192.0.2.1"), 443);
  EXPECT_FALSE(d.destination_service.has_value());
  ASSERT_TRUE(d.decided_by.has_value());
}

}  // namespace
}  // namespace meshlock::app
