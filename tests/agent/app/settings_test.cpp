// Agent settings: defaults, overrides, and errors that name the bad field.
#include "app/settings.h"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

namespace meshlock::app {
namespace {

TEST(AgentSettings, EmptyFileKeepsDefaults) {
  auto settings = parseSettings("", "agent.yaml");
  ASSERT_TRUE(settings) << settings.error().describe();
  EXPECT_EQ(settings->bpf_pin_dir, "/sys/fs/bpf/meshlock");
  EXPECT_EQ(settings->admin_address, "127.0.0.1:15000");
  EXPECT_EQ(settings->io, IoBackend::Auto);
  EXPECT_EQ(settings->cert_lifetime, std::chrono::hours(24));
  EXPECT_EQ(settings->cluster_id, "Kubernetes");  // istiod's CLUSTER_ID default
}

TEST(AgentSettings, ReadsEveryKey) {
  auto settings = parseSettings(R"(
node: node-a
clusterId: east
manifestsDir: /run/m
cgroupRoot: /cg
bpfPinDir: /sys/fs/bpf/x
stateDir: /s
caDir: /ca
adminSocket: /a.sock
adminAddress: 127.0.0.1:16000
metricsAddress: 127.0.0.1:16020
threads: 2
io: epoll
podLegShortcut: app-to-agent
logFormat: json
logLevel: debug
certLifetimeSeconds: 60
drainDeadlineSeconds: 5
maxConnections: 5000
maxConnectionsPerPod: 1000
maxPendingHandshakes: 600
maxPendingHandshakesPerSource: 50
accessLogRefusalsPerSecond: 3
maxSourceBytes: 1048576
maxSourceObjects: 20000
)", "agent.yaml");
  ASSERT_TRUE(settings) << settings.error().describe();
  EXPECT_EQ(settings->node_name, "node-a");
  EXPECT_EQ(settings->cluster_id, "east");
  EXPECT_EQ(settings->manifests_dir, "/run/m");
  EXPECT_EQ(settings->threads, 2u);
  EXPECT_EQ(settings->io, IoBackend::Epoll);
  EXPECT_EQ(settings->pod_leg_shortcut, capture::LegShortcut::AppToAgent);
  EXPECT_EQ(settings->log_format, LogFormat::Json);
  EXPECT_EQ(settings->cert_lifetime, std::chrono::seconds(60));
  EXPECT_EQ(settings->drain_deadline, std::chrono::seconds(5));
  EXPECT_EQ(settings->max_connections, 5000u);
  EXPECT_EQ(settings->max_connections_per_pod, 1000u);
  EXPECT_EQ(settings->max_pending_handshakes, 600u);
  EXPECT_EQ(settings->max_pending_handshakes_per_source, 50u);
  EXPECT_EQ(settings->access_log_refusals_per_second, 3u);
  EXPECT_EQ(settings->max_source_bytes, 1048576u);
  EXPECT_EQ(settings->max_source_objects, 20000u);
  EXPECT_TRUE(validateSettings(*settings));
}

TEST(AgentSettings, PodLegShortcutIsOffByDefaultAndNamesItsValues) {
  EXPECT_EQ(AgentSettings{}.pod_leg_shortcut, capture::LegShortcut::Off);
  auto both = parseSettings("podLegShortcut: both\n", "agent.yaml");
  ASSERT_TRUE(both);
  EXPECT_EQ(both->pod_leg_shortcut, capture::LegShortcut::Both);
  auto bad = parseSettings("podLegShortcut: sockmap\n", "agent.yaml");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().describe().find("expected off, app-to-agent or both"), std::string::npos) << bad.error().describe();
}

TEST(ConnectionCaps, DefaultsAreSizedFromTheOpenFileLimit) {
  // This machine's (and a containerd pod's) hard limit: 20,000 minus the
  // reserve, two fds per connection.
  ConnectionCaps caps = connectionCapsFor(AgentSettings{}, 20'000);
  EXPECT_EQ(caps.max_connections, (20'000u - kReservedFds) / 2);
  EXPECT_EQ(caps.max_connections_per_pod, caps.max_connections);
  EXPECT_EQ(caps.max_pending_handshakes, caps.max_connections / 4);
  EXPECT_EQ(caps.max_pending_handshakes_per_source, 256u);
  EXPECT_FALSE(caps.clamped);
  // Pending handshakes hold at most two fds each: far below the limit.
  EXPECT_LT(2 * caps.max_pending_handshakes, 20'000u / 4);
  ConnectionCaps big = connectionCapsFor(AgentSettings{}, 1'048'576);
  EXPECT_EQ(big.max_pending_handshakes, 4096u);
  ConnectionCaps tiny = connectionCapsFor(AgentSettings{}, 1024);
  EXPECT_EQ(tiny.max_connections, 256u);
  EXPECT_EQ(tiny.max_pending_handshakes, 64u);
  EXPECT_EQ(tiny.max_pending_handshakes_per_source, 64u);
}

TEST(ConnectionCaps, ConfiguredCapsAreKeptOrLoweredToFit) {
  AgentSettings settings;
  settings.max_pending_handshakes = 1000;
  settings.max_pending_handshakes_per_source = 20;
  ConnectionCaps caps = connectionCapsFor(settings, 20'000);
  EXPECT_EQ(caps.max_pending_handshakes, 1000u);
  EXPECT_EQ(caps.max_pending_handshakes_per_source, 20u);
  EXPECT_FALSE(caps.clamped);
  settings.max_connections = 100'000;  // more than 20,000 fds can hold
  caps = connectionCapsFor(settings, 20'000);
  EXPECT_EQ(caps.max_connections, (20'000u - kReservedFds) / 2);
  EXPECT_TRUE(caps.clamped);
}

TEST(AgentSettings, UnknownKeyIsNamed) {
  auto settings = parseSettings("adminAdress: x\n", "agent.yaml");
  ASSERT_FALSE(settings);
  EXPECT_EQ(settings.error().describe(), "agent.yaml: unknown setting \"adminAdress\"");
}

TEST(AgentSettings, BadValuesAreNamed) {
  auto threads = parseSettings("threads: -1\n", "a.yaml");
  ASSERT_FALSE(threads);
  EXPECT_EQ(threads.error().describe(), "a.yaml: threads: expected a non-negative integer, got \"-1\"");
  auto io = parseSettings("io: kqueue\n", "a.yaml");
  ASSERT_FALSE(io);
  EXPECT_EQ(io.error().describe(), "a.yaml: io: expected auto, uring or epoll, got \"kqueue\"");
  auto nested = parseSettings("stateDir: [a, b]\n", "a.yaml");
  ASSERT_FALSE(nested);
  EXPECT_EQ(nested.error().describe(), "a.yaml: stateDir: expected a string");
  auto broken = parseSettings("node: [unclosed\n", "a.yaml");
  ASSERT_FALSE(broken);
  EXPECT_NE(broken.error().describe().find("a.yaml: not valid YAML"), std::string::npos);
  // A key that is not a string (found by the settings fuzz target: it threw from yaml-cpp).
  for (const char* text : {"[a]: 1\n", "{b: c}: 1\n", "? [x, y]\n: z\n"}) {
    auto key = parseSettings(text, "a.yaml");
    ASSERT_FALSE(key) << text;
    EXPECT_EQ(key.error().describe(), "a.yaml: a setting's name must be a string") << text;
  }
}

TEST(AgentSettings, ValidationNamesMissingFields) {
  AgentSettings settings;
  auto status = validateSettings(settings);
  ASSERT_FALSE(status);
  EXPECT_NE(status.error().message.find("node: required"), std::string::npos);
  settings.node_name = "n";
  settings.threads = 5000;
  status = validateSettings(settings);
  ASSERT_FALSE(status);
  EXPECT_NE(status.error().message.find("threads: at most 1024"), std::string::npos);
}

TEST(AgentSettings, KubernetesSourceSettings) {
  auto settings = parseSettings("node: n\nkubeconfig: /etc/kube/config\nserviceAccountDir: /sa\n", "a.yaml");
  ASSERT_TRUE(settings) << settings.error().describe();
  EXPECT_EQ(settings->kubeconfig, "/etc/kube/config");
  EXPECT_EQ(settings->service_account_dir, "/sa");
  EXPECT_TRUE(validateSettings(*settings));  // no manifestsDir needed: the source is chosen at start
}

// Kiali's graph drops series whose cluster is "unknown" (kiali/kiali
// graph/telemetry/istio/util/util.go, IsBadSourceTelemetry case 2): a cluster
// id that would make every edge vanish is refused with the reason.
TEST(AgentSettings, ClusterIdMustBeKnown) {
  AgentSettings settings;
  settings.node_name = "n";
  settings.manifests_dir = "/m";
  settings.cluster_id = "unknown";
  auto status = validateSettings(settings);
  ASSERT_FALSE(status);
  EXPECT_NE(status.error().message.find("Kiali discards"), std::string::npos) << status.error().message;
  settings.cluster_id = "";
  EXPECT_FALSE(validateSettings(settings));
}

TEST(AgentSettings, MissingFileNamesThePath) {
  auto settings = loadSettingsFile("/nonexistent/agent.yaml");
  ASSERT_FALSE(settings);
  EXPECT_NE(settings.error().describe().find("/nonexistent/agent.yaml"), std::string::npos);
}

}  // namespace
}  // namespace meshlock::app

namespace meshlock::app {
namespace {

// The settings shipped in the DaemonSet's ConfigMap must load as they are.
TEST(AgentSettings, DaemonSetConfigMapLoads) {
  YAML::Node map = YAML::LoadFile(std::string(MESHLOCK_SOURCE_DIR) + "/deploy/daemonset/base/configmap.yaml");
  const std::string text = map["data"]["agent.yaml"].as<std::string>();
  auto settings = parseSettings(text, "configmap.yaml");
  ASSERT_TRUE(settings) << settings.error().describe();
  settings->node_name = "node-a";  // from the downward API at run time
  EXPECT_TRUE(validateSettings(*settings));
  EXPECT_EQ(settings->log_format, LogFormat::Json);
  // In a container the agent must not mount a bpffs of its own.
  EXPECT_FALSE(settings->mount_bpffs);
  EXPECT_EQ(settings->pod_leg_shortcut, capture::LegShortcut::Off);  // said out loud, and off
}

TEST(AgentSettings, MountBpffsIsASwitch) {
  auto off = parseSettings("mountBpffs: off\n", "t");
  ASSERT_TRUE(off) << off.error().describe();
  EXPECT_FALSE(off->mount_bpffs);
  auto defaulted = parseSettings("logLevel: info\n", "t");
  ASSERT_TRUE(defaulted) << defaulted.error().describe();
  EXPECT_TRUE(defaulted->mount_bpffs);
  auto bad = parseSettings("mountBpffs: sometimes\n", "t");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().describe().find("mountBpffs"), std::string::npos) << bad.error().describe();
}

TEST(AgentSettings, CaModeAndTheRemoteCaSettings) {
  auto defaults = parseSettings("node: n", "agent.yaml");
  ASSERT_TRUE(defaults);
  EXPECT_EQ(defaults->ca_mode, CaMode::Auto) << "the local modes stay the default";
  EXPECT_EQ(defaults->ca_address, "istiod.istio-system.svc:15012");
  EXPECT_EQ(defaults->ca_root_file, "/var/run/secrets/istio/root-cert.pem");
  EXPECT_EQ(defaults->ca_token_file, "/var/run/secrets/tokens/istio-token");
  auto istiod = parseSettings(R"(
node: n
caMode: istiod
caAddress: istiod.mesh.svc:15012
caServerName: istiod.istio-system.svc
caRootFile: /r.pem
caTokenFile: /t
)", "agent.yaml");
  ASSERT_TRUE(istiod) << istiod.error().describe();
  EXPECT_EQ(istiod->ca_mode, CaMode::Istiod);
  EXPECT_EQ(istiod->ca_address, "istiod.mesh.svc:15012");
  EXPECT_EQ(istiod->ca_server_name, "istiod.istio-system.svc");
  EXPECT_EQ(istiod->ca_root_file, "/r.pem");
  EXPECT_EQ(istiod->ca_token_file, "/t");
  EXPECT_TRUE(validateSettings(*istiod));
  for (const char* mode : {"files", "generated", "auto"}) EXPECT_TRUE(parseCaMode(mode)) << mode;
  auto bad = parseSettings("caMode: vault", "agent.yaml");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().describe().find("caMode: expected auto, istiod, files or generated"), std::string::npos)
      << bad.error().describe();
  AgentSettings empty_address = *istiod;
  empty_address.ca_address.clear();
  auto invalid = validateSettings(empty_address);
  ASSERT_FALSE(invalid);
  EXPECT_NE(invalid.error().describe().find("caAddress"), std::string::npos);
}

}  // namespace
}  // namespace meshlock::app
