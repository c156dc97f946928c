// Both sides of the handover protocol (proto/handover.proto, docs/upgrade.md).
#include "upgrade/handover.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <map>
#include <vector>

#include "upgrade/handover_channel.h"
#include "upgrade/handover_codec.h"

namespace meshlock::upgrade {
namespace {

using namespace std::chrono_literals;

// Milliseconds since a wall-clock stamp of the other process (never negative).
double msSince(std::chrono::system_clock::time_point at) {
  return std::max(0.0, std::chrono::duration<double, std::milli>(std::chrono::system_clock::now() - at).count());
}

// A decoded packet of the expected kind, within `timeout`.
template <typename T>
Result<T> expect(HandoverChannel& channel, std::chrono::milliseconds timeout, const char* what) {
  Result<std::optional<HandoverChannel::Packet>> received = channel.receive(timeout);
  if (!received) return std::unexpected(received.error().context(std::string("waiting for ") + what));
  if (!*received) return fail(std::string("handover: the peer closed before its ") + what);
  Result<Packet> packet = decodePacket((*received)->bytes, std::move((*received)->fds));
  if (!packet) return std::unexpected(packet.error());
  if (T* wanted = std::get_if<T>(&*packet)) return std::move(*wanted);
  return fail(std::string("handover: another packet where a ") + what + " belongs");
}

}  // namespace

std::string percentiles(std::vector<double> ms) {
  if (ms.empty()) return {};
  std::sort(ms.begin(), ms.end());
  auto at = [&](double q) { return ms[std::min(ms.size() - 1, static_cast<size_t>(q * static_cast<double>(ms.size())))]; };
  return fmt::format("p50 {:.1f} ms, p99 {:.1f} ms, max {:.1f} ms", at(0.5), at(0.99), ms.back());
}

Result<HandoverReport> handOverTo(const std::filesystem::path& path, engine::Engine& engine,
                                  const HandOverOptions& options, const ObserverFor& observer_for) {
  const auto started = std::chrono::steady_clock::now();
  HandoverReport report;
  Result<HandoverChannel> channel = HandoverChannel::connect(path);
  if (!channel) {
    report.refused = "no newer agent listens on " + path.string() + " (" + channel.error().describe() + ")";
    return report;
  }
  Result<pid_t> peer = channel->peerPid();
  if (!peer) return std::unexpected(peer.error());
  const std::string hello = encodeHello(options.agent_version, ::getpid(), options.instance);
  if (Status sent = channel->send(std::as_bytes(std::span(hello)), {}, options.reply); !sent) return std::unexpected(sent.error());
  Result<WelcomePacket> welcome = expect<WelcomePacket>(*channel, options.reply, "Welcome");
  if (!welcome) return std::unexpected(welcome.error());
  if (welcome->format != kHandoverFormat) {
    report.refused = "the new agent (pid " + std::to_string(*peer) + ") speaks handover format " +
                     std::to_string(welcome->format) + ", this one " + std::to_string(kHandoverFormat);
    return report;
  }
  if (!welcome->accepted) {
    // The agent's own receiver answers when no newer agent took the path over.
    report.refused = *peer == ::getpid() ? welcome->reason
                                         : "the new agent (pid " + std::to_string(*peer) + ") refused: " + welcome->reason;
    return report;
  }

  // Offered and not yet taken: still ours (our copies of the sockets stay open).
  std::map<uint64_t, engine::HandedConnection> offered;
  std::vector<engine::HandedConnection> back;  // never offered after all: carried on here
  std::optional<Error> broken;
  uint64_t sent = 0;
  auto takeReplies = [&](std::chrono::milliseconds wait) -> Status {
    for (;;) {
      Result<std::optional<HandoverChannel::Packet>> received = channel->receive(wait);
      if (!received) return std::unexpected(received.error());
      if (!*received) return {};
      Result<Packet> packet = decodePacket((*received)->bytes, std::move((*received)->fds));
      if (!packet) return std::unexpected(packet.error());
      const TakenPacket* taken = std::get_if<TakenPacket>(&*packet);
      if (taken == nullptr) return fail("handover: the new agent sent something other than Taken");
      if (offered.erase(taken->id) == 1) ++report.handed;  // our sockets close: the new agent has its own
      if (offered.empty() || wait.count() > 0) return {};
    }
  };
  // Each connection goes as soon as the engine has let it go: it pauses for
  // its own quiesce and crossing, not for every other connection's.
  uint64_t next_id = 1;
  auto offer = [&](engine::HandedConnection&& connection) {
    if (broken) {
      back.push_back(std::move(connection));
      return;
    }
    const uint64_t id = next_id++;
    if (connection.quiesced_at.time_since_epoch().count() > 0) {
      report.held_ms.push_back(msSince(connection.quiesced_at));
    }
    const std::string packet = encodeConnection(id, connection);
    if (packet.size() > channel->maxPacket()) {  // more queued than the socket takes at once: it stays
      back.push_back(std::move(connection));
      return;
    }
    const int fds[2] = {connection.down.fd.get(), connection.up.fd.get()};
    if (Status status = channel->send(std::as_bytes(std::span(packet)), fds, options.reply); !status) {
      broken = status.error();  // the new agent went away: this one and the rest stay
      back.push_back(std::move(connection));
      return;
    }
    ++sent;
    offered.emplace(id, std::move(connection));
    if (channel->readable()) {
      if (Status replies = takeReplies(0ms); !replies) broken = replies.error();
    }
    // No more in flight than the new agent takes in a few milliseconds: a
    // connection stops being read only when the engine's next wave starts,
    // which is after this returns, so its pause is its own wave's crossing,
    // not a queue of every connection before it (docs/upgrade.md).
    while (!broken && offered.size() >= std::max<size_t>(options.in_flight, 1)) {
      const size_t before = offered.size();
      if (Status replies = takeReplies(options.reply); !replies) {
        broken = replies.error();
      } else if (offered.size() == before) {
        broken = Error{"handover: the new agent took nothing for " + std::to_string(options.reply.count()) + " ms"};
      }
    }
  };
  engine::HandoverOutcome outcome = engine.handOver(options.quiesce, offer);
  report.stayed = outcome.stayed;
  if (!broken) {
    const std::string done = encodeDone(sent, outcome.stayed);
    if (Status sent = channel->send(std::as_bytes(std::span(done)), {}, options.reply); !sent) broken = sent.error();
  }
  const auto deadline = std::chrono::steady_clock::now() + options.reply;
  while (!broken && !offered.empty() && std::chrono::steady_clock::now() < deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (Status replies = takeReplies(std::max(left, 1ms)); !replies) broken = replies.error();
  }
  // From here on the new agent cannot take any more: what it said before
  // counts, the rest is ours again (it closes its copies unused).
  channel->stopReceiving();
  (void)takeReplies(0ms);
  for (auto& [id, connection] : offered) back.push_back(std::move(connection));
  for (engine::HandedConnection& connection : back) {
    std::unique_ptr<engine::ConnectionObserver> observer = observer_for ? observer_for(connection) : nullptr;
    if (Status adopted = engine.adopt(std::move(connection), std::move(observer)); adopted) ++report.returned;
  }
  report.took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
  if (broken) spdlog::warn("handover: {} ({} connections carried on here)", broken->describe(), report.returned);
  return report;
}

Result<std::unique_ptr<HandoverReceiver>> HandoverReceiver::start(const std::filesystem::path& path,
                                                                  engine::Engine& engine, Readiness ready,
                                                                  ObserverFor observer_for) {
  std::unique_ptr<HandoverReceiver> receiver(new HandoverReceiver(engine, std::move(ready), std::move(observer_for)));
  Result<UniqueFd> listening = listenHandover(path);
  if (!listening) return std::unexpected(listening.error().context("handover socket"));
  receiver->listen_fd_ = std::move(*listening);
  if (::getrandom(&receiver->instance_, sizeof receiver->instance_, 0) != sizeof receiver->instance_ || receiver->instance_ == 0)
    receiver->instance_ = static_cast<uint64_t>(::getpid()) << 32 | 1;
  receiver->stop_fd_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!receiver->stop_fd_) return failErrno("eventfd");
  receiver->thread_ = std::thread([r = receiver.get()] { r->run(); });
  return receiver;
}

HandoverReceiver::~HandoverReceiver() {
  if (thread_.joinable()) {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(stop_fd_.get(), &one, sizeof one);
    thread_.join();
  }
}

void HandoverReceiver::run() {
  for (;;) {
    pollfd fds[2] = {{listen_fd_.get(), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      spdlog::error("handover: poll: {}", std::strerror(errno));
      return;
    }
    if (fds[1].revents != 0) return;
    UniqueFd connection(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!connection) continue;
    serve(std::move(connection));
  }
}

void HandoverReceiver::serve(UniqueFd fd) {
  HandoverChannel channel(std::move(fd));
  ++sessions_;
  Result<HelloPacket> hello = expect<HelloPacket>(channel, 5s, "Hello");
  if (!hello) {
    spdlog::warn("handover: {}", hello.error().describe());
    return;
  }
  std::optional<std::string> not_ready;
  if (hello->instance != 0 && hello->instance == instance_) {
    not_ready = "this is the agent's own handover socket: no newer agent runs";
  } else if (hello->format != kHandoverFormat) {
    not_ready = "handover format " + std::to_string(hello->format) + " is not this agent's " + std::to_string(kHandoverFormat);
  } else {
    not_ready = ready_ ? ready_() : std::nullopt;
  }
  const std::string welcome = encodeWelcome(!not_ready, not_ready.value_or(""));
  if (Status sent = channel.send(std::as_bytes(std::span(welcome)), {}, 5s); !sent || not_ready) {
    // The agent's own offers (each second of its drain, no newer agent there) are not news.
    const bool own = hello->instance != 0 && hello->instance == instance_;
    spdlog::log(own ? spdlog::level::debug : spdlog::level::info,"handover: agent {} (pid {}) offered its connections; refused: {}", hello->agent_version, hello->pid,
                 not_ready.value_or(sent ? "" : sent.error().describe()));
    return;
  }
  spdlog::debug("handover: taking the established connections of agent {} (pid {})", hello->agent_version, hello->pid);
  uint64_t taken = 0;
  // Per connection: the old agent's last read to when a worker here relays it again.
  struct Pauses {
    std::mutex mutex;
    std::condition_variable changed;
    std::vector<double> ms;
  };
  auto pauses = std::make_shared<Pauses>();
  uint64_t stamped = 0;  // connections whose pause is coming
  for (;;) {
    // The old agent sends as fast as it quiesces; a long silence means it is gone.
    Result<std::optional<HandoverChannel::Packet>> received = channel.receive(30s);
    if (!received || !*received) {
      spdlog::warn("handover: the old agent stopped before Done ({})", received ? "closed" : received.error().describe());
      break;
    }
    Result<Packet> packet = decodePacket((*received)->bytes, std::move((*received)->fds));
    if (!packet) {
      spdlog::warn("handover: {}", packet.error().describe());  // its sockets close here; the old agent still holds them
      continue;
    }
    if (const DonePacket* done = std::get_if<DonePacket>(&*packet)) {
      // An old agent offers again each second of its drain: only news is logged.
      std::vector<double> ms;
      {
        std::unique_lock lock(pauses->mutex);  // the workers resume them within milliseconds
        pauses->changed.wait_for(lock, 2s, [&] { return pauses->ms.size() >= stamped; });
        ms = pauses->ms;
      }
      spdlog::log(taken > 0 ? spdlog::level::info : spdlog::level::debug,
                  "handover: took {} connections from agent {} (pid {}); {} stayed with it to drain{}", taken,
                  hello->agent_version, hello->pid, done->stayed,
                  ms.empty() ? std::string()
                             : "; each connection paused " + percentiles(std::move(ms)) +
                                   " (from the old agent's last read to relaying here)");
      break;
    }
    ConnectionPacket* offered = std::get_if<ConnectionPacket>(&*packet);
    if (offered == nullptr) continue;
    // Taken first: once the old agent has it, the connection is ours. If it
    // cannot be said, the old agent will carry the connection on itself.
    const std::string reply = encodeTaken(offered->id);
    if (Status sent = channel.send(std::as_bytes(std::span(reply)), {}, 5s); !sent) {
      spdlog::warn("handover: connection {} stays with the old agent: {}", offered->id, sent.error().describe());
      continue;
    }
    std::unique_ptr<engine::ConnectionObserver> observer = observer_for_ ? observer_for_(offered->connection) : nullptr;
    const auto quiesced_at = offered->connection.quiesced_at;
    std::function<void()> relaying;
    if (quiesced_at.time_since_epoch().count() > 0) {
      relaying = [pauses, quiesced_at] {
        const double ms = msSince(quiesced_at);
        std::lock_guard lock(pauses->mutex);
        pauses->ms.push_back(ms);
        pauses->changed.notify_all();
      };
    }
    if (Status adopted = engine_.adopt(std::move(offered->connection), std::move(observer), std::move(relaying));
        !adopted) {
      spdlog::warn("handover: connection {}: {}", offered->id, adopted.error().describe());
      continue;
    }
    if (quiesced_at.time_since_epoch().count() > 0) ++stamped;
    ++taken;
    ++adopted_;
  }
}

}  // namespace meshlock::upgrade
