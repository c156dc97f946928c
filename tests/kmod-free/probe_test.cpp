// The kernel feature probe on fake /proc and /sys trees (no root), and once
// on the real kernel.
#include "kmod-free/probe.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <fstream>

namespace meshlock::kmodfree {
namespace {

namespace fs = std::filesystem;

class FakeKernel : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/meshlock-probe-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    base = tmpl;
    roots.proc = base / "proc";
    roots.sys = base / "sys";
    roots.probe_bpf = false;
    roots.probe_syscalls = false;
    write(roots.proc / "filesystems", "nodev\tsysfs\nnodev\tcgroup2\nnodev\tbpf\n\text4\n");
    write(roots.proc / "self/mountinfo",
          "35 31 0:30 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n");
    write(roots.sys / "kernel/btf/vmlinux", "BTF");
    write(roots.proc / "sys/net/ipv4/tcp_available_ulp", "mptcp\n");
    write(roots.proc / "sys/kernel/io_uring_disabled", "0\n");
  }
  void TearDown() override { fs::remove_all(base); }
  static void write(const fs::path& path, const std::string& text) {
    fs::create_directories(path.parent_path());
    std::ofstream(path) << text;
  }
  fs::path base;
  ProbeRoots roots;
};

TEST_F(FakeKernel, KtlsAbsentMeansUserspaceRecordsAndIsNotFatal) {
  ProbeReport report = probeKernel(roots);
  const Feature* ktls = report.find("ktls");
  ASSERT_NE(ktls, nullptr);
  EXPECT_EQ(ktls->state, FeatureState::Absent);
  EXPECT_FALSE(ktls->required);
  EXPECT_NE(ktls->consequence.find("userspace"), std::string::npos);
  EXPECT_TRUE(report.hardRequirementsMet());

  write(roots.proc / "sys/net/ipv4/tcp_available_ulp", "mptcp tls\n");
  EXPECT_EQ(probeKernel(roots).find("ktls")->state, FeatureState::Present);
}

TEST_F(FakeKernel, MissingBtfIsAHardFailure) {
  fs::remove(roots.sys / "kernel/btf/vmlinux");
  ProbeReport report = probeKernel(roots);
  EXPECT_EQ(report.find("btf")->state, FeatureState::Absent);
  EXPECT_FALSE(report.hardRequirementsMet());
  EXPECT_NE(renderText(report).find("MISSING btf"), std::string::npos);
}

TEST_F(FakeKernel, IoUringDisabledBySysctlMeansEpoll) {
  write(roots.proc / "sys/kernel/io_uring_disabled", "2\n");
  ProbeReport report = probeKernel(roots);
  const Feature* uring = report.find("io_uring");
  EXPECT_EQ(uring->state, FeatureState::Absent);
  EXPECT_NE(uring->detail.find("io_uring_disabled=2"), std::string::npos);
  EXPECT_NE(uring->consequence.find("epoll"), std::string::npos);
  EXPECT_TRUE(report.hardRequirementsMet());
}

TEST_F(FakeKernel, Cgroup2AndBpffsMountsAreReported) {
  ProbeReport report = probeKernel(roots);
  EXPECT_EQ(report.find("cgroup2")->detail, "mounted at /sys/fs/cgroup/unified");
  EXPECT_EQ(report.find("bpffs")->state, FeatureState::Present);
  EXPECT_EQ(report.find("bpffs")->detail, "supported, not mounted");
  write(roots.proc / "filesystems", "nodev\tsysfs\n");
  report = probeKernel(roots);
  EXPECT_EQ(report.find("cgroup2")->state, FeatureState::Absent);
  EXPECT_FALSE(report.hardRequirementsMet());
}

// What the agent does with the report at start-up.
TEST_F(FakeKernel, AgentStartsWhenEveryHardRequirementIsThere) {
  ProbeReport report = probeKernel(roots);
  EXPECT_TRUE(requireHardFeatures(report).has_value());
  const std::string line = summaryLine(report);
  EXPECT_EQ(line.find('\n'), std::string::npos) << line;
  EXPECT_NE(line.find("ok btf cgroup2 bpffs io_uring"), std::string::npos) << line;
  EXPECT_NE(line.find("; absent ktls"), std::string::npos) << line;
}

TEST_F(FakeKernel, AgentRefusesToStartNamingEachMissingRequirement) {
  fs::remove(roots.sys / "kernel/btf/vmlinux");
  write(roots.proc / "filesystems", "nodev\tsysfs\nnodev\tcgroup2\n");  // no bpffs
  Status status = requireHardFeatures(probeKernel(roots));
  ASSERT_FALSE(status.has_value());
  const std::string message = status.error().describe();
  EXPECT_NE(message.find("lacks a required feature: btf ("), std::string::npos) << message;
  EXPECT_NE(message.find("CONFIG_DEBUG_INFO_BTF"), std::string::npos) << message;
  EXPECT_NE(message.find("; bpffs ("), std::string::npos) << message;
  EXPECT_EQ(message.find("cgroup2"), std::string::npos) << message;
  EXPECT_EQ(message.find("ktls"), std::string::npos) << "optional features never stop the agent: " << message;
}

TEST_F(FakeKernel, UnknownRequirementsDoNotStopTheAgent) {
  // Without CAP_BPF the verifier probes cannot tell; capture itself will say.
  ProbeReport report = probeKernel(roots);
  report.features.push_back({"prog_type:sk_lookup", FeatureState::Unknown, true, "cannot probe", ""});
  EXPECT_TRUE(requireHardFeatures(report).has_value());
  EXPECT_NE(summaryLine(report).find("; unknown prog_type:sk_lookup"), std::string::npos) << summaryLine(report);
}

TEST_F(FakeKernel, NoIoUringMeansEpollUnlessAskedForExplicitly) {
  auto with_uring = useIoUring(probeKernel(roots), false);
  ASSERT_TRUE(with_uring.has_value());
  EXPECT_TRUE(*with_uring);

  write(roots.proc / "sys/kernel/io_uring_disabled", "2\n");
  ProbeReport report = probeKernel(roots);
  auto fallback = useIoUring(report, false);
  ASSERT_TRUE(fallback.has_value());
  EXPECT_FALSE(*fallback);
  EXPECT_TRUE(requireHardFeatures(report).has_value());
  EXPECT_NE(summaryLine(report).find("absent io_uring"), std::string::npos) << summaryLine(report);

  auto explicit_request = useIoUring(report, true);
  ASSERT_FALSE(explicit_request.has_value());
  EXPECT_NE(explicit_request.error().describe().find("io_uring_disabled=2"), std::string::npos)
      << explicit_request.error().describe();
}

TEST(ProbeParsing, UlpListAndFilesystems) {
  EXPECT_TRUE(ulpListHasTls("mptcp tls"));
  EXPECT_FALSE(ulpListHasTls("mptcp"));
  EXPECT_FALSE(ulpListHasTls("tlsx"));
  EXPECT_TRUE(filesystemsHas("nodev\tbpf\n", "bpf"));
  EXPECT_FALSE(filesystemsHas("nodev\tbpfx\n", "bpf"));
  auto mounts = mountPointsOfType("1 2 0:1 / /a rw shared:1 - bpf bpf rw\n3 4 0:2 / /b rw - tmpfs t rw\n", "bpf");
  ASSERT_EQ(mounts.size(), 1u);
  EXPECT_EQ(mounts[0], "/a");
}

TEST(RealKernel, ProbeRunsAndRendersValidJson) {
  ProbeReport report = probeKernel();
  auto doc = nlohmann::json::parse(renderJson(report));
  EXPECT_EQ(doc["features"].size(), report.features.size());
  EXPECT_NE(report.find("ktls"), nullptr);
  EXPECT_NE(report.find("io_uring"), nullptr);
  if (::geteuid() == 0) {
    // This suite's machines run capture: every hard requirement is there.
    EXPECT_TRUE(report.hardRequirementsMet()) << renderText(report);
    EXPECT_EQ(report.find("prog_type:sk_lookup")->state, FeatureState::Present);
  }
}

}  // namespace
}  // namespace meshlock::kmodfree
