// `meshlock-agent uninstall`: removes every BPF program, link, map and pin of
// one agent (its pin dir). Pods are no longer captured afterwards.
#include <cstdio>

#include "capture/datapath.h"
#include "common/command.h"

namespace {

const meshlock::CommandRegistrar kUninstall{{
    "uninstall",
    "Detach and remove every BPF program, link, map and pin of this agent",
    [](CLI::App& sub) -> meshlock::CommandAction {
      auto pin_dir = std::make_shared<std::string>("/sys/fs/bpf/meshlock");
      sub.add_option("--pin-dir", *pin_dir, "the agent's bpffs pin directory")->capture_default_str();
      return [pin_dir] {
        auto done = meshlock::capture::Datapath::uninstall(*pin_dir);
        if (!done) {
          std::fprintf(stderr, "meshlock-agent uninstall: %s\n", done.error().describe().c_str());
          return 1;
        }
        std::printf("removed %s\n", pin_dir->c_str());
        return 0;
      };
    },
}};

}  // namespace
