// Reads conformance cases (../shared/conformance/README.md format) and writes
// a case's manifests into a directory, as `meshlockctl check --manifests` reads them.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace meshlock::conformance {

struct Expectation {
  std::string from;
  std::string to;
  std::optional<std::string> client_tls;
  std::optional<std::string> server_mode;
  std::optional<std::string> outcome;
  std::optional<std::vector<std::string>> expected_identities;
  // authz/ cases: "allow" | "deny" | "audit", or null (nothing decided: the
  // destination is not served); the deciding policy "NS/NAME", or null.
  std::optional<std::string> tunnel;  // istio_mtls | hbone | none
  std::optional<std::optional<std::string>> authorization;
  std::optional<std::optional<std::string>> authorization_policy;
};

// What `meshlockctl validate` must find, among the codes named (others are
// not compared): "CODE Kind/ns/name" per finding, as a multiset.
struct FindingsExpectation {
  std::vector<std::string> codes;
  std::vector<std::string> expect;
};

struct Case {
  std::filesystem::path file;
  std::string name;
  std::string manifests_yaml;  // every manifest, one YAML document each
  std::vector<Expectation> expect;
  std::optional<FindingsExpectation> findings;  // key `findings` (meshlock's own cases only)
  // key `namespace`: where objects without metadata.namespace go, as
  // `kubectl apply -n` would put them (default: "default").
  std::string default_namespace = "default";
};

// Every *.yaml in `dir`, sorted by name. Throws on unreadable cases (a test failure).
std::vector<std::filesystem::path> caseFiles(const std::filesystem::path& dir);
Case loadCase(const std::filesystem::path& file);

// A fresh directory holding the case's manifests in manifests.yaml.
std::filesystem::path writeManifests(const Case& c, const std::string& tag);

}  // namespace meshlock::conformance
