// A strict reader for sample lines: name{label="value",...} value [timestamp].
#include "admin/prometheus_text.h"

#include <cctype>
#include <cmath>
#include <cstdlib>

namespace meshlock::admin {
namespace {

bool isNameChar(char c, bool first) {
  return std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':' ||
         (!first && std::isdigit(static_cast<unsigned char>(c)));
}

Result<double> parseValue(std::string_view text) {
  if (text == "NaN") return std::nan("");
  if (text == "+Inf" || text == "Inf") return HUGE_VAL;
  if (text == "-Inf") return -HUGE_VAL;
  const std::string copy(text);
  char* end = nullptr;
  const double value = std::strtod(copy.c_str(), &end);
  if (copy.empty() || end != copy.c_str() + copy.size()) return fail("bad sample value \"" + copy + "\"");
  return value;
}

Result<Sample> parseLine(std::string_view line) {
  Sample sample;
  std::size_t i = 0;
  while (i < line.size() && isNameChar(line[i], i == 0)) ++i;
  if (i == 0) return fail("expected a metric name");
  sample.name = std::string(line.substr(0, i));
  if (i < line.size() && line[i] == '{') {
    ++i;
    for (;;) {
      while (i < line.size() && line[i] == ' ') ++i;
      if (i < line.size() && line[i] == '}') {
        ++i;
        break;
      }
      const std::size_t start = i;
      while (i < line.size() && isNameChar(line[i], i == start) && line[i] != ':') ++i;
      if (i == start) return fail("expected a label name");
      std::string key(line.substr(start, i - start));
      if (i + 1 >= line.size() || line[i] != '=' || line[i + 1] != '"') return fail("expected =\" after label " + key);
      i += 2;
      std::string value;
      for (;;) {
        if (i >= line.size()) return fail("unterminated value of label " + key);
        const char c = line[i++];
        if (c == '"') break;
        if (c == '\\') {
          if (i >= line.size()) return fail("unterminated escape in label " + key);
          const char escaped = line[i++];
          if (escaped == 'n') {
            value += '\n';
          } else if (escaped == '\\' || escaped == '"') {
            value += escaped;
          } else {
            return fail("bad escape \\" + std::string(1, escaped) + " in label " + key);
          }
        } else {
          value += c;
        }
      }
      if (!sample.labels.emplace(std::move(key), std::move(value)).second) return fail("duplicate label");
      while (i < line.size() && line[i] == ' ') ++i;
      if (i < line.size() && line[i] == ',') {
        ++i;
        continue;
      }
      if (i < line.size() && line[i] == '}') {
        ++i;
        break;
      }
      return fail("expected , or } in label set");
    }
  }
  if (i >= line.size() || (line[i] != ' ' && line[i] != '\t')) return fail("expected a space before the value");
  while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
  std::string_view rest = line.substr(i);
  const std::size_t space = rest.find_first_of(" \t");
  auto value = parseValue(rest.substr(0, space));
  if (!value) return std::unexpected(value.error());
  sample.value = *value;
  return sample;
}

}  // namespace

const std::string& Sample::label(const std::string& key) const {
  static const std::string kEmpty;
  auto it = labels.find(key);
  return it == labels.end() ? kEmpty : it->second;
}

Result<std::vector<Sample>> parsePrometheusText(std::string_view text) {
  std::vector<Sample> samples;
  std::size_t line_number = 0;
  while (!text.empty()) {
    ++line_number;
    const std::size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text = eol == std::string_view::npos ? std::string_view() : text.substr(eol + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    if (line.empty() || line.front() == '#') continue;
    auto sample = parseLine(line);
    if (!sample) return std::unexpected(sample.error().context("metrics line " + std::to_string(line_number)));
    samples.push_back(std::move(*sample));
  }
  return samples;
}

}  // namespace meshlock::admin
