// meshsim up SPEC.yaml [--name RUN]: validates the spec, then builds the run.
#include <sys/stat.h>

#include <algorithm>
#include <random>

#include "apiserver.h"
#include "cli.h"
#include "cluster.h"
#include "common/command.h"
#include "state.h"
#include "system.h"

namespace meshsim {
namespace {

std::string randomRunName() {
  std::random_device rd;
  return fmt::format("sim-{:06x}", rd() & 0xffffff);
}

int up(const std::string& specPath, std::string run) {
  auto text = readFile(specPath);
  if (!text) return report(text.error(), kExitUsage);
  auto spec = parseSpec(*text);
  if (!spec) return report(spec.error().context(specPath), kExitUsage);
  if (run.empty()) {
    if (const char* env = std::getenv("MESHSIM_NAME"); env && *env) run = env;
  }
  if (run.empty()) run = randomRunName();
  if (!isRunName(run))
    return report({fmt::format("--name: \"{}\" is not a valid run name ([a-z0-9-], at most 24, starting and ending "
                               "with a letter or digit)", run)},
                  kExitUsage);
  if (!requireRoot()) return kExitFailed;

  auto globalLock = lockGlobal();
  if (!globalLock) return report(globalLock.error(), kExitFailed);
  auto cgroup2 = ensureMounts();
  if (!cgroup2) return report(cgroup2.error(), kExitFailed);

  // A crashed run of the same name may have left objects behind; building
  // over them would mix two runs, so ask for a cleanup first.
  if (!pathExists(stateFile(run))) {
    auto leftovers = listRunsWithLeftovers();
    if (std::find(leftovers.begin(), leftovers.end(), run) != leftovers.end())
      return report({fmt::format("objects of an earlier run \"{}\" remain; run `meshsim down --name {}` first", run, run)},
                    kExitUsage);
  }
  // Claim the name: mkdir is atomic, so two `up --name X` cannot both win.
  if (auto st = makeDirs(std::string(kStateRoot)); !st) return report(st.error(), kExitFailed);
  std::string dir = std::string(kStateRoot) + "/" + run;
  if (mkdir(dir.c_str(), 0700) != 0) {
    if (errno == EEXIST) return report({fmt::format("run \"{}\" already exists ({})", run, dir)}, kExitUsage);
    return report({"mkdir " + dir, errno}, kExitFailed);
  }
  auto lock = lockRun(run);
  if (!lock) return report(lock.error(), kExitFailed);
  globalLock->release();  // the run now exists: a last `down` will keep the mounts

  Layout layout = makeLayout(std::move(*spec), run, *cgroup2);
  // The whole plan is on disk before the first resource exists.
  if (auto st = saveState(layout, kPhaseCreating); !st) return report(st.error(), kExitFailed);
  if (auto st = buildRun(layout); !st) {
    std::fprintf(stderr, "meshsim: up failed, rolling back run %s: %s\n", run.c_str(), st.error().describe().c_str());
    if (auto down = teardownRun(run, &layout); !down) report(down.error(), kExitFailed);
    return kExitFailed;
  }
  if (auto st = saveState(layout, kPhaseReady); !st) return report(st.error(), kExitFailed);
  if (auto st = startApiServer(layout); !st) {
    std::fprintf(stderr, "meshsim: up failed, rolling back run %s: %s\n", run.c_str(), st.error().describe().c_str());
    if (auto down = teardownRun(run, &layout); !down) report(down.error(), kExitFailed);
    return kExitFailed;
  }
  std::printf("run: %s\nnodes: %zu, pods: %zu, services: %zu\nmanifests: %s\nstate: %s\nkubeconfig: %s\n", run.c_str(),
              layout.nodes.size(), layout.pods.size(), layout.spec.services.size(), layout.manifestDir().c_str(),
              stateFile(run).c_str(), adminKubeconfig(run).c_str());
  return kExitOk;
}

const meshlock::CommandRegistrar kRegister{{
    "up",
    "create the nodes and pods of a spec",
    [](CLI::App& sub) -> meshlock::CommandAction {
      auto spec = std::make_shared<std::string>();
      auto name = std::make_shared<std::string>();
      sub.add_option("spec", *spec, "spec YAML file")->required();
      addNameOption(sub, *name);
      return [spec, name] { return up(*spec, *name); };
    },
}};

}  // namespace
}  // namespace meshsim
