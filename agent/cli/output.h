// Shared plumbing for meshlockctl's live commands: the --admin and -o options,
// fetching from the admin API, and printing a human table, JSON or YAML.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "admin/client.h"
#include "common/error.h"

namespace meshlock::cli {

// Exit codes scripts can rely on.
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;  // agent unreachable, or it answered with an error
inline constexpr int kExitUsage = 2;  // bad arguments

enum class OutputFormat { kTable, kJson, kYaml };

struct LiveOptions {
  std::string admin{admin::kDefaultAdminEndpoint};
  std::string output = "table";
  double timeout_seconds = 5;
};

// Adds --admin, --timeout and -o/--output (choices: `formats`, default "table").
void addLiveOptions(CLI::App& sub, LiveOptions& options,
                    std::vector<std::string> formats = {"table", "json", "yaml"});

// Records a command's -o choices for shell completion (addLiveOptions does it).
void declareOutputFormats(const CLI::App& sub, std::vector<std::string> formats);
// The -o choices each command declared, for shell completion.
[[nodiscard]] const std::map<std::string, std::vector<std::string>>& outputFormatsByCommand();

// Builds the client from --admin; prints the problem and returns nullopt on a bad endpoint.
[[nodiscard]] Result<admin::AdminClient> makeClient(const LiveOptions& options);

[[nodiscard]] OutputFormat parseFormat(std::string_view name);

// Prints "meshlockctl: <message>" to stderr; returns kExitError.
int reportError(const Error& error);

// Prints a JSON value as JSON (indented) or YAML.
void printJson(const nlohmann::json& value, std::FILE* out = stdout);
void printYaml(const nlohmann::json& value, std::FILE* out = stdout);
[[nodiscard]] std::string toYaml(const nlohmann::json& value);

// Prints `value` in the chosen machine format; returns false for kTable.
bool printStructured(const nlohmann::json& value, OutputFormat format);

// A human table: columns padded to their widest cell (display width, so the
// lock mark lines up), two spaces apart.
class Table {
 public:
  explicit Table(std::vector<std::string> headers);
  void addRow(std::vector<std::string> cells);
  [[nodiscard]] std::string render() const;
  [[nodiscard]] bool empty() const { return rows_.empty(); }

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

// Reads a JSON field for display: strings as is, numbers and booleans printed,
// missing or null as "-".
[[nodiscard]] std::string field(const nlohmann::json& object, std::string_view key);

// "3d4h", "5m12s", "42s"
[[nodiscard]] std::string humanDuration(double seconds);
// "1.2 MiB", "512 B"
[[nodiscard]] std::string humanBytes(double bytes);

inline constexpr std::string_view kLockMark = "🔒";
inline constexpr std::string_view kOpenMark = "⚠";

}  // namespace meshlock::cli
