// meshlockctl explain: for one pod, the inbound mode of each port and what
// each known destination gets from it, with the reason for every decision.
#include <cstdio>
#include <memory>
#include <set>

#include "cli/offline.h"
#include "common/command.h"

namespace meshlock::cli {
namespace {

struct ExplainOptions : OfflineOptions {
  std::string pod;
};

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

CommandAction setup(CLI::App& sub) {
  auto opts = std::make_shared<ExplainOptions>();
  addOfflineOptions(sub, *opts);
  sub.add_option("pod", opts->pod, "NAMESPACE/POD (required)");
  return [opts]() -> int {
    if (!checkOfflineOptions(*opts)) return kExitUsage;
    auto ref = policy::parsePodRef(opts->pod);
    if (!ref) {
      std::fprintf(stderr, "error: %s\n", ref.error().message.c_str());
      return kExitUsage;
    }
    auto model = loadOffline(opts->manifests);
    if (!model) {
      std::fprintf(stderr, "error: %s\n", model.error().describe().c_str());
      return kExitInputError;
    }
    printManifestErrors(model->errors);
    const auto& ix = *model->index;
    const config::Pod* pod = ix.podByName(ref->ns, ref->name);
    if (!pod) {
      std::fprintf(stderr, "error: unknown pod %s/%s (no such Pod in the manifests)\n", ref->ns.c_str(),
                   ref->name.c_str());
      return kExitInputError;
    }
    nlohmann::json j;
    j["pod"] = pod->ns() + "/" + pod->name();
    j["uid"] = pod->uid.str();
    j["node"] = pod->node_name;
    j["ip"] = pod->ip ? pod->ip->toString() : "";
    j["service_account"] = pod->service_account;
    j["identity"] = ix.identityOf(*pod).str();
    j["served"] = ix.served(*pod);
    j["served_reason"] = ix.served(*pod) ? "namespace enrolled" : ix.servedReason(*pod).describe();
    j["min_tls_version"] = std::string(config::toString(ix.mesh().min_protocol_version));
    j["auto_mtls"] = ix.mesh().enable_auto_mtls;
    j["root_namespace"] = ix.mesh().root_namespace;
    j["inbound"] = nlohmann::json::array();
    std::set<uint16_t> ports;
    for (const auto& p : pod->ports) ports.insert(p.port);
    for (uint16_t port : ports) {
      auto in = ix.inbound(*pod, port);
      j["inbound"].push_back({{"port", port}, {"mode", std::string(policy::toString(in.mode))},
                              {"decided_by", in.decided_by.describe()}});
    }
    auto other = ix.inbound(*pod, 0);
    j["inbound_other_ports"] = {{"mode", std::string(policy::toString(other.mode))},
                                {"decided_by", other.decided_by.describe()}};
    j["outbound"] = nlohmann::json::array();
    for (const auto& svc : ix.state().services) {
      for (const auto& sp : svc.ports) {
        policy::Target t;
        t.kind = policy::Target::Kind::kHost;
        t.host = ix.fqdn(svc);
        t.port = sp.port;
        auto r = policy::checkConnection(ix, *ref, t);
        if (r) j["outbound"].push_back(toJson(*r));
      }
    }
    if (opts->output == "json") {
      std::printf("%s\n", j.dump(2).c_str());
    } else {
      std::printf("pod %s (uid %s, node %s, ip %s)\n", j["pod"].get<std::string>().c_str(), pod->uid.str().c_str(),
                  pod->node_name.empty() ? "-" : pod->node_name.c_str(), pod->ip ? pod->ip->toString().c_str() : "-");
      std::printf("  identity: %s\n", j["identity"].get<std::string>().c_str());
      std::printf("  served by meshlock: %s (%s)\n", ix.served(*pod) ? "yes" : "no",
                  j["served_reason"].get<std::string>().c_str());
      std::printf("  mesh: root namespace %s, auto mTLS %s, min TLS %s\n", ix.mesh().root_namespace.c_str(),
                  ix.mesh().enable_auto_mtls ? "on" : "off", j["min_tls_version"].get<std::string>().c_str());
      std::printf("inbound:\n");
      for (const auto& p : j["inbound"]) {
        std::printf("  port %-5d %-11s %s\n", p["port"].get<int>(), p["mode"].get<std::string>().c_str(),
                    joined(p["decided_by"].get<std::vector<std::string>>()).c_str());
      }
      std::printf("  other ports %-11s %s\n", std::string(policy::toString(other.mode)).c_str(),
                  joined(other.decided_by.describe()).c_str());
      std::printf("outbound:\n");
      for (const auto& o : j["outbound"]) {
        std::printf("  %-45s %-13s -> %-10s = %-9s %s\n", o["to"].get<std::string>().c_str(),
                    o["client_tls"].get<std::string>().c_str(), o["server_mode"].get<std::string>().c_str(),
                    o["outcome"].get<std::string>().c_str(),
                    joined(o["decided_by"].get<std::vector<std::string>>()).c_str());
      }
    }
    return model->errors.empty() ? kExitOk : kExitInputError;
  };
}

const CommandRegistrar registrar{Command{
    "explain", "offline: a pod's inbound mode per port and outbound decision per known destination, with reasons",
    setup}};

}  // namespace
}  // namespace meshlock::cli
