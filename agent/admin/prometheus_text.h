// Reads Prometheus text exposition format 0.0.4 back into samples, for
// meshlockctl commands built from /metrics (graph). Comments are skipped.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace meshlock::admin {

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;  // unescaped values
  double value = 0;

  [[nodiscard]] const std::string& label(const std::string& key) const;  // "" when absent
};

// Fails, naming the line, on anything that is not a valid sample line.
[[nodiscard]] Result<std::vector<Sample>> parsePrometheusText(std::string_view text);

}  // namespace meshlock::admin
