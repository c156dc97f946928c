// The kernel feature probe (probe.h).
#include "kmod-free/probe.h"

#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

namespace meshlock::kmodfree {

namespace fs = std::filesystem;

namespace {

std::string readFile(const fs::path& path, bool* ok = nullptr) {
  std::ifstream in(path);
  if (ok) *ok = static_cast<bool>(in);
  std::stringstream text;
  if (in) text << in.rdbuf();
  return text.str();
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

Feature feature(std::string name, bool required, bool present, std::string detail,
                std::string if_absent, std::string if_present = "") {
  return Feature{std::move(name), present ? FeatureState::Present : FeatureState::Absent, required,
                 std::move(detail), present ? std::move(if_present) : std::move(if_absent)};
}

// libbpf probes: 1 supported, 0 not, <0 could not tell (usually no CAP_BPF).
Feature fromLibbpf(std::string name, bool required, int rc, std::string if_absent) {
  Feature f{std::move(name), FeatureState::Unknown, required, "", ""};
  if (rc == 1) {
    f.state = FeatureState::Present;
  } else if (rc == 0) {
    f.state = FeatureState::Absent;
    f.consequence = std::move(if_absent);
  } else {
    f.detail = std::string("cannot probe: ") + std::strerror(-rc) + " (needs root or CAP_BPF)";
  }
  return f;
}

constexpr const char* kNoCapture =
    "capture cannot run: pods are not captured (no traffic is intercepted, none is broken)";

}  // namespace

bool ProbeReport::hardRequirementsMet() const {
  for (const Feature& f : features)
    if (f.required && f.state == FeatureState::Absent) return false;
  return true;
}

const Feature* ProbeReport::find(std::string_view name) const {
  for (const Feature& f : features)
    if (f.name == name) return &f;
  return nullptr;
}

bool ulpListHasTls(std::string_view list) {
  std::istringstream in{std::string(list)};
  std::string word;
  while (in >> word)
    if (word == "tls") return true;
  return false;
}

bool filesystemsHas(std::string_view proc_filesystems, std::string_view name) {
  std::istringstream in{std::string(proc_filesystems)};
  std::string line;
  while (std::getline(in, line)) {
    auto tab = line.find_last_of(" \t");
    std::string fs_name = tab == std::string::npos ? line : line.substr(tab + 1);
    if (fs_name == name) return true;
  }
  return false;
}

std::vector<std::string> mountPointsOfType(std::string_view mountinfo, std::string_view fstype) {
  std::vector<std::string> out;
  std::istringstream in{std::string(mountinfo)};
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, devno, root, mount_point, field, type;
    if (!(fields >> id >> parent >> devno >> root >> mount_point)) continue;
    while (fields >> field && field != "-") {
    }
    if (fields >> type && type == fstype) out.push_back(mount_point);
  }
  return out;
}

std::string_view stateName(FeatureState state) {
  switch (state) {
    case FeatureState::Present: return "present";
    case FeatureState::Absent: return "absent";
    case FeatureState::Unknown: return "unknown";
  }
  return "unknown";
}

ProbeReport probeKernel(const ProbeRoots& roots) {
  ProbeReport report;
  utsname uts{};
  if (::uname(&uts) == 0) report.kernel_release = uts.release;
  auto& out = report.features;

  // BTF: CO-RE relocations and vmlinux.h both come from it.
  fs::path btf = roots.sys / "kernel/btf/vmlinux";
  std::error_code ec;
  out.push_back(feature("btf", true, fs::exists(btf, ec), btf.string(),
                        std::string(kNoCapture) + " (CONFIG_DEBUG_INFO_BTF=y needed)",
                        "CO-RE programs relocate against the running kernel"));

  const std::string filesystems = readFile(roots.proc / "filesystems");
  const std::string mountinfo = readFile(roots.proc / "self/mountinfo");

  auto cg2 = mountPointsOfType(mountinfo, "cgroup2");
  Feature cgroup2 = feature("cgroup2", true, filesystemsHas(filesystems, "cgroup2"),
                            cg2.empty() ? "supported, not mounted" : "mounted at " + cg2.front(),
                            std::string(kNoCapture) + " (pods are found and hooked by cgroup v2)",
                            cg2.empty() ? "mount one and pass its kubepods dir as the cgroup root"
                                        : "pass the kubepods dir under it as the cgroup root");
  out.push_back(cgroup2);

  auto bpffs = mountPointsOfType(mountinfo, "bpf");
  out.push_back(feature("bpffs", true, filesystemsHas(filesystems, "bpf"),
                        bpffs.empty() ? "supported, not mounted" : "mounted at " + bpffs.front(),
                        std::string(kNoCapture) + " (pins keep capture alive across agent restarts)",
                        bpffs.empty() ? "the agent mounts it at /sys/fs/bpf (or its pin dir)"
                                      : "pins go under the agent's pin dir"));

  if (roots.probe_bpf) {
    struct ProgProbe {
      const char* name;
      bpf_prog_type type;
      bool required;
      const char* if_absent;
    };
    const ProgProbe progs[] = {
        {"prog_type:cgroup_sock_addr", BPF_PROG_TYPE_CGROUP_SOCK_ADDR, true, kNoCapture},
        {"prog_type:sock_ops", BPF_PROG_TYPE_SOCK_OPS, true, kNoCapture},
        {"prog_type:sk_lookup", BPF_PROG_TYPE_SK_LOOKUP, true,
         "inbound capture impossible (Linux >= 5.9 needed)"},
        {"prog_type:sk_msg", BPF_PROG_TYPE_SK_MSG, false,
         "no pod-local shortcut (podLegShortcut; off by default)"},
    };
    for (const auto& p : progs)
      out.push_back(fromLibbpf(p.name, p.required, libbpf_probe_bpf_prog_type(p.type, nullptr), p.if_absent));

    struct MapProbe {
      const char* name;
      bpf_map_type type;
    };
    const MapProbe maps[] = {
        {"map_type:hash", BPF_MAP_TYPE_HASH},
        {"map_type:lru_hash", BPF_MAP_TYPE_LRU_HASH},
        {"map_type:percpu_array", BPF_MAP_TYPE_PERCPU_ARRAY},
        {"map_type:sockhash", BPF_MAP_TYPE_SOCKHASH},
    };
    for (const auto& m : maps)
      out.push_back(fromLibbpf(m.name, true, libbpf_probe_bpf_map_type(m.type, nullptr), kNoCapture));

    struct HelperProbe {
      const char* name;
      bpf_prog_type type;
      bpf_func_id helper;
      const char* if_absent;
    };
    const HelperProbe helpers[] = {
        {"helper:get_current_ancestor_cgroup_id", BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
         BPF_FUNC_get_current_ancestor_cgroup_id, "outbound capture cannot find the pod"},
        {"helper:get_socket_cookie", BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_FUNC_get_socket_cookie,
         "original destination cannot be kept"},
        {"helper:get_netns_cookie(sock_ops)", BPF_PROG_TYPE_SOCK_OPS, BPF_FUNC_get_netns_cookie,
         "original destination cannot be published (Linux >= 5.15 needed)"},
        {"helper:sk_assign(sk_lookup)", BPF_PROG_TYPE_SK_LOOKUP, BPF_FUNC_sk_assign,
         "inbound capture impossible"},
    };
    for (const auto& h : helpers)
      out.push_back(fromLibbpf(h.name, true, libbpf_probe_bpf_helper(h.type, h.helper, nullptr),
                               h.if_absent));
    // The shortcut bounds its queue with the psock's byte count (Linux 6.x);
    // without it sk_msg sends every message by TCP (docs/datapath.md).
    out.push_back(fromLibbpf("helper:get_netns_cookie(sk_msg)", false,
                             libbpf_probe_bpf_helper(BPF_PROG_TYPE_SK_MSG, BPF_FUNC_get_netns_cookie, nullptr),
                             "no pod-local shortcut (Linux >= 5.15 needed)"));
    bool counted = false;
    if (struct btf* vmlinux = btf__load_vmlinux_btf()) {
      const int id = btf__find_by_name_kind(vmlinux, "sk_psock", BTF_KIND_STRUCT);
      const struct btf_type* type = id > 0 ? btf__type_by_id(vmlinux, id) : nullptr;
      const struct btf_member* member = type != nullptr ? btf_members(type) : nullptr;
      for (int i = 0; type != nullptr && i < btf_vlen(type); ++i)
        counted = counted || std::string_view(btf__name_by_offset(vmlinux, member[i].name_off)) == "msg_tot_len";
      btf__free(vmlinux);
    }
    out.push_back(feature("btf:sk_psock.msg_tot_len", false, counted, "the redirected queue's byte count, in BTF",
                          "the pod-local shortcut cannot bound its queue: every message goes by TCP",
                          "the pod-local shortcut bounds its queue at tcp_rmem's maximum"));
  }

  if (roots.probe_syscalls) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    std::uint64_t cookie = 0;
    socklen_t len = sizeof(cookie);
    bool has_cookie = fd >= 0 && ::getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) == 0;
    if (fd >= 0) ::close(fd);
    out.push_back(feature("so_netns_cookie", true, has_cookie, "getsockopt(SO_NETNS_COOKIE)",
                          "accepted outbound connections cannot be matched to their original "
                          "destination (Linux >= 5.14 needed)"));
  }

  // io_uring: sysctl (0 on, 1 root/group only, 2 off), then a real setup call,
  // which also sees a seccomp filter or a container runtime blocking it.
  bool sysctl_ok = false;
  std::string disabled = trim(readFile(roots.proc / "sys/kernel/io_uring_disabled", &sysctl_ok));
  std::string uring_detail = sysctl_ok ? "kernel.io_uring_disabled=" + disabled
                                       : "no kernel.io_uring_disabled sysctl";
  bool uring = !(sysctl_ok && disabled == "2");
  if (roots.probe_syscalls) {
    io_uring_params params{};
    long rc = ::syscall(__NR_io_uring_setup, 1, &params);
    if (rc >= 0) {
      ::close(static_cast<int>(rc));
      uring_detail += ", io_uring_setup works";
      uring = true;
    } else {
      int err = errno;
      uring_detail += std::string(", io_uring_setup: ") + std::strerror(err) +
                      (err == EPERM ? " (sysctl or seccomp)" : err == ENOSYS ? " (not built or filtered)" : "");
      uring = false;
    }
  }
  out.push_back(feature("io_uring", false, uring, uring_detail,
                        "the engine runs its epoll loop (same engine, same tests)",
                        "the engine runs io_uring loops"));

  bool ulp_ok = false;
  std::string ulps = trim(readFile(roots.proc / "sys/net/ipv4/tcp_available_ulp", &ulp_ok));
  out.push_back(feature("ktls", false, ulp_ok && ulpListHasTls(ulps),
                        ulp_ok ? "tcp_available_ulp: " + (ulps.empty() ? std::string("(none)") : ulps)
                               : "no tcp_available_ulp",
                        "TLS records are sealed and opened in userspace (BoringSSL); "
                        "meshlock never loads the tls module",
                        "kernel TLS offload is available"));
  return report;
}

std::string summaryLine(const ProbeReport& report) {
  std::string line = "kernel " + report.kernel_release + ":";
  const char* separator = " ";
  for (FeatureState state : {FeatureState::Present, FeatureState::Absent, FeatureState::Unknown}) {
    std::string names;
    for (const Feature& f : report.features)
      if (f.state == state) names += " " + f.name;
    if (names.empty()) continue;
    line += separator + std::string(state == FeatureState::Present ? "ok" : stateName(state)) + names;
    separator = "; ";
  }
  return line;
}

Status requireHardFeatures(const ProbeReport& report) {
  std::string missing;
  for (const Feature& f : report.features) {
    if (!f.required || f.state != FeatureState::Absent) continue;
    missing += (missing.empty() ? "" : "; ") + f.name + " (" + f.detail + "): " + f.consequence;
  }
  if (missing.empty()) return {};
  return fail("kernel " + report.kernel_release + " lacks a required feature: " + missing);
}

Result<bool> useIoUring(const ProbeReport& report, bool explicitly_requested) {
  const Feature* uring = report.find("io_uring");
  if (uring == nullptr || uring->state != FeatureState::Absent) return true;
  if (explicitly_requested)
    return fail("io_uring was requested (io: uring) but the kernel does not offer it (" + uring->detail +
                "); use io auto or epoll");
  return false;
}

std::string renderText(const ProbeReport& report) {
  std::ostringstream out;
  out << "kernel " << report.kernel_release << "\n";
  for (const Feature& f : report.features) {
    out << (f.state == FeatureState::Present ? "  ok      " : f.state == FeatureState::Absent ? (f.required ? "  MISSING " : "  absent  ") : "  ?       ")
        << f.name;
    if (!f.detail.empty()) out << "  (" << f.detail << ")";
    if (!f.consequence.empty()) out << "\n          -> " << f.consequence;
    out << "\n";
  }
  out << (report.hardRequirementsMet() ? "all hard requirements met; no kernel module needed\n"
                                       : "a hard requirement is missing: capture cannot run\n");
  return out.str();
}

std::string renderJson(const ProbeReport& report) {
  nlohmann::json features = nlohmann::json::array();
  for (const Feature& f : report.features) {
    features.push_back({{"name", f.name},
                        {"state", std::string(stateName(f.state))},
                        {"required", f.required},
                        {"detail", f.detail},
                        {"consequence", f.consequence}});
  }
  nlohmann::json doc = {{"kernel_release", report.kernel_release},
                        {"hard_requirements_met", report.hardRequirementsMet()},
                        {"features", features}};
  return doc.dump(2) + "\n";
}

}  // namespace meshlock::kmodfree
