// What meshlockctl's offline commands (check, explain, validate) share:
// loading a manifest directory into a policy index, and rendering.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "config/manifest.h"
#include "policy/policy.h"

namespace meshlock::cli {

// meshlockctl's exit codes.
inline constexpr int kExitOk = 0;
inline constexpr int kExitInputError = 1;  // bad manifests, unknown pods, validation errors
inline constexpr int kExitUsage = 2;       // bad flags or arguments

struct OfflineModel {
  std::shared_ptr<const policy::PolicyIndex> index;
  std::vector<config::ManifestError> errors;
};

// Loads a directory (or a single file) of manifests. Fails only when the path cannot be read.
[[nodiscard]] Result<OfflineModel> loadOffline(const std::string& path);

// Prints manifest errors to stderr, one a line, prefixed "error: ".
void printManifestErrors(const std::vector<config::ManifestError>& errors);

[[nodiscard]] nlohmann::json toJson(const policy::ConnectionReport& report);

// Adds the --manifests and -o options every offline command takes.
struct OfflineOptions {
  std::string manifests;
  std::string output = "text";
};
void addOfflineOptions(CLI::App& sub, OfflineOptions& options);
// Checks what CLI11 is not asked to (so that usage errors exit 2, not CLI11's
// own codes): --manifests given, -o text|json. Prints the problem; false if any.
[[nodiscard]] bool checkOfflineOptions(const OfflineOptions& options);

}  // namespace meshlock::cli
