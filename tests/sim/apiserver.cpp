// Starting meshsim's API server for a run and talking to it.
#include "apiserver.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cstdlib>
#include <filesystem>

#include "render.h"
#include "state.h"
#include "system.h"

namespace meshsim {
namespace {

std::string exeDir() {
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : exe.parent_path().string();
}

std::string toolDir() { return exeDir() + "/meshsim-apiserver"; }
std::string script() { return toolDir() + "/main.py"; }
constexpr const char* kPython = "/usr/bin/python3";  // Debian's: it has PyYAML

}  // namespace

std::string kubeDir(std::string_view run) { return fmt::format("{}/{}/kube", kStateRoot, run); }
std::string adminKubeconfig(std::string_view run) { return kubeDir(run) + "/admin.kubeconfig"; }
std::string agentKubeconfig(std::string_view run) { return kubeDir(run) + "/agent.kubeconfig"; }

int runApiServerTool(const std::vector<std::string>& args) {
  std::vector<std::string> argv{kPython, script()};
  argv.insert(argv.end(), args.begin(), args.end());
  std::fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) return 1;
  if (pid == 0) {
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    execv(kPython, cargv.data());
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

meshlock::Status startApiServer(const Layout& layout) {
  std::string dir = kubeDir(layout.run);
  if (!pathExists(dir + "/config.json")) {
    if (auto st = makeDirs(dir, 0700); !st) return st;
    if (auto st = writeFileAtomic(dir + "/seed.yaml", renderAllManifests(layout)); !st) return st;
    auto out = runTool({kPython, script(), "init", dir, "--run", layout.run, "--fabric-netns",
                        std::string(kNetnsDir) + "/" + layout.fabricNetns, "--rbac", toolDir() + "/rbac.yaml", "--rbac", toolDir() + "/ca-rbac.yaml",
                        "--crds", toolDir() + "/crds.yaml", "--seed", dir + "/seed.yaml", "--state",
                        stateFile(layout.run), "--manifest-dir", layout.manifestDir(), "--meshsim",
                        exeDir() + "/meshsim", "--cgroup", layout.runCgroup + "/apiserver"},
                       {}, std::chrono::seconds(60));
    if (!out) return std::unexpected(out.error().context("apiserver init"));
  }
  if (int rc = runApiServerTool({"start", dir}); rc != 0)
    return meshlock::fail(fmt::format("the API server did not start (see {}/apiserver.log)", dir));
  return {};
}

meshlock::Status stopApiServer(std::string_view run) {
  if (!pathExists(kubeDir(run) + "/config.json")) return {};
  if (int rc = runApiServerTool({"stop", kubeDir(run)}); rc != 0) return meshlock::fail("apiserver stop failed");
  return {};
}

nlohmann::json apiServerStatus(std::string_view run) {
  std::string dir = kubeDir(run);
  nlohmann::json out = {{"running", false}, {"pid", nullptr}, {"kubeconfig", adminKubeconfig(run)},
                        {"agentKubeconfig", agentKubeconfig(run)}, {"serviceAccountDir", dir + "/serviceaccount"},
                        {"log", dir + "/apiserver.log"}, {"url", nullptr}, {"fabricUrl", nullptr}};
  if (auto cfg = readFile(dir + "/config.json")) {
    auto j = nlohmann::json::parse(*cfg, nullptr, false);
    if (j.is_object() && j.contains("hostPort")) out["url"] = fmt::format("https://127.0.0.1:{}", j["hostPort"].get<int>());
    if (j.is_object() && j.contains("fabricNetns") && !j["fabricNetns"].is_null())
      out["fabricUrl"] = "https://172.18.0.1:6443";
  }
  if (auto info = readFile(dir + "/apiserver.json")) {
    auto j = nlohmann::json::parse(*info, nullptr, false);
    if (j.is_object() && j.contains("pid")) {
      int pid = j["pid"].get<int>();
      if (processAlive(pid) && processCmdline(pid).find("meshsim-apiserver/main.py") != std::string::npos) {
        out["running"] = true;
        out["pid"] = pid;
      }
    }
  }
  return out;
}

std::string kubectlPath() {
  if (const char* env = std::getenv("KUBECTL"); env && *env) return env;
  std::string debian = exeDir() + "/../tools/kubernetes-client/usr/bin/kubectl";
  if (pathExists(debian)) return debian;
  return "kubectl";
}

meshlock::Result<std::string> kubectl(std::string_view run, std::vector<std::string> args, std::string_view input) {
  std::vector<std::string> argv{kubectlPath(), "--kubeconfig", adminKubeconfig(run), "--cache-dir",
                                kubeDir(run) + "/kubectl-cache"};
  argv.insert(argv.end(), args.begin(), args.end());
  return runTool(argv, input, std::chrono::seconds(60));
}

meshlock::Status flushApiServer(std::string_view run) {
  auto out = runTool({kPython, script(), "ctl", kubeDir(run), "POST", "/meshsim/flush"}, {}, std::chrono::seconds(60));
  if (!out) return std::unexpected(out.error().context("apiserver flush"));
  if (out->find("\"flushed\": true") == std::string::npos)
    return meshlock::fail("apiserver flush: the mirror or the service rules did not catch up: " + *out);
  return {};
}

}  // namespace meshsim
