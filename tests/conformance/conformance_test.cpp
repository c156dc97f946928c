// Runs every conformance case through policy::checkConnection, the function
// behind `meshlockctl check`, after loading the case's manifests from a
// directory exactly as the CLI does.
#include <gtest/gtest.h>

#include <algorithm>

#include "case_loader.h"
#include "config/manifest.h"
#include "policy/policy.h"
#include "policy/validate.h"

namespace meshlock::conformance {
namespace {

const std::filesystem::path kSharedCases = std::filesystem::path(MESHLOCK_SHARED_DIR) / "conformance/policy";
const std::filesystem::path kLocalCases = MESHLOCK_CONFORMANCE_LOCAL_DIR;
const std::filesystem::path kAuthzCases = std::filesystem::path(MESHLOCK_CONFORMANCE_LOCAL_DIR) / "authz";
// Real configuration files from Istio and Maistra, each folder with its origin and licence.
const std::filesystem::path kCorpus = std::filesystem::path(MESHLOCK_CONFORMANCE_LOCAL_DIR) / "corpus";

std::vector<std::filesystem::path> corpusDirs() {
  std::vector<std::filesystem::path> dirs;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(kCorpus, ec)) {
    if (e.is_directory()) dirs.push_back(e.path());
  }
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

std::vector<std::filesystem::path> allCases() {
  auto all = caseFiles(kSharedCases);
  auto dirs = corpusDirs();
  dirs.insert(dirs.begin(), {kLocalCases, kAuthzCases});
  for (const auto& dir : dirs) {
    auto more = caseFiles(dir);
    all.insert(all.end(), more.begin(), more.end());
  }
  return all;
}

TEST(Conformance, CorpusIsPresent) {
  std::size_t files = 0;
  for (const auto& dir : corpusDirs()) {
    EXPECT_TRUE(std::filesystem::exists(dir / "README.md")) << dir << " must say where its files come from";
    files += caseFiles(dir).size();
  }
  EXPECT_GE(files, 12u);
}

TEST(Conformance, AuthorizationCasesArePresent) { EXPECT_GE(caseFiles(kAuthzCases).size(), 9u); }

// The shared data must be there: a missing directory is a failure, not a skip.
TEST(Conformance, SharedCasesArePresent) {
  ASSERT_TRUE(std::filesystem::is_directory(kSharedCases)) << kSharedCases << " is missing";
  EXPECT_GE(caseFiles(kSharedCases).size(), 10u);
}

// Loads the case's manifests from a directory exactly as the CLI does, then
// checks every expectation through checkConnection.
void runCase(const std::filesystem::path& file) {
  Case c = loadCase(file);
  auto dir = writeManifests(c, file.stem().string());
  config::ParseOptions options;
  options.default_namespace = c.default_namespace;
  auto loaded = config::loadManifestDirectory(dir, options);
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(loaded) << loaded.error().describe();
  for (const auto& e : loaded->errors) ADD_FAILURE() << "manifest error: " << e.describe();
  auto index = policy::PolicyIndex::build(std::move(loaded->state));
  if (c.findings) {
    std::vector<std::string> found;
    for (const policy::Finding& f : policy::validate(*index)) {
      if (std::find(c.findings->codes.begin(), c.findings->codes.end(), f.code) != c.findings->codes.end()) {
        found.push_back(f.code + " " + f.resource);
      }
    }
    std::vector<std::string> expected = c.findings->expect;
    std::sort(found.begin(), found.end());
    std::sort(expected.begin(), expected.end());
    EXPECT_EQ(found, expected) << file.filename().string() << ": validate findings";
  }
  for (const Expectation& x : c.expect) {
    SCOPED_TRACE(file.filename().string() + ": " + x.from + " -> " + x.to);
    auto from = policy::parsePodRef(x.from);
    ASSERT_TRUE(from) << from.error().message;
    auto to = policy::parseTarget(x.to);
    ASSERT_TRUE(to) << to.error().message;
    auto r = policy::checkConnection(*index, *from, *to);
    ASSERT_TRUE(r) << r.error().message;
    if (x.client_tls) {
      EXPECT_EQ(*x.client_tls, policy::toString(r->client_tls));
    }
    if (x.server_mode) {
      EXPECT_EQ(*x.server_mode, policy::toString(r->server_mode));
    }
    if (x.outcome) {
      EXPECT_EQ(*x.outcome, policy::toString(r->outcome));
    }
    if (x.expected_identities) {
      EXPECT_EQ(*x.expected_identities, r->expected_identities);
    }
    if (x.tunnel) {
      EXPECT_EQ(*x.tunnel, r->tunnel);
    }
    if (x.authorization) {
      EXPECT_EQ(*x.authorization, r->authorization) << r->authorization_reason;
    }
    if (x.authorization_policy) {
      EXPECT_EQ(*x.authorization_policy, r->authorization_policy) << r->authorization_reason;
    }
  }
}

// One ctest per case file (discovered when the test binary is built)...
class ConformanceCase : public testing::TestWithParam<std::filesystem::path> {};
TEST_P(ConformanceCase, MatchesExpectations) { runCase(GetParam()); }

// ...and one that runs whatever case files exist when it runs, so a case
// added as a file is checked without rebuilding anything.
TEST(Conformance, EveryCaseFilePasses) {
  auto files = allCases();
  ASSERT_FALSE(files.empty());
  for (const auto& f : files) {
    SCOPED_TRACE(f.string());
    runCase(f);
  }
  std::printf("%zu conformance case files checked\n", files.size());
}

std::string caseName(const testing::TestParamInfo<std::filesystem::path>& info) {
  const auto dir = info.param.parent_path();
  std::string prefix = dir == kSharedCases  ? "shared_"
                       : dir == kAuthzCases ? "authz_"
                       : dir == kLocalCases ? "local_"
                                            : "corpus_";
  std::string name = prefix + info.param.stem().string();
  for (char& ch : name) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return name;
}

INSTANTIATE_TEST_SUITE_P(Policy, ConformanceCase, testing::ValuesIn(allCases()), caseName);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(ConformanceCase);

}  // namespace
}  // namespace meshlock::conformance
