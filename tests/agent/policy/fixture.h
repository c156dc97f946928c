// A small cluster for policy table tests: namespaces shop (enrolled), legacy
// (not) and istio-system; pods shop/web (8080 http, 9090), shop/client,
// legacy/db (5432); services web (80→http, 9090) and db; the API server.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "config/manifest.h"
#include "policy/policy.h"

namespace meshlock::policy::testing {

inline const char* kBase = R"(
apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {meshlock.io/mtls: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: legacy}
---
apiVersion: v1
kind: Namespace
metadata: {name: default}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, uid: uid-web, labels: {app: web}}
spec:
  serviceAccountName: web
  nodeName: node-a
  containers: [{name: web, ports: [{containerPort: 8080, name: http}, {containerPort: 9090}]}]
status: {podIP: 10.244.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, uid: uid-client, labels: {app: client}}
spec: {serviceAccountName: client, nodeName: node-b, containers: [{name: c}]}
status: {podIP: 10.244.2.10}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: legacy, uid: uid-legacy-client, labels: {app: client}}
spec: {nodeName: node-b, containers: [{name: c}]}
status: {podIP: 10.244.2.20}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: legacy, uid: uid-db, labels: {app: db}}
spec: {nodeName: node-a, containers: [{name: db, ports: [{containerPort: 5432}]}]}
status: {podIP: 10.244.1.20}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.10.10
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}, {name: metrics, port: 9090, targetPort: 9090}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: legacy}
spec: {clusterIP: 10.96.20.20, selector: {app: db}, ports: [{name: pg, port: 5432}]}
---
apiVersion: v1
kind: Service
metadata: {name: kubernetes, namespace: default}
spec: {clusterIP: 10.96.0.1, ports: [{name: https, port: 443, targetPort: 6443}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: kubernetes, namespace: default}
subsets: [{addresses: [{ip: 172.18.0.2}], ports: [{name: https, port: 6443}]}]
)";

// The base cluster plus `extra` documents, indexed. Fails the test on manifest errors.
inline std::shared_ptr<const PolicyIndex> cluster(const std::string& extra = "", bool with_base = true) {
  std::string text = with_base ? std::string(kBase) + "\n---\n" + extra : extra;
  auto parsed = config::parseManifests(text, "test.yaml");
  for (const auto& e : parsed.errors) ADD_FAILURE() << e.describe();
  return PolicyIndex::build(std::move(parsed.state));
}

struct Pair {
  ClientTls client;
  ServerMode server;
  Outcome outcome;
  std::vector<std::string> identities;
  std::vector<std::string> decided_by;
};

inline Pair check(const PolicyIndex& ix, const std::string& from, const std::string& to) {
  auto f = parsePodRef(from);
  auto t = parseTarget(to);
  EXPECT_TRUE(f && t);
  auto r = checkConnection(ix, *f, *t);
  EXPECT_TRUE(r) << (r ? "" : r.error().message);
  if (!r) return {};
  return {r->client_tls, r->server_mode, r->outcome, r->expected_identities, r->decided_by};
}

inline ServerMode inboundMode(const PolicyIndex& ix, const std::string& uid, uint16_t port) {
  return ix.inbound(config::PodUid(uid), port).mode;
}

}  // namespace meshlock::policy::testing
