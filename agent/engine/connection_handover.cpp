// A relaying connection leaving for another engine (an agent upgrade), and
// one arriving from another: quiesce, export, adopt (engine/handover.h).
#include <spdlog/spdlog.h>

#include <cerrno>

#include "engine/connection.h"

namespace meshlock::engine {

bool Connection::beginHandover(std::shared_ptr<HandoverCollector> collector) {
  // Only a connection relaying both ways is carried on: one still in its
  // handshake finishes here, a half-closed one drains here, an HBONE tunnel
  // (HTTP/2 state) drains with GOAWAY.
  if (closing_ || phase_ != Phase::Relaying || tunnel_ || up_hbone_ || handover_) return false;
  int tls_sides = 0;
  for (const Side& s : sides_) {
    if (!s.connected || s.read_eof || s.eof_pending || s.write_shut || s.close_notify_sent) return false;
    if (s.tls) {
      ++tls_sides;
      if (s.tls->info().version != "TLSv1.3") return false;  // no traffic secrets to carry on with
    }
  }
  MESHLOCK_CHECK(tls_sides <= 1);
  handover_ = std::move(collector);
  quiesced_at_ = std::chrono::system_clock::now();
  // Stop reading and sending; what is in flight lands in the queues. One
  // cancel per operation, by request: a cancel by fd walks every operation
  // in the ring, which at thousands of connections stalled this loop.
  for (Side& s : sides_) {
    if (s.recv_armed) worker_.io().cancel(s.recv_request);
    if (s.send_armed) worker_.io().cancel(s.send_request);
  }
  if (pending_ == 0) finishHandover();
  return true;
}

void Connection::onHandoverCompletion(IoRequest& request, const IoCompletion& completion) {
  const int side = request.tag;
  Side& s = sides_[side];
  const int result = completion.result;
  if (request.op == IoOp::Recv && result != -ECANCELED) {
    if (result <= 0) {
      // The peer closed or failed meanwhile: this one ends here, as it would have.
      leaveHandover("the peer closed it");
      onReceived(side, completion);
      if (!closing_) {
        flush(side);
        armRecv(1 - side);
      }
      return;
    }
    last_activity_ = worker_.now();
    if (s.tls) {
      s.tls->feed(completion.data);
      pumpTls(side);  // every whole record, whatever the bound: they travel as plaintext
    } else {
      deliver(1 - side, completion.data);
    }
    if (closing_ || s.read_eof) {
      stayAfterHandover("it ended during the handover");
      return;
    }
  } else if (request.op == IoOp::Send && result != -ECANCELED) {
    if (result < 0) {
      leaveHandover("a send failed");
      onSent(side, result);
      return;
    }
    s.wire().consume(static_cast<size_t>(result));
  }
  if (!s.send_armed) s.sending.reset();
  if (pending_ == 0) finishHandover();
}

void Connection::stayAfterHandover(std::string_view why) {
  leaveHandover(why);
  if (closing_) return;
  // Operations cancelled for the handover come back as -ECANCELED and re-arm
  // themselves (onIoComplete); the rest resume now.
  for (int i : {kDown, kUp}) flush(i);
  for (int i : {kDown, kUp}) armRecv(i);
  updateBuffered();
}

void Connection::leaveHandover(std::string_view why) {
  std::shared_ptr<HandoverCollector> collector = std::move(handover_);
  {
    std::lock_guard lock(collector->mutex);
    if (!collector->closed) {
      --collector->outstanding;
      ++collector->outcome.stayed;
    }
  }
  collector->changed.notify_all();
  spdlog::debug("engine: {}: {} stays in this process: {}", labels_->name, peer_.toString(), why);
}

void Connection::finishHandover() {
  std::shared_ptr<HandoverCollector> collector = handover_;
  std::unique_lock lock(collector->mutex);
  if (collector->closed) {
    // The engine stopped waiting for it: it carries on here.
    handover_.reset();
    lock.unlock();
    for (int i : {kDown, kUp}) flush(i);
    for (int i : {kDown, kUp}) armRecv(i);
    return;
  }
  HandedConnection handed;
  HandedSide* out[2] = {&handed.down, &handed.up};
  for (int i : {kDown, kUp}) {
    Side& s = sides_[i];
    if (!s.tls) continue;
    Result<TlsHandover> tls = s.tls->handOver();
    if (!tls) {
      lock.unlock();
      stayAfterHandover(tls.error().describe());
      return;
    }
    out[i]->tls = std::move(*tls);
  }
  const ConnectionSnapshot now = snapshot(worker_.now());
  handed.listener = labels_->name;
  handed.pod_key = labels_->pod_key;
  handed.outbound = outbound_;
  handed.plaintext = now.plaintext;
  handed.peer = peer_;
  handed.upstream = destination_;
  handed.bytes_to_upstream = bytes_to_upstream_;
  handed.bytes_to_downstream = bytes_to_downstream_;
  handed.age = now.age;
  handed.quiesced_at = quiesced_at_;
  if (observer_) handed.observer_state = observer_->handoverState();
  for (int i : {kDown, kUp}) {
    Side& s = sides_[i];
    out[i]->plain_unsent = s.plain_out.takeAll();
    worker_.io().forget(s.fd.get());
    out[i]->fd = std::move(s.fd);
  }
  bump(worker_.counters.handed_over);  // before the engine hears of it
  collector->outcome.connections.push_back(std::move(handed));
  --collector->outstanding;
  lock.unlock();
  collector->changed.notify_all();
  handover_.reset();
  // It ends here without a byte lost or a socket closed: the sockets left with it.
  end_ = ConnectionEnd::HandedOver;
  closing_ = true;
  phase_ = Phase::Closing;
  finalize();
}

void Connection::adopt(HandedConnection handed, std::unique_ptr<ConnectionObserver> observer) {
  outbound_ = handed.outbound;
  destination_ = handed.upstream;
  plain_outbound_ = outbound_ && handed.plaintext;
  mode_ = !outbound_ && handed.plaintext ? InboundMode::Permissive : InboundMode::Strict;
  bytes_to_upstream_ = handed.bytes_to_upstream;
  bytes_to_downstream_ = handed.bytes_to_downstream;
  accepted_at_ = worker_.now() - handed.age;
  observer_ = std::move(observer);
  sides_[kUp].fd = std::move(handed.up.fd);
  sides_[kUp].connected = true;
  HandedSide* in[2] = {&handed.down, &handed.up};
  for (int i : {kDown, kUp}) {
    Side& s = sides_[i];
    worker_.io().adoptSocket(s.fd.get());
    if (in[i]->tls) {
      Result<std::unique_ptr<TlsSession>> session = TlsSession::resume(std::move(*in[i]->tls));
      if (!session) {
        bump(worker_.counters.tls_errors);
        spdlog::warn("engine: {}: a handed-over connection from {}: {}", labels_->name, peer_.toString(),
                     session.error().describe());
        close(CloseHow::Reset, ConnectionEnd::TlsError, session.error().describe());
        return;
      }
      s.tls = std::move(*session);
    }
    s.plain_out.append(in[i]->plain_unsent);
  }
  phase_ = Phase::Relaying;
  bump(worker_.counters.adopted);
  if (observer_) observer_->established(snapshot(worker_.now()));
  for (int i : {kDown, kUp}) flush(i);
  for (int i : {kDown, kUp}) armRecv(i);
  updateBuffered();
}

}  // namespace meshlock::engine
