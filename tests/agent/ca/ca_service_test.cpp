// CreateCertificate in process: a CSR made by the agent's own CA client code
// (buildCsrPem), the answer checked by the agent's acceptIssuedChain, every
// refusal with istiod's status code (security/pkg/server/ca/server.go at
// 86c9f01f: UNAUTHENTICATED for the caller, INVALID_ARGUMENT for a bad CSR or
// TTL) except node authorization, answered PERMISSION_DENIED with the reason
// (istiod hides it behind UNAUTHENTICATED; a node agent may know why).
#include "ca/ca_service.h"

#include <gtest/gtest.h>

#include <map>

#include "../identity/test_support.h"
#include "identity/ca_client.h"
#include "identity/csr.h"
#include "identity/proto/ca.pb.h"
#include "identity/trust_bundle.h"
#include "identity/x509_util.h"

namespace meshlock::ca {
namespace {

using grpc::StatusCode;

class FakeReviewer final : public TokenReviewer {
 public:
  std::map<std::string, ReviewedToken> tokens;
  int calls = 0;
  TokenReviewResult review(const std::string& token) override {
    ++calls;
    auto it = tokens.find(token);
    if (it == tokens.end()) return std::unexpected(TokenRejection{"not_authenticated", "the token is not authenticated"});
    return it->second;
  }
};

identity::Seconds testNow() { return std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now()); }

class CaServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = std::filesystem::temp_directory_path() / ("meshlock-ca-service-" + std::to_string(getpid()));
    std::filesystem::remove_all(dir);
    ASSERT_NO_FATAL_FAILURE(identity::testing::makeOpensslPluginCa(dir));
    auto ca = identity::MeshCa::loadPlugin(dir, testNow());
    ASSERT_TRUE(ca) << ca.error().describe();
    mesh_ca = std::move(*ca);
    reviewer = std::make_shared<FakeReviewer>();
    reviewer->tokens["agent-a"] = ReviewedToken{"meshlock-system", "meshlock-agent", "meshlock-agent-a", "agent-a-uid"};
    reviewer->tokens["web-token"] = ReviewedToken{"shop", "web", "web-1", "w1"};
    config::ClusterState state;
    auto add = [&](std::string ns, std::string name, std::string uid, std::string sa, std::string node) {
      config::Pod p;
      p.meta.ref = {.kind = "Pod", .ns = ns, .name = name};
      p.meta.uid = uid;
      p.service_account = sa;
      p.node_name = node;
      state.pods.push_back(p);
    };
    add("meshlock-system", "meshlock-agent-a", "agent-a-uid", "meshlock-agent", "node-a");
    add("shop", "web-1", "w1", "web", "node-a");
    add("shop", "db-1", "d1", "db", "node-b");
    pods = std::make_shared<const PodDirectory>(state);
    CaServiceConfig config{.trust_domain = *identity::TrustDomain::parse("cluster.local")};
    config.burst = 20;
    config.rate_per_second = 0.001;
    service = std::make_unique<CaService>(config, mesh_ca, reviewer, [this] { return pods; }, testNow);
  }
  void TearDown() override { std::filesystem::remove_all(dir); }

  // A request as the agent's CA client makes it; returns the call and keeps the key.
  CertificateCall request(const std::string& token, const std::string& impersonate, int64_t ttl = 3600) {
    auto made = identity::generateP256Key();
    key = std::move(*made);
    auto id = identity::SpiffeId::parse(impersonate.empty() ? "spiffe://cluster.local/ns/shop/sa/web" : impersonate);
    istio::v1::auth::IstioCertificateRequest r;
    r.set_csr(*identity::buildCsrPem(key.get(), *id));
    r.set_validity_duration(ttl);
    if (!impersonate.empty())
      (*r.mutable_metadata()->mutable_fields())[identity::kImpersonatedIdentityKey].set_string_value(impersonate);
    return CertificateCall{.request = r.SerializeAsString(), .authorization = "Bearer " + token, .peer = "10.0.0.1:4000"};
  }

  std::filesystem::path dir;
  std::shared_ptr<identity::MeshCa> mesh_ca;
  std::shared_ptr<FakeReviewer> reviewer;
  std::shared_ptr<const PodDirectory> pods;
  std::unique_ptr<CaService> service;
  bssl::UniquePtr<EVP_PKEY> key;
};

TEST_F(CaServiceTest, NodeAgentGetsAWorkloadCertificateTheAgentAccepts) {
  const std::string web = "spiffe://cluster.local/ns/shop/sa/web";
  auto answer = service->createCertificate(request("agent-a", web));
  ASSERT_TRUE(answer) << answer.error().describe();
  istio::v1::auth::IstioCertificateResponse response;
  ASSERT_TRUE(response.ParseFromString(*answer));
  // Leaf, intermediate, root: one certificate per element, root last.
  ASSERT_EQ(response.cert_chain_size(), 3);
  auto roots = identity::readCertificatesPem(dir / "root-cert.pem");
  auto bundle = identity::TrustBundle::create(std::move(*roots), 1);
  std::vector<std::string> chain(response.cert_chain().begin(), response.cert_chain().end());
  auto accepted = identity::acceptIssuedChain(chain, *identity::SpiffeId::parse(web), std::move(key), **bundle,
                                              *identity::TrustDomain::parse("cluster.local"), testNow());
  ASSERT_TRUE(accepted) << accepted.error().describe();
  EXPECT_EQ(accepted->notAfter - accepted->notBefore, std::chrono::seconds(3600 + 60));  // 1 h, backdated a minute for slow clocks
  EXPECT_EQ(service->outcomes().at("issued"), 1u);
}

TEST_F(CaServiceTest, WithoutImpersonationTheCallerGetsItsOwnIdentity) {
  auto answer = service->createCertificate(request("web-token", ""));
  ASSERT_TRUE(answer) << answer.error().describe();
  istio::v1::auth::IstioCertificateResponse response;
  ASSERT_TRUE(response.ParseFromString(*answer));
  auto roots = identity::readCertificatesPem(dir / "root-cert.pem");
  auto bundle = identity::TrustBundle::create(std::move(*roots), 1);
  std::vector<std::string> chain(response.cert_chain().begin(), response.cert_chain().end());
  // Exactly the caller's own identity as the only URI SAN, or the agent's check refuses it.
  auto accepted = identity::acceptIssuedChain(chain, *identity::SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/web"),
                                              std::move(key), **bundle, *identity::TrustDomain::parse("cluster.local"),
                                              testNow());
  EXPECT_TRUE(accepted) << accepted.error().describe();
}

TEST_F(CaServiceTest, Refusals) {
  struct Case {
    const char* name;
    CertificateCall call;
    StatusCode code;
    const char* outcome;
  };
  std::vector<Case> cases;
  cases.push_back({"no token", request("", "spiffe://cluster.local/ns/shop/sa/web"), StatusCode::kUnauthenticated, "not_authenticated"});
  cases.back().call.authorization = "";
  cases.back().outcome = "no_token";
  cases.push_back({"unknown token", request("forged", "spiffe://cluster.local/ns/shop/sa/web"), StatusCode::kUnauthenticated,
                   "not_authenticated"});
  cases.push_back({"account on another node", request("agent-a", "spiffe://cluster.local/ns/shop/sa/db"),
                   StatusCode::kPermissionDenied, "not_on_node"});
  cases.push_back({"a workload impersonating", request("web-token", "spiffe://cluster.local/ns/shop/sa/db"),
                   StatusCode::kPermissionDenied, "not_node_account"});
  cases.push_back({"not a SPIFFE identity", request("agent-a", "spiffe://cluster.local/ns/shop/sa/web"),
                   StatusCode::kInvalidArgument, "bad_identity"});
  {
    istio::v1::auth::IstioCertificateRequest r;
    r.ParseFromString(cases.back().call.request);
    (*r.mutable_metadata()->mutable_fields())[identity::kImpersonatedIdentityKey].set_string_value("spiffe://cluster.local/web");
    cases.back().call.request = r.SerializeAsString();
  }
  cases.push_back({"TTL over the maximum", request("agent-a", "spiffe://cluster.local/ns/shop/sa/web", 91 * 24 * 3600),
                   StatusCode::kInvalidArgument, "bad_ttl"});
  cases.push_back({"a CSR that is not one", request("agent-a", "spiffe://cluster.local/ns/shop/sa/web"),
                   StatusCode::kInvalidArgument, "bad_csr"});
  {
    istio::v1::auth::IstioCertificateRequest r;
    r.ParseFromString(cases.back().call.request);
    r.set_csr("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n");
    cases.back().call.request = r.SerializeAsString();
  }
  cases.push_back({"not a request at all", CertificateCall{"\xff\xff\xff", "Bearer agent-a", "10.0.0.1:1"},
                   StatusCode::kInvalidArgument, "bad_request"});
  for (const auto& c : cases) {
    auto answer = service->createCertificate(c.call);
    ASSERT_FALSE(answer) << c.name;
    EXPECT_EQ(answer.error().code, c.code) << c.name << ": " << answer.error().describe();
    EXPECT_EQ(service->outcomes().count(c.outcome), 1u) << c.name << ": " << answer.error().describe();
  }
  EXPECT_EQ(service->outcomes().count("issued"), 0u);
}

TEST_F(CaServiceTest, TtlOfZeroIsTheDefault) {
  auto answer = service->createCertificate(request("agent-a", "spiffe://cluster.local/ns/shop/sa/web", 0));
  ASSERT_TRUE(answer) << answer.error().describe();
  istio::v1::auth::IstioCertificateResponse response;
  ASSERT_TRUE(response.ParseFromString(*answer));
  auto leaf = identity::parseCertificatesPem(response.cert_chain(0), "leaf");
  auto* cert = leaf->front().get();
  EXPECT_NEAR(std::chrono::duration<double>(identity::notAfter(cert) - testNow()).count(), 24 * 3600, 60);
}

TEST_F(CaServiceTest, PodsNotListedYetIsUnavailable) {
  pods = nullptr;
  auto answer = service->createCertificate(request("agent-a", "spiffe://cluster.local/ns/shop/sa/web"));
  ASSERT_FALSE(answer);
  EXPECT_EQ(answer.error().code, StatusCode::kUnavailable);
}

TEST_F(CaServiceTest, RateLimitedPerCallerAddressBeforeAskingTheApi) {
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(service->createCertificate(request("agent-a", "spiffe://cluster.local/ns/shop/sa/web")));
  const int reviews = reviewer->calls;
  auto answer = service->createCertificate(request("agent-a", "spiffe://cluster.local/ns/shop/sa/web"));
  ASSERT_FALSE(answer);
  EXPECT_EQ(answer.error().code, StatusCode::kResourceExhausted);
  EXPECT_EQ(reviewer->calls, reviews);
  CertificateCall other = request("agent-a", "spiffe://cluster.local/ns/shop/sa/web");
  other.peer = "10.0.0.2:4000";
  EXPECT_TRUE(service->createCertificate(other));
}

}  // namespace
}  // namespace meshlock::ca
