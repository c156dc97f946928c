// The JSON shape of policy answers, shared by meshlockctl's offline commands
// and the agent's admin API, so `check` and `explain`/`policy` print the same
// fields whether they read manifests or ask a live agent.
#pragma once

#include <nlohmann/json.hpp>

#include "policy/policy.h"

namespace meshlock::policy {

// One connection report (meshlockctl check -o json, GET /check).
[[nodiscard]] nlohmann::json toJson(const ConnectionReport& report);

// A pod's effective policy: identity, whether meshlock serves it and why, the
// inbound mode of each container port (and of the other ports), and what a
// connection from it to each known service port gets, with the deciding
// resources (meshlockctl explain/policy -o json, GET /policy, /config_dump).
struct ExplainOptions {
  // When above 0: "inbound_authorization", what each known source pod gets
  // from the pod's AuthorizationPolicies per port (at most this many rows,
  // "inbound_authorization_truncated" says when more were left out). Costs
  // one check per source and port: asked for one pod, not for a dump of all.
  size_t per_source_limit = 0;
};
[[nodiscard]] nlohmann::json explainPod(const PolicyIndex& index, const config::Pod& pod,
                                        const ExplainOptions& options = {});

// The mesh-wide settings and the resources that set them.
[[nodiscard]] nlohmann::json toJson(const MeshSettings& mesh);

}  // namespace meshlock::policy
