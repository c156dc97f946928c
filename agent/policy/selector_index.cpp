#include "policy/selector_index.h"

namespace meshlock::policy {

SelectorIndex::SelectorIndex(const config::SharedList<config::Pod>& pods) : list_(pods) {
  for (std::size_t i = 0; i < pods.size(); ++i) {
    const config::Pod& pod = pods[i];
    Namespace& ns = namespaces_[pod.ns()];
    ns.pods.push_back(static_cast<uint32_t>(i));
    for (const auto& [key, value] : pod.labels()) ns.by_label[key][value].push_back(static_cast<uint32_t>(i));
  }
}

void SelectorIndex::forEachMatch(std::string_view ns, const config::Labels& selector,
                                 const std::function<void(std::size_t)>& fn) const {
  auto n = namespaces_.find(ns);
  if (n == namespaces_.end()) return;
  const std::vector<uint32_t>* shortest = &n->second.pods;
  for (const auto& [key, value] : selector) {
    auto k = n->second.by_label.find(key);
    if (k == n->second.by_label.end()) return;
    auto v = k->second.find(value);
    if (v == k->second.end()) return;
    if (v->second.size() < shortest->size()) shortest = &v->second;
  }
  for (uint32_t i : *shortest) {
    if (selector.size() <= 1 || config::selectorMatches(selector, list_[i].labels())) fn(i);
  }
}

}  // namespace meshlock::policy
