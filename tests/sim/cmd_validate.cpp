// meshsim validate SPEC.yaml: checks a spec without creating anything (no root needed).
#include "cli.h"
#include "common/command.h"
#include "layout.h"
#include "system.h"

namespace meshsim {
namespace {

int validate(const std::string& specPath) {
  auto text = readFile(specPath);
  if (!text) return report(text.error(), kExitUsage);
  auto spec = parseSpec(*text);
  if (!spec) return report(spec.error().context(specPath), kExitUsage);
  std::printf("%s: ok (%zu nodes, %zu namespaces, %zu pods, %zu services, %zu extra manifests)\n", specPath.c_str(),
              spec->nodes.size(), spec->namespaces.size(), spec->pods.size(), spec->services.size(),
              spec->manifests.size());
  return kExitOk;
}

const meshlock::CommandRegistrar kRegister{{
    "validate",
    "check a spec without creating anything",
    [](CLI::App& sub) -> meshlock::CommandAction {
      auto spec = std::make_shared<std::string>();
      sub.add_option("spec", *spec, "spec YAML file")->required();
      return [spec] { return validate(*spec); };
    },
}};

}  // namespace
}  // namespace meshsim
