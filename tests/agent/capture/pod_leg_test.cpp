// The pod-local shortcut (bpf/sk_msg.bpf.c, bpf/sockops.bpf.c) on the real
// kernel: private instances of both objects sharing their maps, sockops
// attached to a cgroup of the test's own that this process joins for the
// test, and loopback TCP pairs made in it, so sockops puts them in the
// sockhash during the handshake exactly as on a node. What is checked is
// what makes sockmap hard in production: order when the shortcut stops and
// starts again under a slow reader (a bounded queue, nothing lost),
// half-close, reset, MSG_PEEK, a closed socket leaving the map, and splice
// by an app (which is why agent -> app stays on TCP by default). Root only.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "capture/bpf_abi.h"
#include "capture/socket_address.h"
#include "capture/pod_discovery.h"
#include "capture_sk_msg.skel.h"
#include "capture_sockops.skel.h"
#include "common/unique_fd.h"

namespace meshlock::capture {
namespace {

namespace fs = std::filesystem;

struct SkelDeleter {
  void operator()(capture_sk_msg* s) const { capture_sk_msg__destroy(s); }
};
struct SockopsDeleter {
  void operator()(capture_sockops* s) const { capture_sockops__destroy(s); }
};

bool joinCgroup(const fs::path& dir) {
  std::ofstream procs(dir / "cgroup.procs");
  procs << ::getpid() << std::flush;
  return static_cast<bool>(procs);
}

ml_leg_key keyOf(int fd) {
  ml_leg_key key{};
  socklen_t len = sizeof key.netns_cookie;
  EXPECT_EQ(::getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &key.netns_cookie, &len), 0);
  auto l = SocketAddress::localOf(fd);
  auto r = SocketAddress::peerOf(fd);
  EXPECT_TRUE(l && r);
  toBpf(l->ip, key.local);
  toBpf(r->ip, key.remote);
  key.local_port = l->port;
  key.remote_port = r->port;
  return key;
}

class PodLeg : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    loadAndAttach(ML_LEG_APP_TO_AGENT);
  }

  void loadAndAttach(std::uint32_t mode) {
    skel.reset(capture_sk_msg__open());
    ASSERT_TRUE(skel);
    skel->rodata->leg_mode = mode;
    ASSERT_EQ(capture_sk_msg__load(skel.get()), 0) << "load sk_msg: " << std::strerror(errno);
    legs = bpf_map__fd(skel->maps.ml_pod_legs);
    ASSERT_EQ(bpf_prog_attach(bpf_program__fd(skel->progs.ml_pod_leg_msg), legs, BPF_SK_MSG_VERDICT, 0), 0)
        << std::strerror(errno);

    listener = UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    socklen_t len = sizeof sa;
    ASSERT_EQ(::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&sa), &len), 0);
    listen_addr = sa;

    // sockops shares the sk_msg object's maps; its outbound port is our listener's.
    sockops.reset(capture_sockops__open());
    ASSERT_TRUE(sockops);
    sockops->rodata->pod_legs = mode;
    sockops->rodata->outbound_port = ntohs(sa.sin_port);
    for (const char* name : {"ml_pod_legs", "ml_leg_socks", "ml_leg_marks", "ml_counters", "ml_inflight",
                             "ml_orig_dst", "ml_pod_addrs"}) {
      bpf_map* from = bpf_object__find_map_by_name(skel->obj, name);
      bpf_map* to = bpf_object__find_map_by_name(sockops->obj, name);
      ASSERT_TRUE(from && to) << name;
      ASSERT_EQ(bpf_map__reuse_fd(to, bpf_map__fd(from)), 0) << name;
    }
    ASSERT_EQ(capture_sockops__load(sockops.get()), 0) << "load sockops: " << std::strerror(errno);

    auto mount = findCgroup2Mount();
    ASSERT_TRUE(mount) << mount.error().describe();
    auto home = ownCgroup2Dir();
    ASSERT_TRUE(home) << home.error().describe();
    home_cgroup = *home;
    test_cgroup = *mount / ("meshlock-podleg-" + std::to_string(::getpid()));
    fs::create_directories(test_cgroup);
    UniqueFd cg(::open(test_cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(cg);
    ASSERT_EQ(bpf_prog_attach(bpf_program__fd(sockops->progs.ml_sockops), cg.get(), BPF_CGROUP_SOCK_OPS, 0), 0)
        << std::strerror(errno);
    ASSERT_TRUE(joinCgroup(test_cgroup));
    joined = true;
    // The listener was made before joining: its children must be the
    // cgroup's, as the agent's are, so listen on a new one.
    listener = UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    int one = 1;
    ::setsockopt(listener.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&listen_addr), sizeof listen_addr), 0)
        << std::strerror(errno);
    ASSERT_EQ(::listen(listener.get(), 8), 0);
  }

  void TearDown() override {
    app.reset();
    agent.reset();
    listener.reset();
    if (joined) joinCgroup(home_cgroup);
    if (!test_cgroup.empty()) ::rmdir(test_cgroup.c_str());
  }

  // An app's captured connect to the agent's outbound listener: the app's
  // socket carries an original destination (as connect4 leaves it), the
  // agent's end is accepted on the outbound port.
  void connectCaptured() {
    app = UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    std::uint64_t cookie = 0;
    socklen_t len = sizeof cookie;
    ASSERT_EQ(::getsockopt(app.get(), SOL_SOCKET, SO_COOKIE, &cookie, &len), 0);
    ml_orig_dst orig{};
    orig.family = AF_INET;
    orig.port = 8080;
    ASSERT_EQ(bpf_map__update_elem(skel->maps.ml_inflight, &cookie, sizeof cookie, &orig, sizeof orig, BPF_ANY), 0);
    ASSERT_EQ(::connect(app.get(), reinterpret_cast<sockaddr*>(&listen_addr), sizeof listen_addr), 0);
    agent = UniqueFd(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    ASSERT_TRUE(agent);
  }

  bool inMap(int fd) {
    ml_leg_key key = keyOf(fd);
    std::uint64_t cookie = 0;
    return bpf_map_lookup_elem(legs, &key, &cookie) == 0;
  }

  // A listener for "the app" in the pod, on another port than the outbound one.
  UniqueFd appListener(sockaddr_in& addr) {
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    addr = {};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    socklen_t len = sizeof addr;
    EXPECT_EQ(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);
    EXPECT_EQ(::listen(fd.get(), 8), 0);
    return fd;
  }

  // 127.0.0.1 stands for the pod's own address (the agent connects to the
  // app from the pod's address to the pod's address).
  void podAddressIsLoopback() {
    ml_addr key;
    toBpf(*IpAddress::parse("127.0.0.1"), key);
    ml_pod value{};
    value.pod_cgroup_id = 1;
    value.flags = ML_POD_INBOUND;
    ASSERT_EQ(bpf_map__update_elem(skel->maps.ml_pod_addrs, &key, sizeof key, &value, sizeof value, BPF_ANY), 0);
  }

  std::uint64_t counter(enum ml_counter which) {
    const int cpus = libbpf_num_possible_cpus();
    std::vector<std::uint64_t> values(static_cast<size_t>(cpus));
    std::uint32_t key = which;
    EXPECT_EQ(bpf_map_lookup_elem(bpf_map__fd(skel->maps.ml_counters), &key, values.data()), 0);
    std::uint64_t sum = 0;
    for (auto v : values) sum += v;
    return sum;
  }

  std::string counters() {
    std::string out;
    for (int i = ML_CTR_LEG_INSERTED; i < ML_CTR_MAX; ++i)
      out += std::string(kCounterNames[static_cast<size_t>(i)]) + "=" +
             std::to_string(counter(static_cast<ml_counter>(i))) + " ";
    return out;
  }

  static void sendAll(int fd, const std::string& data) {
    size_t off = 0;
    while (off < data.size()) {
      ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      ASSERT_GT(n, 0) << std::strerror(errno);
      off += static_cast<size_t>(n);
    }
  }

  // Reads exactly `n` bytes (or to EOF), waiting at most 5 s in all.
  static std::string readN(int fd, size_t n, int flags = 0) {
    std::string out;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (out.size() < n && std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      char buf[65536];
      ssize_t got = ::recv(fd, buf, std::min(sizeof buf, n - out.size()), flags | MSG_DONTWAIT);
      if (got == 0) break;
      if (got < 0) {
        if (errno == EAGAIN) continue;
        break;
      }
      out.append(buf, static_cast<size_t>(got));
    }
    return out;
  }

  // 0 at EOF, -errno on error, 1 when a byte came, 2 when nothing within 5 s.
  static int waitEof(int fd) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 5000) <= 0) return 2;
    char c;
    ssize_t got = ::recv(fd, &c, 1, MSG_DONTWAIT);
    return got < 0 ? -errno : static_cast<int>(got);
  }

  // What splice() reads from `fd` into a pipe within `wait` (fd non-blocking).
  static std::string spliceFrom(int fd, std::chrono::milliseconds wait) {
    int pipefd[2];
    EXPECT_EQ(::pipe2(pipefd, O_CLOEXEC | O_NONBLOCK), 0);
    UniqueFd rd(pipefd[0]), wr(pipefd[1]);
    std::string got;
    const auto deadline = std::chrono::steady_clock::now() + wait;
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd, POLLIN, 0};
      ::poll(&p, 1, 50);
      ssize_t n = ::splice(fd, nullptr, wr.get(), nullptr, 64, SPLICE_F_NONBLOCK);
      if (n <= 0) continue;
      char buf[64];
      ssize_t r = ::read(rd.get(), buf, sizeof buf);
      if (r > 0) got.append(buf, static_cast<size_t>(r));
    }
    return got;
  }

  static std::string pattern(size_t n, size_t start = 0) {
    std::string s(n, '\0');
    for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (start + i) * 7 % 26);
    return s;
  }

  std::unique_ptr<capture_sk_msg, SkelDeleter> skel;
  std::unique_ptr<capture_sockops, SockopsDeleter> sockops;
  int legs = -1;
  sockaddr_in listen_addr{};
  fs::path home_cgroup, test_cgroup;
  bool joined = false;
  UniqueFd listener, app, agent;
};

TEST_F(PodLeg, BothEndsOfACapturedConnectJoinDuringTheHandshake) {
  connectCaptured();
  EXPECT_EQ(counter(ML_CTR_LEG_INSERTED), 2u);
  EXPECT_TRUE(inMap(app.get()));
  EXPECT_TRUE(inMap(agent.get()));
  sendAll(app.get(), "GET / HTTP/1.1\r\n\r\n");
  EXPECT_EQ(readN(agent.get(), 18), "GET / HTTP/1.1\r\n\r\n");
  EXPECT_EQ(counter(ML_CTR_LEG_REDIRECTED), 1u);
  // agent -> app stays on TCP by default (see SpliceCannotReadRedirectedBytes).
  sendAll(agent.get(), "HTTP/1.1 200 OK\r\n\r\n");
  EXPECT_EQ(readN(app.get(), 19), "HTTP/1.1 200 OK\r\n\r\n");
  EXPECT_EQ(counter(ML_CTR_LEG_REDIRECTED), 1u);
  EXPECT_EQ(counter(ML_CTR_LEG_PASS_NO_PEER) + counter(ML_CTR_LEG_PASS_UNREAD), 0u);
}

TEST_F(PodLeg, ASlowReaderStopsTheWriterLosesNothingAndTheShortcutComesBack) {
  connectCaptured();
  ASSERT_EQ(::fcntl(app.get(), F_SETFL, O_NONBLOCK), 0);
  // Write until the writer is pushed back; the agent reads nothing.
  size_t written = 0;
  const size_t limit = 256u << 20;  // bounded: fails instead of looping
  while (written < limit) {
    const std::string chunk = pattern(16384, written);
    ssize_t n = ::send(app.get(), chunk.data(), chunk.size(), MSG_NOSIGNAL);
    if (n < 0) {
      ASSERT_EQ(errno, EAGAIN) << std::strerror(errno);
      break;
    }
    written += static_cast<size_t>(n);
  }
  ASSERT_LT(written, limit) << "the writer was never pushed back: the queue is unbounded";
  // The shortcut queue holds up to tcp_rmem's maximum, then TCP's own
  // buffers (the reader's receive and the writer's send buffer) fill.
  std::ifstream rmem("/proc/sys/net/ipv4/tcp_rmem"), wmem("/proc/sys/net/ipv4/tcp_wmem");
  size_t rmin = 0, rdef = 0, rmax = 0, wmin = 0, wdef = 0, wmax = 0;
  rmem >> rmin >> rdef >> rmax;
  wmem >> wmin >> wdef >> wmax;
  EXPECT_LT(written, 2 * rmax + 2 * wmax + (1u << 20)) << "tcp_rmem max " << rmax << ", tcp_wmem max " << wmax;
  EXPECT_GE(counter(ML_CTR_LEG_REDIRECTED), 1u);
  EXPECT_GE(counter(ML_CTR_LEG_PASS_BACKLOG), 1u);
  EXPECT_GE(counter(ML_CTR_LEG_PASS_UNREAD), 1u);  // behind the TCP bytes while they are unread
  std::string got = readN(agent.get(), written);
  ASSERT_EQ(got.size(), written);
  EXPECT_TRUE(got == pattern(written)) << "bytes out of order";
  // All read: the shortcut comes back. (The first send after the writer
  // was pushed back reuses the last verdict: tcp_bpf keeps psock->eval when
  // a push fails with EAGAIN.)
  const std::uint64_t before = counter(ML_CTR_LEG_REDIRECTED);
  for (int i = 0; i < 2; ++i) {
    const std::string more = pattern(1000, written + i);
    sendAll(app.get(), more);
    EXPECT_EQ(readN(agent.get(), more.size()), more);
  }
  EXPECT_GE(counter(ML_CTR_LEG_REDIRECTED), before + 1) << counters();
}

TEST_F(PodLeg, HalfCloseDeliversTheBytesThenEndOfFile) {
  connectCaptured();
  sendAll(app.get(), "request");
  ASSERT_EQ(::shutdown(app.get(), SHUT_WR), 0);
  EXPECT_EQ(readN(agent.get(), 7), "request");
  EXPECT_EQ(waitEof(agent.get()), 0);
  // The other way still works, and its end reaches the app after the bytes.
  sendAll(agent.get(), "response");
  agent.reset();
  EXPECT_EQ(readN(app.get(), 8), "response");
  EXPECT_EQ(waitEof(app.get()), 0);
  EXPECT_EQ(counter(ML_CTR_LEG_REDIRECTED), 1u);
}

TEST_F(PodLeg, AResetReachesThePeerAndTheSocketLeavesTheMap) {
  connectCaptured();
  const ml_leg_key app_key = keyOf(app.get());
  sendAll(app.get(), "x");
  EXPECT_EQ(readN(agent.get(), 1), "x");
  linger lg{1, 0};
  ASSERT_EQ(::setsockopt(app.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
  app.reset();
  EXPECT_EQ(waitEof(agent.get()), -ECONNRESET);
  std::uint64_t cookie = 0;
  EXPECT_NE(bpf_map_lookup_elem(legs, &app_key, &cookie), 0) << "a closed socket stayed in the map";
}

TEST_F(PodLeg, AClosedAgentEndSendsTheAppsBytesToTcp) {
  connectCaptured();
  agent.reset();  // the agent went away: its socket left the map
  ::send(app.get(), "lost", 4, MSG_NOSIGNAL);
  EXPECT_EQ(counter(ML_CTR_LEG_REDIRECTED), 0u) << counters();
  // TCP answers (the agent's FIN, then a reset), as it would without the shortcut.
  const int end = waitEof(app.get());
  EXPECT_TRUE(end == 0 || end == -ECONNRESET) << end;
}

TEST_F(PodLeg, PeekShowsTheBytesWithoutTakingThem) {
  connectCaptured();
  sendAll(app.get(), "peekaboo");
  EXPECT_EQ(readN(agent.get(), 8, MSG_PEEK), "peekaboo");
  EXPECT_EQ(readN(agent.get(), 8), "peekaboo");
  EXPECT_EQ(counter(ML_CTR_LEG_REDIRECTED), 1u);
}

TEST_F(PodLeg, TheAgentsConnectionToTheAppJoinsWhenMarked) {
  podAddressIsLoopback();
  sockaddr_in app_addr{};
  UniqueFd app_listener = appListener(app_addr);
  agent = UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  const int fd = agent.get();
  const std::uint32_t mark = ML_LEG_MARK_AGENT_UPSTREAM;
  ASSERT_EQ(bpf_map__update_elem(skel->maps.ml_leg_marks, &fd, sizeof fd, &mark, sizeof mark, BPF_NOEXIST), 0)
      << std::strerror(errno);
  ASSERT_EQ(::connect(agent.get(), reinterpret_cast<sockaddr*>(&app_addr), sizeof app_addr), 0);
  app = UniqueFd(::accept4(app_listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(app);
  EXPECT_TRUE(inMap(agent.get()));
  EXPECT_TRUE(inMap(app.get()));
  sendAll(agent.get(), "request");  // agent -> app: TCP
  EXPECT_EQ(readN(app.get(), 7), "request");
  sendAll(app.get(), "response");  // app -> agent: the shortcut
  EXPECT_EQ(readN(agent.get(), 8), "response");
  EXPECT_EQ(counter(ML_CTR_LEG_REDIRECTED), 1u);
}

TEST_F(PodLeg, APodTalkingToItselfStaysOnTcp) {
  podAddressIsLoopback();
  sockaddr_in app_addr{};
  UniqueFd app_listener = appListener(app_addr);
  UniqueFd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));  // not marked, not captured
  ASSERT_EQ(::connect(client.get(), reinterpret_cast<sockaddr*>(&app_addr), sizeof app_addr), 0);
  UniqueFd server(::accept4(app_listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  EXPECT_FALSE(inMap(client.get()));
  sendAll(server.get(), "hello");
  EXPECT_EQ(readN(client.get(), 5), "hello");
  sendAll(client.get(), "world");
  EXPECT_EQ(readN(server.get(), 5), "world");
  EXPECT_EQ(counter(ML_CTR_LEG_REDIRECTED), 0u);
}

// Why agent -> app stays on TCP unless asked: an app reading with splice()
// sees only TCP's queue, never the redirected one (Linux 6.18; if this
// starts to fail, the kernel learnt it, and the default can change).
class PodLegBothWays : public PodLeg {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    loadAndAttach(ML_LEG_BOTH);
  }
};

TEST_F(PodLegBothWays, TheAgentsBytesGoStraightToTheApp) {
  connectCaptured();
  sendAll(app.get(), "ping");
  EXPECT_EQ(readN(agent.get(), 4), "ping");
  sendAll(agent.get(), "pong");
  EXPECT_EQ(readN(app.get(), 4), "pong");
  EXPECT_EQ(counter(ML_CTR_LEG_REDIRECTED), 2u);
}

TEST_F(PodLegBothWays, SpliceCannotReadRedirectedBytes) {
  connectCaptured();
  sendAll(agent.get(), "spliced");
  EXPECT_EQ(counter(ML_CTR_LEG_REDIRECTED), 1u);
  // Non-blocking: a blocking splice() would wait for ever.
  ASSERT_EQ(::fcntl(app.get(), F_SETFL, O_NONBLOCK), 0);
  EXPECT_EQ(spliceFrom(app.get(), std::chrono::milliseconds(300)), "");
  EXPECT_EQ(readN(app.get(), 7), "spliced");  // recv() has them
}

TEST_F(PodLeg, SpliceByTheAppWorksByDefault) {
  connectCaptured();
  sendAll(agent.get(), "spliced");
  ASSERT_EQ(::fcntl(app.get(), F_SETFL, O_NONBLOCK), 0);
  EXPECT_EQ(spliceFrom(app.get(), std::chrono::milliseconds(300)), "spliced");
}

}  // namespace
}  // namespace meshlock::capture
