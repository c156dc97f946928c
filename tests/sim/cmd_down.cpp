// meshsim down [--name RUN | --all]: removes everything a run made. --all
// also finds runs whose state file is gone or damaged, by their name prefix.
#include "apiserver.h"
#include "cli.h"
#include "cluster.h"
#include "common/command.h"
#include "state.h"
#include "system.h"

namespace meshsim {
namespace {

int downOne(const std::string& run) {
  // Before the run lock: the server's service-rule updates take it.
  if (auto st = stopApiServer(run); !st) report(st.error(), kExitFailed);
  std::optional<RunState> state;
  if (pathExists(stateFile(run))) {
    auto lock = lockRun(run);
    if (!lock) return report(lock.error(), kExitFailed);
    auto loaded = loadState(run);
    if (loaded) {
      state = std::move(*loaded);
      (void)saveState(state->layout, kPhaseDeleting);
    } else {
      std::fprintf(stderr, "meshsim: %s; cleaning up run %s by its name prefix\n",
                   loaded.error().describe().c_str(), run.c_str());
    }
    auto st = teardownRun(run, state ? &state->layout : nullptr);
    if (!st) return report(st.error(), kExitFailed);
  } else {
    auto st = teardownRun(run, nullptr);
    if (!st) return report(st.error(), kExitFailed);
  }
  std::printf("run %s: down\n", run.c_str());
  return kExitOk;
}

int down(const std::string& name, bool all) {
  if (!requireRoot()) return kExitFailed;
  if (all) {
    if (!name.empty()) return report({"--all and --name exclude each other"}, kExitUsage);
    int rc = kExitOk;
    auto runs = listRunsWithLeftovers();
    if (runs.empty()) std::printf("no meshsim runs\n");
    for (const auto& run : runs) rc = std::max(rc, downOne(run));
    return rc;
  }
  std::string run = name;
  if (run.empty()) {
    auto resolved = resolveRun("");
    if (!resolved) return report(resolved.error(), kExitUsage);
    run = *resolved;
  } else if (!isRunName(run)) {
    return report({fmt::format("run name \"{}\" is not valid", run)}, kExitUsage);
  }
  return downOne(run);
}

const meshlock::CommandRegistrar kRegister{{
    "down",
    "remove everything a run made (--all: every run, even after a crash)",
    [](CLI::App& sub) -> meshlock::CommandAction {
      auto name = std::make_shared<std::string>();
      auto all = std::make_shared<bool>(false);
      addNameOption(sub, *name);
      sub.add_flag("--all", *all, "every run, found from state files and name prefixes");
      return [name, all] {
        std::string n = *name;
        if (n.empty() && !*all) {
          if (const char* env = std::getenv("MESHSIM_NAME"); env && *env) n = env;
        }
        return down(n, *all);
      };
    },
}};

}  // namespace
}  // namespace meshsim
