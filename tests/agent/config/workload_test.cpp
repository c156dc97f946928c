// Workload names and canonical labels, as Istio's telemetry derives them.
#include <gtest/gtest.h>

#include "config/workload.h"

namespace meshlock::config {
namespace {

Pod pod(std::string name, Labels labels) {
  Pod p;
  p.meta.ref.ns = "shop";
  p.meta.ref.name = std::move(name);
  p.meta.labels = std::move(labels);
  return p;
}

TEST(WorkloadOf, DeploymentPodIsNamedAfterItsDeployment) {
  WorkloadMeta w = workloadOf(pod("reviews-v2-5d8f7c9b6-x7k2p", {{"pod-template-hash", "5d8f7c9b6"},
                                                                 {"app", "reviews"}, {"version", "v2"}}));
  EXPECT_EQ(w.name, "reviews-v2");
  EXPECT_EQ(w.app, "reviews");
  EXPECT_EQ(w.version, "v2");
  EXPECT_EQ(w.canonical_service, "reviews");
  EXPECT_EQ(w.canonical_revision, "v2");
}

TEST(WorkloadOf, BarePodIsItsOwnWorkloadWithLatestRevision) {
  WorkloadMeta w = workloadOf(pod("web", {}));
  EXPECT_EQ(w.name, "web");
  EXPECT_EQ(w.app, "");
  EXPECT_EQ(w.canonical_service, "web");
  EXPECT_EQ(w.canonical_revision, "latest");
}

TEST(WorkloadOf, IstioCanonicalLabelsAndKubernetesRecommendedLabelsWin) {
  WorkloadMeta w = workloadOf(pod("db-0", {{"app", "old"},
                                          {"app.kubernetes.io/name", "postgres"},
                                          {"app.kubernetes.io/version", "16"},
                                          {"service.istio.io/canonical-name", "database"},
                                          {"service.istio.io/canonical-revision", "blue"}}));
  EXPECT_EQ(w.name, "db-0");
  EXPECT_EQ(w.app, "postgres");
  EXPECT_EQ(w.version, "16");
  EXPECT_EQ(w.canonical_service, "database");
  EXPECT_EQ(w.canonical_revision, "blue");
}

TEST(WorkloadOf, TheOwningControllerNamesTheWorkload) {
  Pod stateful = pod("db-0", {});
  stateful.meta.owner = OwnerRef{"StatefulSet", "db"};
  EXPECT_EQ(workloadOf(stateful).name, "db");

  Pod deployment = pod("reviews-v2-5d8f7c9b6-x7k2p", {{"pod-template-hash", "5d8f7c9b6"}});
  deployment.meta.owner = OwnerRef{"ReplicaSet", "reviews-v2-5d8f7c9b6"};
  EXPECT_EQ(workloadOf(deployment).name, "reviews-v2");

  Pod cron = pod("backup-28947660-abcde", {});
  cron.meta.owner = OwnerRef{"Job", "backup-28947660"};
  EXPECT_EQ(workloadOf(cron).name, "backup");  // the CronJob, not one run of it

  Pod job = pod("migrate-xyz12", {});
  job.meta.owner = OwnerRef{"Job", "migrate"};
  EXPECT_EQ(workloadOf(job).name, "migrate");
}

TEST(WorkloadOf, HashLabelThatIsNotInTheNameLeavesTheName) {
  EXPECT_EQ(workloadOf(pod("odd-name", {{"pod-template-hash", "abc"}})).name, "odd-name");
}

}  // namespace
}  // namespace meshlock::config
