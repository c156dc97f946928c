// bpffs discovery and on-demand mount.
#include "capture/bpffs.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/statfs.h>

#include <system_error>

#include "common/unique_fd.h"

namespace meshlock::capture {

namespace fs = std::filesystem;

bool isOnBpffs(const fs::path& path) {
  struct statfs st{};
  return ::statfs(path.c_str(), &st) == 0 && st.f_type == BPF_FS_MAGIC;
}

static fs::path nearestExisting(fs::path path) {
  std::error_code ec;
  while (!path.empty() && !fs::exists(path, ec)) path = path.parent_path();
  return path.empty() ? fs::path("/") : path;
}

Status ensureBpffs(const fs::path& pin_dir) {
  std::error_code ec;
  if (!pin_dir.is_absolute()) return fail("pin dir " + pin_dir.string() + " is not absolute");
  // Two agents starting together must not stack two mounts on one path.
  UniqueFd lock(::open("/run/meshlock-bpffs.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock) return failErrno("open /run/meshlock-bpffs.lock");
  if (::flock(lock.get(), LOCK_EX) != 0) return failErrno("flock /run/meshlock-bpffs.lock");

  if (!isOnBpffs(nearestExisting(pin_dir))) {
    const fs::path sys_bpf("/sys/fs/bpf");
    auto rel = pin_dir.lexically_relative(sys_bpf);
    bool below_sys_bpf = !rel.empty() && *rel.begin() != "..";
    fs::path mount_point = below_sys_bpf ? sys_bpf : pin_dir;
    fs::create_directories(mount_point, ec);
    if (ec) return fail("create " + mount_point.string() + ": " + ec.message());
    if (!isOnBpffs(mount_point) &&
        ::mount("bpffs", mount_point.c_str(), "bpf", 0, "mode=0700") != 0)
      return failErrno("mount bpffs on " + mount_point.string());
  }
  fs::create_directories(pin_dir, ec);
  if (ec) return fail("create " + pin_dir.string() + ": " + ec.message());
  if (!isOnBpffs(pin_dir)) return fail(pin_dir.string() + " is not on a bpffs");
  return {};
}

Status requireBpffs(const fs::path& pin_dir) {
  if (!pin_dir.is_absolute()) return fail("pin dir " + pin_dir.string() + " is not absolute");
  const fs::path existing = nearestExisting(pin_dir);
  if (!isOnBpffs(existing))
    return fail("BPF pin dir " + pin_dir.string() + " is not on a bpffs (" + existing.string() +
                " is not one) and mounting one is off (mountBpffs: false): mount a bpffs on the host, e.g. "
                "`mount -t bpf bpffs /sys/fs/bpf` (the DaemonSet's mount-bpffs init container does), and "
                "give the agent container that mount with mountPropagation HostToContainer, so the pins "
                "outlive the agent pod");
  std::error_code ec;
  fs::create_directories(pin_dir, ec);
  if (ec) return fail("create " + pin_dir.string() + ": " + ec.message());
  if (!isOnBpffs(pin_dir)) return fail(pin_dir.string() + " is not on a bpffs");
  return {};
}

}  // namespace meshlock::capture
