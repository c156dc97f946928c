// The admin server against well-behaved and hostile clients, over TCP and a
// Unix socket: it answers, refuses bad input with a 4xx, survives garbage and
// slow clients, and keeps non-root users off the Unix socket.
#include "admin/server.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>

#include "admin/client.h"

namespace meshlock::admin {
namespace {

using namespace std::chrono_literals;

Router testRouter() {
  Router router;
  router.handle("/healthz", [](const Request&) { return Response::text(200, "ok\n"); });
  router.handle(
      "/echo",
      [](const Request& request) {
        std::string body = std::string(methodName(request.method)) + " " + request.path;
        for (const auto& [key, value] : request.query) body += " " + key + "=" + value;
        body += " body=" + request.body;
        if (request.from_unix_socket) body += " unix";
        return Response::text(200, body);
      },
      {Method::kGet, Method::kPost, Method::kPut});
  router.handle("/level", [](const Request&) { return Response::text(200, "changed\n"); },
                {Method::kGet, Method::kPost, Method::kPut}, ChangeAccess::kUnixSocket);
  router.handle("/throws", [](const Request&) -> Response { throw std::runtime_error("boom"); });
  router.handle("/slow", [](const Request&) {
    std::this_thread::sleep_for(200ms);
    return Response::json(200, "{}");
  });
  return router;
}

std::unique_ptr<HttpServer> startTcp(ServerOptions options = {}) {
  options.listen = {Endpoint::tcp("127.0.0.1", 0)};
  auto server = HttpServer::start(std::move(options), testRouter());
  EXPECT_TRUE(server) << server.error().describe();
  return server ? std::move(*server) : nullptr;
}

// Sends `bytes` (optionally leaving the write side open) and reads until the
// server closes or `timeout` passes.
std::string sendRaw(const Endpoint& endpoint, std::string_view bytes, std::chrono::milliseconds timeout = 3s) {
  auto fd = connectTo(endpoint, 1s);
  if (!fd) return "connect failed: " + fd.error().describe();
  std::size_t offset = 0;
  while (offset < bytes.size()) {
    const ssize_t sent = ::send(fd->get(), bytes.data() + offset, bytes.size() - offset, MSG_NOSIGNAL);
    if (sent <= 0) break;  // the server may close early on an oversize head
    offset += static_cast<std::size_t>(sent);
  }
  std::string received;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  char chunk[4096];
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd pfd{fd->get(), POLLIN, 0};
    if (::poll(&pfd, 1, 50) <= 0) continue;
    const ssize_t got = ::recv(fd->get(), chunk, sizeof(chunk), 0);
    if (got <= 0) break;
    received.append(chunk, static_cast<std::size_t>(got));
  }
  return received;
}

int statusOf(const std::string& raw) {
  auto parsed = parseResponse(raw);
  return parsed ? parsed->status : -1;
}

TEST(AdminServer, ServesHandlersOverTcp) {
  auto server = startTcp();
  ASSERT_TRUE(server);
  AdminClient client(server->endpoints()[0]);
  auto response = client.request(Method::kGet, "/healthz");
  ASSERT_TRUE(response) << response.error().describe();
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->body, "ok\n");
  EXPECT_EQ(response->header("connection"), "close");
}

TEST(AdminServer, PassesQueryAndBody) {
  auto server = startTcp();
  ASSERT_TRUE(server);
  AdminClient client(server->endpoints()[0]);
  auto response = client.request(Method::kPost, "/echo?level=debug&who=a%2Fb", "payload");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->body, "POST /echo level=debug who=a/b body=payload");
  response = client.request(Method::kPut, "/echo");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->body, "PUT /echo body=");
}

TEST(AdminServer, AnswersUnknownPathsAndMethods) {
  auto server = startTcp();
  ASSERT_TRUE(server);
  AdminClient client(server->endpoints()[0]);
  auto missing = client.request(Method::kGet, "/nope");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  auto wrong = client.request(Method::kPost, "/healthz");
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 405);
  EXPECT_EQ(wrong->header("allow"), "GET");
  auto index = client.getJson("/");
  ASSERT_TRUE(index) << index.error().describe();
  EXPECT_EQ((*index)["paths"].size(), 5u);
  auto error = client.getJson("/nope");
  ASSERT_FALSE(error);
  EXPECT_NE(error.error().message.find("404"), std::string::npos);
  EXPECT_NE(error.error().message.find("no such endpoint"), std::string::npos);
}

// docs/admin.md: any local user reaches the TCP port, so a route that changes
// the agent takes POST/PUT only over the Unix socket; reading stays open.
TEST(AdminServer, ChangesOverTcpAre403) {
  auto server = startTcp();
  ASSERT_TRUE(server);
  AdminClient client(server->endpoints()[0]);
  for (Method method : {Method::kPost, Method::kPut}) {
    auto refused = client.request(method, "/level?level=off");
    ASSERT_TRUE(refused);
    EXPECT_EQ(refused->status, 403);
    EXPECT_NE(refused->body.find("only over the admin Unix socket"), std::string::npos) << refused->body;
  }
  auto read = client.request(Method::kGet, "/level");
  ASSERT_TRUE(read);
  EXPECT_EQ(read->status, 200);
}

TEST(AdminServer, HandlerExceptionIs500) {
  auto server = startTcp();
  ASSERT_TRUE(server);
  auto response = AdminClient(server->endpoints()[0]).request(Method::kGet, "/throws");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 500);
  EXPECT_NE(response->body.find("boom"), std::string::npos);
}

TEST(AdminServer, GarbageGets400WithAReason) {
  auto server = startTcp();
  ASSERT_TRUE(server);
  const std::string raw = sendRaw(server->endpoints()[0], std::string("\x16\x03\x01\x02\x00garbage\r\n\r\n", 16));
  EXPECT_EQ(statusOf(raw), 400) << raw;
  EXPECT_NE(raw.find("\"error\""), std::string::npos);
  EXPECT_EQ(statusOf(sendRaw(server->endpoints()[0], "BREW /pot HTTP/1.1\r\n\r\n")), 501);
  EXPECT_EQ(statusOf(sendRaw(server->endpoints()[0], "GET / HTTP/3\r\n\r\n")), 505);
}

TEST(AdminServer, SurvivesRandomBytesAndHalfRequests) {
  ServerOptions options;
  options.request_timeout = 100ms;
  options.workers = 4;
  auto server = startTcp(options);
  ASSERT_TRUE(server);
  std::mt19937 rng(15000);
  for (int i = 0; i < 60; ++i) {
    std::string bytes(rng() % 3000, '\0');
    for (char& c : bytes) c = static_cast<char>(rng());
    if (i % 2 == 0) bytes += "\r\n\r\n";
    const std::string raw = sendRaw(server->endpoints()[0], bytes, 1s);
    if (!raw.empty()) {
      EXPECT_GE(statusOf(raw), 400) << raw.substr(0, 200);
    }
  }
  // A client that connects and vanishes, and one that stops mid-head.
  { auto fd = connectTo(server->endpoints()[0], 1s); }
  {
    auto fd = connectTo(server->endpoints()[0], 1s);
    ASSERT_TRUE(fd);
    ASSERT_GT(::send(fd->get(), "GET /heal", 9, MSG_NOSIGNAL), 0);
  }
  auto response = AdminClient(server->endpoints()[0]).request(Method::kGet, "/healthz");
  ASSERT_TRUE(response) << response.error().describe();
  EXPECT_EQ(response->status, 200);
}

TEST(AdminServer, OversizeHeadIs431) {
  auto server = startTcp();
  ASSERT_TRUE(server);
  std::string request = "GET /healthz HTTP/1.1\r\n";
  for (int i = 0; i < 2000; ++i) request += "X-Padding-" + std::to_string(i) + ": aaaaaaaaaa\r\n";
  request += "\r\n";
  EXPECT_EQ(statusOf(sendRaw(server->endpoints()[0], request)), 431);
  // No terminator at all: refused as soon as the bound is crossed.
  EXPECT_EQ(statusOf(sendRaw(server->endpoints()[0], std::string(100000, 'A'))), 431);
}

TEST(AdminServer, OversizeBodyIs413) {
  auto server = startTcp();
  ASSERT_TRUE(server);
  EXPECT_EQ(statusOf(sendRaw(server->endpoints()[0], "POST /echo HTTP/1.1\r\nContent-Length: 5000000\r\n\r\n")),
            413);
}

TEST(AdminServer, SlowlorisIsCutOffAtTheTimeout) {
  ServerOptions options;
  options.workers = 1;  // the slow client holds the only worker
  options.request_timeout = 400ms;
  auto server = startTcp(options);
  ASSERT_TRUE(server);
  const Endpoint endpoint = server->endpoints()[0];

  std::atomic<int> slow_status{0};
  std::thread slow([&] {
    auto fd = connectTo(endpoint, 1s);
    ASSERT_TRUE(fd);
    const std::string request = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    std::string received;
    // One byte every 50 ms would take far longer than the timeout.
    for (char c : request + std::string(100, 'z')) {
      if (::send(fd->get(), &c, 1, MSG_NOSIGNAL) <= 0) break;
      pollfd pfd{fd->get(), POLLIN, 0};
      if (::poll(&pfd, 1, 50) > 0) break;
    }
    char chunk[4096];
    ssize_t got;
    while ((got = ::recv(fd->get(), chunk, sizeof(chunk), 0)) > 0) received.append(chunk, got);
    slow_status = statusOf(received);
  });
  std::this_thread::sleep_for(100ms);
  const auto start = std::chrono::steady_clock::now();
  auto response = AdminClient(endpoint).request(Method::kGet, "/healthz");
  const auto waited = std::chrono::steady_clock::now() - start;
  slow.join();
  ASSERT_TRUE(response) << response.error().describe();
  EXPECT_EQ(response->status, 200);
  EXPECT_LT(waited, 2s);  // served once the slow client's time ran out
  EXPECT_EQ(slow_status.load(), 408);
}

TEST(AdminServer, ManyConcurrentClients) {
  ServerOptions options;
  options.workers = 4;
  auto server = startTcp(options);
  ASSERT_TRUE(server);
  std::atomic<int> ok{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 8; ++t) {
    clients.emplace_back([&] {
      AdminClient client(server->endpoints()[0]);
      for (int i = 0; i < 50; ++i) {
        auto response = client.request(Method::kGet, "/echo?i=" + std::to_string(i));
        if (response && response->status == 200) ++ok;
      }
    });
  }
  for (auto& client : clients) client.join();
  EXPECT_EQ(ok.load(), 400);
}

TEST(AdminServer, StopWaitsForRequestsInProgress) {
  auto server = startTcp();
  ASSERT_TRUE(server);
  const Endpoint endpoint = server->endpoints()[0];
  std::atomic<int> status{0};
  std::thread client([&] {
    auto response = AdminClient(endpoint).request(Method::kGet, "/slow");
    status = response ? response->status : -1;
  });
  std::this_thread::sleep_for(50ms);
  server->stop();
  client.join();
  EXPECT_EQ(status.load(), 200);
  EXPECT_FALSE(connectTo(endpoint, 200ms));
  server->stop();  // idempotent
}

class UnixSocketTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/meshlock-admin-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    dir_ = pattern;
    // Traversable by anyone, so the socket's own mode is what keeps others out.
    ASSERT_EQ(::chmod(dir_.c_str(), 0755), 0);
    path_ = dir_ + "/run/admin.sock";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string dir_;
  std::string path_;
};

TEST_F(UnixSocketTest, SocketIsMode0600AndServes) {
  ServerOptions options;
  options.listen = {Endpoint::unixSocket(path_)};
  auto server = HttpServer::start(options, testRouter());
  ASSERT_TRUE(server) << server.error().describe();
  struct stat st {};
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  auto endpoint = Endpoint::parse("unix:" + path_);
  ASSERT_TRUE(endpoint);
  auto response = AdminClient(*endpoint).request(Method::kGet, "/healthz");
  ASSERT_TRUE(response) << response.error().describe();
  EXPECT_EQ(response->status, 200);
  // A change that TCP refuses (ChangesOverTcpAre403) is taken over the socket.
  auto change = AdminClient(*endpoint).request(Method::kPost, "/level?level=off");
  ASSERT_TRUE(change) << change.error().describe();
  EXPECT_EQ(change->status, 200);
  response = AdminClient(*endpoint).request(Method::kGet, "/echo");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->body, "GET /echo body= unix");  // handlers can tell the socket from TCP
  (*server)->stop();
  EXPECT_FALSE(std::filesystem::exists(path_));
}

TEST_F(UnixSocketTest, StaleSocketIsReplacedLiveOneIsNot) {
  ServerOptions options;
  options.listen = {Endpoint::unixSocket(path_)};
  {
    // A stale socket file, as a crashed agent leaves behind.
    std::filesystem::create_directories(dir_ + "/run");
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM, 0));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strcpy(address.sun_path, path_.c_str());
    ASSERT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  }
  auto first = HttpServer::start(options, testRouter());
  ASSERT_TRUE(first) << first.error().describe();
  auto second = HttpServer::start(options, testRouter());
  ASSERT_FALSE(second);
  EXPECT_NE(second.error().message.find("another server"), std::string::npos);
  // The first server still answers.
  auto response = AdminClient(Endpoint::unixSocket(path_)).request(Method::kGet, "/healthz");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
}

// A rolling update's new agent takes a live socket path over: new clients
// reach it, and the old server's stop() leaves the new socket file in place.
TEST_F(UnixSocketTest, TakeOverReplacesALiveSocketAndTheOldStopLeavesIt) {
  ServerOptions options;
  options.listen = {Endpoint::unixSocket(path_)};
  auto old_server = HttpServer::start(options, testRouter());
  ASSERT_TRUE(old_server) << old_server.error().describe();
  options.unix_replace_live = true;
  Router new_router;
  new_router.handle("/healthz", [](const Request&) { return Response::text(200, "new\n"); });
  auto new_server = HttpServer::start(options, std::move(new_router));
  ASSERT_TRUE(new_server) << new_server.error().describe();
  auto response = AdminClient(Endpoint::unixSocket(path_)).request(Method::kGet, "/healthz");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->body, "new\n");
  (*old_server)->stop();
  ASSERT_TRUE(std::filesystem::exists(path_));
  response = AdminClient(Endpoint::unixSocket(path_)).request(Method::kGet, "/healthz");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->body, "new\n");
}

// The gate answers a refused connection before reading its request;
// meshlockctl's client still reports that answer, not a broken pipe.
TEST_F(UnixSocketTest, ClientReadsTheGatesRefusal) {
  ServerOptions options;
  options.listen = {Endpoint::unixSocket(path_)};
  options.max_connections = 1;
  auto server = HttpServer::start(options, testRouter());
  ASSERT_TRUE(server) << server.error().describe();
  auto held = connectTo(Endpoint::unixSocket(path_), 1s);
  ASSERT_TRUE(held);
  std::this_thread::sleep_for(100ms);
  auto response = AdminClient(Endpoint::unixSocket(path_)).request(Method::kGet, "/healthz");
  ASSERT_TRUE(response) << response.error().describe();
  EXPECT_EQ(response->status, 503);
  EXPECT_NE(response->body.find("admin server busy"), std::string::npos) << response->body;
}

// In a child that has become `nobody`: connect to the socket, report errno.
int connectAsNobody(const std::string& path, std::string* answer_status) {
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) return -1;
  const pid_t child = ::fork();
  if (child == 0) {
    ::close(pipe_fds[0]);
    int result = 0;
    if (::setgroups(0, nullptr) != 0 || ::setresgid(65534, 65534, 65534) != 0 ||
        ::setresuid(65534, 65534, 65534) != 0) {
      result = -2;
    } else {
      int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
      sockaddr_un address{};
      address.sun_family = AF_UNIX;
      std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
      if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
        result = errno;
      } else {
        // The server may have answered and closed before the request is
        // written: no SIGPIPE for that, the answer is read all the same.
        const char request[] = "GET /healthz HTTP/1.1\r\n\r\n";
        (void)!::send(fd, request, sizeof(request) - 1, MSG_NOSIGNAL);
        char reply[512] = {};
        const ssize_t got = ::read(fd, reply, sizeof(reply) - 1);
        (void)!::write(pipe_fds[1], reply, got > 0 ? static_cast<std::size_t>(got) : 0);
      }
    }
    ::_exit(result < 0 ? 255 : result);
  }
  ::close(pipe_fds[1]);
  char reply[512] = {};
  const ssize_t got = ::read(pipe_fds[0], reply, sizeof(reply) - 1);
  ::close(pipe_fds[0]);
  if (answer_status && got > 12) *answer_status = std::string(reply + 9, 3);
  int wstatus = 0;
  ::waitpid(child, &wstatus, 0);
  return WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
}

TEST_F(UnixSocketTest, NonRootUserIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to switch to nobody";
  ServerOptions options;
  options.listen = {Endpoint::unixSocket(path_)};
  auto server = HttpServer::start(options, testRouter());
  ASSERT_TRUE(server) << server.error().describe();
  EXPECT_EQ(connectAsNobody(path_, nullptr), EACCES);
}

TEST_F(UnixSocketTest, PeerCredentialsRefuseOthersEvenIfTheModeIsLoose) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to switch to nobody";
  ServerOptions options;
  options.listen = {Endpoint::unixSocket(path_)};
  options.unix_socket_mode = 0666;  // a misconfiguration: SO_PEERCRED still refuses
  auto server = HttpServer::start(options, testRouter());
  ASSERT_TRUE(server) << server.error().describe();
  std::string status;
  EXPECT_EQ(connectAsNobody(path_, &status), 0);
  EXPECT_EQ(status, "403");
}

// The request-head table the hand-written parser was held to, now over the
// wire against civetweb: every malformed head is refused with a 4xx/5xx
// (never a 2xx, never a crash) and the server keeps answering.
TEST(AdminServer, MalformedHeadsAreRefused) {
  auto server = startTcp();
  ASSERT_TRUE(server);
  struct BadCase {
    std::string_view head;
    int status;  // 0: any 4xx/5xx, or closed without an answer
  };
  const BadCase cases[] = {
      {"\r\n\r\n", 0},
      {"GET\r\n\r\n", 400},
      {"GET /\r\n\r\n", 400},
      {"GET / HTTP/1.1 extra\r\n\r\n", 400},
      {"GET / HTTP/2.0\r\n\r\n", 505},
      {"GET / FTP/1.0\r\n\r\n", 400},
      {"DELETE / HTTP/1.1\r\n\r\n", 501},
      {"G{T / HTTP/1.1\r\n\r\n", 0},
      {"GET http://x/ HTTP/1.1\r\n\r\n", 0},
      {"GET /?a=%4 HTTP/1.1\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nA: b\x01\r\n\r\n", 400},
      {"POST /echo HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 0},
      {"POST /echo HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n", 413},
      {"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501},
      {"POST /echo HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400},
      {"GET /\x80 HTTP/1.1\r\n\r\n", 0},
  };
  for (const BadCase& bad : cases) {
    const std::string raw = sendRaw(server->endpoints()[0], bad.head, 2s);
    const int status = statusOf(raw);
    if (bad.status != 0) {
      EXPECT_EQ(status, bad.status) << bad.head << " -> " << raw;
    } else {
      EXPECT_TRUE(raw.empty() || status >= 400) << bad.head << " -> " << raw;
    }
  }
  auto response = AdminClient(server->endpoints()[0]).request(Method::kGet, "/healthz");
  ASSERT_TRUE(response) << response.error().describe();
  EXPECT_EQ(response->status, 200);
}

// A head trickled one byte at a time, each well inside the read timeout, is
// still cut: the deadline counts from the connection's start, not the last byte.
TEST(AdminServer, TrickledHeadIsCutAtTheDeadline) {
  ServerOptions options;
  options.request_timeout = 300ms;
  auto server = startTcp(options);
  ASSERT_TRUE(server);
  auto fd = connectTo(server->endpoints()[0], 1s);
  ASSERT_TRUE(fd);
  const auto start = std::chrono::steady_clock::now();
  std::string received;
  for (int i = 0; i < 200 && received.empty(); ++i) {
    const char c = i == 0 ? 'G' : 'x';
    if (::send(fd->get(), &c, 1, MSG_NOSIGNAL) <= 0) break;
    pollfd pfd{fd->get(), POLLIN, 0};
    if (::poll(&pfd, 1, 100) > 0) {
      char chunk[4096];
      const ssize_t got = ::recv(fd->get(), chunk, sizeof(chunk), 0);
      if (got <= 0) break;
      received.append(chunk, static_cast<std::size_t>(got));
    }
  }
  const auto held = std::chrono::steady_clock::now() - start;
  EXPECT_LT(held, 2 * options.request_timeout + 300ms);  // server.h: cut within 2 x request_timeout
  EXPECT_EQ(statusOf(received), 408) << received;
}

// A client that asks for a large answer and never reads it holds its worker
// for the write deadline plus one stalled write, not for as long as it likes.
TEST(AdminServer, SlowReaderIsCutAtTheWriteDeadline) {
  Router router;
  router.handle("/big", [](const Request&) { return Response::text(200, std::string(32 * 1024 * 1024, 'x')); });
  ServerOptions options;
  options.listen = {Endpoint::tcp("127.0.0.1", 0)};
  options.request_timeout = 300ms;
  auto server = HttpServer::start(options, std::move(router));
  ASSERT_TRUE(server) << server.error().describe();
  auto fd = connectTo((*server)->endpoints()[0], 1s);
  ASSERT_TRUE(fd);
  const std::string request = "GET /big HTTP/1.1\r\n\r\n";
  ASSERT_EQ(::send(fd->get(), request.data(), request.size(), MSG_NOSIGNAL), static_cast<ssize_t>(request.size()));
  const auto start = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ((*server)->stats()[0].open, 1u);
  while ((*server)->stats()[0].open != 0 && std::chrono::steady_clock::now() - start < 5s) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ((*server)->stats()[0].open, 0u);
  // 300 ms deadline, plus one stalled write: civetweb polls for room in 2 s slices.
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3500ms);
}

// Connections that just sit there (slowloris) from one source take at most
// per_source_connections slots; the next from that source is refused at once
// with a 503, and the refusals are counted.
TEST(AdminServer, PerSourceCapRefusesAtOnce) {
  ServerOptions options;
  options.workers = 4;
  options.per_source_connections = 3;
  options.max_connections = 50;
  options.request_timeout = 3s;
  auto server = startTcp(options);
  ASSERT_TRUE(server);
  const Endpoint endpoint = server->endpoints()[0];
  std::vector<UniqueFd> held;
  for (int i = 0; i < 3; ++i) {
    auto fd = connectTo(endpoint, 1s);
    ASSERT_TRUE(fd);
    held.push_back(std::move(*fd));
  }
  std::this_thread::sleep_for(100ms);
  const auto start = std::chrono::steady_clock::now();
  const std::string raw = sendRaw(endpoint, "GET /healthz HTTP/1.1\r\n\r\n", 2s);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  EXPECT_EQ(statusOf(raw), 503) << raw;
  EXPECT_NE(raw.find("too many connections from 127.0.0.1"), std::string::npos) << raw;
  const auto stats = server->stats();
  ASSERT_EQ(stats.size(), 1u);
  EXPECT_EQ(stats[0].refused.source_cap, 1u);
  EXPECT_EQ(stats[0].open, 3u);
  held.clear();  // the slots come back once civetweb has closed them
  bool served = false;
  for (int i = 0; i < 50 && !served; ++i) {
    auto response = AdminClient(endpoint).request(Method::kGet, "/healthz");
    served = response && response->status == 200;
    if (!served) std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(served);
}

TEST(AdminServer, TotalCapRefusesAtOnce) {
  ServerOptions options;
  options.workers = 2;
  options.per_source_connections = 100;
  options.max_connections = 4;
  options.request_timeout = 3s;
  auto server = startTcp(options);
  ASSERT_TRUE(server);
  const Endpoint endpoint = server->endpoints()[0];
  std::vector<UniqueFd> held;
  for (int i = 0; i < 4; ++i) {
    auto fd = connectTo(endpoint, 1s);
    ASSERT_TRUE(fd);
    held.push_back(std::move(*fd));
  }
  std::this_thread::sleep_for(100ms);
  const std::string raw = sendRaw(endpoint, "GET /healthz HTTP/1.1\r\n\r\n", 2s);
  EXPECT_EQ(statusOf(raw), 503) << raw;
  EXPECT_NE(raw.find("busy"), std::string::npos) << raw;
  EXPECT_EQ(server->stats()[0].refused.total_cap, 1u);
}

// Each endpoint of a server has its own budget: silent connections that use
// up every worker and slot of the TCP port leave the Unix socket answering.
TEST_F(UnixSocketTest, FloodingTcpLeavesTheUnixSocketAnswering) {
  ServerOptions options;
  options.listen = {Endpoint::tcp("127.0.0.1", 0), Endpoint::unixSocket(path_)};
  options.workers = 2;
  options.max_connections = 8;
  options.per_source_connections = 8;
  options.request_timeout = 3s;
  auto server = HttpServer::start(options, testRouter());
  ASSERT_TRUE(server) << server.error().describe();
  const Endpoint tcp = (*server)->endpoints()[0];
  std::vector<UniqueFd> held;
  for (int i = 0; i < 20; ++i) {
    if (auto fd = connectTo(tcp, 1s)) held.push_back(std::move(*fd));
  }
  std::this_thread::sleep_for(100ms);
  // The TCP port is full: a new client there waits for a worker or is refused.
  const auto start = std::chrono::steady_clock::now();
  auto response = AdminClient(Endpoint::unixSocket(path_)).request(Method::kGet, "/echo");
  ASSERT_TRUE(response) << response.error().describe();
  EXPECT_EQ(response->body, "GET /echo body= unix");
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  const auto stats = (*server)->stats();
  ASSERT_EQ(stats.size(), 2u);
  EXPECT_GE(stats[0].refused.total_cap, 12u);  // 20 tried, 8 admitted
  EXPECT_EQ(stats[1].refused.total_cap, 0u);
}

// civetweb is started without TLS: it must not have loaded OpenSSL into a
// process that links BoringSSL (DEVELOPERS.md).
TEST(AdminServer, LoadsNoOpenSsl) {
  auto server = startTcp();
  ASSERT_TRUE(server);
  ASSERT_TRUE(AdminClient(server->endpoints()[0]).request(Method::kGet, "/healthz"));
  std::FILE* maps = std::fopen("/proc/self/maps", "r");
  ASSERT_NE(maps, nullptr);
  char line[4096];
  while (std::fgets(line, sizeof(line), maps)) {
    const std::string_view text(line);
    EXPECT_EQ(text.find("libssl"), std::string_view::npos) << text;
    EXPECT_EQ(text.find("libcrypto"), std::string_view::npos) << text;
  }
  std::fclose(maps);
}

TEST(Endpoint, ParsesTheForms) {
  auto unix_endpoint = Endpoint::parse("unix:/run/meshlock/admin.sock");
  ASSERT_TRUE(unix_endpoint);
  EXPECT_EQ(unix_endpoint->kind, Endpoint::Kind::kUnix);
  EXPECT_EQ(unix_endpoint->path, "/run/meshlock/admin.sock");
  auto http = Endpoint::parse("http://127.0.0.1:15000/");
  ASSERT_TRUE(http);
  EXPECT_EQ(http->kind, Endpoint::Kind::kTcp);
  EXPECT_EQ(http->port, 15000);
  auto v6 = Endpoint::parse("[::1]:15020");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->describe(), "http://[::1]:15020");
  EXPECT_FALSE(Endpoint::parse("unix:"));
  EXPECT_FALSE(Endpoint::parse("127.0.0.1"));
  EXPECT_FALSE(Endpoint::parse("127.0.0.1:99999"));
  EXPECT_FALSE(Endpoint::parse("https://127.0.0.1:15000"));
}

TEST(AdminClient, UnreachableIsAnErrorNamingTheEndpoint) {
  auto response = AdminClient(Endpoint::unixSocket("/nonexistent/meshlock.sock")).request(Method::kGet, "/healthz");
  ASSERT_FALSE(response);
  EXPECT_NE(response.error().describe().find("unix:/nonexistent/meshlock.sock"), std::string::npos);
}

}  // namespace
}  // namespace meshlock::admin
