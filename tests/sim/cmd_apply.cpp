// meshsim apply FILE / meshsim delete FILE: adds, replaces or removes extra
// manifests (mesh resources) of a run live. An object is identified by its
// API group, kind, namespace and name, as the API server does.
#include <iostream>
#include <sstream>

#include "cli.h"
#include "cluster.h"
#include "common/command.h"
#include "render.h"
#include "system.h"

namespace meshsim {
namespace {

std::string identity(const YAML::Node& m) {
  std::string apiVersion = m["apiVersion"].Scalar();
  size_t slash = apiVersion.find('/');
  std::string group = slash == std::string::npos ? "" : apiVersion.substr(0, slash);
  std::string ns = m["metadata"]["namespace"] ? m["metadata"]["namespace"].Scalar() : "";
  return group + "|" + m["kind"].Scalar() + "|" + ns + "|" + m["metadata"]["name"].Scalar();
}

std::string describe(const YAML::Node& m) {
  std::string ns = m["metadata"]["namespace"] ? m["metadata"]["namespace"].Scalar() + "/" : "";
  return m["kind"].Scalar() + "/" + ns + m["metadata"]["name"].Scalar();
}

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
  auto lock = lockRun(*run);
  if (!lock) return report(lock.error(), kExitFailed);
  auto state = loadState(*run);
  if (!state) return report(state.error(), kExitFailed);
  auto& manifests = state->layout.spec.manifests;
  int rc = kExitOk;
  for (const auto& doc : *docs) {
    auto it = std::find_if(manifests.begin(), manifests.end(),
                           [&](const YAML::Node& m) { return identity(m) == identity(doc); });
    if (remove) {
      if (it == manifests.end()) {
        if (!ignoreNotFound) {
          std::fprintf(stderr, "meshsim: %s not found\n", describe(doc).c_str());
          rc = kExitFailed;
        }
        continue;
      }
      manifests.erase(it);
      std::printf("%s deleted\n", describe(doc).c_str());
    } else if (it != manifests.end()) {
      *it = YAML::Clone(doc);
      std::printf("%s configured\n", describe(doc).c_str());
    } else {
      manifests.push_back(YAML::Clone(doc));
      std::printf("%s created\n", describe(doc).c_str());
    }
  }
  if (auto st = saveState(state->layout, state->phase); !st) return report(st.error(), kExitFailed);
  if (auto st = publishManifests(state->layout); !st) return report(st.error(), kExitFailed);
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
