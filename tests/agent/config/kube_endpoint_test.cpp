// kubeconfig and in-cluster configuration: the fields client-go's clientcmd
// reads for a static config (k8s.io/client-go/tools/clientcmd/api/v1/types.go).
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "config/kube/endpoint.h"

namespace meshlock::config::kube {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() / ("meshlock-endpoint-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }
  fs::path write(const std::string& name, const std::string& text) const {
    std::ofstream(path_ / name) << text;
    return path_ / name;
  }

 private:
  static inline int counter_ = 0;
  fs::path path_;
};

// "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n" in base64.
constexpr const char* kCaPem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
constexpr const char* kCaData = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUIKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=";

std::string kubeconfig(const std::string& user) {
  return std::string(R"(apiVersion: v1
kind: Config
current-context: agent
contexts:
- name: other
  context: {cluster: nowhere, user: nobody}
- name: agent
  context: {cluster: sim, user: meshlock, namespace: meshlock-system}
clusters:
- name: sim
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority-data: )") + kCaData + R"(
users:
- name: meshlock
  user:
)" + user;
}

TEST(Kubeconfig, CurrentContextWithTokenAndCaData) {
  auto ep = parseKubeconfig(kubeconfig("    token: abc.def\n"), "k.yaml", "/");
  ASSERT_TRUE(ep) << ep.error().describe();
  EXPECT_EQ(ep->server, "https://127.0.0.1:6443");
  EXPECT_EQ(ep->ca_pem, kCaPem);
  EXPECT_EQ(ep->token, "abc.def");
  EXPECT_EQ(ep->ns, "meshlock-system");
  EXPECT_EQ(ep->origin, "kubeconfig k.yaml (context agent)");
}

TEST(Kubeconfig, ClientCertificateFilesResolveAgainstTheKubeconfigDirectory) {
  TempDir dir;
  dir.write("client.crt", "CERT");
  dir.write("client.key", "KEY");
  dir.write("token", "from-file\n");
  auto ep = parseKubeconfig(kubeconfig("    client-certificate: client.crt\n    client-key: client.key\n    tokenFile: token\n"),
                            "k.yaml", dir.path());
  ASSERT_TRUE(ep) << ep.error().describe();
  EXPECT_EQ(ep->client_cert_pem, "CERT");
  EXPECT_EQ(ep->client_key_pem, "KEY");
  EXPECT_EQ(ep->token_file, dir.path() / "token");
  BearerToken token(*ep);
  EXPECT_EQ(token.current(), "from-file");
}

TEST(Kubeconfig, ClientCertificateData) {
  auto ep = parseKubeconfig(kubeconfig("    client-certificate-data: Q0VSVA==\n    client-key-data: S0VZ\n"), "k.yaml", "/");
  ASSERT_TRUE(ep) << ep.error().describe();
  EXPECT_EQ(ep->client_cert_pem, "CERT");
  EXPECT_EQ(ep->client_key_pem, "KEY");
}

TEST(Kubeconfig, BadFilesSayWhatIsWrong) {
  struct Case {
    std::string text;
    std::string error;
  };
  const std::vector<Case> cases = {
      {"a: [", "kubeconfig k.yaml: invalid YAML at line"},
      {"- 1\n", "kubeconfig k.yaml: not a kubeconfig"},
      {"kind: Config\n", "kubeconfig k.yaml: current-context: not set"},
      {"current-context: x\ncontexts: []\n", "contexts: no context named \"x\""},
      {kubeconfig("    exec: {command: aws}\n"), "users[meshlock].user.exec: credential plugins are not supported"},
      {kubeconfig("    client-certificate-data: Q0VSVA==\n"), "client-certificate and client-key go together"},
      {kubeconfig("    tokenFile: /nonexistent/token\n"), "tokenFile /nonexistent/token: cannot open"},
      {"current-context: a\ncontexts: [{name: a, context: {cluster: c}}]\nclusters: [{name: c, cluster: {server: http://x}}]\n",
       "clusters[c].cluster.server: \"http://x\" is not https://"},
      {"current-context: a\ncontexts: [{name: a, context: {cluster: c}}]\nclusters: [{name: c, cluster: {server: https://x}}]\n",
       "certificate-authority-data or certificate-authority: required"},
      {"current-context: a\ncontexts: [{name: a, context: {cluster: c}}]\nclusters: [{name: c, cluster: {server: https://x, "
       "insecure-skip-tls-verify: true}}]\n",
       "insecure-skip-tls-verify: not supported"},
      {"current-context: a\ncontexts: [{name: a, context: {cluster: c}}]\nclusters: [{name: c, cluster: {server: https://x, "
       "certificate-authority-data: '***'}}]\n",
       "certificate-authority-data: not valid base64"},
  };
  for (const Case& c : cases) {
    auto ep = parseKubeconfig(c.text, "k.yaml", "/");
    ASSERT_FALSE(ep) << c.text;
    EXPECT_NE(ep.error().describe().find(c.error), std::string::npos) << ep.error().describe();
  }
  auto missing = loadKubeconfig("/nonexistent/kubeconfig");
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().describe().find("kubeconfig /nonexistent/kubeconfig: cannot open"), std::string::npos);
}

TEST(InCluster, ReadsTheServiceAccountDirectory) {
  TempDir dir;
  dir.write("token", "tok\n");
  dir.write("ca.crt", kCaPem);
  dir.write("namespace", "meshlock-system");
  auto ep = inClusterEndpoint("10.96.0.1", "443", dir.path());
  ASSERT_TRUE(ep) << ep.error().describe();
  EXPECT_EQ(ep->server, "https://10.96.0.1:443");
  EXPECT_EQ(ep->ca_pem, kCaPem);
  EXPECT_EQ(ep->ns, "meshlock-system");
  BearerToken token(*ep);
  EXPECT_EQ(token.current(), "tok");
  auto v6 = inClusterEndpoint("fd00::1", "443", dir.path());
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->server, "https://[fd00::1]:443");
}

TEST(InCluster, MissingPiecesAreNamed) {
  TempDir dir;
  auto no_env = inClusterEndpoint("", "", dir.path());
  ASSERT_FALSE(no_env);
  EXPECT_NE(no_env.error().describe().find("KUBERNETES_SERVICE_HOST"), std::string::npos);
  auto no_ca = inClusterEndpoint("10.96.0.1", "443", dir.path());
  ASSERT_FALSE(no_ca);
  EXPECT_NE(no_ca.error().describe().find("ca.crt"), std::string::npos);
  dir.write("ca.crt", kCaPem);
  auto no_token = inClusterEndpoint("10.96.0.1", "443", dir.path());
  ASSERT_FALSE(no_token);
  EXPECT_NE(no_token.error().describe().find("token"), std::string::npos);
}

TEST(BearerToken, ARotatedTokenIsPickedUp) {
  TempDir dir;
  ApiEndpoint ep;
  ep.token_file = dir.write("token", "one");
  BearerToken token(ep, std::chrono::milliseconds(0));
  EXPECT_EQ(token.current(), "one");
  // Kubelet writes a new file; its mtime moves.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  dir.write("token", "two");
  fs::last_write_time(dir.path() / "token", fs::file_time_type::clock::now() + std::chrono::seconds(1));
  EXPECT_EQ(token.current(), "two");
  // Half-written (empty) or gone: the last token stays.
  dir.write("token", "");
  fs::last_write_time(dir.path() / "token", fs::file_time_type::clock::now() + std::chrono::seconds(2));
  EXPECT_EQ(token.current(), "two");
  fs::remove(dir.path() / "token");
  EXPECT_EQ(token.current(), "two");
  EXPECT_FALSE(token.refresh());
}

}  // namespace
}  // namespace meshlock::config::kube
