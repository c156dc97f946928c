// meshsim token --namespace NS --service-account SA [--pod NAME] [--audience A ...] [--file PATH] [--name RUN]:
// a service-account token from the run's API server (a TokenRequest), bound to a
// pod when asked, as the kubelet's projected tokens are; a CA checks it with a TokenReview.
#include "apiserver.h"
#include "cli.h"
#include "common/command.h"
#include "system.h"

namespace meshsim {
namespace {

struct TokenOptions {
  std::string run;
  std::string ns;
  std::string serviceAccount;
  std::string pod;
  std::vector<std::string> audiences;
  std::string file;
  int expirationSeconds = 86400;
};

int token(const TokenOptions& o) {
  if (!requireRoot()) return kExitFailed;
  auto run = resolveRun(o.run);
  if (!run) return report(run.error(), kExitUsage);
  std::string dir = kubeDir(*run);
  if (!pathExists(dir + "/config.json")) return report({fmt::format("run {} has no API server", *run)}, kExitUsage);
  std::vector<std::string> args{"token",           dir, "--namespace", o.ns, "--service-account", o.serviceAccount,
                                "--expiration-seconds", std::to_string(o.expirationSeconds)};
  if (!o.pod.empty()) args.insert(args.end(), {"--pod", o.pod});
  for (const auto& audience : o.audiences) args.insert(args.end(), {"--audience", audience});
  if (!o.file.empty()) args.insert(args.end(), {"--file", o.file});
  return runApiServerTool(args);
}

const meshlock::CommandRegistrar kToken{{
    "token",
    "print a service-account token from the run's API server (--pod: bound to that pod, as a projected token)",
    [](CLI::App& sub) -> meshlock::CommandAction {
      auto o = std::make_shared<TokenOptions>();
      addNameOption(sub, o->run);
      sub.add_option("-n,--namespace", o->ns, "the service account's namespace")->required();
      sub.add_option("--service-account", o->serviceAccount, "the service account")->required();
      sub.add_option("--pod", o->pod,
                     "bind the token to this pod of the namespace (it must run as the service account): a TokenReview "
                     "then names the pod and its node, and the token stops working when the pod goes");
      sub.add_option("--audience", o->audiences, "an audience, repeatable (default: the API server's own)")
          ->allow_extra_args(false);
      sub.add_option("--expiration-seconds", o->expirationSeconds, "lifetime, at least 600 (nothing refreshes it)")
          ->capture_default_str();
      sub.add_option("--file", o->file, "write the token to this file (0600) and print its path");
      return [o] { return token(*o); };
    },
}};

}  // namespace
}  // namespace meshsim
