// gRPC framing and header encodings (grpc/grpc doc/PROTOCOL-HTTP2.md).
#include "grpc/framing.h"

#include <gtest/gtest.h>

#include "grpc/client.h"

namespace meshlock::grpc {
namespace {

using namespace std::chrono_literals;

TEST(Framing, LengthPrefixedMessage) {
  std::string framed = frameMessage("abc");
  ASSERT_EQ(framed.size(), 8u);
  EXPECT_EQ(framed, std::string("\0\0\0\0\3abc", 8));
  EXPECT_EQ(frameMessage(""), std::string(5, '\0'));
}

TEST(Framing, ReaderReassemblesAnySplit) {
  std::string stream = frameMessage("first") + frameMessage("") + frameMessage(std::string(70000, 'x'));
  for (std::size_t chunk : {1u, 3u, 5u, 4096u, 100000u}) {
    MessageReader reader;
    std::vector<std::string> got;
    for (std::size_t i = 0; i < stream.size(); i += chunk) {
      ASSERT_TRUE(reader.feed(std::string_view(stream).substr(i, chunk)));
      while (auto m = reader.next()) got.push_back(*m);
    }
    ASSERT_EQ(got.size(), 3u) << chunk;
    EXPECT_EQ(got[0], "first");
    EXPECT_EQ(got[1], "");
    EXPECT_EQ(got[2].size(), 70000u);
    EXPECT_FALSE(reader.midMessage());
  }
}

TEST(Framing, ReaderRefusesOversizedAndCompressed) {
  MessageReader small(10);
  auto big = small.feed(frameMessage(std::string(11, 'x')).substr(0, 5));
  ASSERT_FALSE(big);
  EXPECT_NE(big.error().message.find("exceeds the limit of 10"), std::string::npos);
  EXPECT_FALSE(small.feed("more")) << "stays failed";
  EXPECT_EQ(small.failure(), MessageReader::Failure::kTooLarge);

  MessageReader reader;
  std::string compressed = frameMessage("x");
  compressed[0] = 1;
  auto refused = reader.feed(compressed);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("compressed"), std::string::npos);
  EXPECT_EQ(reader.failure(), MessageReader::Failure::kCompressed);
  MessageReader flagged;
  std::string badFlag = frameMessage("x");
  badFlag[0] = 2;
  EXPECT_FALSE(flagged.feed(badFlag));
  EXPECT_EQ(flagged.failure(), MessageReader::Failure::kBadFlag);
  MessageReader partial;
  ASSERT_TRUE(partial.feed(frameMessage("abcdef").substr(0, 7)));
  EXPECT_FALSE(partial.next());
  EXPECT_TRUE(partial.midMessage());
}

TEST(Framing, TimeoutEncoding) {
  EXPECT_EQ(encodeTimeout(10s), "10000000u");
  EXPECT_EQ(encodeTimeout(100s), "100000m");
  EXPECT_EQ(encodeTimeout(1500ms), "1500000u");
  EXPECT_EQ(encodeTimeout(0ns), "1n");
  EXPECT_EQ(encodeTimeout(std::chrono::hours(24 * 365 * 20)), "10512000M");
  for (std::chrono::nanoseconds t : std::initializer_list<std::chrono::nanoseconds>{1ns, 999ns, 1ms, 1500ms, 10s, 100s, std::chrono::nanoseconds(123456789012)}) {
    auto text = encodeTimeout(t);
    EXPECT_LE(text.size(), 9u);
    auto back = parseTimeout(text);
    ASSERT_TRUE(back) << text;
    EXPECT_GE(*back, t) << text << ": never earlier than asked";
  }
  EXPECT_EQ(*parseTimeout("5S"), 5s);
  EXPECT_EQ(*parseTimeout("2M"), 120s);
  EXPECT_EQ(*parseTimeout("1H"), 3600s);
  EXPECT_EQ(*parseTimeout("99999999H"), std::chrono::hours(24 * 365 * 100)) << "capped, not overflowed";
  EXPECT_EQ(*parseTimeout("99999999M"), std::chrono::minutes(99999999));
  EXPECT_FALSE(parseTimeout("123456789S"));
  EXPECT_FALSE(parseTimeout("5"));
  EXPECT_FALSE(parseTimeout("5x"));
  EXPECT_FALSE(parseTimeout("-5S"));
}

TEST(Framing, StatusCodesAndMessages) {
  EXPECT_EQ(parseStatusCode("0"), StatusCode::kOk);
  EXPECT_EQ(parseStatusCode("16"), StatusCode::kUnauthenticated);
  EXPECT_EQ(parseStatusCode("17"), StatusCode::kUnknown);
  EXPECT_EQ(parseStatusCode("x"), StatusCode::kUnknown);
  EXPECT_EQ(toString(StatusCode::kPermissionDenied), "PERMISSION_DENIED");
  EXPECT_EQ(metricLabel(StatusCode::kDeadlineExceeded), "deadline_exceeded");
  EXPECT_EQ(statusForHttp(503), StatusCode::kUnavailable);
  EXPECT_EQ(statusForHttp(401), StatusCode::kUnauthenticated);
  EXPECT_EQ(percentEncode("a b%é\n"), "a b%25%C3%A9%0A");
  EXPECT_EQ(percentDecode("a b%25%C3%A9%0A"), "a b%é\n");
  EXPECT_EQ(percentDecode("bad %zz and %4"), "bad %zz and %4");
  EXPECT_EQ((GrpcStatus{StatusCode::kUnavailable, "down"}).describe(), "UNAVAILABLE: down");
}

TEST(Endpoint, Parse) {
  auto plain = parseEndpoint("istiod.istio-system.svc:15012");
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->host, "istiod.istio-system.svc");
  EXPECT_EQ(plain->port, 15012);
  auto url = parseEndpoint("https://istiod.istio-system.svc:15012");
  ASSERT_TRUE(url);
  EXPECT_EQ(url->authority(), "istiod.istio-system.svc:15012");
  auto v6 = parseEndpoint("[::1]:15012");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->authority(), "[::1]:15012");
  EXPECT_FALSE(parseEndpoint("istiod"));
  EXPECT_FALSE(parseEndpoint("istiod:0"));
  EXPECT_FALSE(parseEndpoint("istiod:99999"));
  EXPECT_FALSE(parseEndpoint("[::1]15012"));
}

}  // namespace
}  // namespace meshlock::grpc
