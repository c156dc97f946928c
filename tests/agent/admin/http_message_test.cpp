// Request-head parsing: what is accepted, and that every malformed head is a
// 4xx/5xx with a reason rather than a crash.
#include "admin/http_message.h"

#include <gtest/gtest.h>

#include <random>

namespace meshlock::admin {
namespace {

RequestLimits limits() { return RequestLimits{}; }

TEST(HttpMessage, ParsesGetWithQuery) {
  auto head = parseRequestHead("GET /logging?level=debug&x=a%20b+c HTTP/1.1\r\nHost: x\r\n\r\n", limits());
  ASSERT_TRUE(head) << head.error().reason;
  EXPECT_EQ(head->request.method, Method::kGet);
  EXPECT_EQ(head->request.path, "/logging");
  EXPECT_EQ(head->request.param("level"), "debug");
  EXPECT_EQ(head->request.param("x"), "a b c");
  EXPECT_EQ(head->request.header("HOST"), "x");
  EXPECT_FALSE(head->request.param("missing"));
}

TEST(HttpMessage, ParsesPostContentLength) {
  auto head = parseRequestHead("POST /capture HTTP/1.0\r\nContent-Length: 12\r\n\r\n", limits());
  ASSERT_TRUE(head);
  EXPECT_EQ(head->request.method, Method::kPost);
  EXPECT_EQ(head->content_length, 12u);
}

TEST(HttpMessage, AcceptsBareLineFeeds) {
  auto head = parseRequestHead("GET /healthz HTTP/1.1\nHost: x\n\n", limits());
  ASSERT_TRUE(head);
  EXPECT_EQ(head->request.path, "/healthz");
}

struct BadCase {
  const char* head;
  int status;
};

TEST(HttpMessage, RefusesMalformedHeads) {
  const BadCase cases[] = {
      {"\r\n\r\n", 400},
      {"GET\r\n\r\n", 400},
      {"GET /\r\n\r\n", 400},
      {"GET / HTTP/1.1 extra\r\n\r\n", 400},
      {"GET / HTTP/2.0\r\n\r\n", 505},
      {"GET / FTP/1.0\r\n\r\n", 400},
      {"DELETE / HTTP/1.1\r\n\r\n", 501},
      {"G{T / HTTP/1.1\r\n\r\n", 400},
      {"GET http://x/ HTTP/1.1\r\n\r\n", 400},
      {"GET /a%zz HTTP/1.1\r\n\r\n", 400},
      {"GET /a% HTTP/1.1\r\n\r\n", 400},
      {"GET /?a=%4 HTTP/1.1\r\n\r\n", 400},
      {"GET /%00 HTTP/1.1\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\n: empty\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nA: b\x01\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n", 413},
      {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501},
      {"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n", 400},
      {"GET /\x80 HTTP/1.1\r\n\r\n", 400},
  };
  for (const BadCase& c : cases) {
    auto head = parseRequestHead(c.head, limits());
    ASSERT_FALSE(head) << "accepted: " << c.head;
    EXPECT_EQ(head.error().status, c.status) << c.head << " -> " << head.error().reason;
    EXPECT_FALSE(head.error().reason.empty());
  }
}

TEST(HttpMessage, RefusesOversizeHead) {
  std::string head = "GET / HTTP/1.1\r\nX: " + std::string(20000, 'a') + "\r\n\r\n";
  auto parsed = parseRequestHead(head, limits());
  ASSERT_FALSE(parsed);
  EXPECT_EQ(parsed.error().status, 431);
}

TEST(HttpMessage, RandomBytesNeverCrash) {
  std::mt19937 rng(8);
  for (int i = 0; i < 20000; ++i) {
    std::string bytes(rng() % 200, '\0');
    for (char& c : bytes) c = static_cast<char>(rng());
    if (i % 3 == 0) bytes = "GET /" + bytes;
    bytes += "\r\n\r\n";
    auto head = parseRequestHead(bytes, limits());
    if (!head) {
      EXPECT_GE(head.error().status, 400);
    }
  }
}

TEST(HttpMessage, SerializesAndParsesResponse) {
  Response response = Response::json(200, "{\"a\":1}");
  response.headers.emplace_back("X-Test", "yes");
  auto parsed = parseResponse(serializeResponse(response));
  ASSERT_TRUE(parsed) << parsed.error().describe();
  EXPECT_EQ(parsed->status, 200);
  EXPECT_EQ(parsed->body, "{\"a\":1}\n");
  EXPECT_EQ(parsed->header("content-type"), "application/json");
  EXPECT_EQ(parsed->header("x-test"), "yes");
}

TEST(HttpMessage, ErrorBodyEscapesReason) {
  Response response = Response::error(400, "bad \"x\"\\\n");
  EXPECT_EQ(response.body, "{\"error\":\"bad \\\"x\\\"\\\\\\u000a\"}\n");
}

TEST(HttpMessage, ParseResponseRefusesTruncatedBody) {
  EXPECT_FALSE(parseResponse("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"));
  EXPECT_FALSE(parseResponse("garbage"));
  EXPECT_FALSE(parseResponse("HTTP/1.1 2x0 OK\r\n\r\n"));
}

TEST(HttpMessage, PercentEncodeRoundTrips) {
  const std::string text = "shop/web-1 a+b&c=d%";
  auto decoded = percentDecode(percentEncode(text), true);
  ASSERT_TRUE(decoded);
  EXPECT_EQ(*decoded, text);
}

}  // namespace
}  // namespace meshlock::admin
