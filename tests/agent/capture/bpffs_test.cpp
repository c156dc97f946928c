// requireBpffs: an agent that must not mount a bpffs of its own (in a
// container) refuses a pin dir that is not on one, and says how to fix it.
#include "capture/bpffs.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

namespace meshlock::capture {
namespace {

namespace fs = std::filesystem;

TEST(RequireBpffs, RefusesAPinDirOffBpffsAndNamesTheFix) {
  const fs::path dir = fs::temp_directory_path() / ("meshlock-bpffs-test-" + std::to_string(::getpid()));
  auto status = requireBpffs(dir / "meshlock");
  ASSERT_FALSE(status);
  const std::string message = status.error().describe();
  EXPECT_NE(message.find((dir / "meshlock").string() + " is not on a bpffs"), std::string::npos) << message;
  EXPECT_NE(message.find("mountBpffs: false"), std::string::npos) << message;
  EXPECT_NE(message.find("mount -t bpf bpffs /sys/fs/bpf"), std::string::npos) << message;
  // Nothing was created (nor mounted) on the way.
  EXPECT_FALSE(fs::exists(dir));
}

TEST(RequireBpffs, RefusesARelativePinDir) {
  auto status = requireBpffs("sys/fs/bpf/meshlock");
  ASSERT_FALSE(status);
  EXPECT_NE(status.error().describe().find("not absolute"), std::string::npos);
}

}  // namespace
}  // namespace meshlock::capture
