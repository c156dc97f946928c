// kube-source-probe: the agent's Kubernetes source on its own, without root,
// BPF or an engine: how long to the first full state, how much memory, how
// much CPU per watch event. For issue 12's benchmark and for trying a
// kubeconfig by hand.
//
//   kube-source-probe --kubeconfig FILE --node NODE [--watch SECONDS]
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>

#include "config/kube/choose_source.h"

namespace {

double cpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

long rssKiB() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

uint64_t watchEvents(const meshlock::config::SourceStatus& s) {
  uint64_t n = 0;
  for (const auto& k : s.kinds) {
    for (const auto& [type, count] : k.events) {
      if (type != "BOOKMARK") n += count;
    }
  }
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("the agent's Kubernetes source, alone");
  std::string kubeconfig, node = "node-a";
  double watch_seconds = 0;
  app.add_option("--kubeconfig", kubeconfig, "kubeconfig file")->required();
  app.add_option("--node", node, "the node whose pods are local");
  app.add_option("--watch", watch_seconds, "then print every update for this many seconds");
  CLI11_PARSE(app, argc, argv);

  const auto t0 = std::chrono::steady_clock::now();
  auto source = meshlock::config::kube::openClusterSource({.kubeconfig = kubeconfig, .node_name = node});
  if (!source) {
    std::fprintf(stderr, "kube-source-probe: %s\n", source.error().describe().c_str());
    return 1;
  }
  auto initial = (*source)->initial(std::chrono::seconds(120));
  const double sync_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!initial) {
    std::printf("not synced after %.1f s: %s\n", sync_s, (*source)->status().summary().c_str());
    return 1;
  }
  const auto& st = initial->state;
  std::printf("synced in %.3f s: %zu pods, %zu services, %zu endpoint slices, %zu peer authentications, "
              "%zu destination rules, %zu control planes, %zu errors; RSS %ld KiB, CPU %.3f s\n",
              sync_s, st.pods.size(), st.services.size(), st.endpoints.size(), st.peer_authentications.size(),
              st.destination_rules.size(), st.control_planes.size(), initial->errors.size(), rssKiB(), cpuSeconds());
  for (const auto& e : initial->errors) std::printf("  error: %s\n", e.describe().c_str());
  std::fflush(stdout);
  if (watch_seconds <= 0) return 0;

  const double cpu0 = cpuSeconds();
  const uint64_t events0 = watchEvents((*source)->status());
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(watch_seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (auto u = (*source)->poll(std::chrono::milliseconds(200))) {
      // Wall-clock seconds, to line up with the time a change was made elsewhere.
      const double at = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
      std::printf("%.3f generation %lu: %zu pods, %zu peer authentications, %zu errors\n", at,
                  static_cast<unsigned long>(u->generation), u->state.pods.size(), u->state.peer_authentications.size(),
                  u->errors.size());
      for (const auto& e : u->errors) std::printf("  error: %s\n", e.describe().c_str());
      std::fflush(stdout);
    }
  }
  auto s = (*source)->status();
  const uint64_t events = watchEvents(s) - events0;
  const double cpu = cpuSeconds() - cpu0;
  std::printf("%s\nwatch events %lu, CPU %.3f s (%.3f s per 1000 events), RSS %ld KiB\n", s.summary().c_str(),
              static_cast<unsigned long>(events), cpu, events ? cpu * 1000 / static_cast<double>(events) : 0.0, rssKiB());
  return 0;
}
