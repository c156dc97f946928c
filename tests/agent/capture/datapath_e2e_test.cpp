// End-to-end tests of the capture datapath on the real kernel (root): an
// enrolled pod's connects reach the agent's outbound listener with their
// original destination; what must not be captured is not; inbound SYNs reach
// the inbound listener, the agent's own upstream connection reaches the app;
// pins survive a restart and uninstall removes everything.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>

#include <cstring>

#include "node_fixture.h"

namespace meshlock::capture {
namespace {

using testing::FakeNode;
using testing::FakePod;
using testing::runAsPodProcess;

SocketAddress addr(const std::string& ip, std::uint16_t port) { return {*IpAddress::parse(ip), port}; }

// Child side: connect to `to`, send `message`. Exit codes: 0 sent, 10+errno
// of a failed connect.
int connectAndSend(const SocketAddress& to, const std::string& message) {
  int fd = ::socket(to.ip.family(), SOCK_STREAM, 0);
  if (fd < 0) return 2;
  sockaddr_storage ss;
  socklen_t len = to.toSockaddr(ss);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) return 10 + std::min(errno, 200);
  if (::send(fd, message.data(), message.size(), 0) != static_cast<ssize_t>(message.size())) return 3;
  ::close(fd);
  return 0;
}

UniqueFd acceptWithin(int listen_fd, int timeout_ms = 2000) {
  pollfd p{listen_fd, POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) != 1) return UniqueFd();
  return UniqueFd(::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC));
}

std::string readSome(int fd) {
  char buf[256];
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 2000) != 1) return "";
  ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "";
}

// Non-blocking connect with a deadline; true when the handshake completed.
bool connectsWithin(int netns_fd, const SocketAddress& to, int timeout_ms) {
  auto r = runInNetns<bool>(netns_fd, [&]() -> Result<bool> {
    UniqueFd fd(::socket(to.ip.family(), SOCK_STREAM | SOCK_NONBLOCK, 0));
    sockaddr_storage ss;
    socklen_t len = to.toSockaddr(ss);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) == 0) return true;
    if (errno != EINPROGRESS) return false;
    pollfd p{fd.get(), POLLOUT, 0};
    if (::poll(&p, 1, timeout_ms) != 1) return false;
    int err = 0;
    socklen_t elen = sizeof(err);
    ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &elen);
    return err == 0;
  });
  return r && *r;
}

std::uint64_t counter(const Datapath& dp, ml_counter which) {
  auto c = dp.counters();
  return c ? (*c)[which] : ~0ULL;
}

class CaptureE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    ASSERT_EQ(node.error(), "");
  }
  FakeNode node;
};

TEST_F(CaptureE2E, EnrolledConnectArrivesAtOutboundListenerWithOriginalDestination) {
  FakePod& pod = node.addPod();
  ASSERT_EQ(node.error(), "");
  auto dp = Datapath::install(node.config());
  ASSERT_TRUE(dp) << dp.error().describe();
  auto listeners = dp->enrollPod(node.specFor(pod));
  ASSERT_TRUE(listeners) << listeners.error().describe();

  // 10.99.1.5 has no route at all: only the rewrite can make this work.
  ASSERT_EQ(runAsPodProcess(pod.container_cgroup, pod.netns.get(),
                            [] { return connectAndSend(addr("10.99.1.5", 8080), "hello"); }),
            0);
  UniqueFd accepted = acceptWithin(listeners->outbound_v4.get());
  ASSERT_TRUE(accepted.valid());
  EXPECT_EQ(readSome(accepted.get()), "hello");
  auto orig = dp->originalDestination(accepted.get());
  ASSERT_TRUE(orig) << orig.error().describe();
  EXPECT_EQ(orig->destination.toString(), "10.99.1.5:8080");
  EXPECT_EQ(orig->pod_cgroup_id, listeners->pod_cgroup_id);
  // Consumed: a second lookup finds nothing.
  EXPECT_FALSE(dp->originalDestination(accepted.get()));
  EXPECT_GE(counter(*dp, ML_CTR_CONNECT_CAPTURED), 1u);
  EXPECT_GE(counter(*dp, ML_CTR_ORIG_DST_PUBLISHED), 1u);
}

TEST_F(CaptureE2E, EnrolledIpv6ConnectArrivesAtIpv6Listener) {
  FakePod& pod = node.addPod();
  ASSERT_EQ(node.error(), "");
  auto dp = Datapath::install(node.config());
  ASSERT_TRUE(dp) << dp.error().describe();
  auto listeners = dp->enrollPod(node.specFor(pod));
  ASSERT_TRUE(listeners) << listeners.error().describe();
  if (!listeners->outbound_v6.valid()) GTEST_SKIP() << "no IPv6 loopback in the pod netns";

  ASSERT_EQ(runAsPodProcess(pod.container_cgroup, pod.netns.get(),
                            [] { return connectAndSend(addr("fd00:77::5", 443), "hi6"); }),
            0);
  UniqueFd accepted = acceptWithin(listeners->outbound_v6.get());
  ASSERT_TRUE(accepted.valid());
  auto orig = dp->originalDestination(accepted.get());
  ASSERT_TRUE(orig) << orig.error().describe();
  EXPECT_EQ(orig->destination.toString(), "[fd00:77::5]:443");

  // A dual-stack socket reaching an IPv4 peer (::ffff:a.b.c.d) lands on the
  // IPv4 listener with the IPv4 destination.
  ASSERT_EQ(runAsPodProcess(pod.container_cgroup, pod.netns.get(),
                            [] { return connectAndSend(addr("::ffff:10.99.1.6", 80), "mapped"); }),
            0);
  UniqueFd mapped = acceptWithin(listeners->outbound_v4.get());
  ASSERT_TRUE(mapped.valid());
  auto orig4 = dp->originalDestination(mapped.get());
  ASSERT_TRUE(orig4) << orig4.error().describe();
  EXPECT_EQ(orig4->destination.toString(), "10.99.1.6:80");

  // Inbound over IPv6 from the peer: the IPv6 inbound listener.
  auto app = openListenerInNetns(pod.netns.get(), addr("::", 8080));
  ASSERT_TRUE(app) << app.error().describe();
  auto client = connectInNetns(pod.peer_netns.get(), addr(pod.ip6, 8080));
  ASSERT_TRUE(client) << client.error().describe();
  UniqueFd inbound = acceptWithin(listeners->inbound_v6.get());
  ASSERT_TRUE(inbound.valid());
  EXPECT_EQ(SocketAddress::localOf(inbound.get())->toString(), "[" + IpAddress::parse(pod.ip6)->toString() + "]:8080");
  EXPECT_FALSE(acceptWithin(app->get(), 100).valid());
}

TEST_F(CaptureE2E, WhatMustNotBeCapturedIsNot) {
  FakePod& pod = node.addPod();
  ASSERT_EQ(node.error(), "");
  // A second pod cgroup in the same netns that is never enrolled.
  auto other = node.podsRoot() / "besteffort" / "podnotenrolled" / "ctr";
  std::filesystem::create_directories(other);
  auto dp = Datapath::install(node.config());
  ASSERT_TRUE(dp) << dp.error().describe();
  PodSpec spec = node.specFor(pod);
  spec.excluded_outbound_ports = {8081};
  auto listeners = dp->enrollPod(spec);
  ASSERT_TRUE(listeners) << listeners.error().describe();

  // The application listens on every address of its netns, on 8080 and 8081.
  auto app80 = openListenerInNetns(pod.netns.get(), addr("0.0.0.0", 8080));
  auto app81 = openListenerInNetns(pod.netns.get(), addr("0.0.0.0", 8081));
  ASSERT_TRUE(app80 && app81);

  struct Case {
    const char* what;
    std::filesystem::path cgroup;
    SocketAddress to;
    int app_fd;
    ml_counter counter;
  } cases[] = {
      {"not enrolled", other, addr(pod.ip, 8080), app80->get(), ML_CTR_CONNECT_NOT_ENROLLED},
      {"loopback", pod.container_cgroup, addr("127.0.0.1", 8080), app80->get(),
       ML_CTR_CONNECT_BYPASS_LOOPBACK},
      {"excluded port", pod.container_cgroup, addr(pod.ip, 8081), app81->get(),
       ML_CTR_CONNECT_BYPASS_EXCLUDED_PORT},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    std::uint64_t before = counter(*dp, c.counter);
    ASSERT_EQ(runAsPodProcess(c.cgroup, pod.netns.get(), [&] { return connectAndSend(c.to, c.what); }), 0);
    UniqueFd at_app = acceptWithin(c.app_fd);
    ASSERT_TRUE(at_app.valid()) << "did not reach the application";
    EXPECT_EQ(readSome(at_app.get()), c.what);
    EXPECT_FALSE(acceptWithin(listeners->outbound_v4.get(), 100).valid()) << "reached the agent";
    EXPECT_EQ(counter(*dp, c.counter), before + 1);
  }
  // And the enrolled pod's connect to its own app port is captured.
  ASSERT_EQ(runAsPodProcess(pod.container_cgroup, pod.netns.get(),
                            [&] { return connectAndSend(addr(pod.ip, 8080), "captured"); }),
            0);
  EXPECT_TRUE(acceptWithin(listeners->outbound_v4.get()).valid());
  EXPECT_FALSE(acceptWithin(app80->get(), 100).valid());
}

TEST_F(CaptureE2E, InboundSynLandsOnInboundListenerAndAgentUpstreamReachesApp) {
  FakePod& pod = node.addPod();
  ASSERT_EQ(node.error(), "");
  auto dp = Datapath::install(node.config());
  ASSERT_TRUE(dp) << dp.error().describe();
  PodSpec spec = node.specFor(pod);
  spec.excluded_inbound_ports = {9090};
  auto listeners = dp->enrollPod(spec);
  ASSERT_TRUE(listeners) << listeners.error().describe();
  auto app = openListenerInNetns(pod.netns.get(), addr("0.0.0.0", 8080));
  auto metrics = openListenerInNetns(pod.netns.get(), addr("0.0.0.0", 9090));
  ASSERT_TRUE(app && metrics);

  // From the peer netns (another node): steered to 15006.
  auto client = connectInNetns(pod.peer_netns.get(), addr(pod.ip, 8080));
  ASSERT_TRUE(client) << client.error().describe();
  UniqueFd inbound = acceptWithin(listeners->inbound_v4.get());
  ASSERT_TRUE(inbound.valid()) << "SYN did not land on the inbound listener";
  auto local = SocketAddress::localOf(inbound.get());
  ASSERT_TRUE(local);
  EXPECT_EQ(local->toString(), pod.ip + ":8080") << "the accepted socket keeps the original address";
  EXPECT_FALSE(acceptWithin(app->get(), 100).valid());
  EXPECT_GE(counter(*dp, ML_CTR_LOOKUP_STEERED), 1u);

  // Excluded inbound port: straight to the app.
  auto scrape = connectInNetns(pod.peer_netns.get(), addr(pod.ip, 9090));
  ASSERT_TRUE(scrape) << scrape.error().describe();
  EXPECT_TRUE(acceptWithin(metrics->get()).valid());
  EXPECT_GE(counter(*dp, ML_CTR_LOOKUP_BYPASS_EXCLUDED_PORT), 1u);

  // The agent's own upstream connection, opened inside the pod's netns from
  // the agent's (host) cgroup: reaches the app, not 15006.
  std::uint64_t local_before = counter(*dp, ML_CTR_LOOKUP_BYPASS_LOCAL);
  auto upstream = connectInNetns(listeners->netns.get(), addr(pod.ip, 8080));
  ASSERT_TRUE(upstream) << upstream.error().describe();
  EXPECT_TRUE(acceptWithin(app->get()).valid()) << "the agent's upstream did not reach the app";
  EXPECT_FALSE(acceptWithin(listeners->inbound_v4.get(), 100).valid()) << "loop: captured again";
  EXPECT_EQ(counter(*dp, ML_CTR_LOOKUP_BYPASS_LOCAL), local_before + 1);
}

TEST_F(CaptureE2E, WithoutInboundListenerStrictPodRefusesAndPermissivePodPasses) {
  FakePod& pod = node.addPod();
  ASSERT_EQ(node.error(), "");
  auto dp = Datapath::install(node.config());
  ASSERT_TRUE(dp) << dp.error().describe();
  auto app = openListenerInNetns(pod.netns.get(), addr("0.0.0.0", 8080));
  ASSERT_TRUE(app);

  PodSpec spec = node.specFor(pod);
  spec.inbound_fail_closed = true;
  {
    auto listeners = dp->enrollPod(spec);
    ASSERT_TRUE(listeners) << listeners.error().describe();
  }  // the agent's sockets close, as when it dies
  EXPECT_FALSE(connectsWithin(pod.peer_netns.get(), addr(pod.ip, 8080), 500));
  EXPECT_FALSE(acceptWithin(app->get(), 100).valid()) << "plaintext reached a STRICT pod's app";
  EXPECT_GE(counter(*dp, ML_CTR_LOOKUP_NO_LISTENER_DROPPED), 1u);

  spec.inbound_fail_closed = false;
  ASSERT_TRUE(dp->updatePodRules(spec));
  EXPECT_TRUE(connectsWithin(pod.peer_netns.get(), addr(pod.ip, 8080), 2000));
  EXPECT_TRUE(acceptWithin(app->get()).valid());
  EXPECT_GE(counter(*dp, ML_CTR_LOOKUP_NO_LISTENER_PASSED), 1u);
}

TEST_F(CaptureE2E, RuleChangesApplyToNewConnectionsLive) {
  FakePod& pod = node.addPod();
  ASSERT_EQ(node.error(), "");
  auto dp = Datapath::install(node.config());
  ASSERT_TRUE(dp) << dp.error().describe();
  PodSpec spec = node.specFor(pod);
  spec.excluded_outbound_ports = {8081};
  auto listeners = dp->enrollPod(spec);
  ASSERT_TRUE(listeners) << listeners.error().describe();
  auto app81 = openListenerInNetns(pod.netns.get(), addr("0.0.0.0", 8081));
  ASSERT_TRUE(app81);
  auto connect81 = [&] {
    return runAsPodProcess(pod.container_cgroup, pod.netns.get(),
                           [&] { return connectAndSend(addr(pod.ip, 8081), "x"); });
  };
  ASSERT_EQ(connect81(), 0);
  EXPECT_TRUE(acceptWithin(app81->get()).valid()) << "excluded port was captured";

  // An established connection survives the change; new ones follow it.
  auto established = connectInNetns(pod.peer_netns.get(), addr(pod.ip, 8081));
  ASSERT_TRUE(established);
  UniqueFd established_in = acceptWithin(listeners->inbound_v4.get());
  ASSERT_TRUE(established_in.valid());

  spec.excluded_outbound_ports = {};
  spec.capture_inbound = false;
  ASSERT_TRUE(dp->updatePodRules(spec));
  ASSERT_EQ(connect81(), 0);
  EXPECT_TRUE(acceptWithin(listeners->outbound_v4.get()).valid()) << "no longer excluded: captured";
  EXPECT_FALSE(acceptWithin(app81->get(), 100).valid());
  auto fresh = connectInNetns(pod.peer_netns.get(), addr(pod.ip, 8081));
  ASSERT_TRUE(fresh);
  EXPECT_TRUE(acceptWithin(app81->get()).valid()) << "inbound capture off: straight to the app";
  EXPECT_EQ(::send(established->get(), "still", 5, MSG_NOSIGNAL), 5);
  EXPECT_EQ(readSome(established_in.get()), "still");
}

TEST_F(CaptureE2E, WithdrawnPodIsNoLongerCaptured) {
  FakePod& pod = node.addPod();
  ASSERT_EQ(node.error(), "");
  auto dp = Datapath::install(node.config());
  ASSERT_TRUE(dp) << dp.error().describe();
  auto listeners = dp->enrollPod(node.specFor(pod));
  ASSERT_TRUE(listeners);
  auto app = openListenerInNetns(pod.netns.get(), addr("0.0.0.0", 8080));
  ASSERT_TRUE(app);
  ASSERT_TRUE(dp->withdrawPod(pod.uid));
  EXPECT_TRUE(dp->pinnedPods().empty());
  ASSERT_EQ(runAsPodProcess(pod.container_cgroup, pod.netns.get(),
                            [&] { return connectAndSend(addr(pod.ip, 8080), "direct"); }),
            0);
  EXPECT_TRUE(acceptWithin(app->get()).valid());
  EXPECT_TRUE(connectsWithin(pod.peer_netns.get(), addr(pod.ip, 8080), 2000));
  EXPECT_TRUE(acceptWithin(app->get()).valid());
  EXPECT_FALSE(acceptWithin(listeners->inbound_v4.get(), 100).valid());
}

// Number of programs attached at the pods root for one attach type.
std::uint32_t attachedPrograms(const std::filesystem::path& cgroup, bpf_attach_type type) {
  UniqueFd fd(::open(cgroup.c_str(), O_RDONLY | O_DIRECTORY));
  std::uint32_t ids[16];
  std::uint32_t count = 16;
  if (bpf_prog_query(fd.get(), type, 0, nullptr, ids, &count) != 0) return ~0u;
  return count;
}

TEST_F(CaptureE2E, PinsSurviveRestartAndUninstallRemovesEverything) {
  FakePod& pod = node.addPod();
  ASSERT_EQ(node.error(), "");
  {
    auto first = Datapath::install(node.config());
    ASSERT_TRUE(first) << first.error().describe();
    EXPECT_FALSE(first->reusedPinnedLinks());
    ASSERT_TRUE(first->enrollPod(node.specFor(pod)));
  }  // the agent process is gone
  EXPECT_EQ(attachedPrograms(node.podsRoot(), BPF_CGROUP_INET4_CONNECT), 1u);
  // Still captured while the agent is down: refused at 127.0.0.1:15001, not
  // sent in plaintext to where the application wanted.
  auto app = openListenerInNetns(pod.netns.get(), addr("0.0.0.0", 8080));
  ASSERT_TRUE(app);
  EXPECT_EQ(runAsPodProcess(pod.container_cgroup, pod.netns.get(),
                            [&] { return connectAndSend(addr(pod.ip, 8080), "x"); }),
            10 + ECONNREFUSED);
  EXPECT_FALSE(acceptWithin(app->get(), 100).valid());

  auto second = Datapath::install(node.config());
  ASSERT_TRUE(second) << second.error().describe();
  EXPECT_TRUE(second->reusedPinnedLinks());
  EXPECT_EQ(attachedPrograms(node.podsRoot(), BPF_CGROUP_INET4_CONNECT), 1u) << "attached twice";
  ASSERT_EQ(second->pinnedPods().size(), 1u);
  auto listeners = second->enrollPod(node.specFor(pod));
  ASSERT_TRUE(listeners) << listeners.error().describe();
  ASSERT_EQ(runAsPodProcess(pod.container_cgroup, pod.netns.get(),
                            [&] { return connectAndSend(addr("10.99.1.7", 80), "again"); }),
            0);
  UniqueFd accepted = acceptWithin(listeners->outbound_v4.get());
  ASSERT_TRUE(accepted.valid());
  auto orig = second->originalDestination(accepted.get());
  ASSERT_TRUE(orig) << orig.error().describe();
  EXPECT_EQ(orig->destination.toString(), "10.99.1.7:80");

  ASSERT_TRUE(Datapath::uninstall(node.pinDir())) ;
  EXPECT_FALSE(std::filesystem::exists(node.pinDir()));
  EXPECT_EQ(attachedPrograms(node.podsRoot(), BPF_CGROUP_INET4_CONNECT), 0u);
  EXPECT_EQ(attachedPrograms(node.podsRoot(), BPF_CGROUP_INET6_CONNECT), 0u);
  EXPECT_EQ(attachedPrograms(node.podsRoot(), BPF_CGROUP_SOCK_OPS), 0u);
  // Nothing steers any more, even with the old process's objects still open.
  listeners->outbound_v4.reset();
  ASSERT_EQ(runAsPodProcess(pod.container_cgroup, pod.netns.get(),
                            [&] { return connectAndSend(addr(pod.ip, 8080), "plain"); }),
            0);
  EXPECT_TRUE(acceptWithin(app->get()).valid());
  EXPECT_TRUE(connectsWithin(pod.peer_netns.get(), addr(pod.ip, 8080), 2000));
  EXPECT_TRUE(acceptWithin(app->get()).valid());
}

}  // namespace
}  // namespace meshlock::capture
