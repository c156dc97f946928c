// meshlockctl graph: the service graph the agent's Istio metrics describe, one
// edge per source -> destination workload, locked when every connection on it
// was mTLS. Text, Graphviz dot, SVG (through `dot -Tsvg`), JSON or YAML.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <set>

#include "admin/prometheus_text.h"
#include "cli/output.h"
#include "common/command.h"

namespace meshlock::cli {
namespace {

struct Node {
  std::string id;  // "namespace/workload", or a service host, or "unknown"
  std::string namespace_name;
  std::string workload;
};

struct EdgeCounts {
  double opened_mtls = 0;
  double opened_plaintext = 0;
  double closed = 0;
  double bytes_sent = 0;      // istio_tcp_sent_bytes_total: destination -> source
  double bytes_received = 0;  // istio_tcp_received_bytes_total: source -> destination
  std::set<std::string> policies;  // connection_security_policy values seen
};

struct Edge {
  std::string source;
  std::string destination;
  std::string reporter;  // whose series the counts come from
  EdgeCounts counts;

  // "mutual_tls" when every series on the edge says so, "none" when none does, else "mixed".
  [[nodiscard]] std::string security() const {
    if (counts.policies.size() == 1 && counts.policies.count("mutual_tls")) return "mutual_tls";
    if (!counts.policies.count("mutual_tls")) return "none";
    return "mixed";
  }
  [[nodiscard]] bool locked() const { return security() == "mutual_tls"; }
  [[nodiscard]] double connections() const { return counts.opened_mtls + counts.opened_plaintext; }
};

bool known(const std::string& value) { return !value.empty() && value != "unknown"; }

Node sourceNode(const admin::Sample& s) {
  const std::string& ns = s.label("source_workload_namespace");
  const std::string& workload = s.label("source_workload");
  if (known(workload)) return {(known(ns) ? ns + "/" : "") + workload, ns, workload};
  return {"unknown", "", "unknown"};
}

Node destinationNode(const admin::Sample& s) {
  const std::string& ns = s.label("destination_workload_namespace");
  const std::string& workload = s.label("destination_workload");
  if (known(workload)) return {(known(ns) ? ns + "/" : "") + workload, ns, workload};
  const std::string& service = s.label("destination_service");
  if (known(service)) return {service, s.label("destination_service_namespace"), service};
  return {"unknown", "", "unknown"};
}

struct Graph {
  std::map<std::string, Node> nodes;
  std::vector<Edge> edges;
};

// Each connection between two served pods is reported twice (reporter=source
// by the client's side, reporter=destination by the server's). Like Kiali, use
// the destination's report for an edge when there is one, else the source's.
Graph buildGraph(const std::vector<admin::Sample>& samples) {
  Graph graph;
  // (source, destination) -> reporter -> counts
  std::map<std::pair<std::string, std::string>, std::map<std::string, EdgeCounts>> reports;
  for (const admin::Sample& s : samples) {
    if (!s.name.starts_with("istio_tcp_")) continue;
    const Node source = sourceNode(s);
    const Node destination = destinationNode(s);
    graph.nodes.emplace(source.id, source);
    graph.nodes.emplace(destination.id, destination);
    EdgeCounts& counts = reports[{source.id, destination.id}][s.label("reporter")];
    const std::string& policy = s.label("connection_security_policy");
    if (s.name == "istio_tcp_connections_opened_total") {
      (policy == "mutual_tls" ? counts.opened_mtls : counts.opened_plaintext) += s.value;
      counts.policies.insert(policy);
    } else if (s.name == "istio_tcp_connections_closed_total") {
      counts.closed += s.value;
    } else if (s.name == "istio_tcp_sent_bytes_total") {
      counts.bytes_sent += s.value;
    } else if (s.name == "istio_tcp_received_bytes_total") {
      counts.bytes_received += s.value;
    }
  }
  for (auto& [key, by_reporter] : reports) {
    auto chosen = by_reporter.find("destination");
    if (chosen == by_reporter.end()) chosen = by_reporter.find("source");
    if (chosen == by_reporter.end()) chosen = by_reporter.begin();
    graph.edges.push_back(Edge{key.first, key.second, chosen->first, chosen->second});
  }
  return graph;
}

std::string count(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.0f", value);
  return buffer;
}

std::string securityMark(const Edge& edge) {
  if (edge.locked()) return std::string(kLockMark) + " mTLS";
  if (edge.security() == "mixed") return std::string(kOpenMark) + " mixed";
  return std::string(kOpenMark) + " open";
}

std::string renderText(const Graph& graph) {
  Table table({"SOURCE", "", "DESTINATION", "SECURITY", "CONNECTIONS", "MTLS", "PLAINTEXT", "SENT", "RECEIVED"});
  for (const Edge& edge : graph.edges) {
    table.addRow({edge.source, "->", edge.destination, securityMark(edge), count(edge.connections()),
                  count(edge.counts.opened_mtls), count(edge.counts.opened_plaintext),
                  humanBytes(edge.counts.bytes_received), humanBytes(edge.counts.bytes_sent)});
  }
  std::size_t locked = 0;
  for (const Edge& edge : graph.edges) locked += edge.locked() ? 1 : 0;
  return table.render() + std::to_string(graph.edges.size()) + " edges, " + std::to_string(locked) + " locked (" +
         std::string(kLockMark) + " every connection mTLS)\n";
}

std::string dotQuote(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out + "\"";
}

std::string renderDot(const Graph& graph) {
  std::string out =
      "digraph meshlock {\n"
      "  graph [rankdir=LR, fontname=\"Helvetica\", label=\"meshlock service graph (from istio_tcp_* metrics)\", "
      "labelloc=t];\n"
      "  node [shape=box, style=\"rounded,filled\", fillcolor=\"#eef3fb\", fontname=\"Helvetica\"];\n"
      "  edge [fontname=\"Helvetica\", fontsize=10];\n";
  // One cluster per namespace, so a reader sees the namespaces at a glance.
  std::map<std::string, std::vector<const Node*>> by_namespace;
  for (const auto& [id, node] : graph.nodes) by_namespace[node.namespace_name].push_back(&node);
  int cluster = 0;
  for (const auto& [ns, nodes] : by_namespace) {
    std::string indent = "  ";
    if (!ns.empty() && ns != "unknown") {
      out += "  subgraph cluster_" + std::to_string(cluster++) + " {\n    label=" + dotQuote(ns) +
             "; style=dashed; color=\"#90a4ae\";\n";
      indent = "    ";
    }
    for (const Node* node : nodes) {
      out += indent + dotQuote(node->id) + " [label=" + dotQuote(node->workload) +
             (node->id == "unknown" ? ", fillcolor=\"#fdecea\"" : "") + "];\n";
    }
    if (indent.size() == 4) out += "  }\n";
  }
  for (const Edge& edge : graph.edges) {
    const std::string label = securityMark(edge) + "\n" + count(edge.connections()) + " connections";
    out += "  " + dotQuote(edge.source) + " -> " + dotQuote(edge.destination) + " [label=" + dotQuote(label);
    if (edge.locked()) {
      out += ", color=\"#2e7d32\", fontcolor=\"#2e7d32\", penwidth=2";
    } else {
      out += ", color=\"#c62828\", fontcolor=\"#c62828\", style=dashed";
    }
    out += ", tooltip=" + dotQuote(edge.source + " -> " + edge.destination + ": " + edge.security()) + "];\n";
  }
  out += "}\n";
  return out;
}

Result<std::string> renderSvg(const std::string& dot) {
  char path[] = "/tmp/meshlockctl-graph-XXXXXX";
  const int fd = ::mkstemp(path);
  if (fd < 0) return failErrno("graph: mkstemp");
  const bool written = ::write(fd, dot.data(), dot.size()) == static_cast<ssize_t>(dot.size());
  ::close(fd);
  if (!written) {
    ::unlink(path);
    return fail("graph: cannot write the dot file");
  }
  // The path is ours (mkstemp), so it is safe in a shell command.
  FILE* pipe = ::popen((std::string("dot -Tsvg ") + path + " 2>&1").c_str(), "r");
  if (!pipe) {
    ::unlink(path);
    return failErrno("graph: cannot run dot");
  }
  std::string svg;
  char buffer[8192];
  std::size_t got;
  while ((got = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) svg.append(buffer, got);
  const int status = ::pclose(pipe);
  ::unlink(path);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127) {
      return fail("graph: Graphviz `dot` not found (Debian package graphviz); -o dot prints the source");
    }
    return fail("graph: dot -Tsvg failed: " + svg.substr(0, 300));
  }
  return svg;
}

nlohmann::json toJson(const Graph& graph) {
  nlohmann::json nodes = nlohmann::json::array();
  for (const auto& [id, node] : graph.nodes) {
    nodes.push_back({{"id", id}, {"namespace", node.namespace_name}, {"workload", node.workload}});
  }
  nlohmann::json edges = nlohmann::json::array();
  for (const Edge& edge : graph.edges) {
    edges.push_back({{"source", edge.source},
                     {"destination", edge.destination},
                     {"security", edge.security()},
                     {"locked", edge.locked()},
                     {"reporter", edge.reporter},
                     {"connections_opened", edge.connections()},
                     {"connections_mtls", edge.counts.opened_mtls},
                     {"connections_plaintext", edge.counts.opened_plaintext},
                     {"connections_closed", edge.counts.closed},
                     {"bytes_source_to_destination", edge.counts.bytes_received},
                     {"bytes_destination_to_source", edge.counts.bytes_sent}});
  }
  return {{"nodes", nodes}, {"edges", edges}};
}

int runGraph(const LiveOptions& options) {
  auto client = makeClient(options);
  if (!client) return reportError(client.error());
  auto text = client->getText("/metrics");
  if (!text) return reportError(text.error());
  auto samples = admin::parsePrometheusText(*text);
  if (!samples) return reportError(samples.error().context("/metrics"));
  const Graph graph = buildGraph(*samples);
  const std::string& format = options.output;
  if (format == "json" || format == "yaml") {
    printStructured(toJson(graph), parseFormat(format));
  } else if (format == "dot") {
    std::fputs(renderDot(graph).c_str(), stdout);
  } else if (format == "svg") {
    auto svg = renderSvg(renderDot(graph));
    if (!svg) return reportError(svg.error());
    std::fputs(svg->c_str(), stdout);
  } else {
    std::fputs(renderText(graph).c_str(), stdout);
  }
  return kExitOk;
}

const CommandRegistrar kGraph{{
    "graph",
    "Service graph from the agent's metrics: source -> destination workloads, locked when mTLS",
    [](CLI::App& sub) -> CommandAction {
      auto options = std::make_shared<LiveOptions>();
      options->output = "text";
      addLiveOptions(sub, *options, {"text", "dot", "svg", "json", "yaml"});
      return [options] { return runGraph(*options); };
    },
}};

}  // namespace
}  // namespace meshlock::cli
