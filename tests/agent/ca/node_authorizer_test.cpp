// The node authorizer against istiod's, check for check (istio/istio
// security/pkg/server/ca/node_auth.go, ClusterNodeAuthorizer
// .authenticateImpersonation, at 86c9f01fd735fb01d8192f5bcaf0d424afb7f14c):
// the caller's account must be a trusted node account; its token's pod must
// exist with that uid and account; the requested ns/sa must have a pod on
// that pod's node. Failed pods and pods without a node are not indexed.
#include "ca/node_authorizer.h"

#include <gtest/gtest.h>

namespace meshlock::ca {
namespace {

config::Pod pod(std::string ns, std::string name, std::string uid, std::string sa, std::string node,
                bool terminated = false) {
  config::Pod p;
  p.meta.ref.ns = std::move(ns);
  p.meta.ref.name = std::move(name);
  p.meta.uid = std::move(uid);
  p.service_account = std::move(sa);
  p.node_name = std::move(node);
  p.terminated = terminated;
  return p;
}

class NodeAuthorizer : public ::testing::Test {
 protected:
  NodeAuthorizer() {
    config::ClusterState state;
    state.pods.push_back(pod("meshlock-system", "meshlock-agent-a", "agent-a-uid", "meshlock-agent", "node-a"));
    state.pods.push_back(pod("meshlock-system", "meshlock-agent-b", "agent-b-uid", "meshlock-agent", "node-b"));
    state.pods.push_back(pod("shop", "web-1", "w1", "web", "node-a"));
    state.pods.push_back(pod("shop", "db-1", "d1", "db", "node-b"));
    state.pods.push_back(pod("shop", "job-1", "j1", "batch", "node-a", /*terminated=*/true));
    state.pods.push_back(pod("shop", "pending-1", "p1", "queue", ""));
    pods = PodDirectory(state);
  }

  static ReviewedToken agentOn(const std::string& name, const std::string& uid) {
    return ReviewedToken{.ns = "meshlock-system", .service_account = "meshlock-agent", .pod_name = name, .pod_uid = uid};
  }
  Decision ask(const ReviewedToken& caller, const std::string& requested) {
    auto id = identity::SpiffeId::parse(requested);
    EXPECT_TRUE(id) << requested;
    return authorizeImpersonation(caller, *id, *domain, trusted, pods);
  }

  Result<identity::TrustDomain> domain = identity::TrustDomain::parse("cluster.local");
  std::vector<std::string> trusted{"meshlock-system/meshlock-agent"};
  PodDirectory pods;
};

TEST_F(NodeAuthorizer, AgentGetsItsOwnNodesAccounts) {
  Decision d = ask(agentOn("meshlock-agent-a", "agent-a-uid"), "spiffe://cluster.local/ns/shop/sa/web");
  EXPECT_TRUE(d.allowed) << d.message;
  EXPECT_EQ(d.reason, "allowed");
}

TEST_F(NodeAuthorizer, Refusals) {
  struct Case {
    const char* name;
    ReviewedToken caller;
    const char* requested;
    const char* reason;
    const char* message;
  };
  const Case cases[] = {
      {"an account on another node only", agentOn("meshlock-agent-a", "agent-a-uid"),
       "spiffe://cluster.local/ns/shop/sa/db", "not_on_node", "no instances of \"shop/db\" found on node \"node-a\""},
      {"the other agent asks for node-a's web", agentOn("meshlock-agent-b", "agent-b-uid"),
       "spiffe://cluster.local/ns/shop/sa/web", "not_on_node", "no instances of \"shop/web\" found on node \"node-b\""},
      {"a workload is no node agent",
       ReviewedToken{.ns = "shop", .service_account = "web", .pod_name = "web-1", .pod_uid = "w1"},
       "spiffe://cluster.local/ns/shop/sa/web", "not_node_account", "caller (shop/web) is not allowed to impersonate"},
      {"a token bound to no pod", agentOn("", ""), "spiffe://cluster.local/ns/shop/sa/web", "unbound_token", ""},
      {"the pod is gone", agentOn("meshlock-agent-z", "z"), "spiffe://cluster.local/ns/shop/sa/web", "pod_not_found",
       "pod meshlock-system/meshlock-agent-z not found"},
      {"a pod of that name, recreated", agentOn("meshlock-agent-a", "old-uid"), "spiffe://cluster.local/ns/shop/sa/web",
       "pod_uid_mismatch", "pod found, but UID does not match: agent-a-uid vs old-uid"},
      {"a Failed pod does not count", agentOn("meshlock-agent-a", "agent-a-uid"),
       "spiffe://cluster.local/ns/shop/sa/batch", "not_on_node", ""},
      {"another trust domain", agentOn("meshlock-agent-a", "agent-a-uid"), "spiffe://other.example/ns/shop/sa/web",
       "bad_identity", ""},
  };
  for (const auto& c : cases) {
    Decision d = ask(c.caller, c.requested);
    EXPECT_FALSE(d.allowed) << c.name;
    EXPECT_EQ(d.reason, c.reason) << c.name << ": " << d.message;
    if (*c.message) EXPECT_EQ(d.message, c.message) << c.name;
  }
}

TEST_F(NodeAuthorizer, PodAccountMustMatchTheToken) {
  config::ClusterState state;
  state.pods.push_back(pod("meshlock-system", "meshlock-agent-a", "agent-a-uid", "default", "node-a"));
  state.pods.push_back(pod("shop", "web-1", "w1", "web", "node-a"));
  pods = PodDirectory(state);
  Decision d = ask(agentOn("meshlock-agent-a", "agent-a-uid"), "spiffe://cluster.local/ns/shop/sa/web");
  EXPECT_EQ(d.reason, "pod_account_mismatch");
  EXPECT_EQ(d.message, "pod found, but ServiceAccount does not match: default vs meshlock-agent");
}

TEST_F(NodeAuthorizer, AMovedPodMovesItsCertificate) {
  config::ClusterState state;
  state.pods.push_back(pod("meshlock-system", "meshlock-agent-a", "agent-a-uid", "meshlock-agent", "node-a"));
  state.pods.push_back(pod("meshlock-system", "meshlock-agent-b", "agent-b-uid", "meshlock-agent", "node-b"));
  state.pods.push_back(pod("shop", "web-2", "w2", "web", "node-b"));  // web-1 deleted on a, web-2 created on b
  pods = PodDirectory(state);
  EXPECT_FALSE(ask(agentOn("meshlock-agent-a", "agent-a-uid"), "spiffe://cluster.local/ns/shop/sa/web").allowed);
  EXPECT_TRUE(ask(agentOn("meshlock-agent-b", "agent-b-uid"), "spiffe://cluster.local/ns/shop/sa/web").allowed);
}

}  // namespace
}  // namespace meshlock::ca
