// meshsim's Kubernetes API server (tests/sim/apiserver, Python): where a run's
// files live, starting and stopping it, and calling it with kubectl.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "common/error.h"
#include "layout.h"

namespace meshsim {

// /run/meshsim/RUN/kube: config, PKI, tokens, kubeconfigs, data, log.
[[nodiscard]] std::string kubeDir(std::string_view run);
[[nodiscard]] std::string adminKubeconfig(std::string_view run);
[[nodiscard]] std::string agentKubeconfig(std::string_view run);

// Creates the server's files (first time) and starts it for the run.
[[nodiscard]] meshlock::Status startApiServer(const Layout& layout);
[[nodiscard]] meshlock::Status stopApiServer(std::string_view run);

// Runs `main.py ARGS... KUBE_DIR-first` with stdout/stderr passed through; returns its exit code.
[[nodiscard]] int runApiServerTool(const std::vector<std::string>& args);
// `apiServer` of `status -o json`: urls, kubeconfig paths, pid, running.
[[nodiscard]] nlohmann::json apiServerStatus(std::string_view run);

// kubectl with the run's admin kubeconfig and a per-run discovery cache:
// $KUBECTL, else Debian's kubectl extracted by `make deps` next to the build, else PATH.
[[nodiscard]] std::string kubectlPath();
[[nodiscard]] meshlock::Result<std::string> kubectl(std::string_view run, std::vector<std::string> args,
                                                    std::string_view input = {});
// Waits until the manifest mirror and the service rules caught up with the store.
[[nodiscard]] meshlock::Status flushApiServer(std::string_view run);

}  // namespace meshsim
