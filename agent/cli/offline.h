// What meshlockctl's offline commands (check, explain, validate) share:
// loading a manifest directory into a policy index, and rendering.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <expected>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cli/output.h"
#include "common/error.h"
#include "config/manifest.h"
#include "policy/policy.h"
#include "policy/report_json.h"

namespace meshlock::cli {

// Offline exit codes (kExitOk and kExitUsage come from output.h).
inline constexpr int kExitInputError = 1;  // bad manifests, unknown pods, validation errors

struct OfflineModel {
  std::shared_ptr<const policy::PolicyIndex> index;
  std::vector<config::ManifestError> errors;
  std::map<std::string, std::size_t> ignored_kinds;  // "apps/v1 Deployment" → objects not read
};

// Loads a directory (or a single file) of manifests. Objects without a
// namespace go to `default_namespace` (-n), or are errors when it is empty.
// Fails only when the path cannot be read.
[[nodiscard]] Result<OfflineModel> loadOffline(const std::string& path, const std::string& default_namespace);

// Prints manifest errors to stderr, one a line, prefixed "error: ".
void printManifestErrors(const std::vector<config::ManifestError>& errors);

// Adds the --manifests and -o options every offline command takes.
struct OfflineOptions {
  std::string manifests;
  std::string output = "text";
  std::string ns;  // -n: the namespace of objects that have none
};
void addOfflineOptions(CLI::App& sub, OfflineOptions& options);
// Checks what CLI11 is not asked to (so that usage errors exit 2, not CLI11's
// own codes): -o text|json|yaml, and --manifests given unless `manifests_optional`.
// Prints the problem; false if any.
[[nodiscard]] bool checkOfflineOptions(const OfflineOptions& options, bool manifests_optional = false);

// The prologue check and explain share: loads the manifests and prints their
// errors to stderr. On failure prints why and returns the exit code instead.
[[nodiscard]] std::expected<OfflineModel, int> openOffline(const OfflineOptions& options);

// Prints a policy answer (check report, pod explanation) as JSON or YAML when
// -o asks for it; false for text, which each command prints itself.
bool printOfflineStructured(const nlohmann::json& value, const std::string& output);

// The text forms, shared by the offline commands and their live twins
// (`check --admin`, `policy`), from the JSON of policy/report_json.h.
void printCheckText(const nlohmann::json& report);
void printPodPolicyText(const nlohmann::json& explanation);

}  // namespace meshlock::cli
