// Operating-system helpers for meshsim (see system.h).
#include "system.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/unique_fd.h"

namespace meshsim {

using meshlock::fail;
using meshlock::failErrno;
using meshlock::Result;
using meshlock::Status;
using meshlock::UniqueFd;
namespace fs = std::filesystem;

Result<std::string> runTool(const std::vector<std::string>& argv, std::string_view input,
                            std::chrono::seconds timeout) {
  std::string what = argv.empty() ? "" : argv[0];
  for (size_t i = 1; i < argv.size() && i < 6; ++i) what += " " + argv[i];
  int inPipe[2], outPipe[2], errPipe[2];
  if (pipe2(inPipe, O_CLOEXEC) != 0) return failErrno(what + ": pipe");
  if (pipe2(outPipe, O_CLOEXEC) != 0) return failErrno(what + ": pipe");
  if (pipe2(errPipe, O_CLOEXEC) != 0) return failErrno(what + ": pipe");
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = fork();
  if (pid < 0) return failErrno(what + ": fork");
  if (pid == 0) {
    signal(SIGPIPE, SIG_DFL);
    dup2(inPipe[0], 0);
    dup2(outPipe[1], 1);
    dup2(errPipe[1], 2);
    execvp(args[0], args.data());
    std::fprintf(stderr, "exec %s: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
  close(inPipe[0]);
  close(outPipe[1]);
  close(errPipe[1]);
  UniqueFd in(inPipe[1]), out(outPipe[0]), err(errPipe[0]);
  fcntl(in.get(), F_SETFL, O_NONBLOCK);
  std::string stdoutText, stderrText;
  size_t written = 0;
  if (input.empty()) in.reset();
  auto deadline = std::chrono::steady_clock::now() + timeout;
  bool timedOut = false;
  while (out || err) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timedOut = true;
      break;
    }
    pollfd fds[3] = {{out.get(), POLLIN, 0}, {err.get(), POLLIN, 0}, {in.get(), POLLOUT, 0}};
    if (poll(fds, 3, static_cast<int>(left.count())) < 0 && errno != EINTR) break;
    char buf[4096];
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        (i == 0 ? stdoutText : stderrText).append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        (i == 0 ? out : err).reset();
      }
    }
    if (in && (fds[2].revents & (POLLOUT | POLLERR | POLLHUP))) {
      ssize_t n = write(in.get(), input.data() + written, input.size() - written);
      if (n > 0) written += static_cast<size_t>(n);
      if (n < 0 && errno != EAGAIN && errno != EINTR) in.reset();
      if (written == input.size()) in.reset();
    }
  }
  if (timedOut) kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timedOut) return fail(fmt::format("{}: timed out after {}s", what, timeout.count()));
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    while (!stderrText.empty() && stderrText.back() == '\n') stderrText.pop_back();
    return fail(fmt::format("{}: {}", what, stderrText.empty() ? "failed" : stderrText));
  }
  return stdoutText;
}

Result<std::string> readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return failErrno("read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Status writeFileAtomic(const std::string& path, std::string_view content, mode_t mode) {
  std::string tmp = fmt::format("{}.tmp.{}", path, getpid());
  UniqueFd fd(open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (!fd) return failErrno("create " + tmp);
  size_t off = 0;
  while (off < content.size()) {
    ssize_t n = write(fd.get(), content.data() + off, content.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      unlink(tmp.c_str());
      return failErrno("write " + tmp, e);
    }
    off += static_cast<size_t>(n);
  }
  if (fsync(fd.get()) != 0 && errno != EINVAL) {
    int e = errno;
    unlink(tmp.c_str());
    return failErrno("fsync " + tmp, e);
  }
  fd.reset();
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    unlink(tmp.c_str());
    return failErrno("rename " + tmp + " to " + path, e);
  }
  return {};
}

Status makeDirs(const std::string& path, mode_t mode) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec) return failErrno("mkdir " + path, ec.value());
  (void)mode;
  return {};
}

bool pathExists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

std::vector<std::string> listDir(const std::string& path) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(path, ec)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

Status removeFlatDir(const std::string& path) {
  for (const auto& name : listDir(path)) {
    std::string file = path + "/" + name;
    if (unlink(file.c_str()) != 0 && errno != ENOENT) return failErrno("unlink " + file);
  }
  if (rmdir(path.c_str()) != 0 && errno != ENOENT) return failErrno("rmdir " + path);
  return {};
}

std::vector<MountEntry> mounts() {
  std::vector<MountEntry> out;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // id parent major:minor root mountpoint options [optional...] - fstype source superoptions
    std::istringstream ss(line);
    std::string id, parent, dev, root, point, field;
    ss >> id >> parent >> dev >> root >> point;
    while (ss >> field && field != "-") {
    }
    std::string fsType;
    ss >> fsType;
    // Mount points escape spaces as \040.
    std::string unescaped;
    for (size_t i = 0; i < point.size(); ++i) {
      if (point[i] == '\\' && i + 3 < point.size()) {
        unescaped += static_cast<char>(std::stoi(point.substr(i + 1, 3), nullptr, 8));
        i += 3;
      } else {
        unescaped += point[i];
      }
    }
    out.push_back({unescaped, fsType});
  }
  return out;
}

std::optional<std::string> findCgroup2() {
  auto all = mounts();
  std::optional<std::string> found;
  for (const auto& m : all) {
    if (m.fsType != "cgroup2") continue;
    if (m.mountPoint == "/sys/fs/cgroup") return m.mountPoint;
    if (!found) found = m.mountPoint;
  }
  // A cgroup2 mount hidden by a later mount on top of it would not be usable.
  if (found) {
    for (const auto& m : all)
      if (m.mountPoint == *found && m.fsType != "cgroup2") found.reset();
  }
  return found;
}

bool isBpffsMounted(const std::string& path) {
  bool mounted = false;
  for (const auto& m : mounts())
    if (m.mountPoint == path) mounted = m.fsType == "bpf";  // the last mount on a path is the visible one
  return mounted;
}

Status mountFs(const std::string& fsType, const std::string& path) {
  if (auto st = makeDirs(path); !st) return st;
  if (mount(fsType.c_str(), path.c_str(), fsType.c_str(), 0, nullptr) != 0)
    return failErrno(fmt::format("mount -t {} {}", fsType, path));
  return {};
}

Status unmountFs(const std::string& path) {
  if (umount2(path.c_str(), 0) != 0) return failErrno("umount " + path);
  return {};
}

Status joinCgroup(const std::string& cgroupDir) {
  std::string procs = cgroupDir + "/cgroup.procs";
  UniqueFd fd(open(procs.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return failErrno("open " + procs);
  std::string pid = std::to_string(getpid());
  if (write(fd.get(), pid.data(), pid.size()) < 0) return failErrno("join cgroup " + cgroupDir);
  return {};
}

static bool cgroupPopulated(const std::string& cgroupDir) {
  auto events = readFile(cgroupDir + "/cgroup.events");
  if (!events) return false;
  return events->find("populated 1") != std::string::npos;
}

Status killCgroupTree(const std::string& cgroupDir, std::chrono::milliseconds timeout) {
  if (!pathExists(cgroupDir) || !cgroupPopulated(cgroupDir)) return {};
  std::string killFile = cgroupDir + "/cgroup.kill";
  if (UniqueFd fd(open(killFile.c_str(), O_WRONLY | O_CLOEXEC)); fd) {
    if (write(fd.get(), "1", 1) < 0) {
      // Fall through to signalling each member below.
    }
  }
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (cgroupPopulated(cgroupDir)) {
    // Kernels without cgroup.kill (before 5.14): signal each member we find.
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(cgroupDir, ec); !ec && it != fs::recursive_directory_iterator();
         it.increment(ec)) {
      if (it->path().filename() != "cgroup.procs") continue;
      std::ifstream procs(it->path());
      pid_t pid;
      while (procs >> pid) kill(pid, SIGKILL);
    }
    if (std::chrono::steady_clock::now() > deadline)
      return fail(fmt::format("processes remain in cgroup {} after {}ms", cgroupDir, timeout.count()));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return {};
}

Status removeCgroupTree(const std::string& cgroupDir) {
  if (!pathExists(cgroupDir)) return {};
  std::vector<std::string> dirs;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(cgroupDir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (it->is_directory(ec) && !it->is_symlink(ec)) dirs.push_back(it->path().string());
  }
  // Deepest first: a longer path is never the parent of a shorter one.
  std::sort(dirs.begin(), dirs.end(), [](const auto& a, const auto& b) { return a.size() > b.size(); });
  dirs.push_back(cgroupDir);
  for (const auto& dir : dirs) {
    for (int attempt = 0;; ++attempt) {
      if (rmdir(dir.c_str()) == 0 || errno == ENOENT) break;
      // A just-killed process can keep a cgroup busy for a moment.
      if (errno != EBUSY || attempt >= 100) return failErrno("rmdir " + dir);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  return {};
}

std::string processCmdline(pid_t pid) {
  auto text = readFile(fmt::format("/proc/{}/cmdline", pid));
  if (!text) return "";
  std::replace(text->begin(), text->end(), '\0', ' ');
  while (!text->empty() && text->back() == ' ') text->pop_back();
  return *text;
}

bool processAlive(pid_t pid) {
  if (pid <= 0) return false;
  if (kill(pid, 0) != 0 && errno == ESRCH) return false;
  // A zombie is not alive for our purposes.
  auto stat = readFile(fmt::format("/proc/{}/stat", pid));
  if (!stat) return false;
  size_t paren = stat->rfind(')');
  return paren == std::string::npos || paren + 2 >= stat->size() || (*stat)[paren + 2] != 'Z';
}

std::vector<pid_t> processesInNetns(const std::string& netnsPath) {
  std::vector<pid_t> pids;
  struct stat target;
  if (stat(netnsPath.c_str(), &target) != 0) return pids;
  for (const auto& name : listDir("/proc")) {
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    struct stat st;
    if (stat(("/proc/" + name + "/ns/net").c_str(), &st) != 0) continue;
    if (st.st_ino == target.st_ino && st.st_dev == target.st_dev) pids.push_back(std::stoi(name));
  }
  return pids;
}

}  // namespace meshsim
