// kubeconfig and in-cluster configuration. The fields read are those
// client-go's clientcmd reads for a static configuration
// (k8s.io/client-go/tools/clientcmd/api/v1/types.go); exec and auth-provider
// plugins are refused by name rather than ignored.
#include "config/kube/endpoint.h"

#include <yaml-cpp/yaml.h>

#include <fstream>
#include <sstream>
#include <system_error>

#include "config/manifest.h"

namespace meshlock::config::kube {
namespace {

Result<std::string> readFile(const std::filesystem::path& file, std::string_view what) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return failErrno(std::string(what) + " " + file.string() + ": cannot open");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ' || s.back() == '\t')) s.pop_back();
  std::size_t first = s.find_first_not_of(" \t\r\n");
  return first == std::string::npos ? std::string() : s.substr(first);
}

// yaml-cpp throws; every read of the kubeconfig goes through here.
std::optional<std::string> scalarAt(const YAML::Node& map, const char* key) {
  if (!map.IsMap()) return std::nullopt;
  YAML::Node n = map[key];
  if (!n.IsDefined() || n.IsNull() || !n.IsScalar()) return std::nullopt;
  return n.Scalar();
}

YAML::Node namedEntry(const YAML::Node& list, const std::string& name, const char* inner) {
  if (!list.IsSequence()) return YAML::Node(YAML::NodeType::Undefined);
  for (const YAML::Node& entry : list) {
    if (scalarAt(entry, "name") == name) return entry[inner];
  }
  return YAML::Node(YAML::NodeType::Undefined);
}

// `X-data` (base64) or `X` (a file path, relative to the kubeconfig's directory).
Result<std::string> dataOrFile(const YAML::Node& map, const std::string& field, std::string_view where,
                               const std::filesystem::path& base_dir) {
  if (auto data = scalarAt(map, (field + "-data").c_str())) {
    auto decoded = decodeBase64(*data);
    if (!decoded) return fail(std::string(where) + "." + field + "-data: not valid base64");
    return *decoded;
  }
  if (auto file = scalarAt(map, field.c_str())) {
    std::filesystem::path path(*file);
    if (path.is_relative()) path = base_dir / path;
    return readFile(path, std::string(where) + "." + field);
  }
  return std::string();
}

}  // namespace


Result<ApiEndpoint> parseKubeconfig(std::string_view yaml, std::string_view origin,
                                    const std::filesystem::path& base_dir) {
  const std::string file(origin);
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    return fail("kubeconfig " + file + ": invalid YAML at line " + std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
  try {
    if (!root.IsMap()) return fail("kubeconfig " + file + ": not a kubeconfig (expected a map)");
    auto context_name = scalarAt(root, "current-context");
    if (!context_name || context_name->empty()) return fail("kubeconfig " + file + ": current-context: not set");
    YAML::Node context = namedEntry(root["contexts"], *context_name, "context");
    if (!context.IsMap()) {
      return fail("kubeconfig " + file + ": contexts: no context named \"" + *context_name + "\"");
    }
    auto cluster_name = scalarAt(context, "cluster").value_or("");
    auto user_name = scalarAt(context, "user").value_or("");
    YAML::Node cluster = namedEntry(root["clusters"], cluster_name, "cluster");
    if (!cluster.IsMap()) {
      return fail("kubeconfig " + file + ": clusters: no cluster named \"" + cluster_name + "\" (context " +
                  *context_name + ")");
    }
    ApiEndpoint ep;
    ep.origin = "kubeconfig " + file + " (context " + *context_name + ")";
    ep.ns = scalarAt(context, "namespace").value_or("default");
    const std::string cwhere = "clusters[" + cluster_name + "].cluster";
    ep.server = scalarAt(cluster, "server").value_or("");
    if (ep.server.empty()) return fail("kubeconfig " + file + ": " + cwhere + ".server: required");
    if (!ep.server.starts_with("https://")) {
      return fail("kubeconfig " + file + ": " + cwhere + ".server: \"" + ep.server + "\" is not https://");
    }
    if (scalarAt(cluster, "insecure-skip-tls-verify") == "true") {
      return fail("kubeconfig " + file + ": " + cwhere +
                  ".insecure-skip-tls-verify: not supported (the agent must verify the API server)");
    }
    auto ca = dataOrFile(cluster, "certificate-authority", "kubeconfig " + file + ": " + cwhere, base_dir);
    if (!ca) return std::unexpected(ca.error());
    ep.ca_pem = *ca;
    if (ep.ca_pem.empty()) {
      return fail("kubeconfig " + file + ": " + cwhere +
                  ": certificate-authority-data or certificate-authority: required (the system CAs are not used)");
    }
    if (!user_name.empty()) {
      YAML::Node user = namedEntry(root["users"], user_name, "user");
      const std::string uwhere = "kubeconfig " + file + ": users[" + user_name + "].user";
      if (!user.IsDefined()) return fail("kubeconfig " + file + ": users: no user named \"" + user_name + "\"");
      if (user.IsMap()) {
        for (const char* plugin : {"exec", "auth-provider"}) {
          if (user[plugin].IsDefined()) return fail(uwhere + "." + plugin + ": credential plugins are not supported");
        }
        if (user["username"].IsDefined() || user["password"].IsDefined()) {
          return fail(uwhere + ".username/password: basic authentication is not supported");
        }
        ep.token = trim(scalarAt(user, "token").value_or(""));
        if (auto token_file = scalarAt(user, "tokenFile")) {
          ep.token_file = *token_file;
          if (ep.token_file.is_relative()) ep.token_file = base_dir / ep.token_file;
          auto text = readFile(ep.token_file, uwhere + ".tokenFile");
          if (!text) return std::unexpected(text.error());
        }
        auto cert = dataOrFile(user, "client-certificate", uwhere, base_dir);
        if (!cert) return std::unexpected(cert.error());
        auto key = dataOrFile(user, "client-key", uwhere, base_dir);
        if (!key) return std::unexpected(key.error());
        if (cert->empty() != key->empty()) {
          return fail(uwhere + ": client-certificate and client-key go together (one is missing)");
        }
        ep.client_cert_pem = *cert;
        ep.client_key_pem = *key;
      }
    }
    return ep;
  } catch (const YAML::Exception& e) {
    return fail("kubeconfig " + file + ": " + e.msg);
  }
}

Result<ApiEndpoint> loadKubeconfig(const std::filesystem::path& file) {
  auto text = readFile(file, "kubeconfig");
  if (!text) return std::unexpected(text.error());
  return parseKubeconfig(*text, file.string(), file.parent_path());
}

Result<ApiEndpoint> inClusterEndpoint(std::string_view host, std::string_view port,
                                      const std::filesystem::path& dir) {
  if (host.empty() || port.empty()) {
    return fail("in-cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must both be set");
  }
  ApiEndpoint ep;
  ep.origin = "in-cluster (" + dir.string() + ")";
  // An IPv6 service host needs brackets in the URL.
  const bool v6 = std::string_view(host).find(':') != std::string_view::npos;
  ep.server = "https://" + (v6 ? "[" + std::string(host) + "]" : std::string(host)) + ":" + std::string(port);
  auto ca = readFile(dir / "ca.crt", "in-cluster: service account CA");
  if (!ca) return std::unexpected(ca.error());
  ep.ca_pem = *ca;
  ep.token_file = dir / "token";
  auto token = readFile(ep.token_file, "in-cluster: service account token");
  if (!token) return std::unexpected(token.error());
  if (trim(*token).empty()) return fail("in-cluster: service account token " + ep.token_file.string() + ": empty");
  auto ns = readFile(dir / "namespace", "in-cluster: service account namespace");
  ep.ns = ns ? trim(*ns) : "default";
  return ep;
}

BearerToken::BearerToken(const ApiEndpoint& endpoint, std::chrono::milliseconds check_every)
    : token_(endpoint.token), file_(endpoint.token_file), check_every_(check_every) {
  if (!file_.empty()) {
    std::lock_guard lock(mutex_);
    reread();
  }
}

void BearerToken::reread() {
  checked_at_ = std::chrono::steady_clock::now();
  std::error_code ec;
  auto mtime = std::filesystem::last_write_time(file_, ec);
  if (ec) return;  // keep the last token: a rotation replaces the file, it never removes it for long
  std::ifstream in(file_, std::ios::binary);
  if (!in) return;
  std::ostringstream text;
  text << in.rdbuf();
  std::string token = trim(text.str());
  if (token.empty()) return;  // half-written: keep the last one
  token_ = std::move(token);
  mtime_ = mtime;
}

std::string BearerToken::current() {
  std::lock_guard lock(mutex_);
  if (!file_.empty() && std::chrono::steady_clock::now() - checked_at_ >= check_every_) {
    std::error_code ec;
    auto mtime = std::filesystem::last_write_time(file_, ec);
    if (!ec && mtime != mtime_) {
      reread();
    } else {
      checked_at_ = std::chrono::steady_clock::now();
    }
  }
  return token_;
}

bool BearerToken::refresh() {
  std::lock_guard lock(mutex_);
  if (file_.empty()) return false;
  std::string before = token_;
  reread();
  return token_ != before;
}

}  // namespace meshlock::config::kube
