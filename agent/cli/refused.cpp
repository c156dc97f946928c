// meshlockctl refused: the connections the agent refused lately, newest
// first, each with the policy that applied, the resources that decided it and
// the reason (plaintext under STRICT, the peer's certificate, an unreachable
// upstream). "Why was my connection refused?" answered from the agent.
#include <memory>

#include "admin/http_message.h"
#include "cli/output.h"
#include "common/command.h"

namespace meshlock::cli {
namespace {

struct RefusedOptions {
  LiveOptions live;
  std::string namespace_filter;
  std::string pod_filter;  // NS/POD
  int limit = 50;
};

// "web.shop.svc.cluster.local (10.96.10.10:80)", or the address alone.
std::string destination(const nlohmann::json& r) {
  const std::string service = field(r, "destination_service");
  const std::string address = field(r, "destination");
  if (service == "-") return address;
  return address == "-" ? service : service + " (" + address + ")";
}

std::string source(const nlohmann::json& r) {
  const std::string workload = field(r, "source_workload");
  return workload == "-" ? field(r, "source") : workload + " (" + field(r, "source") + ")";
}

int runRefused(const RefusedOptions& options) {
  if (!options.pod_filter.empty() && options.pod_filter.find('/') == std::string::npos) {
    std::fprintf(stderr, "meshlockctl: --pod wants NAMESPACE/POD, got \"%s\"\n", options.pod_filter.c_str());
    return kExitUsage;
  }
  auto client = makeClient(options.live);
  if (!client) return reportError(client.error());
  std::string path = "/refused";
  if (!options.pod_filter.empty()) {
    path += "?pod=" + admin::percentEncode(options.pod_filter);
  } else if (!options.namespace_filter.empty()) {
    path += "?namespace=" + admin::percentEncode(options.namespace_filter);
  }
  auto answer = client->getJson(path);
  if (!answer) return reportError(answer.error());
  nlohmann::json refused = answer->value("refused", nlohmann::json::array());
  if (options.limit > 0 && refused.size() > static_cast<size_t>(options.limit)) {
    refused.erase(refused.begin() + options.limit, refused.end());
  }
  const OutputFormat format = parseFormat(options.live.output);
  if (format != OutputFormat::kTable) {
    nlohmann::json out = *answer;
    out["refused"] = refused;
    printStructured(out, format);
    return kExitOk;
  }
  const bool wide = options.live.output == "wide";
  std::vector<std::string> headers = {"TIME", "DIRECTION", "POD",        "SOURCE", "DESTINATION",
                                      "POLICY", "DECIDED BY", "END", "REASON"};
  if (wide) headers.insert(headers.end(), {"SOURCE IDENTITY", "DESTINATION IDENTITY"});
  Table table(headers);
  for (const auto& r : refused) {
    std::vector<std::string> row = {field(r, "time"),   field(r, "direction"),  field(r, "pod"),
                                    source(r),          destination(r),         field(r, "policy"),
                                    field(r, "decided_by"), field(r, "end"),    field(r, "reason")};
    if (wide) row.insert(row.end(), {field(r, "source_principal"), field(r, "destination_principal")});
    table.addRow(std::move(row));
  }
  std::string out = table.render();
  out += std::to_string(refused.size()) + " shown, " + field(*answer, "total") + " refused since the agent started";
  out += " (the last " + field(*answer, "kept") + " are kept; every one is in the access log)\n";
  std::fputs(out.c_str(), stdout);
  return kExitOk;
}

const CommandRegistrar kRefused{{
    "refused",
    "Connections the agent refused lately and why: STRICT plaintext, certificates, versions, unreachable upstreams",
    [](CLI::App& sub) -> CommandAction {
      auto options = std::make_shared<RefusedOptions>();
      addLiveOptions(sub, options->live, {"table", "wide", "json", "yaml"});
      sub.add_option("-n,--namespace", options->namespace_filter, "only refusals by pods of this namespace");
      sub.add_option("--pod", options->pod_filter, "only refusals by this pod (NAMESPACE/POD)");
      sub.add_option("--limit", options->limit, "at most this many, newest first (0: all kept)")
          ->check(CLI::NonNegativeNumber);
      return [options] { return runRefused(*options); };
    },
}};

}  // namespace
}  // namespace meshlock::cli
