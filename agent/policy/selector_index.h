// Which pods of a namespace a label selector (matchLabels) picks, without
// testing every pod against every selector.
//
// Building the policy index matched each Service and each workload
// PeerAuthentication against every pod of its namespace: with 1,000 pods and
// 100 selectors per namespace that was 44 % of the agent's CPU per update
// (perf, issue 12's 10k-pod benchmark). Here each namespace keeps, for every
// label key=value, the pods that carry it; a selector looks at the shortest
// of its labels' lists and tests only those pods.
#pragma once

#include <cstdint>
#include <functional>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "config/types.h"

namespace meshlock::policy {

class SelectorIndex {
 public:
  // Indexes `pods` (positions in the list are what matching returns). The
  // pods must outlive the index: it keeps views of their labels.
  explicit SelectorIndex(const config::SharedList<config::Pod>& pods);

  // Calls `fn(position)` for every pod of namespace `ns` whose labels match
  // `selector` (config::selectorMatches; an empty selector picks every pod
  // of the namespace), in ascending position order.
  void forEachMatch(std::string_view ns, const config::Labels& selector,
                    const std::function<void(std::size_t)>& fn) const;

 private:
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };
  template <typename V>
  using ViewMap = std::unordered_map<std::string_view, V, Hash, std::equal_to<>>;
  struct Namespace {
    std::vector<uint32_t> pods;                          // every pod of the namespace
    ViewMap<ViewMap<std::vector<uint32_t>>> by_label;    // key -> value -> pods
  };

  const config::SharedList<config::Pod>& list_;
  ViewMap<Namespace> namespaces_;
};

}  // namespace meshlock::policy
