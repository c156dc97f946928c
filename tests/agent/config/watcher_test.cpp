// The inotify watcher: changes apply within a second, bad writes keep the
// last good state and are reported, new subdirectories are watched.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <thread>

#include "config/watcher.h"

namespace meshlock::config {
namespace {

using namespace std::chrono_literals;

class Watcher : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("meshlock-watch-test-" + std::to_string(::getpid()) + "-" +
            testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void write(const std::string& rel, const std::string& text) {
    auto p = dir_ / rel;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p) << text;
  }
  static std::vector<std::string> names(const ClusterState& s) {
    std::vector<std::string> out;
    for (const auto& ns : s.namespaces) out.push_back(ns.meta.ref.name);
    std::sort(out.begin(), out.end());
    return out;
  }
  // Polls until an update arrives or `limit` passes; returns it and the time it took.
  std::pair<std::optional<ManifestUpdate>, std::chrono::milliseconds> waitForUpdate(ManifestWatcher& w,
                                                                                    std::chrono::milliseconds limit) {
    auto start = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - start < limit) {
      if (auto u = w.poll(50ms)) {
        return {u, std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start)};
      }
    }
    return {std::nullopt, limit};
  }
  std::filesystem::path dir_;
};

TEST_F(Watcher, AFileChangeAppliesWithinASecond) {
  write("ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: one}\n");
  auto w = ManifestWatcher::start(dir_);
  ASSERT_TRUE(w) << w.error().describe();
  EXPECT_EQ(names((*w)->current().state), (std::vector<std::string>{"one"}));
  EXPECT_EQ((*w)->current().generation, 1u);

  write("ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: two}\n");
  auto [update, took] = waitForUpdate(**w, 2000ms);
  ASSERT_TRUE(update);
  EXPECT_LT(took, 1000ms);
  EXPECT_EQ(names(update->state), (std::vector<std::string>{"two"}));
  EXPECT_EQ(update->generation, 2u);
}

TEST_F(Watcher, ABadWriteKeepsTheLastGoodStateAndSaysSo) {
  write("ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: one}\n");
  auto w = ManifestWatcher::start(dir_);
  ASSERT_TRUE(w);
  write("ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: [\n");
  auto [update, took] = waitForUpdate(**w, 2000ms);
  ASSERT_TRUE(update);
  EXPECT_EQ(names(update->state), (std::vector<std::string>{"one"}));
  ASSERT_EQ(update->errors.size(), 2u);
  EXPECT_THAT(update->errors[0].describe(), testing::HasSubstr("ns.yaml: document 1: invalid YAML"));
  EXPECT_THAT(update->errors[1].describe(), testing::HasSubstr("keeping the last good contents"));
}

// Issue 20: a manifest source over its byte or object limit is refused with
// an error that names the file and the setting; what was in effect stays.
TEST_F(Watcher, AFileOverTheByteLimitIsNotReadAndTheLastGoodStateStays) {
  write("a.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: one}\n");
  auto w = ManifestWatcher::start(dir_, {.limits = {.max_bytes = 400, .max_objects = 100}});
  ASSERT_TRUE(w);
  EXPECT_EQ(names((*w)->current().state), (std::vector<std::string>{"one"}));
  std::string big = "apiVersion: v1\nkind: Namespace\nmetadata: {name: one}\n";
  while (big.size() < 500) big += "# padding that takes the file over the limit\n";
  write("a.yaml", big);
  auto [update, took] = waitForUpdate(**w, 2000ms);
  ASSERT_TRUE(update);
  EXPECT_EQ(names(update->state), (std::vector<std::string>{"one"}));
  ASSERT_EQ(update->errors.size(), 2u);
  EXPECT_THAT(update->errors[0].describe(),
              testing::HasSubstr("a.yaml: " + std::to_string(big.size()) +
                                 " bytes, with the other manifests " + std::to_string(big.size()) +
                                 ", over the source's limit of 400 bytes (setting maxSourceBytes): not read"));
  EXPECT_THAT(update->errors[1].describe(), testing::HasSubstr("keeping the last good contents"));
  // Under the limit again: taken.
  write("a.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: two}\n");
  auto [back, took2] = waitForUpdate(**w, 2000ms);
  ASSERT_TRUE(back);
  EXPECT_EQ(names(back->state), (std::vector<std::string>{"two"}));
  EXPECT_TRUE(back->errors.empty());
}

TEST_F(Watcher, ObjectsOverTheLimitAreNotTakenAndOtherFilesStay) {
  write("a.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: one}\n---\n"
                  "apiVersion: v1\nkind: Namespace\nmetadata: {name: two}\n");
  auto w = ManifestWatcher::start(dir_, {.limits = {.max_bytes = 1 << 20, .max_objects = 3}});
  ASSERT_TRUE(w);
  write("b.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: three}\n---\n"
                  "apiVersion: v1\nkind: Namespace\nmetadata: {name: four}\n");
  auto [update, took] = waitForUpdate(**w, 2000ms);
  ASSERT_TRUE(update);
  EXPECT_EQ(names(update->state), (std::vector<std::string>{"one", "two"}));
  ASSERT_EQ(update->errors.size(), 1u);  // b.yaml was never good: nothing of it is kept
  EXPECT_THAT(update->errors[0].describe(),
              testing::HasSubstr("b.yaml: 2 objects, with the other manifests 4, over the source's limit of 3 "
                                 "objects (setting maxSourceObjects): not taken"));
}

TEST_F(Watcher, NewSubdirectoriesAreWatched) {
  auto w = ManifestWatcher::start(dir_);
  ASSERT_TRUE(w);
  std::filesystem::create_directories(dir_ / "team");
  auto [first, t1] = waitForUpdate(**w, 2000ms);
  ASSERT_TRUE(first);
  write("team/ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n");
  auto [second, t2] = waitForUpdate(**w, 2000ms);
  ASSERT_TRUE(second);
  EXPECT_EQ(names(second->state), (std::vector<std::string>{"team"}));
}

TEST_F(Watcher, ABurstOfWritesIsOneReload) {
  auto w = ManifestWatcher::start(dir_, ManifestWatcher::Options{200ms});
  ASSERT_TRUE(w);
  for (int i = 0; i < 5; ++i) {
    write("ns" + std::to_string(i) + ".yaml",
          "apiVersion: v1\nkind: Namespace\nmetadata: {name: n" + std::to_string(i) + "}\n");
  }
  auto [update, took] = waitForUpdate(**w, 2000ms);
  ASSERT_TRUE(update);
  EXPECT_EQ(update->state.namespaces.size(), 5u);
  EXPECT_EQ(update->generation, 2u);
  EXPECT_FALSE((*w)->poll(300ms));
}

TEST_F(Watcher, RunDeliversUpdatesUntilStopped) {
  auto w = ManifestWatcher::start(dir_);
  ASSERT_TRUE(w);
  std::atomic<int> updates{0};
  std::jthread thread([&](std::stop_token stop) { (*w)->run(stop, [&](const ManifestUpdate&) { ++updates; }); });
  write("ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: one}\n");
  for (int i = 0; i < 40 && updates == 0; ++i) std::this_thread::sleep_for(50ms);
  EXPECT_GE(updates.load(), 1);
  thread.request_stop();
}

TEST_F(Watcher, StartFailsOnAMissingDirectory) {
  auto w = ManifestWatcher::start(dir_ / "missing");
  ASSERT_FALSE(w);
  EXPECT_THAT(w.error().describe(), testing::HasSubstr("missing"));
}

}  // namespace
}  // namespace meshlock::config
