// Kubelet cgroup layout logic on fake directory trees (no root needed).
#include "capture/pod_discovery.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>

namespace meshlock::capture {
namespace {

namespace fs = std::filesystem;

class FakeCgroupTree : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/meshlock-cgtree-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root = tmpl;
  }
  void TearDown() override { fs::remove_all(root); }
  fs::path make(const fs::path& rel) {
    fs::create_directories(root / rel);
    return root / rel;
  }
  void procs(const fs::path& dir, const std::string& content) {
    std::ofstream(dir / "cgroup.procs") << content;
  }
  fs::path root;
};

const PodUid kUid{"8d3c2f4a-1b2c-4d5e-9f00-aabbccddeeff"};

TEST_F(FakeCgroupTree, SystemdDriverEveryQosClass) {
  auto guaranteed = make("kubepods.slice/kubepods-pod8d3c2f4a_1b2c_4d5e_9f00_aabbccddeeff.slice");
  auto found = findPodCgroup(root, kUid);
  ASSERT_TRUE(found) << found.error().describe();
  EXPECT_EQ(*found, guaranteed);

  fs::remove_all(guaranteed);
  auto burstable = make(
      "kubepods.slice/kubepods-burstable.slice/"
      "kubepods-burstable-pod8d3c2f4a_1b2c_4d5e_9f00_aabbccddeeff.slice");
  EXPECT_EQ(findPodCgroup(root, kUid).value(), burstable);

  fs::remove_all(burstable);
  auto besteffort = make(
      "kubepods.slice/kubepods-besteffort.slice/"
      "kubepods-besteffort-pod8d3c2f4a_1b2c_4d5e_9f00_aabbccddeeff.slice");
  EXPECT_EQ(findPodCgroup(root, kUid).value(), besteffort);
  EXPECT_EQ(findPodsCgroupRoot(root).value(), root / "kubepods.slice");
}

TEST_F(FakeCgroupTree, CgroupfsDriverEveryQosClass) {
  auto guaranteed = make("kubepods/pod8d3c2f4a-1b2c-4d5e-9f00-aabbccddeeff");
  EXPECT_EQ(findPodCgroup(root, kUid).value(), guaranteed);
  fs::remove_all(guaranteed);
  auto burstable = make("kubepods/burstable/pod8d3c2f4a-1b2c-4d5e-9f00-aabbccddeeff");
  EXPECT_EQ(findPodCgroup(root, kUid).value(), burstable);
  fs::remove_all(burstable);
  auto besteffort = make("kubepods/besteffort/pod8d3c2f4a-1b2c-4d5e-9f00-aabbccddeeff");
  EXPECT_EQ(findPodCgroup(root, kUid).value(), besteffort);
  EXPECT_EQ(findPodsCgroupRoot(root).value(), root / "kubepods");
}

TEST_F(FakeCgroupTree, MissingPodAndBadUidAreClearErrors) {
  make("kubepods/burstable");
  auto missing = findPodCgroup(root, PodUid{"nope"});
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message.find("nope"), std::string::npos);
  EXPECT_FALSE(findPodCgroup(root, PodUid{"../../etc"}));
  EXPECT_FALSE(findPodCgroup(root, PodUid{""}));
  EXPECT_FALSE(findPodsCgroupRoot(root / "kubepods" / "burstable"));
}

TEST_F(FakeCgroupTree, PodProcessFoundInTheCgroupOrBelow) {
  auto pod = make("kubepods/burstable/pod8d3c2f4a-1b2c-4d5e-9f00-aabbccddeeff");
  procs(pod, "");
  auto pause = make("kubepods/burstable/pod8d3c2f4a-1b2c-4d5e-9f00-aabbccddeeff/pause");
  procs(pause, "4242\n4243\n");
  auto pid = findPodProcess(pod);
  ASSERT_TRUE(pid) << pid.error().describe();
  EXPECT_EQ(*pid, 4242);
  EXPECT_EQ(findPodNetns(pod).value(), fs::path("/proc/4242/ns/net"));

  procs(pod, "7\n");
  EXPECT_EQ(findPodProcess(pod).value(), 7) << "the pod cgroup's own processes come first";

  auto empty = make("kubepods/besteffort/podempty");
  procs(empty, "");
  EXPECT_FALSE(findPodProcess(empty));
}

TEST_F(FakeCgroupTree, ListsPodsOfBothDriversWithTheirUids) {
  make("kubepods.slice/kubepods-poda_1.slice/ctr");
  make("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podb_2.slice");
  make("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podc_3.slice");
  make("kubepods/burstable/podd-4");
  make("kubepods/pode-5");
  auto pods = listPodCgroups(root);
  std::vector<std::string> uids;
  for (const auto& p : pods) {
    uids.push_back(p.uid.value);
    EXPECT_EQ(findPodCgroup(root, p.uid).value(), p.dir) << p.uid.value;
  }
  std::sort(uids.begin(), uids.end());
  EXPECT_EQ(uids, (std::vector<std::string>{"a-1", "b-2", "c-3", "d-4", "e-5"}));
}

TEST(Cgroup2Mounts, ParsedFromMountinfo) {
  const char* mountinfo =
      "24 29 0:22 / /sys rw,nosuid shared:7 - sysfs sysfs rw\n"
      "31 24 0:26 / /sys/fs/cgroup rw shared:9 - tmpfs tmpfs ro,mode=755\n"
      "35 31 0:30 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate\n"
      "36 31 0:31 / /sys/fs/cgroup/memory rw shared:11 - cgroup cgroup rw,memory\n"
      "90 29 0:40 / /tmp/my-cg2 rw - cgroup2 none rw\n";
  auto mounts = parseCgroup2Mounts(mountinfo);
  ASSERT_EQ(mounts.size(), 2u);
  EXPECT_EQ(mounts[0], fs::path("/sys/fs/cgroup/unified"));
  EXPECT_EQ(mounts[1], fs::path("/tmp/my-cg2"));
  EXPECT_TRUE(parseCgroup2Mounts("garbage\n\n").empty());
}

TEST(PodDiscovery, Cgroup2PathIsTheZeroLine) {
  EXPECT_EQ(parseCgroup2Path("12:cpu,cpuacct:/x\n0::/meshsim-r/node-a/meshlock-agent\n"),
            "/meshsim-r/node-a/meshlock-agent");
  EXPECT_EQ(parseCgroup2Path("0::/\n"), "/");
  EXPECT_EQ(parseCgroup2Path("1:name=systemd:/user.slice\n"), "");  // cgroup v1 only
  EXPECT_EQ(parseCgroup2Path(""), "");
}

TEST(PodCgroupCandidates, UnderscoresOnlyForSystemd) {
  auto c = podCgroupCandidates(PodUid{"a-b"});
  ASSERT_EQ(c.size(), 6u);
  EXPECT_EQ(c[0], fs::path("kubepods.slice/kubepods-poda_b.slice"));
  EXPECT_EQ(c[3], fs::path("kubepods/poda-b"));
}

}  // namespace
}  // namespace meshlock::capture
