// meshsim pause NETNS (hidden): the pod's pause process. up starts it inside
// the pod's netns and container cgroup; the argument only names it in ps.
#include "cli.h"
#include "cluster.h"
#include "common/command.h"

namespace meshsim {
namespace {

const meshlock::CommandRegistrar kRegister{{
    "pause",
    "",
    [](CLI::App& sub) -> meshlock::CommandAction {
      sub.group("");  // hidden from --help
      auto netns = std::make_shared<std::string>();
      sub.add_option("netns", *netns)->required();
      return [netns]() -> int { pauseForever(); };
    },
}};

}  // namespace
}  // namespace meshsim
