// `meshlockctl doctor`: the kernel feature probe (kmod-free/probe.h) as text
// or JSON. Exits non-zero only when a hard requirement of capture is missing.
#include <cstdio>
#include <string>

#include "common/command.h"
#include "kmod-free/probe.h"

namespace {

const meshlock::CommandRegistrar kDoctor{{
    "doctor",
    "Check the kernel features meshlock uses and what it does without each",
    [](CLI::App& sub) -> meshlock::CommandAction {
      auto output = std::make_shared<std::string>("text");
      sub.add_option("-o,--output", *output, "text or json")
          ->check(CLI::IsMember({"text", "json"}));
      return [output] {
        meshlock::kmodfree::ProbeReport report = meshlock::kmodfree::probeKernel();
        std::string rendered = *output == "json" ? meshlock::kmodfree::renderJson(report)
                                                 : meshlock::kmodfree::renderText(report);
        std::fputs(rendered.c_str(), stdout);
        return report.hardRequirementsMet() ? 0 : 1;
      };
    },
}};

}  // namespace
