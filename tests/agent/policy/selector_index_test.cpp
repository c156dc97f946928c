// SelectorIndex picks exactly the pods config::selectorMatches picks, in
// list order, on a random cluster of labels and selectors.
#include "policy/selector_index.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace meshlock::policy {
namespace {

TEST(SelectorIndex, AgreesWithSelectorMatches) {
  std::mt19937 rng(12);
  auto pick = [&](int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng); };
  config::SharedList<config::Pod> pods;
  for (int i = 0; i < 600; ++i) {
    config::Pod pod;
    pod.meta.ref = {"Pod", "ns" + std::to_string(pick(4)), "pod" + std::to_string(i)};
    for (int k = 0; k < 3; ++k) {
      if (pick(3) != 0) pod.meta.labels["k" + std::to_string(k)] = "v" + std::to_string(pick(3));
    }
    pods.push_back(std::move(pod));
  }
  const SelectorIndex index(pods);
  for (int s = 0; s < 300; ++s) {
    config::Labels selector;
    for (int k = 0; k < 4; ++k) {  // k3 is on no pod: such selectors pick nothing
      if (pick(2) == 0) selector["k" + std::to_string(k)] = "v" + std::to_string(pick(3));
    }
    const std::string ns = "ns" + std::to_string(pick(5));  // ns4 has no pods
    std::vector<std::size_t> want, got;
    for (std::size_t i = 0; i < pods.size(); ++i) {
      if (pods[i].ns() == ns && config::selectorMatches(selector, pods[i].labels())) want.push_back(i);
    }
    index.forEachMatch(ns, selector, [&](std::size_t i) { got.push_back(i); });
    EXPECT_EQ(got, want) << "selector " << s << " in " << ns;
  }
}

TEST(SelectorIndex, EmptySelectorPicksTheWholeNamespace) {
  config::SharedList<config::Pod> pods;
  for (const char* ns : {"a", "b", "a"}) {
    config::Pod pod;
    pod.meta.ref = {"Pod", ns, "p"};
    pods.push_back(pod);
  }
  const SelectorIndex index(pods);
  std::vector<std::size_t> got;
  index.forEachMatch("a", {}, [&](std::size_t i) { got.push_back(i); });
  EXPECT_EQ(got, (std::vector<std::size_t>{0, 2}));
}

}  // namespace
}  // namespace meshlock::policy
