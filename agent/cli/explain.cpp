// meshlockctl explain: for one pod, the inbound mode of each port and what
// each known destination gets from it, with the reason for every decision
// (offline, from manifests; `meshlockctl policy` asks the live agent).
#include <cstdio>
#include <memory>

#include "cli/offline.h"
#include "common/command.h"

namespace meshlock::cli {
namespace {

struct ExplainOptions : OfflineOptions {
  std::string pod;
  size_t sources = 200;
};

CommandAction setup(CLI::App& sub) {
  auto opts = std::make_shared<ExplainOptions>();
  addOfflineOptions(sub, *opts);
  sub.add_option("pod", opts->pod, "NAMESPACE/POD (required)");
  sub.add_option("--sources", opts->sources,
                 "at most this many source-pod/port rows of the authorization decision (0: none)")
      ->capture_default_str();
  return [opts]() -> int {
    if (!checkOfflineOptions(*opts)) return kExitUsage;
    auto ref = policy::parsePodRef(opts->pod);
    if (!ref) {
      std::fprintf(stderr, "error: %s\n", ref.error().message.c_str());
      return kExitUsage;
    }
    auto model = openOffline(*opts);
    if (!model) return model.error();
    const config::Pod* pod = model->index->podByName(ref->ns, ref->name);
    if (!pod) {
      std::fprintf(stderr, "error: unknown pod %s/%s (no such Pod in the manifests)\n", ref->ns.c_str(),
                   ref->name.c_str());
      return kExitInputError;
    }
    const nlohmann::json j = policy::explainPod(*model->index, *pod, {.per_source_limit = opts->sources});
    if (!printOfflineStructured(j, opts->output)) printPodPolicyText(j);
    return model->errors.empty() ? kExitOk : kExitInputError;
  };
}

const CommandRegistrar registrar{Command{
    "explain", "offline: a pod's inbound mode per port and outbound decision per known destination, with reasons",
    setup}};

}  // namespace
}  // namespace meshlock::cli
