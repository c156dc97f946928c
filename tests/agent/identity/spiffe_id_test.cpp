// SPIFFE ID parsing: Istio's form is accepted, every confusable spelling refused.
#include "identity/spiffe_id.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <unordered_set>

namespace meshlock::identity {
namespace {

TEST(SpiffeId, ParsesIstioServiceAccountIdentity) {
  auto id = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/web-frontend");
  ASSERT_TRUE(id) << id.error().message;
  EXPECT_EQ(id->trustDomain().name(), "cluster.local");
  EXPECT_EQ(id->ns(), "shop");
  EXPECT_EQ(id->serviceAccount(), "web-frontend");
  EXPECT_EQ(id->uri(), "spiffe://cluster.local/ns/shop/sa/web-frontend");
}

TEST(SpiffeId, ServiceAccountMayHaveDots) {
  EXPECT_TRUE(SpiffeId::parse("spiffe://td/ns/a/sa/b.c-d"));
}

TEST(SpiffeId, BuildsFromNamespaceAndServiceAccount) {
  auto domain = TrustDomain::parse("example.org");
  ASSERT_TRUE(domain);
  auto id = SpiffeId::forServiceAccount(*domain, "shop", "default");
  ASSERT_TRUE(id);
  EXPECT_EQ(id->uri(), "spiffe://example.org/ns/shop/sa/default");
  EXPECT_FALSE(SpiffeId::forServiceAccount(*domain, "Shop", "default"));
  EXPECT_FALSE(SpiffeId::forServiceAccount(*domain, "shop", ""));
}

class SpiffeIdRefusal : public ::testing::TestWithParam<std::string> {};

TEST_P(SpiffeIdRefusal, IsRefused) {
  auto id = SpiffeId::parse(GetParam());
  EXPECT_FALSE(id) << "accepted: " << GetParam();
  if (!id) {
    EXPECT_FALSE(id.error().message.empty());
  }
}

INSTANTIATE_TEST_SUITE_P(
    Confusables, SpiffeIdRefusal,
    ::testing::Values(
        "", "spiffe://", "spiffe://cluster.local", "spiffe://cluster.local/",
        "SPIFFE://cluster.local/ns/a/sa/b",          // scheme case
        "spiffe:/cluster.local/ns/a/sa/b",           // scheme form
        "https://cluster.local/ns/a/sa/b",           // scheme
        "spiffe://Cluster.local/ns/a/sa/b",          // uppercase trust domain
        "spiffe://cluster.local/ns/A/sa/b",          // uppercase namespace
        "spiffe://cluster.local/ns/a/sa/B",          // uppercase service account
        "spiffe://cluster.local/NS/a/sa/b",          // uppercase keyword
        "spiffe://cluster.local/ns/a%2fb/sa/c",      // percent-encoded slash
        "spiffe://cluster%2elocal/ns/a/sa/b",        // percent in trust domain
        "spiffe://cluster.local/ns/a/sa/b/extra",    // extra segment
        "spiffe://cluster.local/ns/a/sa/b/",         // trailing slash
        "spiffe://cluster.local//ns/a/sa/b",         // empty segment
        "spiffe://cluster.local/ns//sa/b",           // empty namespace
        "spiffe://cluster.local/ns/a/sa/",           // empty service account
        "spiffe://cluster.local/ns/./sa/b",          // dot segment
        "spiffe://cluster.local/ns/../sa/b",         // dot-dot segment
        "spiffe://cluster.local/sa/b/ns/a",          // order
        "spiffe://cluster.local/ns/a/sa/b?x=1",      // query
        "spiffe://cluster.local/ns/a/sa/b#frag",     // fragment
        "spiffe://user@cluster.local/ns/a/sa/b",     // userinfo
        "spiffe://cluster.local:443/ns/a/sa/b",      // port
        "spiffe://.cluster.local/ns/a/sa/b",         // empty label
        "spiffe://cluster..local/ns/a/sa/b",         // empty label
        " spiffe://cluster.local/ns/a/sa/b",         // leading space
        "spiffe://cluster.local/ns/a/sa/b ",         // trailing space
        "spiffe://cluster.local/ns/-a/sa/b",         // DNS label rule
        std::string("spiffe://cluster.local/ns/a/sa/b\0evil", 37),  // embedded NUL
        std::string("spiffe://cluster.local/ns/a\0/sa/b", 33)));

TEST(SpiffeId, TrustDomainMustMatchWhenExpected) {
  auto domain = TrustDomain::parse("cluster.local");
  ASSERT_TRUE(domain);
  EXPECT_TRUE(SpiffeId::parse("spiffe://cluster.local/ns/a/sa/b", *domain));
  auto other = SpiffeId::parse("spiffe://evil.local/ns/a/sa/b", *domain);
  ASSERT_FALSE(other);
  EXPECT_NE(other.error().message.find("trust domain"), std::string::npos);
}

TEST(SpiffeId, ErrorMessagesEscapeControlBytes) {
  auto id = SpiffeId::parse(std::string("spiffe://td/ns/a/sa/b\0\n", 23));
  ASSERT_FALSE(id);
  EXPECT_EQ(id.error().message.find('\0'), std::string::npos);
  EXPECT_EQ(id.error().message.find('\n'), std::string::npos);
  EXPECT_NE(id.error().message.find("\\x00"), std::string::npos);
}

// One identity, one spelling: whatever mutation of a valid ID is accepted is
// exactly its own canonical form (no two strings parse to the same identity).
TEST(SpiffeId, EveryAcceptedStringIsCanonical) {
  const std::string base = "spiffe://cluster.local/ns/shop/sa/web";
  const std::string alphabet = std::string("aZ09./-_%:@?#\\ ") + '\0' + "\xff";
  std::mt19937 random(42);
  int accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string candidate = base;
    int edits = 1 + static_cast<int>(random() % 3);
    for (int e = 0; e < edits; ++e) {
      size_t at = random() % (candidate.size() + 1);
      char c = alphabet[random() % alphabet.size()];
      switch (random() % 3) {
        case 0: candidate.insert(candidate.begin() + static_cast<long>(at), c); break;
        case 1: if (at < candidate.size()) candidate[at] = c; break;
        default: if (at < candidate.size()) candidate.erase(at, 1); break;
      }
    }
    auto id = SpiffeId::parse(candidate);
    if (!id) continue;
    ++accepted;
    EXPECT_EQ(id->uri(), candidate);
    EXPECT_EQ(candidate.find('\0'), std::string::npos);
    EXPECT_EQ(candidate.find('%'), std::string::npos);
  }
  EXPECT_GT(accepted, 0);
}

TEST(SpiffeId, HashesAndComparesByUri) {
  std::unordered_set<SpiffeId> set;
  set.insert(*SpiffeId::parse("spiffe://td/ns/a/sa/b"));
  set.insert(*SpiffeId::parse("spiffe://td/ns/a/sa/b"));
  set.insert(*SpiffeId::parse("spiffe://td/ns/a/sa/c"));
  EXPECT_EQ(set.size(), 2u);
}

}  // namespace
}  // namespace meshlock::identity
