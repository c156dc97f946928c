// TokenReview request and answer (agent/ca/token_review.h), against the
// authentication.k8s.io/v1 shapes (kubernetes/api authentication/v1/types.go)
// and istiod's order of checks (security/pkg/server/ca/authenticate/kubeauth/kube_jwt.go).
#include "ca/token_review.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace meshlock::ca {
namespace {

const std::vector<std::string> kAudiences{"istio-ca"};

std::string answer(nlohmann::json status) {
  return nlohmann::json{{"apiVersion", "authentication.k8s.io/v1"}, {"kind", "TokenReview"}, {"status", status}}.dump();
}

nlohmann::json boundAgent() {
  return {{"authenticated", true},
          {"audiences", {"istio-ca"}},
          {"user",
           {{"username", "system:serviceaccount:meshlock-system:meshlock-agent"},
            {"uid", "sa-uid"},
            {"groups", {"system:serviceaccounts", "system:serviceaccounts:meshlock-system", "system:authenticated"}},
            {"extra",
             {{"authentication.kubernetes.io/pod-name", {"meshlock-agent-x1"}},
              {"authentication.kubernetes.io/pod-uid", {"uid-1"}},
              {"authentication.kubernetes.io/node-name", {"node-a"}}}}}}};
}

TEST(TokenReview, RequestCarriesTokenAndAudiences) {
  auto request = nlohmann::json::parse(tokenReviewRequest("tok", kAudiences));
  EXPECT_EQ(request["apiVersion"], "authentication.k8s.io/v1");
  EXPECT_EQ(request["kind"], "TokenReview");
  EXPECT_EQ(request["spec"]["token"], "tok");
  EXPECT_EQ(request["spec"]["audiences"], nlohmann::json({"istio-ca"}));
  EXPECT_FALSE(nlohmann::json::parse(tokenReviewRequest("tok", {}))["spec"].contains("audiences"));
}

TEST(TokenReview, BoundServiceAccountToken) {
  auto token = parseTokenReview(answer(boundAgent()), kAudiences);
  ASSERT_TRUE(token) << token.error().message;
  EXPECT_EQ(token->account(), "meshlock-system/meshlock-agent");
  EXPECT_EQ(token->pod_name, "meshlock-agent-x1");
  EXPECT_EQ(token->pod_uid, "uid-1");
}

TEST(TokenReview, RefusalsInIstiodsOrder) {
  struct Case {
    const char* name;
    std::function<void(nlohmann::json&)> change;
    const char* reason;
  };
  const Case cases[] = {
      {"status.error wins", [](auto& s) { s["error"] = "token expired"; }, "not_authenticated"},
      {"not authenticated", [](auto& s) { s["authenticated"] = false; }, "not_authenticated"},
      {"audience not granted", [](auto& s) { s["audiences"] = {"kubernetes"}; }, "wrong_audience"},
      {"no audiences in the answer", [](auto& s) { s.erase("audiences"); }, "wrong_audience"},
      {"a user, not a service account", [](auto& s) { s["user"]["groups"] = {"system:authenticated"}; },
       "not_service_account"},
      {"username of three parts", [](auto& s) { s["user"]["username"] = "system:serviceaccount:ns"; },
       "not_service_account"},
      {"username of five parts", [](auto& s) { s["user"]["username"] = "system:serviceaccount:a:b:c"; },
       "not_service_account"},
  };
  for (const auto& c : cases) {
    nlohmann::json status = boundAgent();
    c.change(status);
    auto token = parseTokenReview(answer(status), kAudiences);
    ASSERT_FALSE(token) << c.name;
    EXPECT_EQ(token.error().reason, c.reason) << c.name << ": " << token.error().message;
  }
  EXPECT_EQ(parseTokenReview("not json", kAudiences).error().reason, "api_error");
  EXPECT_EQ(parseTokenReview("[]", kAudiences).error().reason, "api_error");
}

TEST(TokenReview, UnboundTokenHasNoPod) {
  nlohmann::json status = boundAgent();
  status["user"].erase("extra");
  auto token = parseTokenReview(answer(status), kAudiences);
  ASSERT_TRUE(token);
  EXPECT_TRUE(token->pod_name.empty());
  // No audiences asked: the API server's own were used; nothing to compare.
  status.erase("audiences");
  EXPECT_TRUE(parseTokenReview(answer(status), {}));
}

}  // namespace
}  // namespace meshlock::ca
