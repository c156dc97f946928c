// The gRPC unary server (server.h): the listener, the connection caps, the
// TLS context and its rotation, one thread per connection
// (server_connection.cpp serves each) and a bounded stop.
#include "grpc/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <array>
#include <cstring>
#include <fmt/format.h>
#include <list>
#include <mutex>
#include <system_error>
#include <thread>

#include "common/ip_address.h"
#include "common/unique_fd.h"
#include "grpc/server_connection.h"
#include "grpc/transport.h"

namespace meshlock::grpc {
namespace {

constexpr int kListenBacklog = 128;
// The acceptor wakes at least this often to join finished connection threads.
constexpr int kReapIntervalMs = 1000;
// Accepts taken per wake-up, so stopping and reaping are never starved.
constexpr int kAcceptBurst = 64;

// ALPN: h2 or nothing (PROTOCOL-HTTP2.md rides on HTTP/2 only). A client
// offering other protocols only is refused with no_application_protocol.
int selectH2(SSL*, const uint8_t** out, uint8_t* outLength, const uint8_t* in, unsigned inLength, void*) {
  for (unsigned i = 0; i < inLength;) {
    const unsigned length = in[i];
    if (i + 1 + length > inLength) break;  // malformed list
    if (length == 2 && in[i + 1] == 'h' && in[i + 2] == '2') {
      *out = in + i + 1;
      *outLength = 2;
      return SSL_TLSEXT_ERR_OK;
    }
    i += 1 + length;
  }
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

Result<bssl::UniquePtr<SSL_CTX>> makeServerContext(std::string_view chainPem, std::string_view keyPem) {
  bssl::UniquePtr<SSL_CTX> ctx(SSL_CTX_new(TLS_method()));
  if (!ctx) return fail(takeSslErrors("SSL_CTX_new"));
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  // RFC 7540 9.2.2: HTTP/2 over TLS 1.2 only with ephemeral key exchange and AEAD.
  if (!SSL_CTX_set_strict_cipher_list(ctx.get(), "ECDHE+AESGCM:ECDHE+CHACHA20"))
    return fail(takeSslErrors("grpc server: cipher list"));
  auto chain = readCertificates(chainPem);
  if (!chain) return std::unexpected(chain.error().context("grpc server: serving chain"));
  bssl::UniquePtr<BIO> keyBio(BIO_new_mem_buf(keyPem.data(), static_cast<int>(keyPem.size())));
  bssl::UniquePtr<EVP_PKEY> key(PEM_read_bio_PrivateKey(keyBio.get(), nullptr, nullptr, nullptr));
  if (!key) return fail(takeSslErrors("grpc server: serving key: no private key in the PEM text"));
  if (!SSL_CTX_use_certificate(ctx.get(), chain->front().get()))
    return fail(takeSslErrors("grpc server: serving certificate"));
  for (std::size_t i = 1; i < chain->size(); ++i)
    if (!SSL_CTX_add1_chain_cert(ctx.get(), (*chain)[i].get())) return fail(takeSslErrors("grpc server: serving chain"));
  if (!SSL_CTX_use_PrivateKey(ctx.get(), key.get()) || !SSL_CTX_check_private_key(ctx.get()))
    return fail(takeSslErrors("grpc server: the key does not match the serving certificate"));
  SSL_CTX_set_alpn_select_cb(ctx.get(), selectH2, nullptr);
  return ctx;
}

// The peer's IP (an IPv4-mapped IPv6 address as IPv4, so one client counts
// once whichever way the listener sees it) and "ip:port" / "[ip]:port".
std::pair<IpAddress, std::string> describePeer(const sockaddr_storage& address) {
  if (address.ss_family == AF_INET) {
    const auto& v4 = reinterpret_cast<const sockaddr_in&>(address);
    auto ip = IpAddress::fromBytes(AF_INET, {reinterpret_cast<const uint8_t*>(&v4.sin_addr), 4});
    return {ip, fmt::format("{}:{}", ip.toString(), ntohs(v4.sin_port))};
  }
  const auto& v6 = reinterpret_cast<const sockaddr_in6&>(address);
  const auto* bytes = reinterpret_cast<const uint8_t*>(&v6.sin6_addr);
  if (IN6_IS_ADDR_V4MAPPED(&v6.sin6_addr)) {
    auto ip = IpAddress::fromBytes(AF_INET, {bytes + 12, 4});
    return {ip, fmt::format("{}:{}", ip.toString(), ntohs(v6.sin6_port))};
  }
  auto ip = IpAddress::fromBytes(AF_INET6, {bytes, 16});
  return {ip, fmt::format("[{}]:{}", ip.toString(), ntohs(v6.sin6_port))};
}

Result<UniqueFd> listenOn(std::string_view address, uint16_t& port) {
  auto split = splitHostPort(address);
  if (!split) return std::unexpected(split.error().context("grpc server"));
  auto ip = IpAddress::parse(split->host);
  if (!ip) return fail(fmt::format("grpc server: listen address \"{}\": the host must be an IP address", address));
  sockaddr_storage storage{};
  socklen_t length = 0;
  if (ip->isV4()) {
    auto& v4 = reinterpret_cast<sockaddr_in&>(storage);
    v4.sin_family = AF_INET;
    v4.sin_port = htons(split->port);
    std::memcpy(&v4.sin_addr, ip->bytes().data(), 4);
    length = sizeof(v4);
  } else {
    auto& v6 = reinterpret_cast<sockaddr_in6&>(storage);
    v6.sin6_family = AF_INET6;
    v6.sin6_port = htons(split->port);
    std::memcpy(&v6.sin6_addr, ip->bytes().data(), 16);
    length = sizeof(v6);
  }
  UniqueFd fd(::socket(ip->family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return failErrno("grpc server: socket");
  int one = 1;
  int zero = 0;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  // "[::]" takes IPv4 clients too, whatever the sysctl default says.
  if (ip->isV6()) ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&storage), length) != 0)
    return failErrno(fmt::format("grpc server: bind {}", address));
  if (::listen(fd.get(), kListenBacklog) != 0) return failErrno(fmt::format("grpc server: listen {}", address));
  sockaddr_storage bound{};
  socklen_t boundLength = sizeof(bound);
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &boundLength) != 0)
    return failErrno("grpc server: getsockname");
  port = ntohs(bound.ss_family == AF_INET ? reinterpret_cast<const sockaddr_in&>(bound).sin_port
                                          : reinterpret_cast<const sockaddr_in6&>(bound).sin6_port);
  return fd;
}

}  // namespace

std::string_view ServerCall::header(std::string_view name) const {
  for (const auto& [key, value] : metadata)
    if (key == name) return value;
  return {};
}

struct UnaryServer::State {
  ServerConfig config;
  HandlerMap handlers;
  UniqueFd listener;
  UniqueFd wake;  // eventfd: readable once stopping, and stays so
  uint16_t port = 0;
  ServerCounters counters;
  ConnectionContext context{config, handlers, counters, -1};

  mutable std::mutex ctxMutex;
  bssl::UniquePtr<SSL_CTX> ctx;  // new handshakes use the current one; an SSL holds a reference to its own

  std::mutex capsMutex;
  std::size_t active = 0;
  std::map<IpAddress, std::size_t> perSource;

  struct Worker {
    std::thread thread;
    std::atomic<bool> finished{false};
  };
  std::list<Worker> workers;  // the acceptor's alone until it is joined
  std::thread acceptor;

  void acceptLoop();
  void admit(UniqueFd fd, const sockaddr_storage& address);
  void release(const IpAddress& ip);
  void reapFinished();
};

void UnaryServer::State::acceptLoop() {
  for (;;) {
    std::array<pollfd, 2> p = {pollfd{.fd = listener.get(), .events = POLLIN, .revents = 0},
                               pollfd{.fd = wake.get(), .events = POLLIN, .revents = 0}};
    int rc = ::poll(p.data(), p.size(), kReapIntervalMs);
    reapFinished();
    if (rc > 0 && p[1].revents != 0) return;
    if (rc <= 0 || (p[0].revents & POLLIN) == 0) continue;
    for (int i = 0; i < kAcceptBurst; ++i) {
      sockaddr_storage address{};
      socklen_t length = sizeof(address);
      UniqueFd fd(::accept4(listener.get(), reinterpret_cast<sockaddr*>(&address), &length,
                            SOCK_NONBLOCK | SOCK_CLOEXEC));
      if (fd) {
        admit(std::move(fd), address);
        continue;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED || errno == EINTR) break;
      // Out of descriptors or memory: the listener stays readable, so pause
      // rather than spin (still waking for a stop).
      spdlog::warn("grpc server: accept: {}", std::strerror(errno));
      pollfd w{.fd = wake.get(), .events = POLLIN, .revents = 0};
      ::poll(&w, 1, 100);
      break;
    }
  }
}

void UnaryServer::State::admit(UniqueFd fd, const sockaddr_storage& address) {
  auto [ip, peer] = describePeer(address);
  {
    std::lock_guard lock(capsMutex);
    std::size_t& fromSource = perSource[ip];
    if (active >= config.maxConnections || fromSource >= config.maxConnectionsPerSource) {
      if (fromSource == 0) perSource.erase(ip);
      ++counters.refusedOverCap;
      spdlog::debug("grpc server: connection from {} refused: {} open, {} from that address", peer, active,
                    fromSource);
      return;  // closed here, before any byte is read
    }
    ++active;
    ++fromSource;
    counters.activeConnections = active;
  }
  ++counters.accepted;
  bssl::UniquePtr<SSL> ssl;
  {
    std::lock_guard lock(ctxMutex);
    ssl.reset(SSL_new(ctx.get()));
  }
  if (!ssl) {
    spdlog::error("{}", takeSslErrors("grpc server: SSL_new"));
    release(ip);
    return;
  }
  SSL_set_accept_state(ssl.get());
  int one = 1;
  ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  Worker& worker = workers.emplace_back();
  try {
    worker.thread = std::thread([this, &worker, ip, peer, fd = std::move(fd), ssl = std::move(ssl)]() mutable {
      serveConnection(context, std::move(fd), std::move(ssl), std::move(peer));
      release(ip);
      worker.finished = true;
    });
  } catch (const std::system_error& e) {  // std::thread's only way to say "no more threads"
    spdlog::warn("grpc server: no thread for the connection from {}: {}", peer, e.what());
    workers.pop_back();
    release(ip);
  }
}

void UnaryServer::State::release(const IpAddress& ip) {
  std::lock_guard lock(capsMutex);
  --active;
  if (auto it = perSource.find(ip); it != perSource.end() && --it->second == 0) perSource.erase(it);
  counters.activeConnections = active;
}

void UnaryServer::State::reapFinished() {
  for (auto it = workers.begin(); it != workers.end();) {
    if (it->finished) {
      it->thread.join();
      it = workers.erase(it);
    } else {
      ++it;
    }
  }
}

UnaryServer::UnaryServer(std::unique_ptr<State> state) : state_(std::move(state)) {}

Result<std::unique_ptr<UnaryServer>> UnaryServer::start(ServerConfig config, HandlerMap handlers) {
  if (config.maxConnections == 0 || config.maxConnectionsPerSource == 0 || config.maxConcurrentStreams == 0)
    return fail("grpc server: connection and stream limits must be at least 1");
  auto state = std::make_unique<State>();
  state->config = std::move(config);
  state->handlers = std::move(handlers);
  auto ctx = makeServerContext(state->config.certChainPem, state->config.keyPem);
  if (!ctx) return std::unexpected(ctx.error());
  state->ctx = std::move(*ctx);
  state->config.keyPem.clear();  // kept in the SSL_CTX only
  state->wake = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!state->wake) return failErrno("grpc server: eventfd");
  state->context.wakeFd = state->wake.get();
  auto listener = listenOn(state->config.listenAddress, state->port);
  if (!listener) return std::unexpected(listener.error());
  state->listener = std::move(*listener);
  State* raw = state.get();
  try {
    state->acceptor = std::thread([raw] { raw->acceptLoop(); });
  } catch (const std::system_error& e) {
    return fail(fmt::format("grpc server: acceptor thread: {}", e.what()));
  }
  spdlog::info("grpc server: listening on {} (port {}), {} method(s)", state->config.listenAddress, state->port,
               state->handlers.size());
  return std::unique_ptr<UnaryServer>(new UnaryServer(std::move(state)));
}

UnaryServer::~UnaryServer() {
  const uint64_t one = 1;
  if (::write(state_->wake.get(), &one, sizeof(one)) != sizeof(one))
    spdlog::error("grpc server: stop signal: {}", std::strerror(errno));
  state_->acceptor.join();
  state_->listener.reset();
  for (auto& worker : state_->workers) worker.thread.join();
}

uint16_t UnaryServer::port() const { return state_->port; }

Status UnaryServer::setCredentials(std::string certChainPem, std::string keyPem) {
  auto ctx = makeServerContext(certChainPem, keyPem);
  if (!ctx) return std::unexpected(ctx.error());
  std::lock_guard lock(state_->ctxMutex);
  state_->ctx = std::move(*ctx);
  return {};
}

UnaryServer::Stats UnaryServer::stats() const {
  const ServerCounters& c = state_->counters;
  return Stats{.accepted = c.accepted,
               .refused_over_cap = c.refusedOverCap,
               .handshake_failures = c.handshakeFailures,
               .calls = c.calls,
               .active_connections = c.activeConnections};
}

}  // namespace meshlock::grpc
