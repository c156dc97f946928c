// Kernel feature probe: what meshlock needs from the running kernel, what it
// found, and what it does when something is missing. It only reads /proc and
// /sys and asks the kernel to verify tiny BPF programs: it never loads a
// kernel module, and never asks for one that would be auto-loaded (e.g. it
// reads tcp_available_ulp instead of setting TCP_ULP "tls").
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace meshlock::kmodfree {

enum class FeatureState { Present, Absent, Unknown };

struct Feature {
  std::string name;         // "btf", "prog_type:sk_lookup", "ktls", ...
  FeatureState state = FeatureState::Unknown;
  bool required = false;    // capture cannot work without it
  std::string detail;       // what was found: a path, a value, an errno
  std::string consequence;  // what meshlock does about it being absent/present
};

struct ProbeReport {
  std::string kernel_release;
  std::vector<Feature> features;

  // False only when a required feature is known to be absent.
  [[nodiscard]] bool hardRequirementsMet() const;
  [[nodiscard]] const Feature* find(std::string_view name) const;
};

// Where the probe looks; tests point these at a fake tree.
struct ProbeRoots {
  std::filesystem::path proc = "/proc";
  std::filesystem::path sys = "/sys";
  bool probe_bpf = true;       // ask the kernel to verify programs and maps
  bool probe_syscalls = true;  // io_uring_setup, SO_NETNS_COOKIE
};

[[nodiscard]] ProbeReport probeKernel(const ProbeRoots& roots = {});

// Pure helpers, exposed for tests.
[[nodiscard]] bool ulpListHasTls(std::string_view tcp_available_ulp);
[[nodiscard]] bool filesystemsHas(std::string_view proc_filesystems, std::string_view fs);
[[nodiscard]] std::vector<std::string> mountPointsOfType(std::string_view mountinfo,
                                                         std::string_view fstype);
[[nodiscard]] std::string_view stateName(FeatureState state);

// What the agent does with the probe at start-up (and why, for its log).
// One line: the release, then the features by state ("ok btf cgroup2 …;
// absent ktls; unknown …").
[[nodiscard]] std::string summaryLine(const ProbeReport& report);
// An error naming every required feature known to be absent, with what the
// probe found and what it means; success when none is.
[[nodiscard]] Status requireHardFeatures(const ProbeReport& report);
// Whether the engine should try io_uring: false (epoll) when the probe found
// it absent, unless io_uring was asked for explicitly, which is then an error.
[[nodiscard]] Result<bool> useIoUring(const ProbeReport& report, bool explicitly_requested);

[[nodiscard]] std::string renderText(const ProbeReport& report);
[[nodiscard]] std::string renderJson(const ProbeReport& report);

}  // namespace meshlock::kmodfree
