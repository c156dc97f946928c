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
