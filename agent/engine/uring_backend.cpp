// io_uring back end: one ring per worker thread, a provided-buffer ring for
// receives (idle connections hold no buffer), multishot accept, and one
// place where completions are dispatched.
#include <fcntl.h>
#include <liburing.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <vector>

#include "common/unique_fd.h"
#include "engine/io_backend.h"

namespace meshlock::engine {
namespace {

constexpr uint16_t kBufferGroup = 1;
constexpr uint64_t kIgnoredCompletion = 0;  // cancel requests: nothing to dispatch
constexpr uint64_t kWakeCompletion = 1;

void setBlocking(int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags >= 0 && (flags & O_NONBLOCK)) fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
}

class UringBackend final : public IoBackend {
 public:
  ~UringBackend() override {
    if (ring_ready_) io_uring_queue_exit(&ring_);
    std::free(buffer_ring_);
  }

  Status init(const IoBackendOptions& options) {
    options_ = options;
    io_uring_params params{};
    params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_DEFER_TASKRUN;
    int ret = io_uring_queue_init_params(options.queue_depth, &ring_, &params);
    if (ret == -EINVAL) {  // older kernel: no task-run flags
      params = {};
      ret = io_uring_queue_init_params(options.queue_depth, &ring_, &params);
    }
    if (ret < 0) return failErrno("io_uring_queue_init", -ret);
    ring_ready_ = true;

    // Provided buffers: liburing 2.3 has no io_uring_setup_buf_ring, so the
    // ring is page-aligned memory registered by hand.
    uint32_t count = options.recv_buffer_count;
    MESHLOCK_CHECK(count > 0 && (count & (count - 1)) == 0);
    size_t ring_bytes = count * sizeof(io_uring_buf);
    if (posix_memalign(reinterpret_cast<void**>(&buffer_ring_), 4096, ring_bytes) != 0) {
      return fail("io_uring: buffer ring allocation");
    }
    io_uring_buf_ring_init(buffer_ring_);
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<uint64_t>(buffer_ring_);
    reg.ring_entries = count;
    reg.bgid = kBufferGroup;
    ret = io_uring_register_buf_ring(&ring_, &reg, 0);
    if (ret < 0) return failErrno("io_uring_register_buf_ring", -ret);
    buffers_.resize(static_cast<size_t>(count) * options.recv_buffer_size);
    for (uint32_t i = 0; i < count; ++i) returnBuffer(static_cast<uint16_t>(i), i);
    io_uring_buf_ring_advance(buffer_ring_, static_cast<int>(count));

    wake_fd_ = UniqueFd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!wake_fd_) return failErrno("eventfd");
    armWake();
    return {};
  }

  IoBackendKind kind() const override { return IoBackendKind::Uring; }

  void accept(int listen_fd, IoRequest& request) override {
    request.fd = listen_fd;
    setBlocking(listen_fd);
    io_uring_sqe* sqe = nextSqe();
    // Blocking sockets: io_uring waits for readiness itself, whereas an
    // O_NONBLOCK socket makes a send or receive complete with -EAGAIN.
    io_uring_prep_multishot_accept(sqe, listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    io_uring_sqe_set_data(sqe, &request);
  }

  void recv(int fd, IoRequest& request) override {
    request.fd = fd;
    io_uring_sqe* sqe = nextSqe();
    io_uring_prep_recv(sqe, fd, nullptr, options_.recv_buffer_size, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = kBufferGroup;
    io_uring_sqe_set_data(sqe, &request);
  }

  void send(int fd, const msghdr& message, IoRequest& request) override {
    request.fd = fd;
    io_uring_sqe* sqe = nextSqe();
    io_uring_prep_sendmsg(sqe, fd, &message, MSG_NOSIGNAL);
    io_uring_sqe_set_data(sqe, &request);
  }

  void connect(int fd, const sockaddr* address, socklen_t length, IoRequest& request) override {
    request.fd = fd;
    setBlocking(fd);
    io_uring_sqe* sqe = nextSqe();
    io_uring_prep_connect(sqe, fd, address, length);
    io_uring_sqe_set_data(sqe, &request);
  }

  void cancel(int fd) override {
    // Receives waiting for a free buffer are not in the kernel yet.
    for (size_t i = 0; i < starved_.size();) {
      if (starved_[i]->fd == fd) {
        IoRequest* request = starved_[i];
        starved_[i] = starved_.back();
        starved_.pop_back();
        cancelled_.push_back(request);
      } else {
        ++i;
      }
    }
    io_uring_sqe* sqe = nextSqe();
    io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, kIgnoredCompletion);
  }

  void cancel(IoRequest& request) override {
    // A receive waiting for a free buffer is not in the kernel yet.
    if (auto it = std::find(starved_.begin(), starved_.end(), &request); it != starved_.end()) {
      *it = starved_.back();
      starved_.pop_back();
      cancelled_.push_back(&request);
      return;
    }
    io_uring_sqe* sqe = nextSqe();
    io_uring_prep_cancel64(sqe, reinterpret_cast<uint64_t>(&request), 0);
    io_uring_sqe_set_data64(sqe, kIgnoredCompletion);
  }

  void forget(int) override {}

  void adoptSocket(int fd) override { setBlocking(fd); }

  Status runOnce(std::chrono::milliseconds timeout) override {
    // Receives that found the buffer ring empty are retried once buffers came back.
    if (!starved_.empty()) {
      std::vector<IoRequest*> retry;
      retry.swap(starved_);
      for (IoRequest* request : retry) recv(request->fd, *request);
    }
    if (!cancelled_.empty()) {
      std::vector<IoRequest*> done;
      done.swap(cancelled_);
      for (IoRequest* request : done) request->handler->onIoComplete(*request, IoCompletion{-ECANCELED});
      timeout = std::chrono::milliseconds(0);
    }
    __kernel_timespec ts{};
    ts.tv_sec = timeout.count() / 1000;
    ts.tv_nsec = (timeout.count() % 1000) * 1000000;
    io_uring_cqe* first = nullptr;
    int ret = io_uring_submit_and_wait_timeout(&ring_, &first, 1, &ts, nullptr);
    if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
      return failErrno("io_uring_submit_and_wait_timeout", -ret);
    }
    // Dispatch in batches; handlers may queue new SQEs meanwhile.
    io_uring_cqe* batch[256];
    for (;;) {
      unsigned n = io_uring_peek_batch_cqe(&ring_, batch, 256);
      if (n == 0) break;
      for (unsigned i = 0; i < n; ++i) dispatch(*batch[i]);
      io_uring_cq_advance(&ring_, n);
    }
    return {};
  }

  void wake() override {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd_.get(), &one, sizeof one);
  }

 private:
  io_uring_sqe* nextSqe() {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {
      io_uring_submit(&ring_);
      sqe = io_uring_get_sqe(&ring_);
    }
    MESHLOCK_CHECK(sqe != nullptr);
    return sqe;
  }

  void returnBuffer(uint16_t id, uint32_t offset) {
    io_uring_buf_ring_add(buffer_ring_, buffers_.data() + static_cast<size_t>(id) * options_.recv_buffer_size,
                          options_.recv_buffer_size, id, io_uring_buf_ring_mask(options_.recv_buffer_count),
                          static_cast<int>(offset));
  }

  void armWake() {
    io_uring_sqe* sqe = nextSqe();
    io_uring_prep_read(sqe, wake_fd_.get(), &wake_value_, sizeof wake_value_, 0);
    io_uring_sqe_set_data64(sqe, kWakeCompletion);
  }

  void dispatch(const io_uring_cqe& cqe) {
    uint64_t data = io_uring_cqe_get_data64(&cqe);
    if (data == kIgnoredCompletion) return;
    if (data == kWakeCompletion) {
      armWake();
      return;
    }
    auto* request = reinterpret_cast<IoRequest*>(data);
    IoCompletion completion{cqe.res, (cqe.flags & IORING_CQE_F_MORE) != 0, {}};
    if (request->op == IoOp::Recv && cqe.res == -ENOBUFS) {
      starved_.push_back(request);
      return;
    }
    if (cqe.flags & IORING_CQE_F_BUFFER) {
      auto id = static_cast<uint16_t>(cqe.flags >> IORING_CQE_BUFFER_SHIFT);
      const std::byte* buffer = buffers_.data() + static_cast<size_t>(id) * options_.recv_buffer_size;
      completion.data = {buffer, static_cast<size_t>(cqe.res > 0 ? cqe.res : 0)};
      request->handler->onIoComplete(*request, completion);
      returnBuffer(id, 0);
      io_uring_buf_ring_advance(buffer_ring_, 1);
      return;
    }
    request->handler->onIoComplete(*request, completion);
  }

  IoBackendOptions options_;
  io_uring ring_{};
  bool ring_ready_ = false;
  io_uring_buf_ring* buffer_ring_ = nullptr;
  std::vector<std::byte> buffers_;
  UniqueFd wake_fd_;
  uint64_t wake_value_ = 0;
  std::vector<IoRequest*> starved_;
  std::vector<IoRequest*> cancelled_;
};

}  // namespace

const char* toString(IoBackendKind kind) {
  switch (kind) {
    case IoBackendKind::Auto: return "auto";
    case IoBackendKind::Uring: return "io_uring";
    case IoBackendKind::Epoll: return "epoll";
  }
  return "?";
}

Result<std::unique_ptr<IoBackend>> makeUringBackend(const IoBackendOptions& options) {
  auto backend = std::make_unique<UringBackend>();
  if (Status s = backend->init(options); !s) return std::unexpected(s.error());
  return backend;
}

}  // namespace meshlock::engine
