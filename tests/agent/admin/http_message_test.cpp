// Target and query decoding, response bytes and the client's response parser:
// what is accepted, and that bad input is an error rather than a crash. (The
// request head is civetweb's: server_test sends malformed heads over the wire.)
#include "admin/http_message.h"

#include <gtest/gtest.h>

#include <random>

namespace meshlock::admin {
namespace {

TEST(HttpMessage, ParsesTargetWithQuery) {
  auto target = parseTarget("/logging", "level=debug&x=a%20b+c#frag");
  ASSERT_TRUE(target) << target.error().message;
  EXPECT_EQ(target->path, "/logging");
  Request request;
  request.query = target->query;
  request.headers = {{"host", "x"}};
  EXPECT_EQ(request.param("level"), "debug");
  EXPECT_EQ(request.param("x"), "a b c");
  EXPECT_EQ(request.header("HOST"), "x");
  EXPECT_FALSE(request.param("missing"));
}

TEST(HttpMessage, RefusesBadTargets) {
  EXPECT_FALSE(parseTarget("", ""));
  EXPECT_FALSE(parseTarget("healthz", ""));
  EXPECT_FALSE(parseTarget(std::string_view("/a\0b", 4), ""));
  EXPECT_FALSE(parseTarget("/", "a=%4"));
  EXPECT_FALSE(parseTarget("/", "a=%zz"));
  EXPECT_FALSE(parseTarget("/", "%"));
}

TEST(HttpMessage, RandomQueriesNeverCrash) {
  std::mt19937 rng(8);
  for (int i = 0; i < 20000; ++i) {
    std::string bytes(rng() % 200, '\0');
    for (char& c : bytes) c = static_cast<char>(rng());
    auto target = parseTarget("/" + bytes, bytes);
    if (target) {
      EXPECT_EQ(target->path.front(), '/');
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
