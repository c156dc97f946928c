// Run state files, locks and run selection (see state.h).
#include "state.h"

#include <fcntl.h>
#include <sys/file.h>

#include <algorithm>
#include <cstdlib>
#include <fmt/format.h>
#include <set>

#include "system.h"

namespace meshsim {

using json = nlohmann::json;
using meshlock::fail;
using meshlock::failErrno;
using meshlock::Result;
using meshlock::Status;

std::string stateFile(std::string_view run) { return fmt::format("{}/{}/state.json", kStateRoot, run); }

Status saveState(const Layout& layout, std::string_view phase) {
  json j = toJson(layout);
  j["phase"] = phase;
  return writeFileAtomic(stateFile(layout.run), j.dump(2) + "\n", 0600);
}

Result<RunState> loadState(std::string_view run) {
  auto text = readFile(stateFile(run));
  if (!text) return std::unexpected(text.error().context("run " + std::string(run)));
  json j = json::parse(*text, nullptr, false);
  if (j.is_discarded()) return fail(fmt::format("run {}: {} is not valid JSON", run, stateFile(run)));
  auto layout = layoutFromJson(j);
  if (!layout) return std::unexpected(layout.error().context(stateFile(run)));
  if (layout->run != run) return fail(fmt::format("{} describes run {}", stateFile(run), layout->run));
  return RunState{std::move(*layout), j.value("phase", std::string(kPhaseCreating))};
}

std::vector<std::string> listRuns() {
  std::vector<std::string> runs;
  for (const auto& name : listDir(std::string(kStateRoot)))
    if (isRunName(name) && pathExists(std::string(kStateRoot) + "/" + name + "/state.json")) runs.push_back(name);
  return runs;
}

std::vector<std::string> listRunsWithLeftovers() {
  std::set<std::string> runs;
  for (const auto& name : listDir(std::string(kStateRoot)))
    if (isRunName(name)) runs.insert(name);
  for (const auto& name : listDir(std::string(kNetnsDir))) {
    if (!name.starts_with("msim-")) continue;
    size_t sep = name.find('_');
    if (sep != std::string::npos && isRunName(name.substr(5, sep - 5))) runs.insert(name.substr(5, sep - 5));
  }
  if (auto cg = findCgroup2()) {
    for (const auto& name : listDir(*cg))
      if (name.starts_with("meshsim-") && isRunName(name.substr(8))) runs.insert(name.substr(8));
  }
  return {runs.begin(), runs.end()};
}

Result<std::string> resolveRun(const std::string& nameOption) {
  std::string name = nameOption;
  if (name.empty()) {
    if (const char* env = std::getenv("MESHSIM_NAME"); env && *env) name = env;
  }
  if (!name.empty()) {
    if (!isRunName(name)) return fail(fmt::format("run name \"{}\" is not valid ([a-z0-9-], at most 24)", name));
    if (!pathExists(stateFile(name))) return fail(fmt::format("no meshsim run named \"{}\"", name));
    return name;
  }
  auto runs = listRuns();
  if (runs.empty()) return fail("no meshsim run exists (start one with `meshsim up SPEC.yaml`)");
  if (runs.size() > 1) {
    std::string list;
    for (const auto& r : runs) list += (list.empty() ? "" : ", ") + r;
    return fail(fmt::format("{} runs exist ({}): pass --name or set MESHSIM_NAME", runs.size(), list));
  }
  return runs.front();
}

Result<FileLock> FileLock::acquire(const std::string& path) {
  meshlock::UniqueFd fd(open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) return failErrno("open lock " + path);
  // Bounded: a stuck holder should produce an error, not a hang.
  for (int i = 0; i < 600; ++i) {
    if (flock(fd.get(), LOCK_EX | LOCK_NB) == 0) return FileLock(std::move(fd));
    if (errno != EWOULDBLOCK) return failErrno("flock " + path);
    usleep(100 * 1000);
  }
  return fail("timed out after 60s waiting for lock " + path);
}

Result<FileLock> lockRun(std::string_view run) {
  return FileLock::acquire(fmt::format("{}/{}/lock", kStateRoot, run));
}

Result<FileLock> lockGlobal() {
  if (auto st = makeDirs(std::string(kStateRoot)); !st) return std::unexpected(st.error());
  return FileLock::acquire(std::string(kStateRoot) + "/.lock");
}

static std::string mountsFile() { return std::string(kStateRoot) + "/mounts.json"; }

std::vector<std::string> madeMounts() {
  auto text = readFile(mountsFile());
  if (!text) return {};
  json j = json::parse(*text, nullptr, false);
  if (!j.is_array()) return {};
  std::vector<std::string> out;
  for (const auto& p : j)
    if (p.is_string()) out.push_back(p);
  return out;
}

Status recordMount(const std::string& path, bool made) {
  auto list = madeMounts();
  list.erase(std::remove(list.begin(), list.end(), path), list.end());
  if (made) list.push_back(path);
  if (list.empty()) {
    if (unlink(mountsFile().c_str()) != 0 && errno != ENOENT) return failErrno("unlink " + mountsFile());
    return {};
  }
  return writeFileAtomic(mountsFile(), json(list).dump() + "\n", 0600);
}

}  // namespace meshsim
