// epoll back end, used where io_uring is unavailable (kernel.io_uring_disabled,
// seccomp) or switched off: it performs each requested operation when its fd
// is ready and reports it as the completion io_uring would have delivered.
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "common/unique_fd.h"
#include "engine/io_backend.h"

namespace meshlock::engine {
namespace {

void setNonBlocking(int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags >= 0 && !(flags & O_NONBLOCK)) fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

class EpollBackend final : public IoBackend {
 public:
  Status init(const IoBackendOptions& options) {
    options_ = options;
    epoll_ = UniqueFd(epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_) return failErrno("epoll_create1");
    wake_fd_ = UniqueFd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!wake_fd_) return failErrno("eventfd");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = wake_fd_.get();
    if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_fd_.get(), &ev) != 0) return failErrno("epoll_ctl(eventfd)");
    scratch_.resize(options.recv_buffer_size);
    return {};
  }

  IoBackendKind kind() const override { return IoBackendKind::Epoll; }

  void accept(int listen_fd, IoRequest& request) override {
    request.fd = listen_fd;
    setNonBlocking(listen_fd);  // several workers may wake for one connection
    Slot& s = slot(listen_fd);
    s.accept = &request;
    // Level-triggered and exclusive: one worker wakes per new connection.
    if (!s.registered) registerFd(listen_fd, EPOLLIN | EPOLLEXCLUSIVE);
    markReady(listen_fd);
  }

  void recv(int fd, IoRequest& request) override {
    request.fd = fd;
    Slot& s = slot(fd);
    MESHLOCK_CHECK(s.recv == nullptr);
    s.recv = &request;
    ensureRegistered(fd);
    markReady(fd);
  }

  void send(int fd, const msghdr& message, IoRequest& request) override {
    request.fd = fd;
    Slot& s = slot(fd);
    MESHLOCK_CHECK(s.send == nullptr);
    s.send = &request;
    s.message = &message;
    ensureRegistered(fd);
    markReady(fd);
  }

  void connect(int fd, const sockaddr* address, socklen_t length, IoRequest& request) override {
    request.fd = fd;
    Slot& s = slot(fd);
    s.connect = &request;
    setNonBlocking(fd);
    ensureRegistered(fd);
    if (::connect(fd, address, length) == 0) {
      s.connect_result = 0;
      markReady(fd);
    } else if (errno == EINPROGRESS) {
      s.connect_result = kInProgress;
    } else {
      s.connect_result = -errno;
      markReady(fd);
    }
  }

  void cancel(int fd) override {
    Slot& s = slot(fd);
    if (s.accept != nullptr && s.registered) {
      // A listener stays readable while connections wait: level-triggered,
      // it would wake this loop at once, over and over, until re-armed
      // (an accept back-off after EMFILE would spin).
      epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
      s.registered = false;
    }
    for (IoRequest** pending : {&s.accept, &s.recv, &s.send, &s.connect}) {
      if (*pending != nullptr) cancelled_.push_back(std::exchange(*pending, nullptr));
    }
  }

  void cancel(IoRequest& request) override {
    Slot& s = slot(request.fd);
    for (IoRequest** pending : {&s.accept, &s.recv, &s.send, &s.connect}) {
      if (*pending == &request) cancelled_.push_back(std::exchange(*pending, nullptr));
    }
  }

  void forget(int fd) override {
    Slot& s = slot(fd);
    MESHLOCK_CHECK(s.accept == nullptr && s.recv == nullptr && s.send == nullptr && s.connect == nullptr);
    if (s.registered) epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
    s = Slot{};
  }

  void adoptSocket(int fd) override { setNonBlocking(fd); }

  Status runOnce(std::chrono::milliseconds timeout) override {
    bool work_queued = !ready_.empty() || !cancelled_.empty();
    epoll_event events[256];
    int n = epoll_wait(epoll_.get(), events, 256, work_queued ? 0 : static_cast<int>(timeout.count()));
    if (n < 0 && errno != EINTR) return failErrno("epoll_wait");
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == wake_fd_.get()) {
        uint64_t value;
        [[maybe_unused]] ssize_t r = ::read(fd, &value, sizeof value);
        continue;
      }
      attempt(fd);
    }
    // Operations submitted meanwhile (or by the handlers above) are tried now:
    // with edge-triggered registration the readiness may already have passed.
    for (int round = 0; round < 4 && (!ready_.empty() || !cancelled_.empty()); ++round) {
      std::vector<IoRequest*> cancelled;
      cancelled.swap(cancelled_);
      for (IoRequest* request : cancelled) request->handler->onIoComplete(*request, IoCompletion{-ECANCELED});
      std::vector<int> ready;
      ready.swap(ready_);
      for (int fd : ready) {
        slot(fd).queued = false;
        attempt(fd);
      }
    }
    return {};
  }

  void wake() override {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd_.get(), &one, sizeof one);
  }

 private:
  static constexpr int kInProgress = 1;

  struct Slot {
    IoRequest* accept = nullptr;
    IoRequest* recv = nullptr;
    IoRequest* send = nullptr;
    IoRequest* connect = nullptr;
    const msghdr* message = nullptr;
    int connect_result = 0;
    bool registered = false;
    bool queued = false;
  };

  Slot& slot(int fd) {
    MESHLOCK_CHECK(fd >= 0);
    if (static_cast<size_t>(fd) >= slots_.size()) slots_.resize(static_cast<size_t>(fd) * 2 + 64);
    return slots_[static_cast<size_t>(fd)];
  }

  void registerFd(int fd, uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = fd;
    MESHLOCK_CHECK(epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) == 0);
    slot(fd).registered = true;
  }

  void ensureRegistered(int fd) {
    if (!slot(fd).registered) registerFd(fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET);
  }

  void markReady(int fd) {
    Slot& s = slot(fd);
    if (s.queued) return;
    s.queued = true;
    ready_.push_back(fd);
  }

  static void complete(IoRequest* request, IoCompletion completion) {
    request->handler->onIoComplete(*request, completion);
  }

  // Tries every operation pending on fd; a completion may queue new ones
  // (on this or another fd), which the slot pointers tolerate.
  void attempt(int fd) {
    if (static_cast<size_t>(fd) >= slots_.size()) return;
    if (slots_[static_cast<size_t>(fd)].accept != nullptr) {
      for (int i = 0; i < 64; ++i) {
        IoRequest* request = slot(fd).accept;
        if (request == nullptr) return;
        int client = ::accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (client < 0) {
          if (errno == EAGAIN || errno == EINTR) return;
          complete(request, IoCompletion{-errno, true});
          return;
        }
        complete(request, IoCompletion{client, true});
      }
      markReady(fd);  // more may be waiting: come back after the others had a turn
      return;
    }
    if (IoRequest* request = slot(fd).connect) {
      int result = slot(fd).connect_result;
      if (result == kInProgress) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err == 0) {
          // Not finished unless writable: poll, which is cheap and exact.
          sockaddr_storage peer;
          socklen_t plen = sizeof peer;
          if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &plen) != 0) return;
        }
        result = -err;
      }
      slot(fd).connect = nullptr;
      complete(request, IoCompletion{result});
    }
    if (IoRequest* request = slot(fd).recv) {
      ssize_t n = ::recv(fd, scratch_.data(), scratch_.size(), MSG_DONTWAIT);
      if (n >= 0 || (errno != EAGAIN && errno != EINTR)) {
        slot(fd).recv = nullptr;
        int result = n >= 0 ? static_cast<int>(n) : -errno;
        complete(request, IoCompletion{result, false, {scratch_.data(), n > 0 ? static_cast<size_t>(n) : 0}});
      }
    }
    if (IoRequest* request = slot(fd).send) {
      ssize_t n = ::sendmsg(fd, slot(fd).message, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n >= 0 || (errno != EAGAIN && errno != EINTR)) {
        slot(fd).send = nullptr;
        complete(request, IoCompletion{n >= 0 ? static_cast<int>(n) : -errno});
      }
    }
  }

  IoBackendOptions options_;
  UniqueFd epoll_;
  UniqueFd wake_fd_;
  std::vector<Slot> slots_;
  std::vector<int> ready_;
  std::vector<IoRequest*> cancelled_;
  std::vector<std::byte> scratch_;
};

}  // namespace

Result<std::unique_ptr<IoBackend>> makeEpollBackend(const IoBackendOptions& options) {
  auto backend = std::make_unique<EpollBackend>();
  if (Status s = backend->init(options); !s) return std::unexpected(s.error());
  return backend;
}

}  // namespace meshlock::engine
