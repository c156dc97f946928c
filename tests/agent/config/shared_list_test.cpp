// SharedList: copies share objects; edit() copies an object another list
// holds before changing it, so no reader sees an object change.
#include "config/shared_list.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "config/types.h"

namespace meshlock::config {
namespace {

Pod pod(std::string name) {
  Pod p;
  p.meta.ref = {"Pod", "shop", name};
  p.uid = PodUid("uid-" + name);
  return p;
}

TEST(SharedList, CopiesShareTheObjects) {
  SharedList<Pod> a{pod("web-1"), pod("web-2")};
  SharedList<Pod> b = a;
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(&a[0], &b[0]);
  EXPECT_EQ(&a.back(), &b.back());
  EXPECT_EQ(a.handle(1).use_count(), 2);
}

TEST(SharedList, EditCopiesASharedObjectFirst) {
  SharedList<Pod> a{pod("web-1")};
  SharedList<Pod> b = a;
  const Pod* before = &a[0];
  b.edit(0).service_account = "web";
  EXPECT_EQ(a[0].service_account, "default");  // the other list's object is unchanged
  EXPECT_EQ(&a[0], before);
  EXPECT_EQ(b[0].service_account, "web");
  EXPECT_NE(&a[0], &b[0]);
  // Not shared any more: edited in place.
  const Pod* mine = &b[0];
  b.editBack().node_name = "node-a";
  EXPECT_EQ(&b[0], mine);
  EXPECT_EQ(b[0].node_name, "node-a");
}

TEST(SharedList, ComparesByValue) {
  SharedList<Pod> a{pod("web-1"), pod("web-2")};
  SharedList<Pod> b{pod("web-1"), pod("web-2")};
  EXPECT_EQ(a, b);  // different objects, equal values
  b.edit(1).service_account = "other";
  EXPECT_NE(a, b);
  SharedList<Pod> c{pod("web-1")};
  EXPECT_NE(a, c);
}

TEST(SharedList, IteratesAndErases) {
  SharedList<Pod> a{pod("a"), pod("b"), pod("c")};
  std::string names;
  for (const Pod& p : a) names += p.name();
  EXPECT_EQ(names, "abc");
  auto it = std::find_if(a.begin(), a.end(), [](const Pod& p) { return p.name() == "b"; });
  ASSERT_NE(it, a.end());
  EXPECT_EQ(it - a.begin(), 1);
  EXPECT_EQ(it->name(), "b");
  EXPECT_EQ(a.eraseIf([](const Pod& p) { return p.name() != "b"; }), 2u);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a.front().name(), "b");
}

TEST(SharedList, AppendSharesAndKeepsOrder) {
  ClusterState one;
  one.pods.push_back(pod("x"));
  ClusterState all;
  all.pods.push_back(pod("w"));
  all.append(one);
  ASSERT_EQ(all.pods.size(), 2u);
  EXPECT_EQ(all.pods[1].name(), "x");
  EXPECT_EQ(&all.pods[1], &one.pods[0]);
}

}  // namespace
}  // namespace meshlock::config
