// Conformance case files → Case values.
#include "case_loader.h"

#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <fstream>
#include <stdexcept>

namespace meshlock::conformance {

std::vector<std::filesystem::path> caseFiles(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (e.path().extension() == ".yaml") out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

namespace {

// A key that may be present with a string or with null.
std::optional<std::optional<std::string>> nullableString(const YAML::Node& node) {
  if (!node) return std::nullopt;
  if (node.IsNull()) return std::optional<std::string>();
  return node.as<std::string>();
}

}  // namespace

Case loadCase(const std::filesystem::path& file) {
  YAML::Node root = YAML::LoadFile(file.string());
  Case c;
  c.file = file;
  c.name = root["name"].as<std::string>("");
  if (root["namespace"]) c.default_namespace = root["namespace"].as<std::string>();
  YAML::Emitter out;
  for (const auto& m : root["manifests"]) {
    out << YAML::BeginDoc << m << YAML::EndDoc;
  }
  c.manifests_yaml = out.c_str();
  for (const auto& e : root["expect"]) {
    Expectation x;
    x.from = e["from"].as<std::string>();
    x.to = e["to"].as<std::string>();
    if (e["client_tls"]) x.client_tls = e["client_tls"].as<std::string>();
    if (e["server_mode"]) x.server_mode = e["server_mode"].as<std::string>();
    if (e["outcome"]) x.outcome = e["outcome"].as<std::string>();
    if (e["expected_identities"]) x.expected_identities = e["expected_identities"].as<std::vector<std::string>>();
    if (e["tunnel"]) x.tunnel = e["tunnel"].as<std::string>();
    x.authorization = nullableString(e["authorization"]);
    x.authorization_policy = nullableString(e["authorization_policy"]);
    c.expect.push_back(std::move(x));
  }
  if (const YAML::Node f = root["findings"]) {
    c.findings = FindingsExpectation{f["codes"].as<std::vector<std::string>>(),
                                     f["expect"] ? f["expect"].as<std::vector<std::string>>() : std::vector<std::string>{}};
  }
  if (c.expect.empty() && !c.findings) throw std::runtime_error(file.string() + ": no expectations");
  return c;
}

std::filesystem::path writeManifests(const Case& c, const std::string& tag) {
  auto dir = std::filesystem::temp_directory_path() /
             ("meshlock-conformance-" + tag + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "manifests.yaml") << c.manifests_yaml;
  return dir;
}

}  // namespace meshlock::conformance
