// The BPF file system the pins live in: found, or mounted where missing.
#pragma once

#include <filesystem>

#include "common/error.h"

namespace meshlock::capture {

[[nodiscard]] bool isOnBpffs(const std::filesystem::path& path);

// Makes `pin_dir` a directory on a bpffs. If its nearest existing ancestor is
// not on one, mounts a bpffs at /sys/fs/bpf when pin_dir is below it, else at
// pin_dir itself. Serialised with other meshlock processes by a lock file.
[[nodiscard]] Status ensureBpffs(const std::filesystem::path& pin_dir);

// Makes `pin_dir` a directory on the bpffs that must already be mounted at
// its nearest existing ancestor, and never mounts one: an agent in a
// container that mounted its own would lose every pin with the container
// (and the next agent could not take capture over). The error says so.
[[nodiscard]] Status requireBpffs(const std::filesystem::path& pin_dir);

}  // namespace meshlock::capture
