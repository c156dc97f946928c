// meshlockctl policy NS/POD: the live agent's effective policy for one pod —
// inbound mode per port and what each known service port gets from it, with
// the deciding resources (GET /policy; `explain` is the offline twin).
#include <memory>

#include "admin/http_message.h"
#include "cli/offline.h"
#include "common/command.h"

namespace meshlock::cli {
namespace {

int runPolicy(const LiveOptions& options, const std::string& pod) {
  if (pod.empty() || !policy::parsePodRef(pod)) {
    std::fprintf(stderr, "meshlockctl: policy wants NAMESPACE/POD, got \"%s\"\n", pod.c_str());
    return kExitUsage;
  }
  auto client = makeClient(options);
  if (!client) return reportError(client.error());
  auto answer = client->getJson("/policy?pod=" + admin::percentEncode(pod));
  if (!answer) return reportError(answer.error());
  if (printStructured(*answer, parseFormat(options.output))) return kExitOk;
  printPodPolicyText(*answer);
  return kExitOk;
}

const CommandRegistrar kPolicy{{
    "policy",
    "A pod's effective policy from the live agent: inbound mode per port, outbound decisions, deciding resources",
    [](CLI::App& sub) -> CommandAction {
      auto options = std::make_shared<LiveOptions>();
      auto pod = std::make_shared<std::string>();
      addLiveOptions(sub, *options);
      sub.add_option("pod", *pod, "NAMESPACE/POD (required)");
      return [options, pod] { return runPolicy(*options, *pod); };
    },
}};

}  // namespace
}  // namespace meshlock::cli
