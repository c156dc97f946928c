// The data-path engine: worker threads, each with its own event loop and its
// own connections (shared-nothing), relaying between an accepted socket and an
// upstream one, with TLS on one side or none. What to do with each accepted
// connection is asked of a decider the agent supplies; the engine knows no policy.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "common/error.h"
#include "common/unique_fd.h"
#include "engine/hbone_session.h"
#include "engine/io_backend.h"
#include "engine/socket_address.h"
#include "engine/tls_session.h"

namespace meshlock::engine {

struct EngineConfig {
  unsigned threads = 0;  // 0: one per online CPU
  // Auto: io_uring unless unavailable or MESHLOCK_IO_URING=0 in the environment.
  IoBackendKind io = IoBackendKind::Auto;
  IoBackendOptions io_options;
  size_t buffer_bound = 256 * 1024;  // per connection, per direction: reading stops at this
  std::chrono::milliseconds handshake_timeout{10'000};  // includes waiting for the first bytes
  std::chrono::milliseconds connect_timeout{5'000};
  std::chrono::milliseconds idle_timeout{3'600'000};   // 0: none
  uint32_t max_connections = 100'000;                  // per engine (agent)
  uint32_t max_connections_per_pod = 20'000;           // per listener pod_key
  // Connections not yet relaying (detecting the first bytes, connecting,
  // handshaking): a flood of partial ClientHellos must not take every fd.
  // At the engine-wide cap the accepting worker sheds its oldest such
  // connection; a source over its own cap has the new connection refused.
  uint32_t max_pending_handshakes = 4'096;             // per engine
  uint32_t max_pending_handshakes_per_source = 256;    // per peer IP address, inbound listeners
};

// The accepted socket a decider is asked about; fd stays owned by the engine.
struct AcceptedSocket {
  int fd = -1;
  SocketAddress peer;
  SocketAddress local;
  const std::string* pod_key = nullptr;
};

// Creates the upstream socket (non-blocking); the agent's version opens it
// inside the pod's network namespace. Empty: socket(family, SOCK_STREAM).
using SocketFactory = std::function<Result<UniqueFd>(const SocketAddress& destination)>;

struct TlsClientSetup {
  SslContextRef context;      // the source workload's identity and trust bundle
  std::string server_name;    // SNI, may be empty
  PeerVerifier verify_peer;   // after the handshake: the peer's identity or a refusal
  SslPreparer prepare;        // before it: e.g. identity::setExpectedPeers, SSL_set_session
  SslReleaser release;        // at the end: e.g. keep the session ticket for resumption
  SslFailureExplainer explain_failure;  // a failed handshake: why the peer was refused
};

struct TlsServerSetup {
  SslContextRef context;      // must require a client certificate for mTLS
  PeerVerifier verify_peer;   // may be empty: the peer's SPIFFE URI SAN is recorded
  SslPreparer prepare;
  SslReleaser release;
  SslFailureExplainer explain_failure;
};

// Why a connection ended, for access logs and metrics.
enum class ConnectionEnd {
  Completed,         // both sides finished (FIN or close_notify)
  Reset,             // a reset or an I/O error on either side
  RefusedPlaintext,  // STRICT inbound that was not TLS
  HandshakeFailed,   // the TLS handshake or the peer's verification failed
  HandshakeTimeout,  // including waiting for the first bytes
  ConnectFailed,     // the upstream could not be reached
  ConnectTimeout,
  IdleTimeout,
  TlsError,          // a record-layer error after the handshake
  Shutdown,          // the engine stopped with the connection open
  Shed,              // still in the handshake when the engine-wide pending cap made room for a newer one
  Denied,            // an authorization policy refused the peer (inbound, before the app is reached)
  HandedOver,        // carried on by another engine (an agent upgrade, engine/handover.h)
};
const char* toString(ConnectionEnd end);

struct ConnectionSnapshot;

// Told about one connection's life, on the worker thread that owns it: keep
// it quick and thread-safe. The agent hangs metrics and the access log on it.
class ConnectionObserver {
 public:
  virtual ~ConnectionObserver() = default;
  // Relaying begins: the peer verified (snapshot.tls set) or plaintext allowed.
  virtual void established(const ConnectionSnapshot&) {}
  // Plaintext bytes moved, as they move.
  virtual void transferred(uint64_t to_upstream, uint64_t to_downstream) = 0;
  // The end, whether or not it was ever established; `reason` says why when
  // it failed (the verifier's reason, the socket error), else empty.
  virtual void closed(const ConnectionSnapshot&, ConnectionEnd end, std::string_view reason) = 0;
  // Handed to the next agent process with the connection (opaque to the
  // engine): what that process's observer needs to report it as this one
  // did (its decision, its labels). Asked just before closed(HandedOver).
  [[nodiscard]] virtual std::string handoverState() const { return {}; }
};

// Outbound over HBONE: the connection is one CONNECT stream of a tunnel to
// the destination's port 15008, which the worker shares with every
// connection of the same pool key (docs/hbone.md).
struct TunnelOrigin {
  SocketAddress address;   // the destination pod's address, port 15008
  std::string pool_key;    // the source pod, the expected peers, the address
  HboneRequest request;    // :authority (the destination's ip:port) and the headers ztunnel sends
  TlsClientSetup tls;      // the source identity; its prepare hook offers ALPN h2
};

// Outbound: plaintext from a local app, to `destination`, over TLS or plain.
struct OutboundPlan {
  SocketAddress destination;
  SocketFactory make_socket;
  std::optional<TlsClientSetup> tls;  // nullopt: plain relay (DISABLE)
  std::unique_ptr<ConnectionObserver> observer;  // may be empty
  std::optional<TunnelOrigin> tunnel;  // set: over HBONE (`tls` unused)
};

enum class InboundMode { Strict, Permissive, Disable };
const char* toString(InboundMode mode);

// Why an authorization policy refused a peer: the reason for logs, and the
// deciding policy ("NS/NAME", or empty) for metrics.
struct Refusal {
  std::string reason;
  std::string policy;
};

// Who may reach the app, asked once the peer is known: after the handshake
// with its verified identity, or with an empty identity for plaintext the
// mode admits, always before the app is connected. A refusal (nullopt:
// allowed) ends the connection as ConnectionEnd::Denied.
using Authorizer = std::function<std::optional<Refusal>(std::string_view peer_identity, std::string_view server_name)>;

// An established inbound connection, asked about again after a policy change.
struct EstablishedPeer {
  std::string_view pod_key;
  SocketAddress peer;
  SocketAddress app;                  // the pod's address and port it reached
  std::string_view peer_identity;     // empty for plaintext
  std::string_view server_name;
};
using Reauthorizer = std::function<std::optional<Refusal>(const EstablishedPeer&)>;

// Istio's HBONE port, inside every pod's network namespace.
inline constexpr uint16_t kHbonePort = 15008;

// HBONE (Istio's HTTP/2 CONNECT tunnel on 15008): one stream, asked about
// once its request is complete. The target has the address the tunnel
// reached (the engine answers 400 to any other) and the app's port.
struct TunnelRequest {
  SocketAddress target;            // from :authority
  std::string_view peer_identity;  // the tunnel's verified peer
  const SocketAddress& peer;       // the tunnel's TCP peer
  const HboneRequest& headers;
};
struct TunnelPlan {
  std::optional<Refusal> refusal;                 // an authorization policy refused it: 401
  std::unique_ptr<ConnectionObserver> observer;  // told about the stream as about a connection; may be empty
};
// An error: the stream is answered 503 with it as the reason.
using TunnelDecider = std::function<Result<TunnelPlan>(const TunnelRequest&)>;

// Inbound: TLS (or plaintext, as the mode allows) from a peer, to the app.
struct InboundPlan {
  InboundMode mode = InboundMode::Strict;
  SocketAddress app;
  SocketFactory make_socket;
  TlsServerSetup tls;
  Authorizer authorize;  // empty: whatever the mode admits reaches the app
  std::unique_ptr<ConnectionObserver> observer;  // may be empty
  // Set: the connection is an HBONE tunnel (mTLS whatever the mode, ALPN h2);
  // each stream is decided here and reaches its own target port, and
  // `authorize` and `observer` are not used.
  TunnelDecider tunnel;
};

// Called on the worker thread that accepted the socket; must be thread-safe
// and quick. An error refuses the connection (counted).
using OutboundDecider = std::function<Result<OutboundPlan>(const AcceptedSocket&)>;
using InboundDecider = std::function<Result<InboundPlan>(const AcceptedSocket&)>;

struct ListenerSpec {
  std::string name;     // for logs: "shop/web outbound"
  std::string pod_key;  // connections are limited per pod_key
  std::variant<OutboundDecider, InboundDecider> decider;
};

using ListenerId = uint64_t;

// Every counter the engine keeps, with what it counts. Gauges (active,
// buffered_bytes) go up and down; the rest only grow.
#define MESHLOCK_ENGINE_COUNTERS(X)                                                    \
  X(accepted)           /* connections accepted on any listener */                   \
  X(active)             /* open right now (gauge) */                                 \
  X(refused_limit)      /* max connections (agent or pod) reached */                 \
  X(refused_pending_source) /* the source had max_pending_handshakes_per_source */   \
  X(refused_pending_node) /* pending cap reached and this worker had none to shed */ \
  X(shed_pending)       /* oldest pre-handshake connection shed at the pending cap */ \
  X(pending)            /* not yet relaying right now (gauge) */                     \
  X(accept_errors)      /* accept failed (EMFILE, ENFILE, ENOMEM...): backed off */  \
  X(refused_decider)    /* the decider returned an error */                          \
  X(refused_plaintext)  /* STRICT inbound that was not TLS */                        \
  X(refused_authz)      /* inbound the authorization policy denied */                \
  X(tunnel_streams)     /* HBONE streams answered 200 */                             \
  X(tunnel_refused)     /* HBONE streams answered 400, 401 or 503 */                 \
  X(plaintext_relayed)  /* PERMISSIVE/DISABLE inbound plaintext, DISABLE outbound */ \
  X(handshakes)         /* completed and verified */                                 \
  X(handshakes_resumed)                                                              \
  X(handshake_failures) /* including peer verification */                           \
  X(handshake_timeouts) /* including waiting for the first bytes */                  \
  X(connect_failures)                                                                \
  X(connect_timeouts)                                                                \
  X(idle_timeouts)                                                                   \
  X(resets)             /* ended by a reset or an I/O error on either side */         \
  X(tls_truncations)    /* TCP FIN without close_notify */                           \
  X(tls_errors)         /* record-layer errors after the handshake */                \
  X(bytes_to_upstream)  /* plaintext bytes from the accepted side */                 \
  X(bytes_to_downstream)                                                             \
  X(buffered_bytes)     /* queued inside the engine right now (gauge) */             \
  X(handed_over)        /* left for another engine with their sockets (upgrade) */  \
  X(adopted)            /* carried on from another engine (upgrade) */              \
  X(closed)

// Totals over all workers, read at any time (each worker counts in its own atomics).
struct EngineCounters {
#define MESHLOCK_COUNTER_FIELD(name) uint64_t name = 0;
  MESHLOCK_ENGINE_COUNTERS(MESHLOCK_COUNTER_FIELD)
#undef MESHLOCK_COUNTER_FIELD
};

// One worker's event loop, for metrics: how busy it is and how full.
struct WorkerFigures {
  unsigned worker = 0;
  uint64_t loop_iterations = 0;  // event-loop turns
  uint64_t completions = 0;      // I/O completions handled
  uint64_t buffer_full = 0;      // reads paused because the other side's queue hit the bound
  uint64_t buffered_bytes = 0;   // queued in this worker's connections now
  uint64_t connections = 0;      // open on this worker now
};

// One open connection, for the admin API and the CLI.
struct ConnectionSnapshot {
  std::string listener;       // ListenerSpec::name
  std::string pod_key;
  bool outbound = true;
  std::string state;          // detecting, connecting, handshaking, relaying, closing
  SocketAddress peer;         // of the accepted socket
  SocketAddress upstream;     // where it is relayed to
  std::optional<TlsInfo> tls; // once the handshake completed: version, cipher, resumed, peer identity
  bool plaintext = false;     // relayed without TLS (DISABLE, PERMISSIVE plaintext)
  std::string denied_by;      // ConnectionEnd::Denied: the deciding policy, "NS/NAME" (empty: none named)
  std::string tunnel;         // "hbone": one stream of an HBONE tunnel (peer, tls: the tunnel's); else empty
  uint64_t bytes_to_upstream = 0;
  uint64_t bytes_to_downstream = 0;
  std::chrono::milliseconds age{0};
};

class Worker;
struct EngineShared;
struct PodBudget;
struct HandedConnection;
struct HandoverOutcome;

class Engine {
 public:
  [[nodiscard]] static Result<std::unique_ptr<Engine>> start(EngineConfig config);
  ~Engine();  // stops the workers; open connections are closed

  // Serves an already listening socket (bound, listen() called, possibly in
  // another network namespace). Takes ownership; effective on return.
  [[nodiscard]] Result<ListenerId> addListener(UniqueFd listening_fd, ListenerSpec spec);
  // Stops accepting on it; connections it accepted carry on. The socket is
  // closed once every worker has let go of it.
  [[nodiscard]] Status removeListener(ListenerId id);

  [[nodiscard]] EngineCounters counters() const;
  [[nodiscard]] std::vector<WorkerFigures> workerFigures() const;
  // Every open connection; asks each worker, so not for the data path.
  [[nodiscard]] std::vector<ConnectionSnapshot> connections() const;
  // After an authorization policy change: every established inbound
  // connection is asked about again, and those `decide` refuses now are
  // closed (ConnectionEnd::Denied), as Istio's ztunnel does. Waits for every
  // worker; returns how many were closed.
  std::size_t reauthorize(const Reauthorizer& decide);
  // Draining: every inbound HBONE tunnel sends GOAWAY (no new streams; the
  // open ones finish, then the tunnel closes), as ztunnel does on shutdown.
  void drainTunnels();
  // An agent upgrade (engine/handover.h): every established connection that
  // can be carried on elsewhere stops reading, lets what is in flight land
  // and leaves with its sockets and TLS state; the rest stays and drains.
  // Each one is given to `each` (on the caller's thread) as soon as it has
  // left, so it waits only for itself, not for every other connection to
  // quiesce; and connections stop reading in waves of kHandoverWave per
  // worker, the next once the last has left, so that one's pause is its
  // wave's crossing, not the whole handover's. Gives up once none has left
  // for `timeout`: one that quiesces later stays here. The outcome's `connections` is empty; `stayed` counts
  // the rest.
  using HandedSink = std::function<void(HandedConnection&&)>;
  // Measured on scenario 32 (docs/upgrade.md): with every connection stopped
  // at once, 1,006 connections paused up to 170 ms each; in waves, with at
  // most two waves offered to the new agent at a time, p99 18-33 ms.
  static constexpr size_t kHandoverWave = 32;
  [[nodiscard]] HandoverOutcome handOver(std::chrono::milliseconds timeout, const HandedSink& each);
  // The same, every connection collected into the outcome.
  [[nodiscard]] HandoverOutcome handOver(std::chrono::milliseconds timeout);
  // Carries on a connection another engine handed over, as established.
  // `relaying`, if set, runs on the worker's thread once it relays again.
  [[nodiscard]] Status adopt(HandedConnection connection, std::unique_ptr<ConnectionObserver> observer,
                             std::function<void()> relaying = {});
  [[nodiscard]] IoBackendKind backend() const { return backend_; }
  [[nodiscard]] unsigned threads() const;

 private:
  Engine() = default;
  [[nodiscard]] std::shared_ptr<PodBudget> budgetFor(const std::string& pod_key);
  std::shared_ptr<EngineShared> shared_;
  std::vector<std::unique_ptr<Worker>> workers_;
  IoBackendKind backend_ = IoBackendKind::Auto;
  std::atomic<ListenerId> next_listener_{1};
  std::atomic<size_t> next_adopter_{0};
};

// A listening TCP socket on `address` (SO_REUSEADDR, non-blocking), for the
// proxy command and the tests.
[[nodiscard]] Result<UniqueFd> listenTcp(const SocketAddress& address, int backlog = 4096);

}  // namespace meshlock::engine
