// The gRPC unary server against our own client (UnaryChannel), Debian's
// python3-grpcio (grpcio_calls.py) and python3-h2 (h2_request.py, for
// requests no gRPC library sends), and raw sockets for hostile clients.
// What the answers must be: grpc/grpc doc/PROTOCOL-HTTP2.md and
// doc/compression.md.
#include "grpc/server.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <openssl/ssl.h>

#include <atomic>
#include <fmt/format.h>
#include <mutex>
#include <thread>

#include "grpc/client.h"
#include "test_support.h"

namespace meshlock::grpc {
namespace {

using namespace std::chrono_literals;
using testing::TestCa;

constexpr std::string_view kEcho = "/test.Echo/Echo";
constexpr std::string_view kFail = "/test.Echo/Fail";
constexpr std::string_view kSlow = "/test.Echo/Slow";
constexpr std::string_view kWho = "/test.Echo/Who";

// What the handlers saw, for the tests to check.
struct Seen {
  std::mutex mutex;
  std::vector<ServerCall> calls;
  void add(const ServerCall& call) {
    std::lock_guard lock(mutex);
    calls.push_back(call);
  }
  ServerCall last() {
    std::lock_guard lock(mutex);
    return calls.empty() ? ServerCall{} : calls.back();
  }
};

HandlerMap testHandlers(Seen& seen) {
  HandlerMap handlers;
  handlers.emplace(kEcho, [&seen](const ServerCall& call) -> std::expected<std::string, GrpcStatus> {
    seen.add(call);
    return call.request;
  });
  // Fails with the status named in the request: "<code> <message>".
  handlers.emplace(kFail, [&seen](const ServerCall& call) -> std::expected<std::string, GrpcStatus> {
    seen.add(call);
    auto space = call.request.find(' ');
    return std::unexpected(GrpcStatus{parseStatusCode(call.request.substr(0, space)),
                                      space == std::string::npos ? "" : call.request.substr(space + 1)});
  });
  // Sleeps the number of milliseconds in the request, then echoes it.
  handlers.emplace(kSlow, [&seen](const ServerCall& call) -> std::expected<std::string, GrpcStatus> {
    seen.add(call);
    std::this_thread::sleep_for(std::chrono::milliseconds(std::stoi(call.request)));
    return call.request;
  });
  handlers.emplace(kWho, [&seen](const ServerCall& call) -> std::expected<std::string, GrpcStatus> {
    seen.add(call);
    return std::string(call.header("authorization"));
  });
  return handlers;
}

class ServerTest : public ::testing::Test {
 protected:
  ServerConfig baseConfig() {
    ServerConfig config;
    config.listenAddress = "127.0.0.1:0";
    auto serving = ca_.issue();
    config.certChainPem = serving.chainPem;
    config.keyPem = serving.keyPem;
    config.handshakeTimeout = 2s;
    config.requestTimeout = 5s;
    config.idleTimeout = 30s;
    config.maxMessageBytes = 4096;
    return config;
  }

  UnaryServer& start(ServerConfig config) {
    auto started = UnaryServer::start(std::move(config), testHandlers(seen_));
    EXPECT_TRUE(started) << (started ? "" : started.error().describe());
    MESHLOCK_CHECK(started);
    server_ = std::move(*started);
    return *server_;
  }
  UnaryServer& start() { return start(baseConfig()); }

  std::unique_ptr<UnaryChannel> channel(const std::string& roots, std::size_t maxResponse = 1 << 20) {
    ChannelConfig config;
    config.endpoint = {"127.0.0.1", server_->port()};
    config.serverName = "grpc.test";
    config.rootsPem = roots;
    config.maxResponseBytes = maxResponse;
    auto made = UnaryChannel::create(config);
    MESHLOCK_CHECK(made);
    return std::move(*made);
  }
  std::unique_ptr<UnaryChannel> channel() { return channel(ca_.pem); }

  // Waits (bounded) until the server's counters satisfy `done`.
  bool waitForStats(const std::function<bool(const UnaryServer::Stats&)>& done, std::chrono::milliseconds limit = 3s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      if (done(server_->stats())) return true;
      std::this_thread::sleep_for(10ms);
    }
    return done(server_->stats());
  }

  // h2_request.py: one HTTP/2 request described by its arguments.
  nlohmann::json h2Request(const std::string& arguments) {
    const std::string roots = scratch_.write("roots.pem", ca_.pem);
    auto result = testing::run(fmt::format("/usr/bin/python3 {}/tests/agent/grpc/h2_request.py --port {} --roots {} "
                                           "--name grpc.test {}",
                                           MESHLOCK_SOURCE_DIR, server_->port(), roots, arguments));
    EXPECT_EQ(result.status, 0) << result.output;
    auto parsed = nlohmann::json::parse(result.output, nullptr, false);
    EXPECT_FALSE(parsed.is_discarded()) << result.output;
    return parsed;
  }

  TestCa ca_{"Test"};
  Seen seen_;
  testing::ScratchDir scratch_;
  std::unique_ptr<UnaryServer> server_;
};

std::string header(const nlohmann::json& list, std::string_view name) {
  for (const auto& pair : list)
    if (pair[0] == name) return pair[1];
  return "<absent>";
}

CallOptions withTimeout(std::chrono::milliseconds timeout) {
  CallOptions options;
  options.timeout = timeout;
  return options;
}

// --- our own client ---------------------------------------------------------

TEST_F(ServerTest, EchoesAndShowsTheHandlerTheCall) {
  start();
  auto client = channel();
  CallOptions options;
  options.metadata = {{"authorization", "Bearer token-one"}, {"clusterid", "cluster-a"}};
  const std::string request("\0binary\xff request", 16);
  auto answer = client->call(kEcho, request, options);
  ASSERT_TRUE(answer) << answer.error().describe();
  EXPECT_EQ(*answer, request);

  ServerCall call = seen_.last();
  EXPECT_EQ(call.path, kEcho);
  EXPECT_EQ(call.request, request);
  EXPECT_EQ(call.header("authorization"), "Bearer token-one");
  EXPECT_EQ(call.header("clusterid"), "cluster-a");
  EXPECT_EQ(call.header("content-type"), "application/grpc+proto");
  EXPECT_EQ(call.header("absent"), "");
  EXPECT_TRUE(call.peer.starts_with("127.0.0.1:")) << call.peer;
  ASSERT_TRUE(call.deadline.has_value()) << "the client sends grpc-timeout";
  EXPECT_GT(*call.deadline, std::chrono::steady_clock::now() + 5s);
  EXPECT_LT(*call.deadline, std::chrono::steady_clock::now() + 11s);

  auto who = client->call(kWho, "", options);
  ASSERT_TRUE(who) << who.error().describe();
  EXPECT_EQ(*who, "Bearer token-one");
  EXPECT_EQ(server_->stats().calls, 2u);
}

TEST_F(ServerTest, ErrorStatusAndMessageCarriedThrough) {
  start();
  auto client = channel();
  const std::string message = "not on this node: caf\xc3\xa9 100% \"sure\"\nsecond line";
  auto answer = client->call(kFail, "7 " + message, {});
  ASSERT_FALSE(answer);
  EXPECT_EQ(answer.error().code, StatusCode::kPermissionDenied);
  EXPECT_EQ(answer.error().message, message) << "percent-encoded and decoded intact";

  auto bare = client->call(kFail, "16", {});
  ASSERT_FALSE(bare);
  EXPECT_EQ(bare.error().code, StatusCode::kUnauthenticated);
  EXPECT_EQ(bare.error().message, "");

  auto okAsError = client->call(kFail, "0 no", {});
  ASSERT_FALSE(okAsError);
  EXPECT_EQ(okAsError.error().code, StatusCode::kUnknown) << "a handler's error with status OK is not a success";
}

TEST_F(ServerTest, UnknownMethodIsUnimplemented) {
  start();
  auto answer = channel()->call("/test.Echo/Nope", "x", {});
  ASSERT_FALSE(answer);
  EXPECT_EQ(answer.error().code, StatusCode::kUnimplemented);
  EXPECT_NE(answer.error().message.find("/test.Echo/Nope"), std::string::npos) << answer.error().message;
  EXPECT_EQ(server_->stats().calls, 0u);
}

TEST_F(ServerTest, OversizedRequestIsResourceExhaustedAndTheConnectionServesOn) {
  start();  // maxMessageBytes 4096
  auto client = channel();
  auto big = client->call(kEcho, std::string(4097, 'x'), {});
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().code, StatusCode::kResourceExhausted) << big.error().describe();
  EXPECT_EQ(server_->stats().calls, 0u) << "the handler never saw it";
  auto huge = client->call(kEcho, std::string(1 << 20, 'x'), {});
  ASSERT_FALSE(huge);
  EXPECT_EQ(huge.error().code, StatusCode::kResourceExhausted) << huge.error().describe();

  auto fits = client->call(kEcho, std::string(4096, 'y'), {});
  ASSERT_TRUE(fits) << fits.error().describe();
  EXPECT_EQ(fits->size(), 4096u);
}

TEST_F(ServerTest, ConsecutiveCallsReuseOneConnection) {
  start();
  auto client = channel();
  for (int i = 0; i < 20; ++i) {
    auto answer = client->call(kEcho, "call " + std::to_string(i), {});
    ASSERT_TRUE(answer) << answer.error().describe();
    EXPECT_EQ(*answer, "call " + std::to_string(i));
  }
  EXPECT_EQ(client->connectionsOpened(), 1u);
  EXPECT_EQ(server_->stats().accepted, 1u);
  EXPECT_EQ(server_->stats().calls, 20u);
}

TEST_F(ServerTest, CallsOnDifferentConnectionsRunInParallel) {
  start();
  std::vector<std::unique_ptr<UnaryChannel>> clients;
  for (int i = 0; i < 4; ++i) clients.push_back(channel());
  const auto begin = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (auto& client : clients)
    threads.emplace_back([&] { ok += client->call(kSlow, "1500", withTimeout(20s)).has_value() ? 1 : 0; });
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok, 4);
  // One after the other they take 6 s; the margin is for a loaded machine.
  EXPECT_LT(std::chrono::steady_clock::now() - begin, 4500ms) << "four 1.5 s calls, not one after the other";
}

TEST_F(ServerTest, LargeResponseCrossesFlowControlWindows) {
  HandlerMap handlers;
  handlers.emplace(kEcho, [](const ServerCall&) -> std::expected<std::string, GrpcStatus> {
    return std::string(300 * 1024, 'z');
  });
  auto config = baseConfig();
  auto started = UnaryServer::start(config, std::move(handlers));
  ASSERT_TRUE(started);
  server_ = std::move(*started);
  auto answer = channel()->call(kEcho, "", {});
  ASSERT_TRUE(answer) << answer.error().describe();
  EXPECT_EQ(answer->size(), 300u * 1024);
}

TEST_F(ServerTest, HandlerPastTheDeadlineIsDeadlineExceeded) {
  start();
  auto answer = h2Request(fmt::format("--path {} --header content-type=application/grpc --header grpc-timeout=100m "
                                      "--body-hex {}",
                                      kSlow, testing::hex(frameMessage("300"))));
  EXPECT_EQ(header(answer["headers"], "grpc-status"), "4") << answer.dump();
  EXPECT_EQ(server_->stats().calls, 1u);
}

TEST_F(ServerTest, RotatedCredentialsServeNewConnections) {
  start();
  auto before = channel();
  ASSERT_TRUE(before->call(kEcho, "old", {}));

  TestCa next("Next");
  auto serving = next.issue();
  auto rotated = server_->setCredentials(serving.chainPem, serving.keyPem);
  ASSERT_TRUE(rotated) << rotated.error().describe();

  auto fresh = channel(next.pem);
  auto answer = fresh->call(kEcho, "new", {});
  ASSERT_TRUE(answer) << answer.error().describe();
  auto stale = channel(ca_.pem)->call(kEcho, "old roots", {});
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, StatusCode::kUnavailable);
  EXPECT_NE(stale.error().message.find("not trusted"), std::string::npos) << stale.error().message;
  EXPECT_TRUE(before->call(kEcho, "still open", {})) << "an open connection keeps its certificate";

  auto mismatched = server_->setCredentials(serving.chainPem, ca_.issue().keyPem);
  ASSERT_FALSE(mismatched);
  EXPECT_NE(mismatched.error().message.find("does not match"), std::string::npos) << mismatched.error().message;
  EXPECT_FALSE(server_->setCredentials("not a pem", serving.keyPem));
  EXPECT_TRUE(channel(next.pem)->call(kEcho, "kept", {})) << "a refused rotation keeps the previous credentials";
}

TEST_F(ServerTest, StartRefusesBadConfiguration) {
  auto config = baseConfig();
  config.keyPem = ca_.issue().keyPem;
  auto mismatched = UnaryServer::start(config, {});
  ASSERT_FALSE(mismatched);
  EXPECT_NE(mismatched.error().message.find("does not match"), std::string::npos) << mismatched.error().message;

  config = baseConfig();
  config.listenAddress = "localhost:0";
  auto named = UnaryServer::start(config, {});
  ASSERT_FALSE(named);
  EXPECT_NE(named.error().message.find("IP address"), std::string::npos) << named.error().message;

  config = baseConfig();
  config.listenAddress = "127.0.0.1";
  EXPECT_FALSE(UnaryServer::start(config, {}));
}

TEST_F(ServerTest, ListensOnIpv6) {
  auto config = baseConfig();
  config.listenAddress = "[::1]:0";
  auto started = UnaryServer::start(config, testHandlers(seen_));
  if (!started && started.error().sys_errno == EADDRNOTAVAIL) GTEST_SKIP() << "no IPv6 loopback here";
  ASSERT_TRUE(started) << started.error().describe();
  server_ = std::move(*started);
  ChannelConfig channelConfig;
  channelConfig.endpoint = {"::1", server_->port()};
  channelConfig.serverName = "grpc.test";
  channelConfig.rootsPem = ca_.pem;
  auto client = UnaryChannel::create(channelConfig);
  ASSERT_TRUE(client);
  auto answer = (*client)->call(kEcho, "six", {});
  ASSERT_TRUE(answer) << answer.error().describe();
  EXPECT_TRUE(seen_.last().peer.starts_with("[::1]:")) << seen_.last().peer;
}

// --- python3-grpcio, an implementation nobody here wrote --------------------

TEST_F(ServerTest, GrpcioClientCalls) {
  start();
  const std::string roots = scratch_.write("roots.pem", ca_.pem);
  const std::string binary("\x00\x01\xfe\xff payload", 12);
  const std::string message = "quota: caf\xc3\xa9 50% used";
  const auto metadata = nlohmann::json::array({nlohmann::json::array({"authorization", "Bearer py"})});
  nlohmann::json calls = nlohmann::json::array(
      {{{"path", kEcho}, {"request_hex", testing::hex(binary)}, {"metadata", metadata}},
       {{"path", kWho}, {"request_hex", ""}, {"metadata", metadata}},
       {{"path", kFail}, {"request_hex", testing::hex("8 " + message)}},
       {{"path", "/test.Echo/Missing"}, {"request_hex", "00"}},
       {{"path", kEcho}, {"request_hex", testing::hex(std::string(5000, 'x'))}},
       {{"path", kSlow}, {"request_hex", testing::hex("500")}, {"timeout", 0.1}}});
  auto result = testing::run(fmt::format("/usr/bin/python3 {}/tests/agent/grpc/grpcio_calls.py --port {} --roots {} "
                                         "--name grpc.test --calls {}",
                                         MESHLOCK_SOURCE_DIR, server_->port(), roots,
                                         testing::shellQuote(calls.dump())));
  ASSERT_EQ(result.status, 0) << result.output;
  auto answers = nlohmann::json::parse(result.output, nullptr, false);
  ASSERT_TRUE(answers.is_array() && answers.size() == 6) << result.output;

  EXPECT_EQ(answers[0]["code"], "OK") << answers[0];
  EXPECT_EQ(answers[0]["response_hex"], testing::hex(binary));
  EXPECT_EQ(answers[1]["code"], "OK") << answers[1];
  EXPECT_EQ(answers[1]["response_hex"], testing::hex("Bearer py"));
  EXPECT_EQ(answers[2]["code"], "RESOURCE_EXHAUSTED") << answers[2];
  EXPECT_EQ(answers[2]["details"], message);
  EXPECT_EQ(answers[3]["code"], "UNIMPLEMENTED") << answers[3];
  EXPECT_EQ(answers[4]["code"], "RESOURCE_EXHAUSTED") << answers[4] << ": over maxMessageBytes";
  EXPECT_EQ(answers[5]["code"], "DEADLINE_EXCEEDED") << answers[5];
  EXPECT_TRUE(seen_.last().header("user-agent").starts_with("grpc-python")) << seen_.last().header("user-agent");
}

// --- requests no gRPC library sends (python3-h2) ----------------------------

TEST_F(ServerTest, NonGrpcRequestsGetHttpErrorsAndNoHandler) {
  start();
  auto get = h2Request(fmt::format("--method GET --path {}", kEcho));
  EXPECT_EQ(header(get["headers"], ":status"), "405") << get.dump();
  EXPECT_TRUE(get["ended"]);

  auto text = h2Request(fmt::format("--path {} --header content-type=text/plain --body-hex 68690a", kEcho));
  EXPECT_EQ(header(text["headers"], ":status"), "415") << text.dump();

  auto web = h2Request(fmt::format("--path {} --header content-type=application/grpc-web --body-hex {}", kEcho,
                                   testing::hex(frameMessage("x"))));
  EXPECT_EQ(header(web["headers"], ":status"), "415") << web.dump();

  auto none = h2Request(fmt::format("--path {} --body-hex {}", kEcho, testing::hex(frameMessage("x"))));
  EXPECT_EQ(header(none["headers"], ":status"), "415") << none.dump();
  EXPECT_EQ(server_->stats().calls, 0u);

  auto plain = h2Request(fmt::format("--path {} --header content-type=application/grpc --body-hex {}", kEcho,
                                     testing::hex(frameMessage("raw h2"))));
  EXPECT_EQ(header(plain["headers"], ":status"), "200") << plain.dump();
  EXPECT_EQ(header(plain["headers"], "content-type"), "application/grpc");
  EXPECT_EQ(plain["data_hex"], testing::hex(frameMessage("raw h2")));
  EXPECT_EQ(header(plain["trailers"], "grpc-status"), "0") << "status in Trailers, even for OK";
}

TEST_F(ServerTest, MalformedGrpcRequests) {
  start();
  const std::string grpc = fmt::format("--path {} --header content-type=application/grpc", kEcho);
  std::string compressed = frameMessage("zz");
  compressed[0] = 1;

  // compression.md: flag 1 without grpc-encoding is INTERNAL.
  auto noEncoding = h2Request(grpc + " --body-hex " + testing::hex(compressed));
  EXPECT_EQ(header(noEncoding["headers"], "grpc-status"), "13") << noEncoding.dump();
  // ...and an encoding we do not support is UNIMPLEMENTED, naming what we take.
  auto gzip = h2Request(grpc + " --header grpc-encoding=gzip --body-hex " + testing::hex(compressed));
  EXPECT_EQ(header(gzip["headers"], "grpc-status"), "12") << gzip.dump();
  EXPECT_EQ(header(gzip["headers"], "grpc-accept-encoding"), "identity");
  // gzip declared but the message not compressed: fine.
  auto declared = h2Request(grpc + " --header grpc-encoding=gzip --body-hex " + testing::hex(frameMessage("ok")));
  EXPECT_EQ(header(declared["trailers"], "grpc-status"), "0") << declared.dump();

  auto two = h2Request(grpc + " --body-hex " + testing::hex(frameMessage("a") + frameMessage("b")));
  EXPECT_EQ(header(two["headers"], "grpc-status"), "13") << two.dump();
  EXPECT_NE(header(two["headers"], "grpc-message").find("more than one"), std::string::npos);

  auto empty = h2Request(grpc);
  EXPECT_EQ(header(empty["headers"], "grpc-status"), "13") << empty.dump();
  auto partial = h2Request(grpc + " --body-hex " + testing::hex(frameMessage("abcdef").substr(0, 7)));
  EXPECT_EQ(header(partial["headers"], "grpc-status"), "13") << partial.dump();

  // grpc-go's server answers a malformed grpc-timeout INTERNAL.
  for (const char* timeout : {"soon", "5", "123456789S", "5x", "-1S"}) {
    auto bad = h2Request(grpc + " --header grpc-timeout=" + timeout + " --body-hex " + testing::hex(frameMessage("t")));
    EXPECT_EQ(header(bad["headers"], "grpc-status"), "13") << timeout << ": " << bad.dump();
  }
  auto huge = h2Request(grpc + " --header grpc-timeout=99999999H --body-hex " + testing::hex(frameMessage("h")));
  EXPECT_EQ(header(huge["trailers"], "grpc-status"), "0") << huge.dump();

  // A declared length over the bound is refused at the 5-byte prefix, before the body.
  auto declaredHuge = h2Request(grpc + " --no-end-stream --body-hex 00ffffffff");
  EXPECT_EQ(header(declaredHuge["headers"], "grpc-status"), "8") << declaredHuge.dump();
  EXPECT_EQ(declaredHuge["reset"], 0) << "RST_STREAM NO_ERROR after an early answer";
  EXPECT_EQ(server_->stats().calls, 2u) << "only the two well-formed calls reached the handler";
}

TEST_F(ServerTest, OversizedHeadersAreRefused) {
  start();
  auto answer = h2Request(fmt::format("--path {} --header content-type=application/grpc --header x-big={} --body-hex {}",
                                      kEcho, std::string(20000, 'a'), testing::hex(frameMessage("x"))));
  EXPECT_EQ(header(answer["headers"], "grpc-status"), "8") << answer.dump();
  EXPECT_EQ(server_->stats().calls, 0u);
}

TEST_F(ServerTest, RequestThatNeverEndsTimesOut) {
  auto config = baseConfig();
  config.requestTimeout = 300ms;
  start(config);
  const auto begin = std::chrono::steady_clock::now();
  auto answer = h2Request(fmt::format("--path {} --header content-type=application/grpc --no-end-stream --body-hex {}",
                                      kEcho, testing::hex(frameMessage("x"))));
  EXPECT_EQ(header(answer["headers"], "grpc-status"), "4") << answer.dump();
  EXPECT_LT(std::chrono::steady_clock::now() - begin, 3s);
  EXPECT_EQ(server_->stats().calls, 0u);
}

TEST_F(ServerTest, TrickledRequestStillTimesOut) {
  auto config = baseConfig();
  config.requestTimeout = 500ms;
  start(config);
  // One byte every 50 ms: the connection is never quiet, the request never done.
  auto answer = h2Request(fmt::format("--path {} --header content-type=application/grpc --no-end-stream "
                                      "--trickle-every 0.05 --body-hex {}",
                                      kEcho, testing::hex(frameMessage(std::string(200, 't')))));
  EXPECT_EQ(header(answer["headers"], "grpc-status"), "4") << answer.dump();
  EXPECT_EQ(server_->stats().calls, 0u);
}

TEST_F(ServerTest, PingsDoNotKeepAnIdleConnectionOpen) {
  auto config = baseConfig();
  config.idleTimeout = 500ms;
  start(config);
  auto answer = h2Request("--no-request --ping-every 0.05 --wait 5");
  EXPECT_EQ(answer["goaway"], 0) << answer.dump();
  ASSERT_TRUE(answer["closed_after"].is_number()) << answer.dump();
  EXPECT_LT(answer["closed_after"].get<double>(), 2.0) << answer.dump();
}

// --- hostile connections ----------------------------------------------------

TEST_F(ServerTest, ConnectionsOverThePerSourceCapAreClosedAtOnce) {
  auto config = baseConfig();
  config.maxConnectionsPerSource = 2;
  config.handshakeTimeout = 10s;
  start(config);
  auto first = testing::connectLoopback(server_->port());
  auto second = testing::connectLoopback(server_->port());
  ASSERT_TRUE(first && second);
  ASSERT_TRUE(waitForStats([](const auto& s) { return s.accepted == 2 && s.active_connections == 2; }));

  auto third = testing::connectLoopback(server_->port());
  ASSERT_TRUE(third);
  auto closed = testing::timeUntilClosed(third.get(), 5s);
  ASSERT_TRUE(closed) << "the third connection is still open";
  EXPECT_LT(*closed, 3s);  // the handshake timeout is 10 s
  EXPECT_EQ(server_->stats().refused_over_cap, 1u);
  EXPECT_FALSE(testing::timeUntilClosed(first.get(), 200ms)) << "the first two stay";

  first.reset();
  second.reset();
  ASSERT_TRUE(waitForStats([](const auto& s) { return s.active_connections == 0; }));
  auto answer = channel()->call(kEcho, "room again", {});
  EXPECT_TRUE(answer) << answer.error().describe();
}

TEST_F(ServerTest, ConnectionsOverTheTotalCapAreClosedAtOnce) {
  auto config = baseConfig();
  config.maxConnections = 1;
  config.handshakeTimeout = 10s;
  start(config);
  auto client = channel();
  ASSERT_TRUE(client->call(kEcho, "holds the one slot", {}));
  auto extra = testing::connectLoopback(server_->port());
  auto closed = testing::timeUntilClosed(extra.get(), 5s);
  ASSERT_TRUE(closed);
  EXPECT_LT(*closed, 3s);  // the handshake timeout is 10 s
  EXPECT_EQ(server_->stats().refused_over_cap, 1u);
  EXPECT_TRUE(client->call(kEcho, "still served", {}));
}

TEST_F(ServerTest, SilentClientDroppedAfterTheHandshakeTimeout) {
  auto config = baseConfig();
  config.handshakeTimeout = 300ms;
  start(config);
  auto silent = testing::connectLoopback(server_->port());
  ASSERT_TRUE(silent);
  auto closed = testing::timeUntilClosed(silent.get(), 8s);
  ASSERT_TRUE(closed) << "still open";
  EXPECT_GE(*closed, 250ms);
  ASSERT_TRUE(waitForStats([](const auto& s) { return s.handshake_failures == 1 && s.active_connections == 0; }));
}

// A TLS client with the given ALPN list ("" for none) on a blocking socket.
struct RawTlsClient {
  bssl::UniquePtr<SSL_CTX> ctx{SSL_CTX_new(TLS_method())};
  bssl::UniquePtr<SSL> ssl;
  UniqueFd fd;
  bool handshake(uint16_t port, std::string_view alpn, uint16_t maxVersion = TLS1_3_VERSION) {
    SSL_CTX_set_min_proto_version(ctx.get(), TLS1_VERSION);
    SSL_CTX_set_max_proto_version(ctx.get(), maxVersion);
    fd = testing::connectLoopback(port);
    if (!alpn.empty()) {
      std::string list(1, static_cast<char>(alpn.size()));
      list += alpn;
      SSL_CTX_set_alpn_protos(ctx.get(), reinterpret_cast<const uint8_t*>(list.data()), list.size());
    }
    ssl.reset(SSL_new(ctx.get()));  // no verification: the server's answer is what is tested
    SSL_set_fd(ssl.get(), fd.get());
    timeval limit{.tv_sec = 3, .tv_usec = 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
    bool ok = SSL_connect(ssl.get()) == 1;
    ERR_clear_error();
    return ok;
  }
};

TEST_F(ServerTest, Tls12AndUpOnly) {
  start();
  RawTlsClient tls12;
  ASSERT_TRUE(tls12.handshake(server_->port(), "h2", TLS1_2_VERSION));
  EXPECT_EQ(SSL_version(tls12.ssl.get()), TLS1_2_VERSION);
  EXPECT_NE(std::string_view(SSL_get_cipher_name(tls12.ssl.get())).find("ECDHE"), std::string_view::npos)
      << SSL_get_cipher_name(tls12.ssl.get()) << ": RFC 7540 9.2.2";
  RawTlsClient tls11;
  EXPECT_FALSE(tls11.handshake(server_->port(), "h2", TLS1_1_VERSION));
  ASSERT_TRUE(waitForStats([](const auto& s) { return s.handshake_failures == 1; }));
}

TEST_F(ServerTest, TlsWithoutHttp2IsRefused) {
  auto config = baseConfig();
  config.handshakeTimeout = 6s;  // far from "at once" even on a loaded machine
  start(config);
  RawTlsClient http1;
  EXPECT_FALSE(http1.handshake(server_->port(), "http/1.1")) << "ALPN without h2: no_application_protocol";

  RawTlsClient noAlpn;
  ASSERT_TRUE(noAlpn.handshake(server_->port(), ""));
  auto closed = testing::timeUntilClosed(noAlpn.fd.get(), 5s);
  ASSERT_TRUE(closed);
  EXPECT_LT(*closed, 3s) << "closed at once, not after the handshake timeout";

  RawTlsClient noPreface;  // h2 negotiated, then silence
  ASSERT_TRUE(noPreface.handshake(server_->port(), "h2"));
  closed = testing::timeUntilClosed(noPreface.fd.get(), 10s);
  ASSERT_TRUE(closed);
  EXPECT_LT(*closed, 9s);

  RawTlsClient badPreface;
  ASSERT_TRUE(badPreface.handshake(server_->port(), "h2"));
  const std::string http1Request = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_GT(SSL_write(badPreface.ssl.get(), http1Request.data(), static_cast<int>(http1Request.size())), 0);
  closed = testing::timeUntilClosed(badPreface.fd.get(), 5s);
  ASSERT_TRUE(closed);
  EXPECT_LT(*closed, 3s);
  ASSERT_TRUE(waitForStats([](const auto& s) { return s.handshake_failures == 4 && s.active_connections == 0; }));
}

TEST_F(ServerTest, GarbageInsteadOfClientHello) {
  auto config = baseConfig();
  config.handshakeTimeout = 10s;  // "at once" below is far from it
  start(config);
  auto garbage = testing::connectLoopback(server_->port());
  const std::string request = "GET / HTTP/1.1\r\nHost: grpc.test\r\n\r\n";
  ASSERT_EQ(::send(garbage.get(), request.data(), request.size(), MSG_NOSIGNAL), static_cast<ssize_t>(request.size()));
  auto closed = testing::timeUntilClosed(garbage.get(), 5s);
  ASSERT_TRUE(closed);
  EXPECT_LT(*closed, 3s);

  auto noise = testing::connectLoopback(server_->port());
  std::string bytes(4096, '\0');
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>((i * 7919) ^ (i >> 3));
  bytes[0] = 0x16;  // a handshake record type, then nonsense
  ::send(noise.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL);
  closed = testing::timeUntilClosed(noise.get(), 5s);
  ASSERT_TRUE(closed);
  ASSERT_TRUE(waitForStats([](const auto& s) { return s.handshake_failures == 2 && s.active_connections == 0; }));
  EXPECT_TRUE(channel()->call(kEcho, "unharmed", {}));
}

TEST_F(ServerTest, IdleConnectionGetsGoawayAndTheClientReconnects) {
  auto config = baseConfig();
  config.idleTimeout = 300ms;
  start(config);
  auto client = channel();
  ASSERT_TRUE(client->call(kEcho, "one", {}));
  ASSERT_TRUE(waitForStats([](const auto& s) { return s.active_connections == 0; }, 2s)) << "idle closed";
  auto again = client->call(kEcho, "two", {});
  ASSERT_TRUE(again) << again.error().describe();
  EXPECT_EQ(client->connectionsOpened(), 2u);
}

TEST_F(ServerTest, StopsWithinBoundsWithIdleClientsConnected) {
  auto config = baseConfig();
  config.handshakeTimeout = 30s;
  config.idleTimeout = 300s;
  start(config);
  auto client = channel();
  ASSERT_TRUE(client->call(kEcho, "open", {}));
  auto silent = testing::connectLoopback(server_->port());
  RawTlsClient noPreface;
  ASSERT_TRUE(noPreface.handshake(server_->port(), "h2"));
  ASSERT_TRUE(waitForStats([](const auto& s) { return s.active_connections == 3; }));

  const auto begin = std::chrono::steady_clock::now();
  server_.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - begin, 5s) << "bounded, not the 30 s request or 300 s idle timeout";
  EXPECT_TRUE(testing::timeUntilClosed(silent.get(), 500ms)) << "closed by the stop";
  auto after = client->call(kEcho, "gone", withTimeout(1s));
  ASSERT_FALSE(after);
  EXPECT_EQ(after.error().code, StatusCode::kUnavailable) << after.error().describe();
}

}  // namespace
}  // namespace meshlock::grpc
