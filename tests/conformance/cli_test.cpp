// Runs the real meshlockctl binary on a conformance case (check -o json,
// explain, validate) so the CLI wiring, JSON keys and exit codes are tested.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <array>
#include <cstdio>
#include <fstream>
#include <map>
#include <sys/wait.h>

#include "case_loader.h"

namespace meshlock::conformance {
namespace {

struct CliRun {
  int exit_code = -1;
  std::string out;
};

CliRun run(const std::string& args) {
  std::string cmd = std::string(MESHLOCK_BIN_DIR) + "/meshlockctl " + args + " 2>/dev/null";
  CliRun r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

class MeshlockctlCli : public testing::Test {
 protected:
  void SetUp() override {
    auto file = std::filesystem::path(MESHLOCK_SHARED_DIR) / "conformance/policy/02-namespace-strict.yaml";
    ASSERT_TRUE(std::filesystem::exists(file)) << file << " is missing";
    case_ = loadCase(file);
    dir_ = writeManifests(case_, "cli");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  Case case_;
  std::filesystem::path dir_;
};

TEST_F(MeshlockctlCli, CheckJsonMatchesTheCase) {
  for (const Expectation& x : case_.expect) {
    CliRun r = run("check --manifests " + dir_.string() + " --from " + x.from + " --to " + x.to + " -o json");
    ASSERT_EQ(r.exit_code, 0) << r.out;
    auto j = nlohmann::json::parse(r.out);
    for (const char* key : {"client_tls", "server_mode", "outcome", "expected_identities", "decided_by"}) {
      EXPECT_TRUE(j.contains(key)) << key;
    }
    if (x.client_tls) {
      EXPECT_EQ(j["client_tls"], *x.client_tls);
    }
    if (x.server_mode) {
      EXPECT_EQ(j["server_mode"], *x.server_mode);
    }
    if (x.outcome) {
      EXPECT_EQ(j["outcome"], *x.outcome);
    }
    if (x.expected_identities) {
      EXPECT_EQ(j["expected_identities"].template get<std::vector<std::string>>(), *x.expected_identities);
    }
  }
}

TEST_F(MeshlockctlCli, CheckTextNamesTheDecidingResource) {
  CliRun r = run("check --manifests " + dir_.string() + " --from legacy/client --to shop/web:8080");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("refused"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("PeerAuthentication/shop/default"), std::string::npos) << r.out;
}

TEST_F(MeshlockctlCli, ExitCodes) {
  EXPECT_EQ(run("check --manifests " + dir_.string() + " --from nope/none --to shop/web:8080").exit_code, 1);
  EXPECT_EQ(run("check --manifests " + dir_.string() + " --from shop/client --to shop/web").exit_code, 2);
  EXPECT_EQ(run("check --manifests " + dir_.string() + " --from shop --to shop/web:80").exit_code, 2);
  EXPECT_EQ(run("check --manifests /nonexistent/dir --from shop/client --to shop/web:80").exit_code, 1);
  EXPECT_EQ(run("check --from shop/client").exit_code, 2);
}

TEST_F(MeshlockctlCli, ExplainJson) {
  CliRun r = run("explain --manifests " + dir_.string() + " shop/web -o json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_TRUE(j["inbound"].is_array());
  bool saw8080 = false;
  for (const auto& p : j["inbound"]) {
    if (p["port"] == 8080) {
      saw8080 = true;
      EXPECT_EQ(p["mode"], "STRICT");
    }
  }
  EXPECT_TRUE(saw8080);
  EXPECT_TRUE(j["outbound"].is_array());
}

TEST_F(MeshlockctlCli, ValidateExitCodes) {
  EXPECT_EQ(run("validate --manifests " + dir_.string()).exit_code, 0);
  std::ofstream(dir_ / "bad.yaml") << "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
                                      "metadata: {name: x, namespace: shop}\nspec: {mtls: {mode: STRCT}}\n";
  CliRun r = run("validate --manifests " + dir_.string());
  EXPECT_EQ(r.exit_code, 1);
}

// CI use: --fail-on warning makes warnings fail too; objects without a
// namespace need -n (never silently "default"); kinds not read are listed once.
TEST_F(MeshlockctlCli, ValidateFailOnNamespaceAndIgnoredKinds) {
  std::ofstream(dir_ / "warn.yaml") << "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
                                       "metadata: {name: typo, namespace: shop}\n"
                                       "spec: {host: wbe, trafficPolicy: {tls: {mode: DISABLE}}}\n";
  EXPECT_EQ(run("validate --manifests " + dir_.string()).exit_code, 0);
  EXPECT_EQ(run("validate --manifests " + dir_.string() + " --fail-on warning").exit_code, 1);
  EXPECT_EQ(run("validate --manifests " + dir_.string() + " --fail-on nothing").exit_code, 2);
  std::filesystem::remove(dir_ / "warn.yaml");
  std::ofstream(dir_ / "nons.yaml") << "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
                                       "metadata: {name: loose}\nspec: {mtls: {mode: PERMISSIVE}}\n---\n"
                                       "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, namespace: shop}\n---\n"
                                       "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: e, namespace: shop}\n";
  CliRun refused = run("validate --manifests " + dir_.string() + " -o json");
  EXPECT_EQ(refused.exit_code, 1);
  auto j = nlohmann::json::parse(refused.out);
  ASSERT_EQ(j["errors"].size(), 1u) << refused.out;
  EXPECT_EQ(j["errors"][0]["field"], "metadata.namespace");
  EXPECT_NE(j["errors"][0]["message"].get<std::string>().find("PeerAuthentication loose"), std::string::npos);
  EXPECT_EQ(j["ignored_kinds"]["apps/v1 Deployment"], 2);
  EXPECT_EQ(run("validate --manifests " + dir_.string() + " -n shop").exit_code, 0);
  CliRun check = run("check --manifests " + dir_.string() + " -n legacy --from shop/client --to shop/web:8080 -o json");
  EXPECT_EQ(check.exit_code, 0) << check.out;
}

// The authorization keys of `check -o json`, and `explain`'s per-source rows,
// through the binary on the namespace-isolation case.
TEST(MeshlockctlAuthz, CheckAndExplainShowTheDecision) {
  auto file = std::filesystem::path(MESHLOCK_CONFORMANCE_LOCAL_DIR) / "authz/01-namespace-isolation.yaml";
  Case c = loadCase(file);
  auto dir = writeManifests(c, "cli-authz");
  for (const Expectation& x : c.expect) {
    CliRun r = run("check --manifests " + dir.string() + " --from " + x.from + " --to " + x.to + " -o json");
    ASSERT_EQ(r.exit_code, 0) << r.out;
    auto j = nlohmann::json::parse(r.out);
    ASSERT_TRUE(x.authorization && *x.authorization);
    EXPECT_EQ(j["authorization"], **x.authorization) << x.from;
    ASSERT_TRUE(x.authorization_policy);
    EXPECT_EQ(j["authorization_policy"], *x.authorization_policy ? nlohmann::json(**x.authorization_policy)
                                                                   : nlohmann::json(nullptr))
        << x.from;
  }
  CliRun r = run("explain --manifests " + dir.string() + " shop/web -o json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["authorization_policies"], nlohmann::json::array({"shop/same-namespace"}));
  EXPECT_EQ(j["served_reason"], "namespace label meshlock.io/mtls=enabled");
  std::map<std::string, std::string> decided;  // "from port" -> authorization
  for (const auto& row : j["inbound_authorization"])
    decided[row["from"].get<std::string>() + " " + std::to_string(row["port"].get<int>())] = row["authorization"];
  EXPECT_EQ(decided["shop/client 8080"], "allow");
  EXPECT_EQ(decided["shop/client 9090"], "allow");
  EXPECT_EQ(decided["other/client 8080"], "deny");
  EXPECT_EQ(decided["legacy/client 9090"], "deny");
  EXPECT_EQ(j["inbound_authorization_truncated"], false);
  CliRun limited = run("explain --manifests " + dir.string() + " shop/web --sources 1 -o json");
  auto k = nlohmann::json::parse(limited.out);
  EXPECT_EQ(k["inbound_authorization"].size(), 1u);
  EXPECT_EQ(k["inbound_authorization_truncated"], true);
  CliRun text = run("explain --manifests " + dir.string() + " shop/web");
  EXPECT_NE(text.out.find("authorization (policies: shop/same-namespace)"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("ALLOW policies apply, none matched"), std::string::npos) << text.out;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace meshlock::conformance
