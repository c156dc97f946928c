// meshlockctl certs: every identity the agent holds a certificate for, when it
// expires, and a warning for any that is close to expiry or already expired.
#include <memory>

#include "cli/output.h"
#include "common/command.h"

namespace meshlock::cli {
namespace {

struct CertsOptions {
  LiveOptions live;
  double warn_within_seconds = 3600;
  bool fail_on_warning = false;
};

inline constexpr int kExitCertificateWarning = 3;

double numberOr(const nlohmann::json& object, std::string_view key, double fallback) {
  auto it = object.find(std::string(key));
  return it != object.end() && it->is_number() ? it->get<double>() : fallback;
}

// "EXPIRED", "WARN" or "OK", and why.
std::pair<std::string, std::string> judge(const nlohmann::json& cert, double warn_within) {
  // From a remote CA: not issued yet (its pods are not served), or a renewal failing.
  const std::string state = field(cert, "state");
  const std::string last_error = cert.contains("last_error") && cert["last_error"].is_string()
                                     ? cert["last_error"].get<std::string>() : std::string();
  if (state == "pending") return {"PENDING", "no certificate yet, its pods are not served"};
  if (state == "failed") return {"FAILED", "no certificate, its pods are not served: " + last_error};
  const double left = numberOr(cert, "expires_in_seconds", 1e18);
  const double lifetime = numberOr(cert, "lifetime_seconds", 0);
  if (left <= 0) return {"EXPIRED", "expired " + humanDuration(-left) + " ago"};
  if (left < warn_within) return {"WARN", "expires in " + humanDuration(left)};
  // Istio rotates at half the lifetime: under a quarter left means rotation is failing.
  if (lifetime > 0 && left < lifetime / 4) {
    return {"WARN", "expires in " + humanDuration(left) + ", under a quarter of its lifetime: is rotation failing?"};
  }
  if (state == "renewing" && !last_error.empty()) return {"RENEWING", "renewal failing: " + last_error};
  return {"OK", ""};
}

int runCerts(const CertsOptions& options) {
  auto client = makeClient(options.live);
  if (!client) return reportError(client.error());
  auto answer = client->getJson("/certs");
  if (!answer) return reportError(answer.error());
  const nlohmann::json certs = answer->value("certificates", nlohmann::json::array());

  std::vector<std::string> warnings;
  for (const auto& cert : certs) {
    auto [state, why] = judge(cert, options.warn_within_seconds);
    if (state != "OK" && state != "PENDING") warnings.push_back(state + ": " + field(cert, "identity") + " " + why);
  }
  if (!printStructured(*answer, parseFormat(options.live.output))) {
    Table table({"IDENTITY", "SERIAL", "NOT BEFORE", "NOT AFTER", "EXPIRES IN", "PODS", "STATUS"});
    for (const auto& cert : certs) {
      const double left = numberOr(cert, "expires_in_seconds", 0);
      std::string pods = "0";
      if (cert.contains("pods") && cert["pods"].is_array()) pods = std::to_string(cert["pods"].size());
      table.addRow({field(cert, "identity"), field(cert, "serial"), field(cert, "not_before"),
                    field(cert, "not_after"), cert.contains("expires_in_seconds") ? humanDuration(left) : "-",
                    pods, judge(cert, options.warn_within_seconds).first});
    }
    std::fputs(table.render().c_str(), stdout);
    if (answer->contains("roots") && (*answer)["roots"].is_array() && !(*answer)["roots"].empty()) {
      std::fputs("\ntrust bundle:\n", stdout);
      Table roots({"SUBJECT", "SERIAL", "NOT AFTER", "EXPIRES IN"});
      for (const auto& root : (*answer)["roots"]) {
        roots.addRow({field(root, "subject"), field(root, "serial"), field(root, "not_after"),
                      root.contains("expires_in_seconds")
                          ? humanDuration(numberOr(root, "expires_in_seconds", 0))
                          : "-"});
      }
      std::fputs(roots.render().c_str(), stdout);
    }
  }
  for (const std::string& warning : warnings) std::fprintf(stderr, "warning: %s\n", warning.c_str());
  return warnings.empty() || !options.fail_on_warning ? kExitOk : kExitCertificateWarning;
}

const CommandRegistrar kCerts{{
    "certs",
    "Workload certificates: identity, serial, validity; warns when one is close to expiry",
    [](CLI::App& sub) -> CommandAction {
      auto options = std::make_shared<CertsOptions>();
      addLiveOptions(sub, options->live);
      sub.add_option("--warn-within", options->warn_within_seconds,
                     "warn when a certificate expires within this many seconds (default 3600)")
          ->check(CLI::NonNegativeNumber);
      sub.add_flag("--fail-on-warning", options->fail_on_warning,
                   "exit 3 when a certificate is expired or close to expiry");
      return [options] { return runCerts(*options); };
    },
}};

}  // namespace
}  // namespace meshlock::cli
