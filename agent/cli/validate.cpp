// meshlockctl validate: manifest errors and policy warnings; exit 1 on errors.
#include <cstdio>
#include <memory>

#include "cli/offline.h"
#include "common/command.h"
#include "policy/validate.h"

namespace meshlock::cli {
namespace {

CommandAction setup(CLI::App& sub) {
  auto opts = std::make_shared<OfflineOptions>();
  addOfflineOptions(sub, *opts);
  return [opts]() -> int {
    if (!checkOfflineOptions(*opts)) return kExitUsage;
    auto model = loadOffline(opts->manifests);
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
      j["findings"] = nlohmann::json::array();
      for (const auto& f : findings) {
        j["findings"].push_back({{"code", f.code}, {"severity", std::string(policy::toString(f.severity))},
                                 {"resource", f.resource}, {"message", f.message}});
      }
      printOfflineStructured(j, opts->output);
    } else {
      for (const auto& e : model->errors) std::printf("error: %s\n", e.describe().c_str());
      for (const auto& f : findings) std::printf("%s\n", f.describe().c_str());
      std::printf("%zu error(s), %zu warning(s) in %zu object(s)\n", errors, findings.size() - (errors - model->errors.size()),
                  model->index->state().objectCount());
    }
    return errors == 0 ? kExitOk : kExitInputError;
  };
}

const CommandRegistrar registrar{Command{
    "validate", "offline: manifest errors and mesh-policy warnings (exit 1 on errors)", setup}};

}  // namespace
}  // namespace meshlock::cli
