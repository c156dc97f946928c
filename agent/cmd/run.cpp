// `meshlock-agent run`: the node agent. Settings come from --config, then
// flags; SIGTERM or SIGINT drains and exits.
#include <signal.h>
#include <sys/resource.h>

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <stop_token>
#include <thread>

#include "app/agent.h"
#include "app/settings.h"
#include "common/command.h"

namespace meshlock {
namespace {

struct RunFlags {
  std::string config;
  std::string node;
  std::string cluster_id;
  std::string manifests;
  std::string kubeconfig;
  std::string service_account_dir;
  std::string cgroup_root;
  std::string bpf_pin_dir;
  std::string state_dir;
  std::string ca_dir;
  std::string ca_mode;
  std::string ca_address;
  std::string ca_server_name;
  std::string ca_root_file;
  std::string ca_token_file;
  std::string admin_socket;
  std::string handover_socket;
  std::string admin_address;
  std::string metrics_address;
  std::string io;
  std::string pod_leg_shortcut;
  std::string log_format;
  std::string log_level;
  std::string access_log;
  std::string mount_bpffs;
  std::string admin_socket_take_over;
  unsigned threads = 0;
  unsigned cert_lifetime = 0;
  unsigned drain_deadline = 0;
  unsigned max_connections = 0;
  unsigned max_pending_handshakes = 0;
  unsigned max_pending_handshakes_per_source = 0;
};

// Every connection holds fds: the soft RLIMIT_NOFILE (often 1,024, or the
// container runtime's default) goes up to the hard one, which only the
// runtime can raise. The engine's caps are sized from the result.
void raiseOpenFileLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    spdlog::warn("open files limit: getrlimit: {}", std::strerror(errno));
    return;
  }
  if (limit.rlim_cur == limit.rlim_max) {
    spdlog::info("open files limit: {} (already the hard limit)", limit.rlim_cur);
    return;
  }
  const rlim_t before = limit.rlim_cur;
  limit.rlim_cur = limit.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
    spdlog::warn("open files limit: raising {} to {}: {}", before, limit.rlim_max, std::strerror(errno));
    return;
  }
  spdlog::info("open files limit: raised from {} to {} (the hard limit)", before, limit.rlim_max);
}

// The length of the well-formed UTF-8 sequence at the start of `s`, or 0.
size_t utf8SequenceLength(std::string_view s) {
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char lead = byte(0);
  size_t length = lead >= 0xf0 && lead <= 0xf4 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc2 && lead <= 0xdf ? 2 : 0;
  if (length == 0 || lead > 0xf4 || s.size() < length) return 0;
  for (size_t i = 1; i < length; ++i)
    if ((byte(i) & 0xc0) != 0x80) return 0;
  if (lead == 0xe0 && byte(1) < 0xa0) return 0;   // overlong
  if (lead == 0xed && byte(1) > 0x9f) return 0;   // surrogates
  if (lead == 0xf0 && byte(1) < 0x90) return 0;   // overlong
  if (lead == 0xf4 && byte(1) > 0x8f) return 0;   // above U+10FFFF
  return length;
}

// %*: the message as the inside of a JSON string, so a log line stays one
// valid JSON object whatever the message holds (quotes, paths, peer data).
class JsonEscapedMessage final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    const std::string_view text(msg.payload.data(), msg.payload.size());
    for (size_t i = 0; i < text.size();) {
      const auto c = static_cast<unsigned char>(text[i]);
      if (c >= 0x80) {
        // Well-formed UTF-8 passes; any other byte becomes U+FFFD.
        const size_t length = utf8SequenceLength(text.substr(i));
        if (length == 0) {
          dest.append(std::string_view("\xEF\xBF\xBD"));
          ++i;
        } else {
          dest.append(text.substr(i, length));
          i += length;
        }
        continue;
      }
      switch (c) {
        case '"': dest.append(std::string_view("\\\"")); break;
        case '\\': dest.append(std::string_view("\\\\")); break;
        case '\n': dest.append(std::string_view("\\n")); break;
        case '\t': dest.append(std::string_view("\\t")); break;
        default:
          if (c < 0x20 || c == 0x7f) {
            fmt::format_to(std::back_inserter(dest), "\\u{:04x}", static_cast<unsigned>(c));
          } else {
            dest.push_back(static_cast<char>(c));
          }
      }
      ++i;
    }
  }

  [[nodiscard]] std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JsonEscapedMessage>();
  }
};

void setUpLogging(const app::AgentSettings& settings) {
  auto logger = spdlog::stderr_logger_mt("meshlock");
  if (settings.log_format == app::LogFormat::Json) {
    auto formatter = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
    formatter->add_flag<JsonEscapedMessage>('*').set_pattern(
        R"({"time":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","msg":"%*"})");
    logger->set_formatter(std::move(formatter));
  } else {
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  }
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(settings.log_level));
}

Result<app::AgentSettings> settingsFrom(const RunFlags& flags) {
  app::AgentSettings settings;
  if (!flags.config.empty()) {
    auto loaded = app::loadSettingsFile(flags.config);
    if (!loaded) return loaded;
    settings = std::move(*loaded);
  }
  auto set = [](const std::string& flag, auto& field) {
    if (!flag.empty()) field = flag;
  };
  set(flags.node, settings.node_name);
  set(flags.cluster_id, settings.cluster_id);
  set(flags.manifests, settings.manifests_dir);
  set(flags.kubeconfig, settings.kubeconfig);
  set(flags.service_account_dir, settings.service_account_dir);
  set(flags.cgroup_root, settings.cgroup_root);
  set(flags.bpf_pin_dir, settings.bpf_pin_dir);
  set(flags.state_dir, settings.state_dir);
  set(flags.ca_dir, settings.ca_dir);
  set(flags.ca_address, settings.ca_address);
  set(flags.ca_server_name, settings.ca_server_name);
  set(flags.ca_root_file, settings.ca_root_file);
  set(flags.ca_token_file, settings.ca_token_file);
  if (!flags.ca_mode.empty()) {
    auto mode = app::parseCaMode(flags.ca_mode);
    if (!mode) return std::unexpected(mode.error());
    settings.ca_mode = *mode;
  }
  set(flags.admin_socket, settings.admin_socket);
  if (!flags.handover_socket.empty()) settings.handover_socket = flags.handover_socket;
  set(flags.admin_address, settings.admin_address);
  set(flags.metrics_address, settings.metrics_address);
  set(flags.log_level, settings.log_level);
  if (flags.threads) settings.threads = flags.threads;
  if (flags.cert_lifetime) settings.cert_lifetime = std::chrono::seconds(flags.cert_lifetime);
  if (flags.drain_deadline) settings.drain_deadline = std::chrono::seconds(flags.drain_deadline);
  if (flags.max_connections) settings.max_connections = flags.max_connections;
  if (flags.max_pending_handshakes) settings.max_pending_handshakes = flags.max_pending_handshakes;
  if (flags.max_pending_handshakes_per_source)
    settings.max_pending_handshakes_per_source = flags.max_pending_handshakes_per_source;
  if (!flags.io.empty()) {
    auto io = app::parseIoBackend(flags.io);
    if (!io) return std::unexpected(io.error());
    settings.io = *io;
  }
  if (!flags.pod_leg_shortcut.empty()) {
    auto shortcut = capture::parseLegShortcut(flags.pod_leg_shortcut);
    if (!shortcut) return std::unexpected(shortcut.error());
    settings.pod_leg_shortcut = *shortcut;
  }
  if (!flags.access_log.empty()) {
    auto on = app::parseSwitch("--access-log", flags.access_log);
    if (!on) return std::unexpected(on.error());
    settings.access_log = *on;
  }
  if (!flags.admin_socket_take_over.empty()) {
    auto on = app::parseSwitch("--admin-socket-take-over", flags.admin_socket_take_over);
    if (!on) return std::unexpected(on.error());
    settings.admin_socket_take_over = *on;
  }
  if (!flags.mount_bpffs.empty()) {
    auto on = app::parseSwitch("--mount-bpffs", flags.mount_bpffs);
    if (!on) return std::unexpected(on.error());
    settings.mount_bpffs = *on;
  }
  if (!flags.log_format.empty()) {
    auto format = app::parseLogFormat(flags.log_format);
    if (!format) return std::unexpected(format.error());
    settings.log_format = *format;
  }
  if (auto valid = app::validateSettings(settings); !valid) return std::unexpected(valid.error());
  return settings;
}

int runAgent(const RunFlags& flags) {
  auto settings = settingsFrom(flags);
  if (!settings) {
    std::fprintf(stderr, "meshlock-agent: %s\n", settings.error().describe().c_str());
    return 2;
  }
  setUpLogging(*settings);
  raiseOpenFileLimit();

  // Signals are taken synchronously by one thread, which asks the agent to stop.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto agent = app::Agent::start(*settings);
  if (!agent) {
    spdlog::critical("cannot start: {}", agent.error().describe());
    return 1;
  }
  std::stop_source stop;
  std::jthread signal_waiter([&stop, signals](std::stop_token) {
    int signal_number = 0;
    sigwait(&signals, &signal_number);
    spdlog::info("signal {}: shutting down", signal_number);
    stop.request_stop();
  });
  int code = (*agent)->run(stop.get_token());
  if (!stop.stop_requested()) stop.request_stop();
  signal_waiter.detach();  // still blocked in sigwait if we stopped for another reason
  return code;
}

const CommandRegistrar kRun({
    .name = "run",
    .help = "run the node agent: capture enrolled pods and give them mTLS",
    .setup =
        [](CLI::App& sub) -> CommandAction {
          auto flags = std::make_shared<RunFlags>();
          sub.add_option("--config", flags->config, "settings file (YAML)");
          sub.add_option("--node", flags->node, "the Kubernetes node this agent serves");
          sub.add_option("--cluster-id", flags->cluster_id, "the mesh's cluster name in telemetry (default Kubernetes, as istiod's)");
          sub.add_option("--manifests", flags->manifests, "directory of cluster manifests (watched); wins over the API");
          sub.add_option("--kubeconfig", flags->kubeconfig, "read the cluster from the Kubernetes API of this kubeconfig");
          sub.add_option("--service-account-dir", flags->service_account_dir,
                         "in-cluster service account (token, ca.crt, namespace), used when KUBERNETES_SERVICE_HOST is set");
          sub.add_option("--cgroup-root", flags->cgroup_root, "cgroup v2 root holding kubepods (default: the cgroup2 mount)");
          sub.add_option("--bpf-pin-dir", flags->bpf_pin_dir, "where BPF programs and maps are pinned");
          sub.add_option("--mount-bpffs", flags->mount_bpffs,
                         "on or off: mount a bpffs for the pin dir if it has none (default on; off in a container)");
          sub.add_option("--state-dir", flags->state_dir, "agent state (generated CA)");
          sub.add_option("--ca-dir", flags->ca_dir, "Istio plug-in CA directory (cacerts)");
          sub.add_option("--ca-mode", flags->ca_mode, "where certificates come from: auto, istiod, files, generated");
          sub.add_option("--ca-address", flags->ca_address, "Istio's CA API (istiod or meshlock-agent ca), host:port");
          sub.add_option("--ca-server-name", flags->ca_server_name, "the name the CA's certificate must carry");
          sub.add_option("--ca-root-file", flags->ca_root_file, "the mesh root (PEM) the CA and peers chain to");
          sub.add_option("--ca-token-file", flags->ca_token_file, "a token for the CA (audience istio-ca)");
          sub.add_option("--admin-socket", flags->admin_socket, "admin API Unix socket");
          sub.add_option("--handover-socket", flags->handover_socket,
                         "where a newer agent takes established connections over at an upgrade ('off': drain them)");
          sub.add_option("--admin-socket-take-over", flags->admin_socket_take_over,
                         "on or off: replace the admin socket even if another agent still serves it "
                         "(a rolling update with surge; default off)");
          sub.add_option("--admin-address", flags->admin_address, "admin API address");
          sub.add_option("--metrics-address", flags->metrics_address, "metrics and readiness address");
          sub.add_option("--threads", flags->threads, "engine threads (0: one per core)");
          sub.add_option("--io", flags->io, "event loop: auto, uring or epoll");
          sub.add_option("--pod-leg-shortcut", flags->pod_leg_shortcut,
                         "app <-> agent bytes in the pod without loopback TCP: off, app-to-agent or both");
          sub.add_option("--log-format", flags->log_format, "text or json");
          sub.add_option("--log-level", flags->log_level, "trace, debug, info, warn, error");
          sub.add_option("--access-log", flags->access_log, "on or off: a line per connection when it ends (default on)");
          sub.add_option("--cert-lifetime", flags->cert_lifetime, "workload certificate lifetime, seconds");
          sub.add_option("--drain-deadline", flags->drain_deadline, "seconds to let connections finish on shutdown");
          sub.add_option("--max-connections", flags->max_connections,
                         "engine connections at most (default: sized from the open-files limit)");
          sub.add_option("--max-pending-handshakes", flags->max_pending_handshakes,
                         "connections before their handshake at most, on the node; the oldest is shed (default: sized)");
          sub.add_option("--max-pending-handshakes-per-source", flags->max_pending_handshakes_per_source,
                         "of those, from one source IP; more are refused (default 256)");
          return [flags] { return runAgent(*flags); };
        },
});

}  // namespace
}  // namespace meshlock
