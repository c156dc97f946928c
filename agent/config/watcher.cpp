// inotify watch of a manifest directory, debounced, keeping the last good state.
#include "config/watcher.h"

#include <poll.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <array>

namespace meshlock::config {
namespace {

constexpr uint32_t kWatchMask = IN_CREATE | IN_DELETE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_FROM |
                                IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ATTRIB;

}  // namespace

Result<std::unique_ptr<ManifestWatcher>> ManifestWatcher::start(std::filesystem::path root, Options options) {
  UniqueFd fd(inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  if (!fd) return failErrno("manifests " + root.string() + ": inotify_init1");
  std::unique_ptr<ManifestWatcher> w(new ManifestWatcher(std::move(root), options, std::move(fd)));
  if (auto st = w->watchTree(); !st) return std::unexpected(st.error());
  if (auto st = w->files_.reload(w->root_); !st) return std::unexpected(st.error());
  w->current_ = ManifestUpdate{w->files_.state(), w->files_.errors(), 1};
  for (const ManifestError& e : w->current_.errors) spdlog::warn("manifests: {}", e.describe());
  return w;
}

Status ManifestWatcher::watchTree() {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path dir = fs::is_directory(root_, ec) ? root_ : root_.parent_path();
  if (dir.empty()) dir = ".";
  if (inotify_add_watch(inotify_.get(), dir.c_str(), kWatchMask) < 0) {
    return failErrno("manifests " + dir.string() + ": inotify_add_watch");
  }
  if (dir != root_) return {};
  // Adding a watch twice returns the same descriptor, so rewalking after each change is harmless.
  fs::recursive_directory_iterator it(dir, fs::directory_options::follow_directory_symlink, ec);
  for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_directory(ec)) continue;
    if (it->path().filename().string().starts_with(".")) {
      it.disable_recursion_pending();
      continue;
    }
    if (inotify_add_watch(inotify_.get(), it->path().c_str(), kWatchMask) < 0) {
      spdlog::warn("manifests {}: inotify_add_watch: {}", it->path().string(), std::strerror(errno));
    }
  }
  return {};
}

bool ManifestWatcher::drainEvents() {
  alignas(inotify_event) std::array<char, 16384> buf;
  bool any = false;
  while (true) {
    ssize_t n = ::read(inotify_.get(), buf.data(), buf.size());
    if (n <= 0) break;
    any = true;
  }
  return any;
}

void ManifestWatcher::apply() {
  dirty_ = false;
  if (auto st = watchTree(); !st) spdlog::warn("{}", st.error().describe());
  ManifestUpdate next;
  if (auto st = files_.reload(root_); !st) {
    // The directory itself is gone or unreadable: keep everything as it was.
    next = current_;
    next.errors = {ManifestError{root_.string(), -1, "", st.error().describe() + "; keeping the last good state"}};
  } else {
    next.state = files_.state();
    next.errors = files_.errors();
  }
  next.generation = current_.generation + 1;
  for (const ManifestError& e : next.errors) spdlog::warn("manifests: {}", e.describe());
  spdlog::info("manifests {}: applied change {} ({} objects, {} errors)", root_.string(), next.generation,
               next.state.objectCount(), next.errors.size());
  current_ = std::move(next);
}

std::optional<ManifestUpdate> ManifestWatcher::poll(std::chrono::milliseconds timeout) {
  using clock = std::chrono::steady_clock;
  const auto deadline = clock::now() + timeout;
  while (true) {
    if (drainEvents()) {
      dirty_ = true;
      last_event_ = clock::now();
    }
    auto now = clock::now();
    if (dirty_ && now - last_event_ >= options_.debounce) {
      apply();
      return current_;
    }
    if (now >= deadline) return std::nullopt;
    auto wait = deadline - now;
    if (dirty_) wait = std::min<clock::duration>(wait, last_event_ + options_.debounce - now);
    int ms = static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(wait).count());
    pollfd pfd{inotify_.get(), POLLIN, 0};
    int rc = ::poll(&pfd, 1, std::max(ms, 0));
    if (rc < 0 && errno != EINTR) {
      spdlog::error("manifests {}: poll: {}", root_.string(), std::strerror(errno));
      return std::nullopt;
    }
  }
}

void ManifestWatcher::run(std::stop_token stop, const std::function<void(const ManifestUpdate&)>& on_update) {
  while (!stop.stop_requested()) {
    if (auto update = poll(std::chrono::milliseconds(100))) on_update(*update);
  }
}

}  // namespace meshlock::config
