// Output helpers for meshlockctl: options, tables, JSON and YAML.
#include "cli/output.h"

#include <algorithm>
#include <cmath>
#include <cctype>

namespace meshlock::cli {

namespace {

std::map<std::string, std::vector<std::string>>& formatsByCommand() {
  static std::map<std::string, std::vector<std::string>> formats;
  return formats;
}

}  // namespace

const std::map<std::string, std::vector<std::string>>& outputFormatsByCommand() { return formatsByCommand(); }

void declareOutputFormats(const CLI::App& sub, std::vector<std::string> formats) {
  formatsByCommand()[sub.get_name()] = std::move(formats);
}

void addLiveOptions(CLI::App& sub, LiveOptions& options, std::vector<std::string> formats) {
  declareOutputFormats(sub, formats);
  sub.add_option("--admin", options.admin,
                 "admin API: unix:/path or http://127.0.0.1:15000 (default unix:/run/meshlock/admin.sock)")
      ->envname("MESHLOCK_ADMIN");
  sub.add_option("--timeout", options.timeout_seconds, "seconds to wait for the agent")
      ->check(CLI::PositiveNumber);
  std::string choices;
  for (const auto& format : formats) choices += (choices.empty() ? "" : "|") + format;
  sub.add_option("-o,--output", options.output, "output format: " + choices)
      ->check(CLI::IsMember(formats));
}

Result<admin::AdminClient> makeClient(const LiveOptions& options) {
  auto endpoint = admin::Endpoint::parse(options.admin);
  if (!endpoint) return std::unexpected(endpoint.error().context("--admin"));
  admin::ClientOptions client_options;
  client_options.timeout = std::chrono::milliseconds(static_cast<long>(options.timeout_seconds * 1000));
  return admin::AdminClient(*endpoint, client_options);
}

OutputFormat parseFormat(std::string_view name) {
  if (name == "json") return OutputFormat::kJson;
  if (name == "yaml") return OutputFormat::kYaml;
  return OutputFormat::kTable;
}

int reportError(const Error& error) {
  std::fprintf(stderr, "meshlockctl: %s\n", error.describe().c_str());
  return kExitError;
}

void printJson(const nlohmann::json& value, std::FILE* out) {
  const std::string text = value.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  std::fwrite(text.data(), 1, text.size(), out);
}

namespace {

bool plainScalarIsSafe(const std::string& text) {
  // Plain only for words that cannot be read as anything but a string: a
  // letter, '_' or '/' first, then [A-Za-z0-9_./@+-]; never a YAML 1.1 keyword.
  if (text.empty()) return false;
  const auto first = static_cast<unsigned char>(text.front());
  if (!(std::isalpha(first) || first == '_' || first == '/')) return false;
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (!(std::isalnum(u) || std::string_view("_./@+-").find(c) != std::string_view::npos)) return false;
  }
  static constexpr std::string_view kReserved[] = {
      "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false", "False",
      "FALSE", "on", "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL"};
  for (std::string_view word : kReserved) {
    if (text == word) return false;
  }
  return true;
}

std::string yamlString(const std::string& text) {
  if (plainScalarIsSafe(text)) return text;
  // A JSON string is a valid YAML double-quoted scalar.
  return nlohmann::json(text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string yamlScalar(const nlohmann::json& value) {
  if (value.is_string()) return yamlString(value.get<std::string>());
  if (value.is_null()) return "null";
  if (value.is_object()) return "{}";
  if (value.is_array()) return "[]";
  return value.dump();
}

bool isCollection(const nlohmann::json& value) {
  return (value.is_object() || value.is_array()) && !value.empty();
}

void emit(const nlohmann::json& value, int indent, std::string& out) {
  const std::string pad(static_cast<std::size_t>(indent), ' ');
  if (value.is_object()) {
    for (const auto& [key, item] : value.items()) {
      out += pad + yamlString(key) + ":";
      if (isCollection(item)) {
        out += "\n";
        emit(item, item.is_array() ? indent : indent + 2, out);
      } else {
        out += " " + yamlScalar(item) + "\n";
      }
    }
  } else if (value.is_array()) {
    for (const auto& item : value) {
      if (isCollection(item)) {
        // "- " then the first line of the nested block on the same line.
        std::string nested;
        emit(item, indent + 2, nested);
        out += pad + "- " + nested.substr(static_cast<std::size_t>(indent) + 2);
      } else {
        out += pad + "- " + yamlScalar(item) + "\n";
      }
    }
  } else {
    out += pad + yamlScalar(value) + "\n";
  }
}

std::size_t displayWidth(std::string_view text) {
  std::size_t width = 0;
  for (std::size_t i = 0; i < text.size();) {
    const auto lead = static_cast<unsigned char>(text[i]);
    std::size_t length = 1;
    char32_t code = lead;
    if (lead >= 0xf0) {
      length = 4;
      code = lead & 0x07;
    } else if (lead >= 0xe0) {
      length = 3;
      code = lead & 0x0f;
    } else if (lead >= 0xc0) {
      length = 2;
      code = lead & 0x1f;
    }
    for (std::size_t k = 1; k < length && i + k < text.size(); ++k) {
      code = (code << 6) | (static_cast<unsigned char>(text[i + k]) & 0x3f);
    }
    // Emoji (the lock) take two terminal cells; the rest of what we print, one.
    width += code >= 0x1f000 ? 2 : 1;
    i += length;
  }
  return width;
}

}  // namespace

std::string toYaml(const nlohmann::json& value) {
  std::string out;
  if (!isCollection(value)) return yamlScalar(value) + "\n";
  emit(value, 0, out);
  return out;
}

void printYaml(const nlohmann::json& value, std::FILE* out) {
  const std::string text = toYaml(value);
  std::fwrite(text.data(), 1, text.size(), out);
}

bool printStructured(const nlohmann::json& value, OutputFormat format) {
  switch (format) {
    case OutputFormat::kJson:
      printJson(value);
      return true;
    case OutputFormat::kYaml:
      printYaml(value);
      return true;
    case OutputFormat::kTable:
      return false;
  }
  return false;
}

Table::Table(std::vector<std::string> headers) : headers_(std::move(headers)) {}

void Table::addRow(std::vector<std::string> cells) {
  cells.resize(headers_.size());
  rows_.push_back(std::move(cells));
}

std::string Table::render() const {
  std::vector<std::size_t> widths(headers_.size(), 0);
  auto measure = [&](const std::vector<std::string>& row) {
    for (std::size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], displayWidth(row[i]));
  };
  measure(headers_);
  for (const auto& row : rows_) measure(row);
  std::string out;
  auto line = [&](const std::vector<std::string>& row) {
    std::string text;
    for (std::size_t i = 0; i < row.size(); ++i) {
      text += row[i];
      if (i + 1 < row.size()) text += std::string(widths[i] - displayWidth(row[i]) + 2, ' ');
    }
    while (!text.empty() && text.back() == ' ') text.pop_back();
    out += text + "\n";
  };
  line(headers_);
  for (const auto& row : rows_) line(row);
  return out;
}

std::string field(const nlohmann::json& object, std::string_view key) {
  if (!object.is_object()) return "-";
  auto it = object.find(std::string(key));
  if (it == object.end() || it->is_null()) return "-";
  if (it->is_string()) return it->get<std::string>().empty() ? "-" : it->get<std::string>();
  if (it->is_boolean()) return it->get<bool>() ? "yes" : "no";
  if (it->is_number_float()) {
    char buffer[32];
    std::snprintf(buffer, sizeof(buffer), "%.1f", it->get<double>());
    return buffer;
  }
  if (it->is_array()) {
    std::string joined;
    for (const auto& item : *it) {
      if (!joined.empty()) joined += ",";
      joined += item.is_string() ? item.get<std::string>() : item.dump();
    }
    return joined.empty() ? "-" : joined;
  }
  return it->dump();
}

std::string humanDuration(double seconds) {
  const bool negative = seconds < 0;
  auto total = static_cast<long long>(std::llround(std::fabs(seconds)));
  const long long days = total / 86400;
  const long long hours = total % 86400 / 3600;
  const long long minutes = total % 3600 / 60;
  const long long secs = total % 60;
  std::string out;
  if (days > 0) {
    out = std::to_string(days) + "d" + std::to_string(hours) + "h";
  } else if (hours > 0) {
    out = std::to_string(hours) + "h" + std::to_string(minutes) + "m";
  } else if (minutes > 0) {
    out = std::to_string(minutes) + "m" + std::to_string(secs) + "s";
  } else {
    out = std::to_string(secs) + "s";
  }
  return negative ? "-" + out : out;
}

std::string humanBytes(double bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int unit = 0;
  while (bytes >= 1024 && unit < 4) {
    bytes /= 1024;
    ++unit;
  }
  char buffer[32];
  if (unit == 0) {
    std::snprintf(buffer, sizeof(buffer), "%.0f B", bytes);
  } else {
    std::snprintf(buffer, sizeof(buffer), "%.1f %s", bytes, kUnits[unit]);
  }
  return buffer;
}

}  // namespace meshlock::cli
