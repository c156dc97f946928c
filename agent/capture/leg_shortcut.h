// The pod-local shortcut's setting (bpf/sk_msg.bpf.c, docs/datapath.md):
// which bytes between a pod's app and the agent skip the loopback TCP stack.
#pragma once

#include <string>
#include <string_view>

#include "common/error.h"

namespace meshlock::capture {

enum class LegShortcut {
  Off,
  AppToAgent,  // the agent reads with recv(): right for every app
  Both,        // also agent -> app: only for apps that never read with splice()
};

[[nodiscard]] inline Result<LegShortcut> parseLegShortcut(std::string_view text) {
  if (text == "off") return LegShortcut::Off;
  if (text == "app-to-agent") return LegShortcut::AppToAgent;
  if (text == "both") return LegShortcut::Both;
  return fail("podLegShortcut: expected off, app-to-agent or both, got \"" + std::string(text) + "\"");
}

[[nodiscard]] inline std::string_view toString(LegShortcut shortcut) {
  switch (shortcut) {
    case LegShortcut::Off: return "off";
    case LegShortcut::AppToAgent: return "app-to-agent";
    case LegShortcut::Both: return "both";
  }
  return "off";
}

}  // namespace meshlock::capture
