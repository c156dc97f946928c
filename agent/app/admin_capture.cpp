// /capture: the BPF programs, maps, counters and pinned pods.
#include <nlohmann/json.hpp>

#include <chrono>
#include <string>

#include "app/admin_json.h"
#include "app/agent_parts.h"
#include "capture/bpf_abi.h"

namespace meshlock::app {

using nlohmann::json;


admin::Handler Agent::Parts::captureHandler() {
  return [this](const admin::Request&) {
    json counters = json::object();
    if (auto c = datapath->counters()) {
      for (int i = 0; i < ML_CTR_MAX; ++i) counters[std::string(capture::kCounterNames[i])] = (*c)[i];
    }
    json pods = json::array();
    for (const capture::PinnedPod& pod : datapath->pinnedPods())
      pods.push_back({{"uid", pod.uid.value}, {"cgroup_id", pod.pod_cgroup_id}});
    json programs = json::array();
    json maps = json::array();
    auto info = datapath->describe();
    if (info) {
      for (const capture::ProgramInfo& prog : info->programs) {
        json links = json::array();
        for (const auto& link : prog.links) links.push_back({{"id", link.id}, {"target", link.target}});
        programs.push_back({{"name", prog.name}, {"type", prog.type}, {"attach_type", prog.attach_type},
                            {"id", prog.id}, {"attachments", prog.links.size()}, {"links", links}});
      }
      for (const capture::MapInfo& map : info->maps) {
        maps.push_back({{"name", map.name}, {"type", map.type}, {"id", map.id}, {"max_entries", map.max_entries},
                        {"entries", map.entries ? json(*map.entries) : json(nullptr)}});
      }
    }
    json body = {{"pin_dir", settings.bpf_pin_dir.string()},
                 {"reused_pinned_links", datapath->reusedPinnedLinks()},
                 {"programs", programs}, {"maps", maps},
                 {"counters", counters}, {"pods", pods},
                 {"error", info ? json(nullptr) : json(info.error().describe())}};
    return jsonResponse(200, body);
  };
}

}  // namespace meshlock::app
