// meshsim apply FILE / meshsim delete FILE: adds, replaces or removes objects
// (mesh resources) of a run live, through the run's API server.
#include <iostream>
#include <sstream>

#include "apiserver.h"
#include "cli.h"
#include "cluster.h"
#include "common/command.h"
#include "render.h"
#include "system.h"

namespace meshsim {
namespace {

std::string describe(const YAML::Node& m) {
  std::string ns = m["metadata"]["namespace"] ? m["metadata"]["namespace"].Scalar() + "/" : "";
  return m["kind"].Scalar() + "/" + ns + m["metadata"]["name"].Scalar();
}

// kubectl's "<resource>.<group>/<name> created|configured|unchanged" lines, one per
// document in order, in meshsim's own words ("Kind/ns/name created|configured").
void printApplied(const std::vector<YAML::Node>& docs, const std::string& out) {
  std::vector<std::string> lines;
  std::stringstream ss(out);
  for (std::string line; std::getline(ss, line);)
    if (!line.empty()) lines.push_back(line);
  if (lines.size() != docs.size()) {
    std::printf("%s", out.c_str());
    return;
  }
  for (size_t i = 0; i < docs.size(); ++i) {
    std::string verb = lines[i].substr(lines[i].rfind(' ') + 1);
    std::printf("%s %s\n", describe(docs[i]).c_str(), verb == "created" ? "created" : "configured");
  }
}

// Through the run's API server (kubectl with the admin kubeconfig), then waits
// until the manifest mirror and the service rules show the change, as before.
int change(const std::string& name, const std::string& file, bool remove, bool ignoreNotFound) {
  if (!requireRoot()) return kExitFailed;
  meshlock::Result<std::string> text;
  if (file == "-") {
    std::stringstream ss;
    ss << std::cin.rdbuf();
    text = ss.str();
  } else {
    text = readFile(file);
  }
  if (!text) return report(text.error(), kExitUsage);
  auto docs = parseManifests(*text, file);
  if (!docs) return report(docs.error(), kExitUsage);
  auto run = resolveRun(name);
  if (!run) return report(run.error(), kExitUsage);
  int rc = kExitOk;
  if (remove) {
    for (const auto& doc : *docs) {
      YAML::Emitter one;
      one << doc;
      std::vector<std::string> args{"delete", "-f", "-", "--wait=false"};
      if (ignoreNotFound) args.push_back("--ignore-not-found");
      auto out = kubectl(*run, args, one.c_str());
      if (!out) {
        std::string why = out.error().describe();
        if (why.find("NotFound") != std::string::npos || why.find("not found") != std::string::npos)
          std::fprintf(stderr, "meshsim: %s not found\n", describe(doc).c_str());
        else
          report(out.error(), kExitFailed);
        rc = kExitFailed;
      } else if (!out->empty()) {
        std::printf("%s deleted\n", describe(doc).c_str());
      }
    }
  } else {
    auto out = kubectl(*run, {"apply", "-f", "-"}, *text);
    if (!out) return report(out.error(), kExitFailed);
    printApplied(*docs, *out);
  }
  if (auto st = flushApiServer(*run); !st) return report(st.error(), kExitFailed);
  return rc;
}

const meshlock::CommandRegistrar kApply{{
    "apply",
    "add or replace extra manifests (mesh resources) of a run",
    [](CLI::App& sub) -> meshlock::CommandAction {
      auto name = std::make_shared<std::string>();
      auto file = std::make_shared<std::string>();
      addNameOption(sub, *name);
      sub.add_option("file", *file, "YAML file, - for stdin")->required();
      return [=] { return change(*name, *file, false, false); };
    },
}};

const meshlock::CommandRegistrar kDelete{{
    "delete",
    "remove extra manifests of a run",
    [](CLI::App& sub) -> meshlock::CommandAction {
      auto name = std::make_shared<std::string>();
      auto file = std::make_shared<std::string>();
      auto ignore = std::make_shared<bool>(false);
      addNameOption(sub, *name);
      sub.add_option("file", *file, "YAML file, - for stdin")->required();
      sub.add_flag("--ignore-not-found", *ignore, "succeed when an object is not there");
      return [=] { return change(*name, *file, true, *ignore); };
    },
}};

}  // namespace
}  // namespace meshsim
