// AuthorizationPolicy at L4, one rule per test, each against the source it
// comes from: istio/ztunnel src/state.rs assert_rbac and src/rbac.rs (at
// 62d826530e5ce85764e309170205b293efcbc80b), istio/istio
// pilot/pkg/serviceregistry/ambient/authorization.go (at
// 86c9f01fd735fb01d8192f5bcaf0d424afb7f14c), istio/api
// security/v1beta1/authorization_policy.proto (at b8f8791d).
#include <gmock/gmock.h>

#include "fixture.h"

namespace meshlock::policy {
namespace {

using testing::cluster;

std::string ap(const std::string& ns, const std::string& name, const std::string& spec,
               const std::string& created = "") {
  return "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: " + name +
         ", namespace: " + ns + (created.empty() ? "" : ", creationTimestamp: \"" + created + "\"") +
         "}\nspec: " + spec + "\n---\n";
}

constexpr const char* kClient = "spiffe://cluster.local/ns/shop/sa/client";
constexpr const char* kLegacy = "spiffe://cluster.local/ns/legacy/sa/default";

// A connection to shop/web (10.244.1.10) from `principal` (empty: plaintext) at `ip`.
AuthzDecision toWeb(const PolicyIndex& ix, std::string_view principal, uint16_t port = 8080,
                    std::string_view ip = "10.244.2.10", std::string_view sni = "") {
  const config::Pod* web = ix.podByName("shop", "web");
  EXPECT_NE(web, nullptr);
  return ix.authorization().decide(*web, AuthzRequest{.source_principal = principal,
                                                      .source_ip = *IpAddress::parse(ip),
                                                      .destination_ip = *IpAddress::parse("10.244.1.10"),
                                                      .destination_port = port,
                                                      .sni = sni});
}

TEST(Authorization, NoPolicyAllows) {
  auto ix = cluster();
  AuthzDecision d = toWeb(*ix, kClient);
  EXPECT_EQ(d.keyword(), "allow");
  EXPECT_EQ(d.policy, nullptr);
}

// "If not set, the match will never occur. This is equivalent to setting a
// default of deny for the target workloads if the action is ALLOW." (proto)
TEST(Authorization, AllowNothingDeniesAll) {
  auto ix = cluster(ap("shop", "allow-nothing", "{}"));
  AuthzDecision d = toWeb(*ix, kClient);
  EXPECT_EQ(d.keyword(), "deny");
  EXPECT_EQ(d.why, "ALLOW policies apply, none matched");
  EXPECT_EQ(d.policyName(), "");
}

// ztunnel rbac_empty_policy: `rules: [{}]` is one rule with no clause: matches all.
TEST(Authorization, EmptyRuleAllowsAll) {
  auto ix = cluster(ap("shop", "allow-all", "{rules: [{}]}"));
  AuthzDecision d = toWeb(*ix, "");
  EXPECT_EQ(d.keyword(), "allow");
  EXPECT_EQ(d.policyName(), "shop/allow-all");
  EXPECT_EQ(d.rule, 0);
}

TEST(Authorization, DenyWithoutRulesDoesNothing) {
  auto ix = cluster(ap("shop", "deny-nothing", "{action: DENY}"));
  EXPECT_EQ(toWeb(*ix, kClient).keyword(), "allow");
}

TEST(Authorization, NamespaceIsolation) {
  auto ix = cluster(ap("shop", "same-ns", "{rules: [{from: [{source: {namespaces: [shop]}}]}]}"));
  EXPECT_EQ(toWeb(*ix, kClient).keyword(), "allow");
  EXPECT_EQ(toWeb(*ix, kLegacy).keyword(), "deny");
  EXPECT_EQ(toWeb(*ix, "").keyword(), "deny") << "plaintext has no namespace";
}

// Principals are written without "spiffe://"; "*" needs one; prefix and suffix.
TEST(Authorization, PrincipalPatterns) {
  struct Row {
    const char* pattern;
    const char* principal;
    bool allowed;
  };
  const Row rows[] = {
      {"cluster.local/ns/shop/sa/client", kClient, true},
      {"spiffe://cluster.local/ns/shop/sa/client", kClient, false},
      {"cluster.local/ns/shop/*", kClient, true},
      {"*/sa/client", kClient, true},
      {"*/sa/web", kClient, false},
      {"*", kClient, true},
      {"*", "", false},
  };
  for (const Row& row : rows) {
    auto ix = cluster(ap("shop", "p", std::string("{rules: [{from: [{source: {principals: [\"") + row.pattern + "\"]}}]}]}"));
    EXPECT_EQ(toWeb(*ix, row.principal).keyword(), row.allowed ? "allow" : "deny") << row.pattern << " vs " << row.principal;
  }
}

// Plaintext: principals never match, their negation does (ztunnel rbac_test!).
TEST(Authorization, PlaintextMatchesOnlyNegations) {
  auto ix = cluster(ap("shop", "deny-plaintext", "{action: DENY, rules: [{from: [{source: {notPrincipals: [\"*\"]}}]}]}"));
  AuthzDecision d = toWeb(*ix, "");
  EXPECT_EQ(d.keyword(), "deny");
  EXPECT_EQ(d.policyName(), "shop/deny-plaintext");
  EXPECT_EQ(toWeb(*ix, kClient).keyword(), "allow");
}

TEST(Authorization, DenyByPrincipalWinsOverAllow) {
  auto ix = cluster(ap("shop", "allow-all", "{rules: [{}]}") +
                    ap("shop", "deny-legacy", "{action: DENY, rules: [{from: [{source: {principals: [cluster.local/ns/legacy/sa/default]}}]}]}"));
  AuthzDecision d = toWeb(*ix, kLegacy);
  EXPECT_EQ(d.keyword(), "deny");
  EXPECT_EQ(d.why, "DENY policy matched");
  EXPECT_EQ(d.policyName(), "shop/deny-legacy");
  EXPECT_EQ(toWeb(*ix, kClient).keyword(), "allow");
}

TEST(Authorization, PortScopedAllow) {
  auto ix = cluster(ap("shop", "metrics-only", "{rules: [{to: [{operation: {ports: [\"9090\"]}}]}]}"));
  EXPECT_EQ(toWeb(*ix, kClient, 9090).keyword(), "allow");
  EXPECT_EQ(toWeb(*ix, kClient, 8080).keyword(), "deny");
  auto not_ports = cluster(ap("shop", "p", "{rules: [{to: [{operation: {notPorts: [\"8080\"]}}]}]}"));
  EXPECT_EQ(toWeb(*not_ports, kClient, 9090).keyword(), "allow");
  EXPECT_EQ(toWeb(*not_ports, kClient, 8080).keyword(), "deny");
}

TEST(Authorization, IpBlocksForPlaintextClients) {
  auto ix = cluster(ap("shop", "from-node-b-pods", "{rules: [{from: [{source: {ipBlocks: [10.244.2.0/24]}}]}]}"));
  EXPECT_EQ(toWeb(*ix, "", 8080, "10.244.2.20").keyword(), "allow");
  EXPECT_EQ(toWeb(*ix, "", 8080, "10.244.1.20").keyword(), "deny");
  auto single = cluster(ap("shop", "one", "{rules: [{from: [{source: {ipBlocks: [10.244.2.20], notIpBlocks: [10.244.2.21]}}]}]}"));
  EXPECT_EQ(toWeb(*single, "", 8080, "10.244.2.20").keyword(), "allow");
  EXPECT_EQ(toWeb(*single, "", 8080, "10.244.2.21").keyword(), "deny");
}

// Fields of one source are ANDed; several sources are ORed (proto: "Fields in
// the source are ANDed together"; a rule matches "when at least one source").
TEST(Authorization, AndWithinOrAcross) {
  auto and_ix = cluster(ap("shop", "p", "{rules: [{from: [{source: {namespaces: [shop], ipBlocks: [10.244.9.0/24]}}]}]}"));
  EXPECT_EQ(toWeb(*and_ix, kClient).keyword(), "deny");
  auto or_ix = cluster(ap("shop", "p", "{rules: [{from: [{source: {namespaces: [shop]}}, {source: {ipBlocks: [10.244.9.0/24]}}]}]}"));
  EXPECT_EQ(toWeb(*or_ix, kClient).keyword(), "allow");
  // from, to and when of one rule are ANDed.
  auto rule = cluster(ap("shop", "p", "{rules: [{from: [{source: {namespaces: [shop]}}], to: [{operation: {ports: [\"9090\"]}}]}]}"));
  EXPECT_EQ(toWeb(*rule, kClient, 8080).keyword(), "deny");
  EXPECT_EQ(toWeb(*rule, kClient, 9090).keyword(), "allow");
}

TEST(Authorization, WhenConditionsOnConnectionKeys) {
  struct Row {
    const char* condition;
    bool allowed;
  };
  const Row rows[] = {
      {"{key: source.ip, values: [10.244.2.0/24]}", true},
      {"{key: source.ip, notValues: [10.244.2.10]}", false},
      {"{key: remote.ip, values: [10.244.2.10]}", true},
      {"{key: source.namespace, values: [sho*]}", true},
      {"{key: source.principal, values: [\"*/sa/web\"]}", false},
      {"{key: destination.ip, values: [10.244.1.10]}", true},
      {"{key: destination.port, values: [\"9090\"]}", false},
      {"{key: connection.sni, values: [\"*.shop.svc.cluster.local\"]}", true},
  };
  for (const Row& row : rows) {
    auto ix = cluster(ap("shop", "p", std::string("{rules: [{when: [") + row.condition + "]}]}"));
    EXPECT_EQ(toWeb(*ix, kClient, 8080, "10.244.2.10", "outbound_.80_._.web.shop.svc.cluster.local").keyword(),
              row.allowed ? "allow" : "deny")
        << row.condition;
  }
}

// ALLOW rules that need HTTP never match (istiod: "L7 policies never match for ALLOW").
TEST(Authorization, AllowWithHttpFieldsFailsClosed) {
  auto ix = cluster(ap("shop", "get-only", "{rules: [{to: [{operation: {methods: [GET]}}]}]}"));
  EXPECT_EQ(toWeb(*ix, kClient).keyword(), "deny");
  auto header = cluster(ap("shop", "p", "{rules: [{when: [{key: \"request.headers[x-user]\", values: [a]}]}]}"));
  EXPECT_EQ(toWeb(*header, kClient).keyword(), "deny");
  auto request_principal = cluster(ap("shop", "p", "{rules: [{from: [{source: {requestPrincipals: [\"*\"]}}]}]}"));
  EXPECT_EQ(toWeb(*request_principal, kClient).keyword(), "deny");
}

// DENY: the HTTP fields are dropped, so the rest denies more; a source,
// operation or condition left empty never matches (istio#61166).
TEST(Authorization, DenyWithHttpFields) {
  auto broader = cluster(ap("shop", "no-post-8080", "{action: DENY, rules: [{to: [{operation: {ports: [\"8080\"], methods: [POST]}}]}]}"));
  EXPECT_EQ(toWeb(*broader, kClient, 8080).keyword(), "deny") << "every connection to 8080";
  EXPECT_EQ(toWeb(*broader, kClient, 9090).keyword(), "allow");
  auto only_http = cluster(ap("shop", "no-post", "{action: DENY, rules: [{to: [{operation: {methods: [POST]}}]}]}"));
  EXPECT_EQ(toWeb(*only_http, kClient).keyword(), "allow") << "no L4 part left: no effect";
  auto http_condition = cluster(ap("shop", "p", "{action: DENY, rules: [{when: [{key: \"request.auth.claims[iss]\", values: [x]}]}]}"));
  EXPECT_EQ(toWeb(*http_condition, kClient).keyword(), "allow");
}

TEST(Authorization, ServiceAccounts) {
  auto ix = cluster(ap("shop", "p", "{rules: [{from: [{source: {serviceAccounts: [client, legacy/default]}}]}]}"));
  EXPECT_EQ(toWeb(*ix, kClient).keyword(), "allow");
  EXPECT_EQ(toWeb(*ix, kLegacy).keyword(), "allow");
  EXPECT_EQ(toWeb(*ix, "spiffe://cluster.local/ns/other/sa/client").keyword(), "deny");
}

// Which policies apply: the root namespace's are mesh-wide; a selector picks
// pods of its namespace, or of every namespace from the root namespace;
// targetRefs are a gateway's or waypoint's.
TEST(Authorization, Scope) {
  const std::string istio = "apiVersion: sailoperator.io/v1\nkind: Istio\nmetadata: {name: default}\nspec: {namespace: istio-system}\n---\n";
  auto mesh = cluster(istio + ap("istio-system", "mesh-allow-nothing", "{}"));
  EXPECT_EQ(toWeb(*mesh, kClient).keyword(), "deny");
  auto other_ns = cluster(ap("legacy", "allow-nothing", "{}"));
  EXPECT_EQ(toWeb(*other_ns, kClient).keyword(), "allow");
  auto selected = cluster(ap("shop", "db-only", "{selector: {matchLabels: {app: db}}}"));
  EXPECT_EQ(toWeb(*selected, kClient).keyword(), "allow");
  auto selects_web = cluster(ap("shop", "web-only", "{selector: {matchLabels: {app: web}}}"));
  EXPECT_EQ(toWeb(*selects_web, kClient).keyword(), "deny");
  auto root_selector = cluster(istio + ap("istio-system", "all-webs", "{selector: {matchLabels: {app: web}}}"));
  EXPECT_EQ(toWeb(*root_selector, kClient).keyword(), "deny");
  auto target_ref = cluster(ap("shop", "gw", "{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]}"));
  EXPECT_EQ(toWeb(*target_ref, kClient).keyword(), "allow");
  EXPECT_TRUE(target_ref->authorization().applying(*target_ref->podByName("shop", "web")).empty());
}

TEST(Authorization, CustomIsDeniedAuditOnlyMarks) {
  auto custom = cluster(ap("shop", "ext-authz", "{action: CUSTOM, provider: {name: opa}, rules: [{}]}"));
  AuthzDecision d = toWeb(*custom, kClient);
  EXPECT_EQ(d.keyword(), "deny");
  EXPECT_EQ(d.policyName(), "shop/ext-authz");
  auto audit = cluster(ap("shop", "audit-all", "{action: AUDIT, rules: [{}]}"));
  EXPECT_EQ(toWeb(*audit, kClient).keyword(), "audit");
  EXPECT_EQ(toWeb(*audit, kClient).result, AuthzResult::kAllow);
}

TEST(Authorization, BadEntriesAreDroppedAsIstiodDrops) {
  // stringToIP / stringToPort drop what does not parse; a field left empty matches anything.
  auto ix = cluster(ap("shop", "p", "{rules: [{from: [{source: {ipBlocks: [not-an-ip, 10.244.2.0/24]}}], "
                                    "to: [{operation: {ports: [\"http\", \"8080\"]}}]}]}"));
  EXPECT_EQ(toWeb(*ix, kClient).keyword(), "allow");
}

TEST(Authorization, CheckReportsTheDecision) {
  auto ix = cluster(ap("shop", "same-ns", "{rules: [{from: [{source: {namespaces: [shop]}}]}]}"));
  auto from_shop = checkConnection(*ix, {"shop", "client"}, *parseTarget("web.shop.svc.cluster.local:80"));
  ASSERT_TRUE(from_shop);
  EXPECT_EQ(from_shop->authorization, "allow");
  EXPECT_EQ(from_shop->authorization_policy, "shop/same-ns");
  // legacy/client is not served: it sends plaintext, which has no namespace.
  auto from_legacy = checkConnection(*ix, {"legacy", "client"}, *parseTarget("web.shop.svc.cluster.local:80"));
  ASSERT_TRUE(from_legacy);
  EXPECT_EQ(from_legacy->authorization, "deny");
  EXPECT_EQ(from_legacy->authorization_policy, std::nullopt);
  // A destination meshlock does not serve: nobody enforces.
  auto to_db = checkConnection(*ix, {"shop", "client"}, *parseTarget("db.legacy.svc.cluster.local:5432"));
  ASSERT_TRUE(to_db);
  EXPECT_EQ(to_db->authorization, std::nullopt);
}

}  // namespace
}  // namespace meshlock::policy
