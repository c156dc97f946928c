// meshsim manifests [--name RUN]: the Namespace, Pod, Service and Endpoints
// objects matching what the run built, plus the spec's extra manifests.
#include "cli.h"
#include "common/command.h"
#include "render.h"

namespace meshsim {
namespace {

const meshlock::CommandRegistrar kRegister{{
    "manifests",
    "print the Kubernetes manifests of a run",
    [](CLI::App& sub) -> meshlock::CommandAction {
      auto name = std::make_shared<std::string>();
      addNameOption(sub, *name);
      return [name] {
        auto state = openRun(*name);
        if (!state) return report(state.error(), kExitUsage);
        std::fputs(renderAllManifests(state->layout).c_str(), stdout);
        return kExitOk;
      };
    },
}};

}  // namespace
}  // namespace meshsim
