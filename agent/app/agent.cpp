// The composition root: every part is created here and wired to the others.
// Data flows one way: manifests → policy → capture and engine; identity feeds
// the engine; nothing calls back into config or policy.
#include "app/agent.h"
#include "app/agent_parts.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <tuple>

#include "capture/datapath.h"
#include "capture/netns.h"
#include "config/credentials.h"
#include "config/workload.h"
#include "capture/pod_discovery.h"
#include "config/kube/choose_source.h"
#include "engine/engine.h"
#include "identity/destination_tls.h"
#include "identity/identity_manager.h"
#include "identity/tls_context.h"
#include "kmod-free/probe.h"
#include "policy/policy.h"

namespace meshlock::app {
namespace {

// The identity part's reason for refusing a peer, for the engine's log line.
std::string explainRefusal(const SSL* ssl) {
  auto failure = identity::verifyFailure(ssl);
  return failure ? failure->describe() : std::string();
}

namespace fs = std::filesystem;

// What the engine is told when a pod's AuthorizationPolicy refuses a peer.
std::optional<engine::Refusal> authorizationRefusal(const policy::PolicyIndex& policy, const config::Pod& pod,
                                                    const engine::SocketAddress& peer, const engine::SocketAddress& app,
                                                    std::string_view peer_identity, std::string_view server_name) {
  const policy::AuthzDecision decision =
      policy.authorization().decide(pod, policy::AuthzRequest{.source_principal = peer_identity,
                                                             .source_ip = peer.ip(),
                                                             .destination_ip = app.ip(),
                                                             .destination_port = app.port(),
                                                             .sni = server_name});
  if (decision.result == policy::AuthzResult::kAllow) return std::nullopt;
  return engine::Refusal{.reason = decision.describe(), .policy = decision.policyName()};
}

// Where certificates come from: caMode (docs/identity.md).
Result<identity::IdentityConfig> identitySourceFor(const AgentSettings& settings, const identity::TrustDomain& domain) {
  identity::IdentityConfig config{.caDirectory = settings.state_dir / "ca", .trustDomain = domain};
  std::error_code ec;
  const bool plugin_files = fs::exists(settings.ca_dir / identity::kCaCertFile, ec);
  auto istiod = [&] {
    config.caDirectory.clear();
    config.remoteCa = identity::RemoteCaConfig{.client = {.address = settings.ca_address,
                                                          .serverName = settings.ca_server_name,
                                                          .rootFile = settings.ca_root_file,
                                                          .tokenFile = settings.ca_token_file,
                                                          .clusterId = settings.cluster_id}};
  };
  switch (settings.ca_mode) {
    case CaMode::Istiod:
      istiod();
      break;
    case CaMode::Files:
      if (!plugin_files)
        return fail(fmt::format("caMode files: {} has no {}", settings.ca_dir.string(), identity::kCaCertFile));
      config.caDirectory = settings.ca_dir;
      spdlog::warn("identity: caMode files: the CA's private key is on this node ({}); whoever roots the node can "
                   "mint any identity of the mesh. For air-gapped tests only; use caMode istiod in production",
                   settings.ca_dir.string());
      break;
    case CaMode::Generated:
      break;
    case CaMode::Auto:
      // istiod published the mesh root where the pod mounts it (the
      // istio-ca-root-cert ConfigMap) and the pod has a token for it: an
      // Istio control plane signs, and no CA key is on the node.
      if (fs::exists(settings.ca_root_file, ec) && fs::exists(settings.ca_token_file, ec)) {
        spdlog::info("identity: caMode auto: {} and {} are there: certificates from istiod at {}",
                     settings.ca_root_file.string(), settings.ca_token_file.string(), settings.ca_address);
        istiod();
      } else if (plugin_files) {
        config.caDirectory = settings.ca_dir;
      }
      break;
  }
  return config;
}

constexpr std::uint16_t kOutboundPort = 15001;
constexpr std::uint16_t kInboundPort = 15006;

engine::SocketAddress toEngineAddress(const capture::SocketAddress& address) {
  sockaddr_storage storage{};
  socklen_t length = address.toSockaddr(storage);
  return engine::SocketAddress::fromSockaddr(reinterpret_cast<const sockaddr*>(&storage), length);
}

engine::InboundMode toEngineMode(policy::ServerMode mode) {
  switch (mode) {
    case policy::ServerMode::kStrict: return engine::InboundMode::Strict;
    case policy::ServerMode::kPermissive: return engine::InboundMode::Permissive;
    case policy::ServerMode::kDisable:
    case policy::ServerMode::kNone: return engine::InboundMode::Disable;
  }
  return engine::InboundMode::Strict;
}

identity::TlsMinVersion toIdentityVersion(config::TlsVersion version) {
  return version == config::TlsVersion::kTls13 ? identity::TlsMinVersion::kTls13
                                               : identity::TlsMinVersion::kTls12;
}

// A rule's SIMPLE/MUTUAL settings for one client; a credentialName is read
// from the client namespace's Secrets, and a missing or unusable one refuses
// the connection (as Envoy's cluster waits, never warmed, for its secret).
Result<identity::DestinationTlsConfig> destinationTlsConfig(const config::ClientTlsSettings& tls,
                                                            const policy::OutboundDecision& decision,
                                                            const config::Pod& client,
                                                            const config::ClusterState& state) {
  identity::DestinationTlsConfig out;
  if (!tls.credential_name.empty()) {
    auto credential = config::clientCredential(tls, client, state);
    if (!credential) return std::unexpected(credential.error().context("DestinationRule for " + std::string(decision.host)));
    out.credentialSource = credential->source;
    out.caPem = std::move(credential->ca_certificates);
    out.certificatePem = std::move(credential->certificate_chain);
    out.keyPem = std::move(credential->private_key);
  }
  out.mode = tls.mode == config::TlsMode::kMutual ? identity::DestinationTlsMode::kMutual
                                                  : identity::DestinationTlsMode::kSimple;
  out.caCertificates = tls.ca_certificates;
  out.clientCertificate = tls.client_certificate;
  out.privateKey = tls.private_key;
  out.subjectAltNames = tls.subject_alt_names;
  out.sni = tls.sni.empty() ? std::string(decision.host) : tls.sni;
  out.ruleName = std::string(decision.host);
  return out;
}

// What capture needs for a pod: its cgroup, addresses, and whether inbound
// fails closed while the agent is away (any STRICT port), from the policy.
Result<capture::PodSpec> capturePodSpec(const PolicyRef& policy, const config::Pod& pod,
                                        const fs::path& cgroup_root) {
  const std::string name = pod.ns() + "/" + pod.name();
  auto cgroup = capture::findPodCgroup(cgroup_root, capture::PodUid{pod.uid.str()});
  if (!cgroup) return std::unexpected(cgroup.error().context("pod " + name));
  capture::PodSpec spec;
  spec.uid = capture::PodUid{pod.uid.str()};
  spec.name = name;
  spec.cgroup_dir = *cgroup;
  for (const config::ContainerPort& port : pod.ports)
    spec.inbound_fail_closed |= policy->inbound(pod, port.port).mode == policy::ServerMode::kStrict;
  spec.addresses = pod.ips;
  return spec;
}


// The workload behind an outbound destination: the pod itself, or the one
// workload every backend of the service belongs to.
// The backend an HBONE stream goes to. ztunnel balances a service's endpoints
// itself (the tunnel names one pod), so meshlock picks, round robin, among the
// backends that take HBONE; a pod address is its own backend.
std::optional<policy::Backend> hboneBackend(const policy::PolicyIndex& policy, const policy::OutboundDecision& d,
                                            std::uint64_t pick) {
  if (d.pod != nullptr) {
    if (!d.pod->ip) return std::nullopt;
    return policy::Backend{.pod = d.pod, .ip = *d.pod->ip, .port = d.pod_port};
  }
  std::vector<const policy::Backend*> able;
  for (const policy::Backend& b : d.backends)
    if (b.pod != nullptr && policy.takesHbone(*b.pod)) able.push_back(&b);
  if (able.empty()) return std::nullopt;
  return *able[pick % able.size()];
}

// The baggage ztunnel's outbound sends for its source (istio/ztunnel
// src/baggage.rs baggage_header_val).
std::string baggageOf(const config::Pod& pod, std::string_view cluster_id) {
  const config::WorkloadMeta w = config::workloadOf(pod);
  return fmt::format("k8s.cluster.name={},k8s.namespace.name={},k8s.{}.name={},service.name={},service.version={}",
                     cluster_id, pod.ns(), w.name == pod.name() ? "pod" : "deployment", w.name, w.canonical_service,
                     w.canonical_revision);
}

const config::Pod* destinationPod(const policy::OutboundDecision& decision) {
  if (decision.pod != nullptr) return decision.pod;
  if (decision.backends.empty() || decision.backends.front().pod == nullptr) return nullptr;
  const config::Pod* first = decision.backends.front().pod;
  if (decision.backends.size() == 1) return first;
  const std::string workload = config::workloadOf(*first).name;
  for (const policy::Backend& backend : decision.backends.subspan(1)) {
    if (backend.pod == nullptr || backend.pod->ns() != first->ns() || config::workloadOf(*backend.pod).name != workload)
      return nullptr;
  }
  return first;
}

}  // namespace

PlannedConnection Agent::Parts::planReport(const config::Pod& pod, const identity::SpiffeId& pod_id,
                                           bool outbound) const {
  PlannedConnection planned;
  planned.outbound = outbound;
  planned.pod = pod.ns() + "/" + pod.name();
  planned.local_principal = pod_id.uri();
  planned.labels.reporter = outbound ? "source" : "destination";
  labelWorkload(pod, outbound, settings.cluster_id, planned.labels);
  return planned;
}

Result<engine::OutboundPlan> Agent::Parts::planOutbound(const config::PodUid& source,
                                                        const identity::SpiffeId& source_id,
                                                        const std::shared_ptr<UniqueFd>& netns,
                                                        const engine::AcceptedSocket& accepted) {
  auto original = datapath->originalDestination(accepted.fd);
  if (!original) return std::unexpected(original.error());
  const engine::SocketAddress destination = toEngineAddress(original->destination);
  const PolicyRef policy = currentPolicy();
  const config::Pod* pod = policy->podByUid(source);
  if (pod == nullptr) return fail("pod " + source.str() + " is no longer in the cluster state");
  const policy::OutboundDecision decision = policy->outbound(
      *pod, policy::Destination{.ip = original->destination.ip, .host = {}}, original->destination.port);

  engine::OutboundPlan plan;
  plan.destination = destination;
  plan.make_socket = [netns](const engine::SocketAddress& to) { return capture::socketInNetns(netns->get(), to.family()); };
  if (reports) {
    PlannedConnection planned = planReport(*pod, source_id, true);
    planned.policy = decision.client_tls == policy::ClientTls::kNone ? "DISABLE" : std::string(toString(decision.client_tls));
    planned.decided_by = decision.client_decided_by.text();
    planned.mesh_mtls = decision.client_tls == policy::ClientTls::kIstioMutual;
    if (decision.service != nullptr) labelService(policy->fqdn(*decision.service), *decision.service, settings.cluster_id, planned.labels);
    if (const config::Pod* to = destinationPod(decision)) labelWorkload(*to, false, settings.cluster_id, planned.labels);
    plan.observer = std::make_unique<ConnectionReport>(reports, std::move(planned));
  }
  switch (decision.client_tls) {
    case policy::ClientTls::kNone:
    case policy::ClientTls::kDisable:
      return plan;
    case policy::ClientTls::kIstioMutual: {
      std::vector<identity::SpiffeId> expected;
      for (const std::string& text : decision.expected_identities) {
        auto id = identity::SpiffeId::parse(text);
        if (id) expected.push_back(std::move(*id));
      }
      auto context = identities->clientContext(source_id);
      if (!context) return std::unexpected(context.error());
      if (decision.tunnel == policy::Tunnel::kHbone) {
        // HBONE (docs/hbone.md): a stream of the pooled tunnel to the backend's 15008.
        auto backend = hboneBackend(*policy, decision, hbone_picks.fetch_add(1, std::memory_order_relaxed));
        if (!backend) return fail("no backend of " + destination.toString() + " takes HBONE");
        const engine::SocketAddress target = toEngineAddress(capture::SocketAddress{backend->ip, backend->port});
        engine::TunnelOrigin origin;
        origin.address = toEngineAddress(capture::SocketAddress{backend->ip, engine::kHbonePort});
        std::string expected_text;
        for (const std::string& id : decision.expected_identities) expected_text += id + ",";
        origin.pool_key = source.str() + "|" + origin.address.toString() + "|" + expected_text;
        origin.request.authority = target.toString();
        origin.request.baggage = baggageOf(*pod, settings.cluster_id);
        origin.request.forwarded = "for=\"" + accepted.peer.toString() + "\"" +
                                   (decision.service ? ";host=" + policy->fqdn(*decision.service) : std::string());
        origin.tls.context = engine::SslContextRef(std::move(*context));
        origin.tls.prepare = [expected = std::move(expected)](SSL* ssl) -> Status {
          if (Status set = identity::setExpectedPeers(ssl, identity::ExpectedPeers::oneOf(expected)); !set) return set;
          return identity::prepareTunnelClient(ssl);
        };
        origin.tls.verify_peer = [](SSL* ssl) -> Result<std::string> {
          auto peer = identity::handshakeIdentity(ssl);
          if (!peer) return fail(peer.error().describe());
          return peer->uri();
        };
        origin.tls.explain_failure = explainRefusal;
        plan.tunnel = std::move(origin);  // plan.destination stays what the app asked for
        return plan;
      }
      engine::TlsClientSetup tls;
      tls.context = engine::SslContextRef(std::move(*context));
      // Resumption: a session of this source identity to this destination
      // expecting these peers (never across renewals or bundle changes, and
      // the peer is verified again against `expected` when resumed).
      identity::SessionKey key{.local = source_id, .destination = destination.toString(), .expected = expected};
      tls.prepare = [key = std::move(key), sessions = &identities->clientSessions()](SSL* ssl) -> Status {
        if (Status set = identity::setExpectedPeers(ssl, identity::ExpectedPeers::oneOf(key.expected)); !set) return set;
        return sessions->prepare(ssl, key);
      };
      tls.verify_peer = [](SSL* ssl) -> Result<std::string> {
        auto peer = identity::handshakeIdentity(ssl);
        if (!peer) return fail(peer.error().describe());
        return peer->uri();
      };
      tls.explain_failure = explainRefusal;
      plan.tls = std::move(tls);
      return plan;
    }
    case policy::ClientTls::kSimple:
    case policy::ClientTls::kMutual: {
      if (decision.tls == nullptr) return fail("DestinationRule TLS settings missing for " + std::string(decision.host));
      auto config = destinationTlsConfig(*decision.tls, decision, *pod, policy->state());
      if (!config) return std::unexpected(config.error());
      auto context = destination_tls->context(*config);
      if (!context) return std::unexpected(context.error());
      engine::TlsClientSetup tls;
      tls.context = engine::SslContextRef(std::move(*context));
      tls.server_name = config->sni;
      tls.verify_peer = [](SSL* ssl) -> Result<std::string> {
        if (auto failure = identity::verifyFailure(ssl)) return fail(failure->describe());
        return std::string("server");
      };
      tls.explain_failure = explainRefusal;
      plan.tls = std::move(tls);
      return plan;
    }
  }
  return fail("unknown client TLS mode");
}

std::unique_ptr<ConnectionReport> Agent::Parts::inboundReport(const policy::PolicyIndex& policy,
                                                              const config::Pod& pod, const identity::SpiffeId& pod_id,
                                                              const engine::SocketAddress& peer,
                                                              const engine::SocketAddress& app,
                                                              const policy::InboundDecision& decision,
                                                              engine::InboundMode mode, bool tunnel) const {
  if (!reports) return nullptr;
  PlannedConnection planned = planReport(pod, pod_id, false);
  planned.policy = toString(mode);
  planned.decided_by = decision.decided_by.text();
  planned.port = pod.hasContainerPort(app.port()) ? app.port() : 0;
  planned.mesh_mtls = tunnel || mode != engine::InboundMode::Disable;  // an HBONE stream is mTLS whatever the mode
  if (const config::Service* svc = policy.serviceForPodPort(pod, app.port()))
    labelService(policy.fqdn(*svc), *svc, settings.cluster_id, planned.labels);
  if (const config::Pod* source = policy.podByIp(peer.ip())) labelWorkload(*source, true, settings.cluster_id, planned.labels);
  return std::make_unique<ConnectionReport>(reports, std::move(planned));
}

namespace {

// A mesh server's TLS: the pod's certificate, the peer's SPIFFE identity verified.
Result<engine::TlsServerSetup> meshServerTls(identity::IdentityManager& identities, const identity::SpiffeId& pod_id) {
  auto context = identities.serverContext(pod_id);
  if (!context) return std::unexpected(context.error());
  engine::TlsServerSetup tls;
  tls.context = engine::SslContextRef(std::move(*context));
  tls.verify_peer = [](SSL* ssl) -> Result<std::string> {
    auto peer = identity::handshakeIdentity(ssl);
    if (!peer) return fail(peer.error().describe());
    return peer->uri();
  };
  tls.explain_failure = explainRefusal;
  return tls;
}

}  // namespace

engine::SocketFactory Agent::Parts::appSocketFactory(const std::shared_ptr<UniqueFd>& netns) const {
  const capture::Datapath* capture = datapath ? &*datapath : nullptr;
  return [netns, capture](const engine::SocketAddress& to) -> Result<UniqueFd> {
    auto fd = capture::socketInNetns(netns->get(), to.family());
    if (fd && capture != nullptr)
      if (auto marked = capture->markAgentUpstream(fd->get()); !marked) return std::unexpected(marked.error());
    return fd;
  };
}

Result<engine::InboundPlan> Agent::Parts::planInbound(const config::PodUid& pod, const identity::SpiffeId& pod_id,
                                                      const std::shared_ptr<UniqueFd>& netns,
                                                      const engine::AcceptedSocket& accepted) {
  if (accepted.local.port() == engine::kHbonePort) return planTunnel(pod, pod_id, netns, accepted);
  const PolicyRef policy = currentPolicy();
  const policy::InboundDecision decision = policy->inbound(pod, accepted.local.port());
  engine::InboundPlan plan;
  plan.mode = toEngineMode(decision.mode);
  plan.app = accepted.local;  // sk_lookup keeps the original local address
  plan.make_socket = appSocketFactory(netns);
  const config::Pod* served_pod = policy->podByUid(pod);
  if (served_pod != nullptr)
    plan.observer = inboundReport(*policy, *served_pod, pod_id, accepted.peer, accepted.local, decision, plan.mode);
  if (plan.mode != engine::InboundMode::Disable) {
    auto tls = meshServerTls(*identities, pod_id);
    if (!tls) return std::unexpected(tls.error());
    plan.tls = std::move(*tls);
  }
  // AuthorizationPolicy, once the peer is known (agent/policy/authorization.h).
  if (served_pod != nullptr && policy->authorization().anyApplies(*served_pod)) {
    plan.authorize = [policy, served_pod, source = accepted.peer, app = accepted.local](
                         std::string_view peer_identity, std::string_view server_name) {
      return authorizationRefusal(*policy, *served_pod, source, app, peer_identity, server_name);
    };
  }
  return plan;
}

// HBONE (docs/hbone.md): mTLS whatever the port's mode, as ztunnel takes it;
// each stream then reaches its own port, and the authorization policy of the
// moment decides it with the tunnel's verified peer.
Result<engine::InboundPlan> Agent::Parts::planTunnel(const config::PodUid& pod, const identity::SpiffeId& pod_id,
                                                     const std::shared_ptr<UniqueFd>& netns,
                                                     const engine::AcceptedSocket& accepted) {
  engine::InboundPlan plan;
  plan.mode = engine::InboundMode::Strict;
  plan.app = accepted.local;
  plan.make_socket = appSocketFactory(netns);
  auto tls = meshServerTls(*identities, pod_id);
  if (!tls) return std::unexpected(tls.error());
  plan.tls = std::move(*tls);
  plan.tls.prepare = identity::prepareTunnelServer;
  plan.tunnel = [this, pod, pod_id](const engine::TunnelRequest& request) -> Result<engine::TunnelPlan> {
    const PolicyRef policy = currentPolicy();
    const config::Pod* served_pod = policy->podByUid(pod);
    if (served_pod == nullptr) return fail("pod " + pod.str() + " is no longer in the cluster state");
    const policy::InboundDecision decision = policy->inbound(pod, request.target.port());
    engine::TunnelPlan out;
    // The access log names the port's mode, as for a connection to the port itself.
    out.observer = inboundReport(*policy, *served_pod, pod_id, request.peer, request.target, decision,
                                 toEngineMode(decision.mode), true);
    if (policy->authorization().anyApplies(*served_pod))
      out.refusal = authorizationRefusal(*policy, *served_pod, request.peer, request.target, request.peer_identity, {});
    return out;
  };
  return plan;
}

Status Agent::Parts::servePod(const PolicyRef& policy, const config::Pod& pod) {
  const std::string name = pod.ns() + "/" + pod.name();
  auto spec = capturePodSpec(policy, pod, cgroup_root);
  if (!spec) return std::unexpected(spec.error());
  const bool fail_closed = spec->inbound_fail_closed;
  auto id = identity::SpiffeId::forServiceAccount(identities->trustDomain(), pod.ns(), pod.service_account);
  if (!id) return std::unexpected(id.error().context("pod " + name));
  // One identity per node (validate ML031): a pod another mesh governs keeps
  // the primary's trust domain, which that mesh's peers refuse.
  if (const policy::MeshSettings& mesh = policy->meshFor(pod.ns());
      !mesh.control_namespace.empty() && mesh.trust_domain != identities->trustDomain().name()) {
    spdlog::warn("pod {}: its control plane ({}) has trust domain {}, but this agent serves every pod as {} "
                 "(one identity and CA per node): peers that expect {} will refuse it",
                 name, mesh.control_namespace, mesh.trust_domain, id->uri(), mesh.trust_domain);
  }

  if (auto acquired = identities->acquire(*id); !acquired)
    return std::unexpected(acquired.error().context("pod " + name));
  auto listeners = datapath->enrollPod(*spec);
  if (!listeners) {
    identities->release(*id);
    return std::unexpected(listeners.error().context("pod " + name));
  }

  ServedPod served_pod{.uid = pod.uid, .name = name, .id = *id,
                       .netns = std::make_shared<UniqueFd>(std::move(listeners->netns)),
                       .listeners = {}, .fail_closed = fail_closed};
  const config::PodUid uid = pod.uid;
  const identity::SpiffeId pod_id = *id;
  auto netns = served_pod.netns;
  auto add = [&](UniqueFd& fd, const char* role, engine::ListenerSpec spec_for_engine) -> Status {
    if (!fd) return {};
    spec_for_engine.name = name + " " + role;
    spec_for_engine.pod_key = uid.str();
    auto id_or = engine->addListener(std::move(fd), std::move(spec_for_engine));
    if (!id_or) return std::unexpected(id_or.error().context(std::string("pod ") + name + " " + role + " listener"));
    served_pod.listeners.push_back(*id_or);
    return {};
  };
  // A connection the agent cannot plan is refused by the engine; say why where operators look.
  auto setup_failed = [this, name](bool outbound, const engine::AcceptedSocket& s, const Error& error) {
    AccessRecord record;
    record.direction = outbound ? "outbound" : "inbound";
    record.pod = name;
    record.source = s.peer.toString();
    if (!outbound) record.destination = s.local.toString();
    record.reason = error.describe();
    reports->setupFailed(std::move(record));
  };
  engine::OutboundDecider outbound = [this, uid, pod_id, netns, setup_failed](const engine::AcceptedSocket& s) {
    auto plan = planOutbound(uid, pod_id, netns, s);
    if (!plan) setup_failed(true, s, plan.error());
    return plan;
  };
  engine::InboundDecider inbound = [this, uid, pod_id, netns, setup_failed](const engine::AcceptedSocket& s) {
    auto plan = planInbound(uid, pod_id, netns, s);
    if (!plan) setup_failed(false, s, plan.error());
    return plan;
  };
  Status status = add(listeners->outbound_v4, "outbound", {.name = {}, .pod_key = {}, .decider = outbound});
  if (status) status = add(listeners->outbound_v6, "outbound6", {.name = {}, .pod_key = {}, .decider = outbound});
  if (status) status = add(listeners->inbound_v4, "inbound", {.name = {}, .pod_key = {}, .decider = inbound});
  if (status) status = add(listeners->inbound_v6, "inbound6", {.name = {}, .pod_key = {}, .decider = inbound});
  served.emplace(uid, std::move(served_pod));
  if (!status) {
    withdrawPod(uid);
    return status;
  }
  spdlog::info("serving pod {} as {} (inbound {})", name, pod_id.uri(), fail_closed ? "fail-closed" : "fail-open");
  return {};
}

void Agent::Parts::holdClosed(const PolicyRef& policy, const config::Pod& pod) {
  if (held_closed.contains(pod.uid)) return;
  auto spec = capturePodSpec(policy, pod, cgroup_root);
  if (!spec || !spec->inbound_fail_closed) return;  // not STRICT: left alone until it is served
  // Registered without listeners (they close here): connect()s to and from it are refused.
  if (auto listeners = datapath->enrollPod(*spec); !listeners) {
    spdlog::warn("pod {}/{}: holding it closed while its certificate is pending: {}", pod.ns(), pod.name(),
                 listeners.error().describe());
    return;
  }
  held_closed.insert(pod.uid);
  spdlog::info("pod {}/{} waits for its certificate: held closed (STRICT), its connections are refused", pod.ns(),
               pod.name());
}

void Agent::Parts::withdrawPod(const config::PodUid& uid) {
  auto it = served.find(uid);
  if (it == served.end()) return;
  for (engine::ListenerId id : it->second.listeners) {
    if (auto removed = engine->removeListener(id); !removed)
      spdlog::warn("pod {}: removing listener: {}", it->second.name, removed.error().describe());
  }
  if (auto withdrawn = datapath->withdrawPod(capture::PodUid{uid.str()}); !withdrawn)
    spdlog::warn("pod {}: withdrawing from capture: {}", it->second.name, withdrawn.error().describe());
  identities->release(it->second.id);
  spdlog::info("stopped serving pod {}", it->second.name);
  served.erase(it);
}

// Brings the served pods in line with the policy: new enrolled pods are
// served, pods that left (or opted out, or whose namespace was unenrolled)
// are withdrawn; established connections are never touched.
void Agent::Parts::reconcile(const PolicyRef& policy) {
  std::lock_guard served_lock(served_mutex);
  std::set<config::PodUid> wanted;
  for (const config::Pod* pod : policy->podsOnNode(settings.node_name)) {
    if (pod->terminated || pod->host_network || !policy->served(*pod)) continue;
    wanted.insert(pod->uid);
  }
  std::vector<config::PodUid> gone;
  for (const auto& [uid, pod] : served)
    if (!wanted.contains(uid)) gone.push_back(uid);
  for (const config::PodUid& uid : gone) withdrawPod(uid);

  // Pods a previous agent process registered that are not wanted any more.
  for (const capture::PinnedPod& pinned : datapath->pinnedPods()) {
    config::PodUid uid(pinned.uid.value);
    if (wanted.contains(uid) || served.contains(uid)) continue;
    if (auto withdrawn = datapath->withdrawPod(pinned.uid); !withdrawn)
      spdlog::warn("pod {}: withdrawing stale registration: {}", uid.str(), withdrawn.error().describe());
  }

  // A remote CA's certificates arrive in the background: a pod whose
  // certificate is not there yet is not served (fail closed), and is served
  // on the tick that brings it (Agent::run).
  std::set<identity::SpiffeId> wanted_ids;
  for (const config::PodUid& uid : wanted) {
    const config::Pod* pod = policy->podByUid(uid);
    if (auto id = identity::SpiffeId::forServiceAccount(identities->trustDomain(), pod->ns(), pod->service_account))
      wanted_ids.insert(*id);
  }
  const std::set<identity::SpiffeId> waiting = identities->want(wanted_ids);
  // Held pods that left are withdrawn below with other stale registrations.
  std::erase_if(held_closed, [&](const config::PodUid& uid) { return !wanted.contains(uid) || served.contains(uid); });

  bool serve_failed = false;
  std::size_t pods_waiting = 0;
  for (const config::PodUid& uid : wanted) {
    const config::Pod* pod = policy->podByUid(uid);
    MESHLOCK_CHECK(pod != nullptr);
    if (!served.contains(uid) && !waiting.empty()) {
      auto id = identity::SpiffeId::forServiceAccount(identities->trustDomain(), pod->ns(), pod->service_account);
      if (id && waiting.contains(*id)) {
        ++pods_waiting;
        holdClosed(policy, *pod);
        continue;
      }
    }
    if (served.contains(uid)) {
      // Fail-closed follows STRICT: keep capture's flags in step with policy.
      ServedPod& served_pod = served.at(uid);
      auto spec = capturePodSpec(policy, *pod, cgroup_root);
      // A failure is retried like a pod that could not be served: a pod
      // that turned STRICT must not stay fail-open until the next change.
      if (!spec) {
        serve_failed = true;
        spdlog::warn("{} (retried in {}s)", spec.error().describe(), serve_retry_delay.count());
      } else if (spec->inbound_fail_closed != served_pod.fail_closed) {
        if (auto updated = datapath->updatePodRules(*spec); updated) {
          served_pod.fail_closed = spec->inbound_fail_closed;
        } else {
          serve_failed = true;
          spdlog::warn("pod {}: updating capture rules: {} (retried in {}s)", served_pod.name,
                       updated.error().describe(), serve_retry_delay.count());
        }
      }
      continue;
    }
    if (auto status = servePod(policy, *pod); !status) {
      serve_failed = true;
      spdlog::error("cannot serve {}: {} (retried in {}s, and on the next change)", pod->ns() + "/" + pod->name(),
                    status.error().describe(), serve_retry_delay.count());
    }
  }
  // E.g. a previous agent process still holding the pod's ports while it drains.
  all_pods_served = !serve_failed && pods_waiting == 0;
  if (pods_waiting > 0) spdlog::info("{} pod(s) wait for their certificate from the CA (not served meanwhile)", pods_waiting);
  if (serve_failed) {
    serve_retry_at = std::chrono::steady_clock::now() + serve_retry_delay;
    serve_retry_delay = std::min(serve_retry_delay * 2, std::chrono::seconds(30));
  } else {
    serve_retry_at.reset();
    serve_retry_delay = std::chrono::seconds(1);
  }
}

void Agent::Parts::applyUpdate(const config::ManifestUpdate& update) {
  for (const config::ManifestError& error : update.errors)
    spdlog::error("manifest error (last good state kept): {}", error.describe());
  // "partial": some objects were bad and kept their last good version.
  metrics->config_reloads.labels({update.errors.empty() ? "success" : "partial"}).inc();
  PolicyRef next = policy::PolicyIndex::build(update.state);
  {
    std::lock_guard lock(policy_mutex);
    policy = next;
  }
  spdlog::info("cluster state generation {}: {} objects", update.generation, update.state.objectCount());
  // New handshakes follow a changed minProtocolVersion; established ones are untouched.
  identities->setMinimumVersion(toIdentityVersion(next->mesh().min_protocol_version));
  reconcile(next);
  // Established connections the changed policy no longer allows are closed,
  // as ztunnel's policy watcher closes them. With no AuthorizationPolicy left
  // everything is allowed: nothing to ask.
  if (!next->state().authorization_policies.empty()) {
    const std::size_t closed = engine->reauthorize([&next](const engine::EstablishedPeer& c) -> std::optional<engine::Refusal> {
      const config::Pod* pod = next->podByIp(c.app.ip());
      if (pod == nullptr || !next->served(*pod)) return std::nullopt;
      return authorizationRefusal(*next, *pod, c.peer, c.app, c.peer_identity, c.server_name);
    });
    if (closed > 0) spdlog::info("authorization: closed {} established connection(s) the changed policies no longer allow", closed);
  }
}

Agent::Agent(std::unique_ptr<Parts> parts) : parts_(std::move(parts)) {}

Agent::~Agent() {
  if (!parts_) return;
  // Listeners first, so no new connection reaches a withdrawn pod.
  if (parts_->admin_server) parts_->admin_server->stop();
  if (parts_->admin_tcp_server) parts_->admin_tcp_server->stop();
  if (parts_->metrics_server) parts_->metrics_server->stop();
  std::lock_guard served_lock(parts_->served_mutex);
  std::vector<config::PodUid> uids;
  for (const auto& [uid, pod] : parts_->served) uids.push_back(uid);
  for (const config::PodUid& uid : uids) {
    auto it = parts_->served.find(uid);
    for (engine::ListenerId id : it->second.listeners) (void)parts_->engine->removeListener(id);
    parts_->served.erase(it);
  }
  // The engine before the rest: connections it still closes report into the
  // metrics registry and the access log, which must outlive it. The
  // handover receiver before the engine it adopts into.
  parts_->handover.reset();
  parts_->engine.reset();
}

Result<std::unique_ptr<Agent>> Agent::start(const AgentSettings& settings) {
  auto parts = std::make_unique<Parts>();
  parts->settings = settings;

  // The kernel first: a missing hard requirement stops here, named; without
  // io_uring the engine runs its epoll loop.
  parts->kernel = kmodfree::probeKernel();
  spdlog::info("{}", kmodfree::summaryLine(parts->kernel));
  if (auto met = kmodfree::requireHardFeatures(parts->kernel); !met) return std::unexpected(met.error());
  auto io_uring = kmodfree::useIoUring(parts->kernel, settings.io == IoBackend::IoUring);
  if (!io_uring) return std::unexpected(io_uring.error());
  if (!*io_uring && settings.io == IoBackend::Auto) {
    parts->settings.io = IoBackend::Epoll;
    spdlog::info("io_uring unavailable ({}): the engine runs its epoll loop",
                 parts->kernel.find("io_uring")->detail);
  }

  if (!settings.cgroup_root.empty()) {
    parts->cgroup_root = settings.cgroup_root;
  } else {
    auto mount = capture::findCgroup2Mount();
    if (!mount) return std::unexpected(mount.error().context("cgroup v2 root (set cgroupRoot)"));
    parts->cgroup_root = *mount;
  }

  const char* service_host = std::getenv("KUBERNETES_SERVICE_HOST");
  const char* service_port = std::getenv("KUBERNETES_SERVICE_PORT");
  auto source = config::kube::openClusterSource({.manifests_dir = settings.manifests_dir,
                                                 .kubeconfig = settings.kubeconfig,
                                                 .service_account_dir = settings.service_account_dir,
                                                 .service_host = service_host ? service_host : "",
                                                 .service_port = service_port ? service_port : "",
                                                 .node_name = settings.node_name,
                                                 .limits = {.max_bytes = settings.max_source_bytes,
                                                            .max_objects = settings.max_source_objects}});
  if (!source) return std::unexpected(source.error().context("cluster source"));
  parts->source = std::move(*source);
  // Unready until every kind was listed once: never serve a STRICT namespace
  // as PERMISSIVE because its PeerAuthentications are not known yet.
  std::optional<config::ClusterUpdate> initial = parts->source->initial(settings.initial_sync_wait);
  config::ClusterState initial_state;
  if (initial) {
    for (const config::ManifestError& error : initial->errors) spdlog::error("manifest error: {}", error.describe());
    initial_state = std::move(initial->state);
  } else {
    spdlog::warn("cluster source not synced after {}s, starting unready: {}", settings.initial_sync_wait.count(),
                 parts->source->status().summary());
  }
  PolicyRef policy = policy::PolicyIndex::build(initial_state);
  parts->policy = policy;

  auto trust_domain = identity::TrustDomain::parse(policy->mesh().trust_domain);
  if (!trust_domain) return std::unexpected(trust_domain.error().context("mesh trust domain"));
  auto identity_source = identitySourceFor(settings, *trust_domain);
  if (!identity_source) return std::unexpected(identity_source.error());
  identity::IdentityConfig identity_config = std::move(*identity_source);
  identity_config.certificateLifetime = settings.cert_lifetime;
  identity_config.tls.minVersion = toIdentityVersion(policy->mesh().min_protocol_version);
  auto identities = identity::IdentityManager::create(identity_config);
  if (!identities) return std::unexpected(identities.error().context("identity"));
  parts->identities = std::move(*identities);
  // meshMTLS.minProtocolVersion is for mesh mTLS (ISTIO_MUTUAL) only, as in
  // Istio; DestinationRule SIMPLE/MUTUAL origination keeps TLS 1.2 as its floor.
  identity::MeshTlsSettings destination_settings = identity_config.tls;
  destination_settings.minVersion = identity::TlsMinVersion::kTls12;
  parts->destination_tls = std::make_unique<identity::DestinationTlsContexts>(destination_settings);

  auto pods_root = capture::findPodsCgroupRoot(parts->cgroup_root);
  if (!pods_root) return std::unexpected(pods_root.error().context("pods cgroup"));
  capture::DatapathConfig capture_config;
  capture_config.pin_dir = settings.bpf_pin_dir;
  capture_config.mount_bpffs = settings.mount_bpffs;
  capture_config.pods_cgroup_root = *pods_root;
  capture_config.outbound_port = kOutboundPort;
  capture_config.inbound_port = kInboundPort;
  capture_config.pod_leg_shortcut = settings.pod_leg_shortcut;
  if (settings.pod_leg_shortcut != capture::LegShortcut::Off) {
    // The agent's own sockets must be seen by sockops too (docs/datapath.md).
    auto agent_cgroup = capture::agentCgroupFor(*pods_root);
    if (agent_cgroup) {
      capture_config.agent_cgroup = *agent_cgroup;
    } else {
      spdlog::warn("pod-local shortcut off: {}", agent_cgroup.error().describe());
      capture_config.pod_leg_shortcut = capture::LegShortcut::Off;
    }
  }
  auto datapath = capture::Datapath::install(capture_config);
  if (!datapath) return std::unexpected(datapath.error().context("capture"));
  parts->datapath.emplace(std::move(*datapath));
  spdlog::info("capture {} at {} (programs pinned in {}); pod-local shortcut {}",
               parts->datapath->reusedPinnedLinks() ? "taken over" : "installed", pods_root->string(),
               settings.bpf_pin_dir.string(), capture::toString(capture_config.pod_leg_shortcut));

  engine::EngineConfig engine_config;
  engine_config.threads = settings.threads;
  const IoBackend io = parts->settings.io;
  engine_config.io = io == IoBackend::Epoll     ? engine::IoBackendKind::Epoll
                     : io == IoBackend::IoUring ? engine::IoBackendKind::Uring
                                                : engine::IoBackendKind::Auto;
  {
    rlimit limit{};
    const uint64_t fd_limit = getrlimit(RLIMIT_NOFILE, &limit) == 0 ? limit.rlim_cur : 1024;
    const ConnectionCaps caps = connectionCapsFor(settings, fd_limit);
    engine_config.max_connections = caps.max_connections;
    engine_config.max_connections_per_pod = caps.max_connections_per_pod;
    engine_config.max_pending_handshakes = caps.max_pending_handshakes;
    engine_config.max_pending_handshakes_per_source = caps.max_pending_handshakes_per_source;
    spdlog::log(caps.clamped ? spdlog::level::warn : spdlog::level::info,
                "connection caps for {} open files: {} connections, {} per pod, {} pending handshakes, {} per source{}",
                fd_limit, caps.max_connections, caps.max_connections_per_pod, caps.max_pending_handshakes,
                caps.max_pending_handshakes_per_source, caps.clamped ? " (configured caps lowered to fit)" : "");
  }
  auto engine = engine::Engine::start(engine_config);
  if (!engine) return std::unexpected(engine.error().context("engine"));
  parts->engine = std::move(*engine);
  spdlog::info("engine: {} threads on {}", parts->engine->threads(), engine::toString(parts->engine->backend()));

  parts->metrics.emplace(parts->registry);
  for (const char* direction : {"inbound", "outbound"})  // zeros from the first scrape on
    for (const char* mode : {"mutual_tls", "plaintext"}) parts->metrics->active_connections.labels({direction, mode}).set(0);
  parts->reports = std::make_shared<ReportSinks>(ReportSinks{
      .istio = admin::IstioTcpMetrics(parts->registry),
      .meshlock = *parts->metrics,
      .access_log = settings.access_log ? std::make_unique<AccessLog>(settings.log_format) : nullptr,
      .refusals = std::make_shared<RefusalLog>(),
      .refusal_lines = std::make_shared<AccessLogLimiter>(settings.access_log_refusals_per_second)});

  parts->reconcile(policy);
  if (auto admin = parts->startAdmin(); !admin) return std::unexpected(admin.error().context("admin"));
  if (auto handover = parts->startHandover(); !handover) return std::unexpected(handover.error().context("handover"));
  parts->beat();
  parts->ready = initial.has_value();
  return std::unique_ptr<Agent>(new Agent(std::move(parts)));
}

int Agent::run(std::stop_token stop) {
  Parts& parts = *parts_;
  if (parts.ready) spdlog::info("ready: node {}, {} pods served", parts.settings.node_name, parts.served.size());
  while (!stop.stop_requested()) {
    parts.beat();
    if (auto update = parts.source->poll(std::chrono::milliseconds(200))) {
      parts.applyUpdate(*update);
      if (!parts.ready) {
        parts.ready = true;  // the first full state is applied
        spdlog::info("ready: node {}, {} pods served ({})", parts.settings.node_name, parts.served.size(),
                     parts.source->status().summary());
      }
    } else if (parts.serve_retry_at && std::chrono::steady_clock::now() >= *parts.serve_retry_at) {
      parts.reconcile(parts.currentPolicy());
    }
    parts.reports->flushSuppressed();
    identity::TickReport report = parts.identities->tick(identity::systemNow());
    for (const identity::SpiffeId& id : report.renewed) spdlog::info("renewed certificate of {}", id.uri());
    if (!report.issued.empty()) parts.reconcile(parts.currentPolicy());  // serve the pods that waited for these
    if (!report.renewed.empty()) parts.metrics->certificate_rotations.labels({"success"}).inc(report.renewed.size());
    if (!report.errors.empty()) parts.metrics->certificate_rotations.labels({"failure"}).inc(report.errors.size());
  }

  parts.ready = false;
  {
    // Stop accepting; keep the BPF registration so capture has no gap for
    // the next agent process (STRICT pods fail closed meanwhile).
    std::lock_guard served_lock(parts.served_mutex);
    for (auto& [uid, pod] : parts.served) {
      for (engine::ListenerId id : pod.listeners) (void)parts.engine->removeListener(id);
      pod.listeners.clear();
    }
  }
  // The admin socket and ports too, so the next agent process can start and
  // serve new connections while this one drains.
  if (parts.admin_server) parts.admin_server->stop();
  if (parts.admin_tcp_server) parts.admin_tcp_server->stop();
  if (parts.metrics_server) parts.metrics_server->stop();
  // HBONE tunnels from other nodes' agents stay open for their next streams:
  // GOAWAY sends those to the next agent process; open streams finish here.
  parts.engine->drainTunnels();
  // An upgrade: a newer agent, ready, takes the established connections
  // over (docs/upgrade.md).
  parts.offerConnections(true);
  spdlog::info("draining: listeners and admin endpoints closed, waiting up to {}s for {} connections",
               parts.settings.drain_deadline.count(), parts.engine->counters().active);
  const auto deadline = std::chrono::steady_clock::now() + parts.settings.drain_deadline;
  auto next_offer = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  while (parts.engine->counters().active > 0 && std::chrono::steady_clock::now() < deadline) {
    parts.beat();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    // Again each second: a newer agent that started late, or connections
    // that finished their handshake here since the last offer.
    if (std::chrono::steady_clock::now() >= next_offer) {
      parts.offerConnections(false);
      next_offer = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    }
  }
  spdlog::info("drained: {} connections still open at exit", parts.engine->counters().active);
  return 0;
}

}  // namespace meshlock::app
