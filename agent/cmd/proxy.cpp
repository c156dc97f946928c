// `meshlock-agent proxy`: the engine between two fixed addresses, without
// eBPF — one end originates mTLS, the other terminates it. For tests,
// benchmarks and trying meshlock out.
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <cstdio>
#include <ctime>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/command.h"
#include "engine/engine.h"
#include "engine/tls_context.h"

namespace meshlock {
namespace {

struct ProxyOptions {
  std::string listen;
  std::string connect;
  std::string mode;
  std::string inbound_mode = "strict";
  std::string cert;
  std::string key;
  std::string ca;
  std::vector<std::string> expect_identity;
  std::string sni;
  std::string min_tls = "1.2";
  unsigned threads = 0;
  std::string io = "auto";
  unsigned handshake_timeout_ms = 10'000;
  unsigned connect_timeout_ms = 5'000;
  unsigned idle_timeout_s = 3600;
  unsigned buffer_kib = 256;
  unsigned max_connections = 100'000;
  unsigned max_pending = engine::EngineConfig{}.max_pending_handshakes;
  unsigned max_pending_per_source = engine::EngineConfig{}.max_pending_handshakes_per_source;
  unsigned stats_interval_s = 0;
  bool resume = false;
  bool hbone = false;
  std::string hbone_target;
};

// originate --resume: the newest session ticket the terminating side sent,
// offered on every new connection, as a client-side cache of one (the proxy
// has one destination). TLS 1.3 tickets reach a BoringSSL client only
// through the new-session callback, which finds the cache in the SSL_CTX.
class ResumptionCache {
 public:
  static ResumptionCache* install(SSL_CTX* ctx) {
    static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    auto* cache = new ResumptionCache;  // lives as long as the context: until the process exits
    SSL_CTX_set_ex_data(ctx, index, cache);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
    SSL_CTX_sess_set_new_cb(ctx, [](SSL* ssl, SSL_SESSION* session) {
      auto* self = static_cast<ResumptionCache*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), index));
      if (self == nullptr) return 0;  // not taken: BoringSSL frees it
      std::lock_guard lock(self->mutex_);
      self->newest_.reset(session);
      return 1;
    });
    return cache;
  }

  // Before a handshake: offer the newest ticket, if any.
  Status offer(SSL* ssl) {
    std::lock_guard lock(mutex_);
    if (newest_ && !SSL_set_session(ssl, newest_.get())) return fail("SSL_set_session: " + engine::drainSslErrors());
    return {};
  }

 private:
  std::mutex mutex_;
  bssl::UniquePtr<SSL_SESSION> newest_;
};

// Thousands of connections need thousands of descriptors: take what we may.
void raiseFileLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  rlimit wanted{1 << 20, 1 << 20};
  if (setrlimit(RLIMIT_NOFILE, &wanted) != 0) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

void printCounters(const engine::EngineCounters& c) {
  std::fprintf(stderr,
               "meshlock-agent proxy: accepted=%lu active=%lu handshakes=%lu resumed=%lu handshake_failures=%lu "
               "handshake_timeouts=%lu refused_plaintext=%lu refused_limit=%lu connect_failures=%lu resets=%lu "
               "bytes_up=%lu bytes_down=%lu buffered=%lu closed=%lu\n",
               c.accepted, c.active, c.handshakes, c.handshakes_resumed, c.handshake_failures,
               c.handshake_timeouts, c.refused_plaintext, c.refused_limit, c.connect_failures, c.resets,
               c.bytes_to_upstream, c.bytes_to_downstream, c.buffered_bytes, c.closed);
}

int runProxy(const ProxyOptions& o) {
  auto listen_address = engine::SocketAddress::parse(o.listen);
  auto connect_address = engine::SocketAddress::parse(o.connect);
  if (!listen_address || !connect_address) {
    std::fprintf(stderr, "proxy: %s\n", (!listen_address ? listen_address : connect_address).error().describe().c_str());
    return 2;
  }
  bool originate = o.mode == "originate";
  engine::TlsMinVersion min = o.min_tls == "1.3" ? engine::TlsMinVersion::Tls13 : engine::TlsMinVersion::Tls12;
  // HBONE's tunnel is TLS 1.3 only (docs/hbone.md).
  if (o.hbone) min = engine::TlsMinVersion::Tls13;
  auto context = engine::makeMutualTlsContext(!originate, engine::TlsFiles{o.cert, o.key, o.ca}, min);
  if (!context) {
    std::fprintf(stderr, "proxy: %s\n", context.error().describe().c_str());
    return 1;
  }
  if (o.hbone && !originate) engine::selectHboneAlpn(context->get());
  std::optional<engine::SocketAddress> hbone_target;
  if (o.hbone && originate) {
    auto target = engine::SocketAddress::parse(o.hbone_target);
    if (!target) {
      std::fprintf(stderr, "proxy: --hbone-target: %s\n", target.error().describe().c_str());
      return 2;
    }
    hbone_target = *target;
  }

  engine::EngineConfig config;
  config.threads = o.threads;
  config.io = o.io == "uring" ? engine::IoBackendKind::Uring
              : o.io == "epoll" ? engine::IoBackendKind::Epoll
                                : engine::IoBackendKind::Auto;
  config.handshake_timeout = std::chrono::milliseconds(o.handshake_timeout_ms);
  config.connect_timeout = std::chrono::milliseconds(o.connect_timeout_ms);
  config.idle_timeout = std::chrono::seconds(o.idle_timeout_s);
  config.buffer_bound = static_cast<size_t>(o.buffer_kib) * 1024;
  config.max_connections = o.max_connections;
  config.max_connections_per_pod = o.max_connections;
  config.max_pending_handshakes = o.max_pending;
  config.max_pending_handshakes_per_source = o.max_pending_per_source;

  raiseFileLimit();
  // Signals are taken synchronously below; every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto engine = engine::Engine::start(config);
  if (!engine) {
    std::fprintf(stderr, "proxy: %s\n", engine.error().describe().c_str());
    return 1;
  }
  auto listener = engine::listenTcp(*listen_address);
  if (!listener) {
    std::fprintf(stderr, "proxy: %s\n", listener.error().describe().c_str());
    return 1;
  }

  engine::ListenerSpec spec;
  spec.name = "proxy " + o.listen;
  // The first handshake's version and cipher go to stderr once (benchmarks record them).
  auto reported = std::make_shared<std::once_flag>();
  engine::PeerVerifier verifier = [check = engine::expectSpiffeIds(o.expect_identity), reported](SSL* ssl) {
    std::call_once(*reported, [ssl] {
      std::fprintf(stderr, "meshlock-agent proxy: first handshake %s %s%s\n", SSL_get_version(ssl),
                   SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)), SSL_session_reused(ssl) ? " resumed" : "");
    });
    return check(ssl);
  };
  if (originate) {
    engine::TlsClientSetup tls{*context, o.sni, verifier, {}, {}};
    if (o.resume) {
      ResumptionCache* cache = ResumptionCache::install(context->get());
      tls.prepare = [cache](SSL* ssl) { return cache->offer(ssl); };
    }
    engine::SocketAddress destination = *connect_address;
    if (hbone_target) {
      // Every connection a stream of the worker's pooled tunnel to --connect.
      tls.prepare = engine::offerHboneAlpn;
      spec.decider = engine::OutboundDecider([tls, destination, target = *hbone_target](const engine::AcceptedSocket&) {
        engine::OutboundPlan plan;
        plan.destination = target;
        engine::TunnelOrigin origin;
        origin.address = destination;
        origin.pool_key = destination.toString();
        origin.request.authority = target.toString();
        origin.tls = tls;
        plan.tunnel = std::move(origin);
        return Result<engine::OutboundPlan>(std::move(plan));
      });
    } else {
      spec.decider = engine::OutboundDecider([tls, destination](const engine::AcceptedSocket&) {
        engine::OutboundPlan plan;
        plan.destination = destination;
        plan.tls = tls;
        return Result<engine::OutboundPlan>(std::move(plan));
      });
    }
  } else {
    engine::InboundMode mode = o.inbound_mode == "permissive" ? engine::InboundMode::Permissive
                               : o.inbound_mode == "disable"  ? engine::InboundMode::Disable
                                                              : engine::InboundMode::Strict;
    engine::TlsServerSetup tls{*context, verifier, {}, {}};
    engine::SocketAddress app = *connect_address;
    const bool hbone = o.hbone;
    spec.decider = engine::InboundDecider([tls, app, mode, hbone](const engine::AcceptedSocket&) {
      engine::InboundPlan plan;
      plan.mode = mode;
      plan.app = app;
      plan.tls = tls;
      if (hbone) {
        // HBONE: streams may reach --connect only (the stream's target must
        // also be the listener's address, as for a pod's 15008).
        plan.tunnel = [app](const engine::TunnelRequest& request) -> Result<engine::TunnelPlan> {
          if (request.target.port() != app.port()) return fail("the proxy serves " + app.toString() + " only");
          return engine::TunnelPlan{};
        };
      }
      return Result<engine::InboundPlan>(std::move(plan));
    });
  }
  if (auto id = (*engine)->addListener(std::move(*listener), std::move(spec)); !id) {
    std::fprintf(stderr, "proxy: %s\n", id.error().describe().c_str());
    return 1;
  }
  std::printf("meshlock-agent proxy: %s %s -> %s, %u threads, %s\n", o.mode.c_str(), o.listen.c_str(),
              o.connect.c_str(), (*engine)->threads(), engine::toString((*engine)->backend()));
  std::fflush(stdout);

  for (;;) {
    timespec wait{o.stats_interval_s > 0 ? static_cast<time_t>(o.stats_interval_s) : 3600, 0};
    int sig = sigtimedwait(&signals, nullptr, &wait);
    if (sig == SIGINT || sig == SIGTERM) break;
    if (o.stats_interval_s > 0) printCounters((*engine)->counters());
  }
  printCounters((*engine)->counters());
  return 0;
}

const CommandRegistrar kProxy{Command{
    "proxy",
    "Run the engine between two fixed addresses (originate or terminate mTLS), without eBPF",
    [](CLI::App& sub) -> CommandAction {
      auto o = std::make_shared<ProxyOptions>();
      sub.add_option("--listen", o->listen, "address to accept on, host:port or [v6]:port")->required();
      sub.add_option("--connect", o->connect, "address to relay to")->required();
      sub.add_option("--mode", o->mode, "originate: plaintext in, mTLS out; terminate: mTLS in, plaintext out")
          ->required()
          ->check(CLI::IsMember({"originate", "terminate"}));
      sub.add_option("--cert", o->cert, "PEM certificate chain of this side")->required()->check(CLI::ExistingFile);
      sub.add_option("--key", o->key, "PEM private key")->required()->check(CLI::ExistingFile);
      sub.add_option("--ca", o->ca, "PEM trust bundle for the peer")->required()->check(CLI::ExistingFile);
      sub.add_option("--expect-identity", o->expect_identity,
                     "accept only a peer with this SPIFFE ID (repeatable; default: any SPIFFE ID)");
      sub.add_option("--inbound-mode", o->inbound_mode, "terminate: strict, permissive or disable")
          ->check(CLI::IsMember({"strict", "permissive", "disable"}));
      sub.add_option("--sni", o->sni, "originate: server name to send");
      sub.add_option("--min-tls", o->min_tls, "minimum TLS version")->check(CLI::IsMember({"1.2", "1.3"}));
      sub.add_option("--threads", o->threads, "worker threads (default: one per CPU)");
      sub.add_option("--io", o->io, "event loop: uring, epoll or auto (MESHLOCK_IO_URING=0 forces epoll)")
          ->check(CLI::IsMember({"uring", "epoll", "auto"}));
      sub.add_option("--handshake-timeout-ms", o->handshake_timeout_ms, "handshake deadline");
      sub.add_option("--connect-timeout-ms", o->connect_timeout_ms, "connect deadline");
      sub.add_option("--idle-timeout-s", o->idle_timeout_s, "idle connections are closed after this (0: never)");
      sub.add_option("--buffer-kib", o->buffer_kib, "per connection, per direction buffer bound");
      sub.add_option("--max-connections", o->max_connections, "refuse new connections beyond this");
      sub.add_option("--max-pending-handshakes", o->max_pending,
                     "connections before relaying at most; the oldest is shed for a new one");
      sub.add_option("--max-pending-handshakes-per-source", o->max_pending_per_source,
                     "of those, from one source IP; more are refused");
      sub.add_option("--stats-interval-s", o->stats_interval_s, "print counters to stderr this often");
      sub.add_flag("--hbone", o->hbone,
                   "HBONE (HTTP/2 CONNECT over mTLS, docs/hbone.md): originate pools every connection as a stream "
                   "of one tunnel to --connect; terminate takes streams to --connect's port");
      sub.add_option("--hbone-target", o->hbone_target,
                     "originate --hbone: the :authority each stream asks for (the app behind the terminating side)");
      sub.add_flag("--resume", o->resume,
                   "originate: offer the newest session ticket from the terminating side (TLS resumption)");
      return [o] { return runProxy(*o); };
    }}};

}  // namespace
}  // namespace meshlock
