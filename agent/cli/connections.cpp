// meshlockctl connections: the live connection table, a lock mark on every
// mTLS connection, filterable by namespace or pod, refreshed with --watch.
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <memory>
#include <thread>

#include "admin/http_message.h"
#include "cli/output.h"
#include "common/command.h"

namespace meshlock::cli {
namespace {

struct ConnectionsOptions {
  LiveOptions live;
  bool watch = false;
  double interval_seconds = 2;
  int count = 0;
  std::string namespace_filter;
  std::string pod_filter;  // NS/POD
};

bool matches(const nlohmann::json& connection, const ConnectionsOptions& options) {
  auto at = [&](std::string_view key) { return field(connection, key); };
  if (!options.namespace_filter.empty() && at("source_namespace") != options.namespace_filter &&
      at("destination_namespace") != options.namespace_filter) {
    return false;
  }
  if (!options.pod_filter.empty()) {
    const std::string source = at("source_namespace") + "/" + at("source_pod");
    const std::string destination = at("destination_namespace") + "/" + at("destination_pod");
    if (source != options.pod_filter && destination != options.pod_filter) return false;
  }
  return true;
}

std::string endpointName(const nlohmann::json& connection, std::string_view side) {
  const std::string prefix(side);
  const std::string pod = field(connection, prefix + "_pod");
  if (pod != "-") return field(connection, prefix + "_namespace") + "/" + pod;
  // Not a pod on this node: its service or address.
  if (side == "destination" && field(connection, "destination_service") != "-") {
    return field(connection, "destination_service");
  }
  return field(connection, prefix + "_address");
}

std::string render(const nlohmann::json& connections, bool wide) {
  std::vector<std::string> headers = {"", "DIRECTION", "SOURCE", "DESTINATION", "MODE", "TLS",
                                      "CIPHER", "RESUMED", "SENT", "RECEIVED", "AGE"};
  if (wide) {
    headers.insert(headers.end(), {"SOURCE IDENTITY", "DESTINATION IDENTITY", "DECIDED BY"});
  }
  Table table(headers);
  for (const auto& c : connections) {
    const bool mtls = field(c, "mode") == "mutual_tls";
    const auto number = [&](std::string_view key) {
      auto it = c.find(std::string(key));
      return it != c.end() && it->is_number() ? it->get<double>() : 0.0;
    };
    std::vector<std::string> row = {mtls ? std::string(kLockMark) : std::string(kOpenMark),
                                    field(c, "direction"),
                                    endpointName(c, "source"),
                                    endpointName(c, "destination"),
                                    field(c, "mode"),
                                    field(c, "tls_version"),
                                    field(c, "cipher"),
                                    field(c, "resumed"),
                                    humanBytes(number("bytes_sent")),
                                    humanBytes(number("bytes_received")),
                                    humanDuration(number("age_seconds"))};
    if (wide) {
      row.insert(row.end(), {field(c, "source_identity"), field(c, "destination_identity"), field(c, "decided_by")});
    }
    table.addRow(std::move(row));
  }
  return table.render();
}

std::string queryFor(const ConnectionsOptions& options) {
  std::string query;
  if (!options.namespace_filter.empty()) query += "namespace=" + admin::percentEncode(options.namespace_filter);
  if (!options.pod_filter.empty()) {
    query += (query.empty() ? "" : "&") + std::string("pod=") + admin::percentEncode(options.pod_filter);
  }
  return query.empty() ? "/connections" : "/connections?" + query;
}

int showOnce(admin::AdminClient& client, const ConnectionsOptions& options, bool clear) {
  auto answer = client.getJson(queryFor(options));
  if (!answer) return reportError(answer.error());
  nlohmann::json filtered = nlohmann::json::array();
  if (answer->contains("connections") && (*answer)["connections"].is_array()) {
    for (const auto& connection : (*answer)["connections"]) {
      if (matches(connection, options)) filtered.push_back(connection);
    }
  }
  const OutputFormat format = parseFormat(options.live.output);
  if (format != OutputFormat::kTable) {
    printStructured(nlohmann::json{{"connections", filtered}}, format);
    std::fflush(stdout);
    return kExitOk;
  }
  std::string out;
  if (clear) out += "\033[H\033[2J";
  if (options.watch) {
    const std::time_t now = std::time(nullptr);
    char stamp[32];
    std::strftime(stamp, sizeof(stamp), "%H:%M:%S", std::localtime(&now));
    out += "Every " + humanDuration(options.interval_seconds) + ": meshlockctl connections   " + stamp + "\n\n";
  }
  std::size_t locked = 0;
  for (const auto& c : filtered) locked += field(c, "mode") == "mutual_tls" ? 1 : 0;
  out += render(filtered, options.live.output == "wide");
  out += std::to_string(filtered.size()) + " connections, " + std::to_string(locked) + " " +
         std::string(kLockMark) + " mTLS\n";
  std::fputs(out.c_str(), stdout);
  std::fflush(stdout);
  return kExitOk;
}

int runConnections(const ConnectionsOptions& options) {
  if (!options.pod_filter.empty() && options.pod_filter.find('/') == std::string::npos) {
    std::fprintf(stderr, "meshlockctl: --pod wants NAMESPACE/POD, got \"%s\"\n", options.pod_filter.c_str());
    return kExitUsage;
  }
  auto client = makeClient(options.live);
  if (!client) return reportError(client.error());
  if (!options.watch) return showOnce(*client, options, false);
  const bool clear = ::isatty(STDOUT_FILENO) && parseFormat(options.live.output) == OutputFormat::kTable;
  for (int shown = 0; options.count == 0 || shown < options.count; ++shown) {
    if (shown > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<long>(options.interval_seconds * 1000)));
    }
    // While watching, an unreachable agent is reported and retried, not fatal.
    const int code = showOnce(*client, options, clear);
    if (code != kExitOk && options.count != 0 && shown + 1 == options.count) return code;
  }
  return kExitOk;
}

const CommandRegistrar kConnections{{
    "connections",
    "Live connections: source and destination, mTLS lock, TLS version and cipher, bytes, age",
    [](CLI::App& sub) -> CommandAction {
      auto options = std::make_shared<ConnectionsOptions>();
      addLiveOptions(sub, options->live, {"table", "wide", "json", "yaml"});
      sub.add_flag("-w,--watch", options->watch, "refresh until interrupted");
      sub.add_option("--interval", options->interval_seconds, "seconds between refreshes with --watch")
          ->check(CLI::PositiveNumber);
      sub.add_option("--count", options->count, "with --watch: stop after this many refreshes (0: never)")
          ->check(CLI::NonNegativeNumber);
      sub.add_option("-n,--namespace", options->namespace_filter,
                     "only connections with either end in this namespace");
      sub.add_option("--pod", options->pod_filter, "only connections with either end this pod (NAMESPACE/POD)");
      return [options] { return runConnections(*options); };
    },
}};

}  // namespace
}  // namespace meshlock::cli
