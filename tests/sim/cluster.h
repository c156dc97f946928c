// Building and tearing down a run on this machine: network namespaces,
// bridges and veths (via ip), kube-proxy's stand-in (nft), cgroups, pause
// processes, name resolution files and the manifest directory.
#pragma once

#include <string>

#include "common/error.h"
#include "layout.h"

namespace meshsim {

// Finds or mounts cgroup v2 and bpffs; says where on stdout. Returns the
// cgroup2 root. The caller holds lockGlobal() until its run directory exists,
// so that a concurrent last `down` cannot unmount them in between.
[[nodiscard]] meshlock::Result<std::string> ensureMounts();

// Creates everything the layout describes, saving state (pause pids) as it goes.
// On failure the caller tears the run down.
[[nodiscard]] meshlock::Status buildRun(Layout& layout);

// Removes everything a run made, found by its name prefix (the layout, when
// the state file could be read, adds the recorded pause pids). Idempotent.
[[nodiscard]] meshlock::Status teardownRun(const std::string& run, const Layout* layout);

// Rewrites the manifest directory (atomically, file by file).
[[nodiscard]] meshlock::Status publishManifests(const Layout& layout);
// Reloads each node's service rules and each pod's hosts file.
[[nodiscard]] meshlock::Status publishServices(const Layout& layout);

// The hidden `meshsim pause` body: sleeps until SIGTERM/SIGKILL.
[[noreturn]] void pauseForever();

}  // namespace meshsim
