// meshlockctl status: one screen that says whether the agent is healthy — its
// version and uptime, the kernel features it found, pods, connections,
// handshake failures, refused plaintext and the soonest certificate expiry.
#include <memory>

#include "cli/output.h"
#include "common/command.h"

namespace meshlock::cli {
namespace {

std::string number(const nlohmann::json& object, std::string_view key) { return field(object, key); }

int runStatus(const LiveOptions& options) {
  auto client = makeClient(options);
  if (!client) return reportError(client.error());
  auto status = client->getJson("/status");
  if (!status) return reportError(status.error());
  const nlohmann::json& s = *status;
  if (printStructured(s, parseFormat(options.output))) return kExitOk;

  std::string out;
  out += "meshlock-agent " + field(s, "version");
  if (s.contains("node")) out += " on " + field(s, "node");
  if (s.contains("uptime_seconds") && s["uptime_seconds"].is_number()) {
    out += ", up " + humanDuration(s["uptime_seconds"].get<double>());
  }
  if (s.contains("ready") && s["ready"].is_boolean()) out += s["ready"].get<bool>() ? ", ready" : ", NOT READY";
  out += "\n";

  Table table({"", ""});
  table.addRow({"pods served:", number(s, "pods_served")});
  if (s.contains("source") && s["source"].is_object()) table.addRow({"cluster source:", field(s["source"], "summary")});
  if (s.contains("connections")) {
    const auto& c = s["connections"];
    table.addRow({"connections:", number(c, "active") + " active (" + number(c, "active_mtls") + " " +
                                      std::string(kLockMark) + " mTLS, " + number(c, "active_plaintext") +
                                      " plaintext), " + number(c, "total") + " since start"});
  }
  if (s.contains("handshakes")) {
    const auto& h = s["handshakes"];
    table.addRow({"handshakes:", number(h, "success") + " ok, " + number(h, "failure") + " failed"});
  }
  table.addRow({"plaintext refused:", number(s, "plaintext_refused") + " (STRICT)"});
  if (s.contains("certificates")) {
    const auto& c = s["certificates"];
    std::string text = number(c, "identities") + " identities";
    if (c.contains("soonest_expiry_seconds") && c["soonest_expiry_seconds"].is_number()) {
      text += ", soonest expiry in " + humanDuration(c["soonest_expiry_seconds"].get<double>());
    }
    table.addRow({"certificates:", text});
  }
  // The table's header row is blank: skip it.
  const std::string rows = table.render();
  out += rows.substr(rows.find('\n') + 1);

  if (s.contains("kernel") && s["kernel"].is_object()) {
    const auto& kernel = s["kernel"];
    out += "kernel " + field(kernel, "release") + ":\n";
    Table features({"", "", ""});
    if (kernel.contains("features") && kernel["features"].is_array()) {
      for (const auto& feature : kernel["features"]) {
        const bool available = feature.value("available", false);
        features.addRow({available ? "  ✓" : "  ✗", field(feature, "name"), field(feature, "detail")});
      }
    }
    const std::string lines = features.render();
    out += lines.substr(lines.find('\n') + 1);
  }
  std::fputs(out.c_str(), stdout);
  return kExitOk;
}

const CommandRegistrar kStatus{{
    "status",
    "Agent version, uptime, kernel features, pods served, connections and handshake errors",
    [](CLI::App& sub) -> CommandAction {
      auto options = std::make_shared<LiveOptions>();
      addLiveOptions(sub, *options);
      return [options] { return runStatus(*options); };
    },
}};

}  // namespace
}  // namespace meshlock::cli
