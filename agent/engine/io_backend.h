// The completion interface both event-loop back ends implement: io_uring
// natively, epoll by performing the operation when the fd is ready. The
// connection logic is written once against it.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "common/error.h"

namespace meshlock::engine {

enum class IoOp : uint8_t { Accept, Recv, Send, Connect };

class IoHandler;

// One outstanding operation. Lives in its owner (a connection side or a
// listener) until its completion is delivered; every submitted request
// completes exactly once (a multishot accept: until `more` is false).
struct IoRequest {
  IoHandler* handler = nullptr;
  IoOp op = IoOp::Recv;
  uint8_t tag = 0;  // owner-defined (which side of a connection)
  int fd = -1;
};

struct IoCompletion {
  int result = 0;                    // bytes, a new fd, 0, or -errno
  bool more = false;                 // multishot accept: more completions will follow
  std::span<const std::byte> data;   // Recv: the bytes, valid during the callback only
};

class IoHandler {
 public:
  virtual void onIoComplete(IoRequest& request, const IoCompletion& completion) = 0;

 protected:
  ~IoHandler() = default;
};

enum class IoBackendKind { Auto, Uring, Epoll };
const char* toString(IoBackendKind kind);

struct IoBackendOptions {
  uint32_t queue_depth = 4096;
  uint32_t recv_buffer_size = 64 * 1024;  // one receive completes with at most this
  uint32_t recv_buffer_count = 64;        // io_uring provided-buffer ring size (power of two)
};

class IoBackend {
 public:
  virtual ~IoBackend() = default;
  [[nodiscard]] virtual IoBackendKind kind() const = 0;

  // Sockets may be blocking or not: each back end sets the mode it needs
  // (io_uring: blocking, so it polls instead of failing with -EAGAIN; epoll: non-blocking).
  // Multishot: one completion per accepted connection (result = the new fd).
  virtual void accept(int listen_fd, IoRequest& request) = 0;
  virtual void recv(int fd, IoRequest& request) = 0;
  // `message` (and what it points to) must stay valid until completion.
  virtual void send(int fd, const msghdr& message, IoRequest& request) = 0;
  // `address` must stay valid until completion.
  virtual void connect(int fd, const sockaddr* address, socklen_t length, IoRequest& request) = 0;
  // Every operation pending on fd completes soon (-ECANCELED unless it had finished).
  virtual void cancel(int fd) = 0;
  // The same for one pending operation. Cheaper than cancel(fd) when many
  // are pending: io_uring finds a request by its user data, whereas a
  // cancel by fd walks every pending one (thousands at an agent upgrade).
  virtual void cancel(IoRequest& request) = 0;
  // The fd is about to be closed and has no operation pending.
  virtual void forget(int fd) = 0;
  // A connected socket made elsewhere (another engine, before an upgrade):
  // given the mode this back end needs before its first operation.
  virtual void adoptSocket(int fd) = 0;

  // Submits queued work, waits up to `timeout` for completions, dispatches them.
  virtual Status runOnce(std::chrono::milliseconds timeout) = 0;
  // Thread-safe: makes a runOnce in progress return soon.
  virtual void wake() = 0;
};

[[nodiscard]] Result<std::unique_ptr<IoBackend>> makeUringBackend(const IoBackendOptions& options);
[[nodiscard]] Result<std::unique_ptr<IoBackend>> makeEpollBackend(const IoBackendOptions& options);

}  // namespace meshlock::engine
