// The sk_lookup program's decisions, one by one, through BPF_PROG_TEST_RUN
// (root, no netns needed): a private instance of the object, its own maps.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>

#include "capture/bpf_abi.h"
#include "capture/socket_address.h"
#include "capture_sk_lookup.skel.h"
#include "common/unique_fd.h"

namespace meshlock::capture {
namespace {

struct SkelDeleter {
  void operator()(capture_sk_lookup* s) const { capture_sk_lookup__destroy(s); }
};

constexpr std::uint64_t kPod = 4242;
constexpr std::uint64_t kOtherPod = 4343;

class SkLookupDecision : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    skel.reset(capture_sk_lookup__open());
    ASSERT_TRUE(skel);
    skel->rodata->agent_ports[0] = 15020;
    ASSERT_EQ(capture_sk_lookup__load(skel.get()), 0);
    addPod(kPod, "10.1.0.5", ML_POD_INBOUND | ML_POD_INBOUND_FAIL_CLOSED);
    addPod(kOtherPod, "10.1.0.6", ML_POD_INBOUND);
    // A listener for kPod (any listening socket will do for the decision).
    listener = UniqueFd(::socket(AF_INET, SOCK_STREAM, 0));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
    ASSERT_EQ(::listen(listener.get(), 1), 0);
    ml_listener_key key{};
    key.pod_cgroup_id = kPod;
    key.family = AF_INET;
    std::uint64_t fd = static_cast<std::uint64_t>(listener.get());
    ASSERT_EQ(bpf_map__update_elem(skel->maps.ml_listeners, &key, sizeof(key), &fd, sizeof(fd), BPF_ANY), 0);
  }

  void addPod(std::uint64_t id, const char* ip, std::uint32_t flags) {
    ml_addr key;
    toBpf(*IpAddress::parse(ip), key);
    ml_pod value{};
    value.pod_cgroup_id = id;
    value.flags = flags;
    ASSERT_EQ(bpf_map__update_elem(skel->maps.ml_pod_addrs, &key, sizeof(key), &value, sizeof(value), BPF_ANY), 0);
  }

  void setPortRule(std::uint64_t pod, std::uint16_t port, std::uint32_t verdict) {
    ml_port_key key{};
    key.pod_cgroup_id = pod;
    key.port = port;
    key.direction = ML_DIR_INBOUND;
    ASSERT_EQ(bpf_map__update_elem(skel->maps.ml_ports, &key, sizeof(key), &verdict, sizeof(verdict), BPF_ANY), 0);
  }

  struct Outcome {
    int verdict;
    bool assigned;  // a socket was selected
  };

  // BPF_PROG_TEST_RUN takes no ingress_ifindex (it must be 0): the lo case
  // is covered end to end.
  Outcome lookup(const char* from, const char* to, std::uint16_t port) {
    bpf_sk_lookup ctx{};
    ctx.family = AF_INET;
    ctx.protocol = IPPROTO_TCP;
    inet_pton(AF_INET, from, &ctx.remote_ip4);
    inet_pton(AF_INET, to, &ctx.local_ip4);
    ctx.remote_port = htons(40000);
    ctx.local_port = port;
    bpf_sk_lookup out{};
    LIBBPF_OPTS(bpf_test_run_opts, opts, .ctx_in = &ctx, .ctx_out = &out, .ctx_size_in = sizeof(ctx),
                .ctx_size_out = sizeof(out));
    int err = bpf_prog_test_run_opts(bpf_program__fd(skel->progs.ml_sk_lookup), &opts);
    EXPECT_EQ(err, 0) << "BPF_PROG_TEST_RUN: " << std::strerror(errno);
    return {static_cast<int>(opts.retval), out.cookie != 0};
  }

  std::uint64_t counter(ml_counter which) {
    int cpus = libbpf_num_possible_cpus();
    std::vector<std::uint64_t> values(static_cast<std::size_t>(cpus));
    std::uint32_t key = which;
    EXPECT_EQ(bpf_map__lookup_elem(skel->maps.ml_counters, &key, sizeof(key), values.data(),
                                   values.size() * sizeof(std::uint64_t), 0),
              0);
    std::uint64_t sum = 0;
    for (auto v : values) sum += v;
    return sum;
  }

  std::unique_ptr<capture_sk_lookup, SkelDeleter> skel;
  UniqueFd listener;
};

TEST_F(SkLookupDecision, PeerToPodAddressIsSteered) {
  auto o = lookup("10.2.0.9", "10.1.0.5", 8080);
  EXPECT_EQ(o.verdict, SK_PASS);
  EXPECT_TRUE(o.assigned);
  EXPECT_EQ(counter(ML_CTR_LOOKUP_STEERED), 1u);
}

TEST_F(SkLookupDecision, NotAPodAddressIsLeftAlone) {
  auto o = lookup("10.2.0.9", "10.1.0.99", 8080);
  EXPECT_EQ(o.verdict, SK_PASS);
  EXPECT_FALSE(o.assigned);
}

TEST_F(SkLookupDecision, FromThePodItselfIsNotSteered) {
  EXPECT_FALSE(lookup("10.1.0.5", "10.1.0.5", 8080).assigned) << "the agent's upstream, from the pod's address";
  EXPECT_EQ(counter(ML_CTR_LOOKUP_BYPASS_LOCAL), 1u);
  // Another pod of the node is a peer like any other.
  EXPECT_TRUE(lookup("10.1.0.6", "10.1.0.5", 8080).assigned);
}

TEST_F(SkLookupDecision, AgentAndExcludedPortsAreNotSteered) {
  EXPECT_FALSE(lookup("10.2.0.9", "10.1.0.5", 15020).assigned);
  EXPECT_EQ(counter(ML_CTR_LOOKUP_BYPASS_AGENT_PORT), 1u);
  setPortRule(kPod, 9090, ML_PORT_EXCLUDE);
  EXPECT_FALSE(lookup("10.2.0.9", "10.1.0.5", 9090).assigned);
  EXPECT_EQ(counter(ML_CTR_LOOKUP_BYPASS_EXCLUDED_PORT), 1u);
}

TEST_F(SkLookupDecision, ListedPortsOnly) {
  addPod(kPod, "10.1.0.5", ML_POD_INBOUND | ML_POD_INBOUND_LISTED_PORTS);
  setPortRule(kPod, 8080, ML_PORT_CAPTURE);
  EXPECT_TRUE(lookup("10.2.0.9", "10.1.0.5", 8080).assigned);
  EXPECT_FALSE(lookup("10.2.0.9", "10.1.0.5", 8081).assigned);
}

TEST_F(SkLookupDecision, NoListenerDropsForFailClosedAndPassesOtherwise) {
  EXPECT_EQ(lookup("10.2.0.9", "10.1.0.6", 8080).verdict, SK_PASS) << "kOtherPod has no listener";
  EXPECT_EQ(counter(ML_CTR_LOOKUP_NO_LISTENER_PASSED), 1u);
  listener.reset();  // closing removes it from the sockhash
  EXPECT_EQ(lookup("10.2.0.9", "10.1.0.5", 8080).verdict, SK_DROP);
  EXPECT_EQ(counter(ML_CTR_LOOKUP_NO_LISTENER_DROPPED), 1u);
}

TEST_F(SkLookupDecision, InboundOffMeansUntouched) {
  addPod(kPod, "10.1.0.5", 0);
  EXPECT_FALSE(lookup("10.2.0.9", "10.1.0.5", 8080).assigned);
}

}  // namespace
}  // namespace meshlock::capture
