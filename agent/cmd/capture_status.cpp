// `meshlock-agent capture-status`: the capture counters and enrolled pods of
// an agent, read from its pins (works while the agent is down, too).
#include <cstdio>

#include <nlohmann/json.hpp>

#include "capture/datapath.h"
#include "common/command.h"

namespace {

const meshlock::CommandRegistrar kCaptureStatus{{
    "capture-status",
    "Print the capture counters and enrolled pods from the pin dir (JSON)",
    [](CLI::App& sub) -> meshlock::CommandAction {
      auto pin_dir = std::make_shared<std::string>("/sys/fs/bpf/meshlock");
      sub.add_option("--pin-dir", *pin_dir, "the agent's bpffs pin directory")->capture_default_str();
      return [pin_dir] {
        using meshlock::capture::Datapath;
        auto counters = Datapath::pinnedCounters(*pin_dir);
        if (!counters) {
          std::fprintf(stderr, "meshlock-agent capture-status: %s\n", counters.error().describe().c_str());
          return 1;
        }
        nlohmann::json doc;
        for (std::size_t i = 0; i < counters->size(); ++i)
          doc["counters"][std::string(meshlock::capture::kCounterNames[i])] = (*counters)[i];
        doc["pods"] = nlohmann::json::array();
        for (const auto& pod : Datapath::pinnedPods(*pin_dir))
          doc["pods"].push_back({{"uid", pod.uid.value}, {"cgroup_id", pod.pod_cgroup_id}});
        std::printf("%s\n", doc.dump(2).c_str());
        return 0;
      };
    },
}};

}  // namespace
