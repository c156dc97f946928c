// Warnings a mesh operator wants before applying manifests, each with a
// stable code (docs/policy.md lists them). Pure: reads a PolicyIndex only.
//
//   for (const Finding& f : validate(*index)) ... f.code, f.resource, f.message
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "policy/policy.h"

namespace meshlock::policy {

enum class Severity : uint8_t { kWarning, kError };

struct Finding {
  std::string code;      // "ML001"
  Severity severity = Severity::kWarning;
  std::string resource;  // "DestinationRule/shop/no-tls"
  std::string message;
  [[nodiscard]] std::string describe() const;  // "warning ML001 DestinationRule/shop/no-tls: ..."
};

// Every finding, sorted by code, then resource.
[[nodiscard]] std::vector<Finding> validate(const PolicyIndex& index);

[[nodiscard]] std::string_view toString(Severity severity);

}  // namespace meshlock::policy
