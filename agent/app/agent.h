// The agent of one node, wired from its parts: manifests → policy →
// (capture, engine), identity → engine. It owns start-up, the reconcile loop
// that follows manifest changes, and drain on shutdown.
#pragma once

#include <memory>
#include <stop_token>

#include "app/settings.h"
#include "common/error.h"

namespace meshlock::app {

class Agent {
 public:
  // Loads the manifests, opens the CA, installs capture (or takes over the
  // pinned programs of a previous agent), starts the engine and serves every
  // enrolled pod of the node. Fails with the first part that cannot start.
  [[nodiscard]] static Result<std::unique_ptr<Agent>> start(const AgentSettings& settings);
  ~Agent();

  // Follows manifest changes, renews certificates, until `stop` is requested;
  // then stops accepting and lets established connections finish (up to the
  // drain deadline). Returns the process exit code.
  int run(std::stop_token stop);

  struct Parts;

 private:
  explicit Agent(std::unique_ptr<Parts> parts);
  std::unique_ptr<Parts> parts_;
};

}  // namespace meshlock::app
