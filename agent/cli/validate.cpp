// meshlockctl validate: manifest errors and policy warnings; exit 1 on errors
// (or on warnings too, with --fail-on warning, for CI).
#include <cstdio>
#include <memory>

#include "cli/offline.h"
#include "common/command.h"
#include "policy/validate.h"

namespace meshlock::cli {
namespace {

struct ValidateOptions : OfflineOptions {
  std::string fail_on = "error";
};

CommandAction setup(CLI::App& sub) {
  auto opts = std::make_shared<ValidateOptions>();
  addOfflineOptions(sub, *opts);
  sub.add_option("--fail-on", opts->fail_on, "error (default): exit 1 on errors; warning: on warnings too")
      ->capture_default_str();
  return [opts]() -> int {
    if (!checkOfflineOptions(*opts)) return kExitUsage;
    if (opts->fail_on != "error" && opts->fail_on != "warning") {
      std::fprintf(stderr, "error: --fail-on must be error or warning, not \"%s\"\n", opts->fail_on.c_str());
      return kExitUsage;
    }
    auto model = loadOffline(opts->manifests, opts->ns);
    if (!model) {
      std::fprintf(stderr, "error: %s\n", model.error().describe().c_str());
      return kExitInputError;
    }
    auto findings = policy::validate(*model->index);
    std::size_t errors = model->errors.size();
    for (const auto& f : findings) errors += f.severity == policy::Severity::kError ? 1 : 0;
    if (opts->output != "text") {
      nlohmann::json j;
      j["errors"] = nlohmann::json::array();
      for (const auto& e : model->errors) {
        j["errors"].push_back({{"file", e.origin}, {"document", e.document + 1}, {"field", e.field},
                               {"message", e.message}});
      }
      j["ignored_kinds"] = model->ignored_kinds;
      j["findings"] = nlohmann::json::array();
      for (const auto& f : findings) {
        j["findings"].push_back({{"code", f.code}, {"severity", std::string(policy::toString(f.severity))},
                                 {"resource", f.resource}, {"message", f.message}});
      }
      printOfflineStructured(j, opts->output);
    } else {
      for (const auto& e : model->errors) std::printf("error: %s\n", e.describe().c_str());
      for (const auto& f : findings) std::printf("%s\n", f.describe().c_str());
      if (!model->ignored_kinds.empty()) {
        std::string kinds;
        for (const auto& [kind, count] : model->ignored_kinds) {
          kinds += (kinds.empty() ? "" : ", ") + kind + " (" + std::to_string(count) + ")";
        }
        std::printf("not read (kinds meshlock does not use): %s\n", kinds.c_str());
      }
      std::printf("%zu error(s), %zu warning(s) in %zu object(s)\n", errors,
                  findings.size() - (errors - model->errors.size()), model->index->state().objectCount());
    }
    const std::size_t warnings = findings.size() - (errors - model->errors.size());
    if (errors > 0 || (opts->fail_on == "warning" && warnings > 0)) return kExitInputError;
    return kExitOk;
  };
}

const CommandRegistrar registrar{Command{
    "validate", "offline: manifest errors and mesh-policy warnings (exit 1 on errors, or warnings with --fail-on warning)",
    setup}};

}  // namespace
}  // namespace meshlock::cli
