// Conventions shared by meshsim's subcommands: exit codes, error printing,
// the --name option and root checks.
#pragma once

#include <cstdio>
#include <fmt/format.h>
#include <string>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include "common/error.h"

#include <fmt/format.h>
#include "state.h"

namespace meshsim {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;  // the machine said no
inline constexpr int kExitUsage = 2;   // bad spec, bad arguments, unknown run

inline int report(const meshlock::Error& error, int code) {
  std::fprintf(stderr, "meshsim: %s\n", error.describe().c_str());
  return code;
}

inline void addNameOption(CLI::App& sub, std::string& name) {
  sub.add_option("--name", name, "run name (default: $MESHSIM_NAME, else the only run)");
}

inline bool requireRoot() {
  if (geteuid() == 0) return true;
  std::fprintf(stderr, "meshsim: must run as root (network namespaces, cgroups, nftables)\n");
  return false;
}

// The run a command acts on: --name, $MESHSIM_NAME, or the only one.
inline meshlock::Result<RunState> openRun(const std::string& nameOption) {
  auto run = resolveRun(nameOption);
  if (!run) return std::unexpected(run.error());
  return loadState(*run);
}

// "NS/POD", or "POD" when exactly one namespace has a pod of that name.
inline meshlock::Result<PodLayout*> findPodRef(Layout& layout, const std::string& ref) {
  size_t slash = ref.find('/');
  if (slash != std::string::npos) {
    PodLayout* pod = layout.findPod(ref.substr(0, slash), ref.substr(slash + 1));
    if (!pod) return meshlock::fail(fmt::format("run {}: no pod {}", layout.run, ref));
    return pod;
  }
  PodLayout* found = nullptr;
  for (auto& pod : layout.pods) {
    if (pod.name != ref) continue;
    if (found) return meshlock::fail(fmt::format("pod name {} is ambiguous: say NAMESPACE/{}", ref, ref));
    found = &pod;
  }
  if (!found) return meshlock::fail(fmt::format("run {}: no pod named {}", layout.run, ref));
  return found;
}

}  // namespace meshsim
