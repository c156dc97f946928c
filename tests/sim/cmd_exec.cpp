// meshsim exec [--name RUN] NS/POD -- CMD...: runs CMD inside a pod, as a
// container runtime would: in the pod's container cgroup and network
// namespace (via `ip netns exec`, which also binds the pod's hosts file).
#include <signal.h>
#include <unistd.h>

#include "cli.h"
#include "common/command.h"
#include "system.h"

namespace meshsim {
namespace {

int execInPod(const std::string& name, const std::string& podRef, const std::vector<std::string>& command) {
  if (command.empty()) return report({"exec: no command given (meshsim exec NS/POD -- CMD...)"}, kExitUsage);
  auto state = openRun(name);
  if (!state) return report(state.error(), kExitUsage);
  auto pod = findPodRef(state->layout, podRef);
  if (!pod) return report(pod.error(), kExitUsage);
  if (!requireRoot()) return kExitFailed;
  if (auto st = joinCgroup((*pod)->containerCgroup); !st) return report(st.error().context("pod " + podRef), kExitFailed);
  std::vector<std::string> argv{"ip", "netns", "exec", (*pod)->netns};
  argv.insert(argv.end(), command.begin(), command.end());
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  std::fflush(stdout);
  signal(SIGPIPE, SIG_DFL);  // as the command would have it without meshsim
  execvp("ip", args.data());
  return report({"exec ip netns exec", errno}, 127);
}

const meshlock::CommandRegistrar kRegister{{
    "exec",
    "run a command inside a pod (its network namespace and cgroup)",
    [](CLI::App& sub) -> meshlock::CommandAction {
      auto name = std::make_shared<std::string>();
      auto pod = std::make_shared<std::string>();
      auto command = std::make_shared<std::vector<std::string>>();
      addNameOption(sub, *name);
      sub.add_option("pod", *pod, "NAMESPACE/POD (or POD when the name is unique)")->required();
      sub.add_option("command", *command, "the command, after --")->required();
      return [name, pod, command] { return execInPod(*name, *pod, *command); };
    },
}};

}  // namespace
}  // namespace meshsim
