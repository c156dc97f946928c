// Istio AuthorizationPolicy at L4, decided where the mTLS identity is known:
// the agent that terminates a connection for the destination pod. Pure.
//
// Semantics follow Istio's node proxy, ztunnel (istio/ztunnel src/state.rs
// assert_rbac, src/rbac.rs at 62d82653) and istiod's conversion for it
// (istio/istio pilot/pkg/serviceregistry/ambient/authorization.go at
// 86c9f01f), widened where a sidecar's L4 filter knows more than ztunnel
// (remoteIpBlocks, connection.sni: meshlock terminates the TLS itself):
//  - which policies apply to a pod: those of the root namespace without a
//    selector (mesh-wide), those of its namespace without a selector, and
//    those whose selector matches it, in its namespace or the root namespace.
//    targetRefs policies address gateways and waypoints, not a node proxy:
//    they do not apply here (validate says so).
//  - order: CUSTOM (not supported: the connection is denied, the safe way),
//    DENY (any rule matches: deny), ALLOW (none applies: allow; one of their
//    rules matches: allow; else deny). AUDIT never changes the result.
//  - a policy with no rules matches nothing (ALLOW `spec: {}` denies all);
//    `rules: [{}]` matches everything.
//  - a rule is the AND of its `from` clause (OR of its sources), its `to`
//    clause (OR of its operations) and every `when` condition; within one
//    source or operation the fields present are ANDed, a field's values ORed,
//    its not* values must all miss.
//  - fields that need an HTTP request (methods, paths, hosts,
//    requestPrincipals, request.* conditions, ...): an ALLOW rule with any of
//    them never matches (fails closed); in a DENY rule they are dropped, so
//    the rest denies more, and a source, operation or condition left empty
//    never matches (istio#61166).
//  - a plaintext connection has no principal and no namespace: principals,
//    namespaces and serviceAccounts never match it, their not* forms do.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "config/types.h"

namespace meshlock::policy {

// One connection, as the terminating agent sees it after the handshake.
struct AuthzRequest {
  std::string_view source_principal;  // the peer's verified SPIFFE ID; empty for plaintext
  IpAddress source_ip;
  IpAddress destination_ip;
  uint16_t destination_port = 0;  // the pod's (container) port
  std::string_view sni;           // the server name the client asked for, if any
};

enum class AuthzResult : uint8_t { kAllow, kDeny };

struct AuthzDecision {
  AuthzResult result = AuthzResult::kAllow;
  bool audited = false;                       // an AUDIT policy's rule matched too
  const config::ObjectRef* policy = nullptr;  // the policy that decided (null: no policy did)
  int rule = -1;                              // its rule, counted from 0
  std::string_view why;  // "no ALLOW policy applies", "DENY policy matched", ...
  // "allow", "deny" or "audit" (allowed, and an AUDIT policy matched): `check -o json` "authorization".
  [[nodiscard]] std::string_view keyword() const;
  // "NS/NAME" or empty: `check -o json` "authorization_policy".
  [[nodiscard]] std::string policyName() const;
  [[nodiscard]] std::string describe() const;  // one line for logs and `check`
};

class AuthorizationIndex {
 public:
  // The root namespace of the mesh that governs a namespace (empty: none).
  using RootOf = std::function<const std::string&(std::string_view ns)>;
  // Compiles every policy once; `state` must outlive the index (PolicyIndex owns both).
  AuthorizationIndex(const config::ClusterState& state, RootOf root_of);
  ~AuthorizationIndex();
  AuthorizationIndex(const AuthorizationIndex&) = delete;
  AuthorizationIndex& operator=(const AuthorizationIndex&) = delete;

  [[nodiscard]] AuthzDecision decide(const config::Pod& destination, const AuthzRequest& request) const;
  // Whether any policy applies to the pod (the common case of none costs one lookup).
  [[nodiscard]] bool anyApplies(const config::Pod& destination) const;
  // The policies that apply to the pod, in evaluation order.
  [[nodiscard]] std::vector<const config::AuthorizationPolicy*> applying(const config::Pod& destination) const;

  struct Compiled;

 private:
  template <typename Fn>
  void forEachApplying(const config::Pod& destination, Fn&& fn) const;

  std::vector<std::unique_ptr<Compiled>> compiled_;
  RootOf root_of_;
  std::unordered_map<std::string, std::vector<const Compiled*>> mesh_wide_;  // per root namespace, no selector
  std::unordered_map<std::string, std::vector<const Compiled*>> namespace_;  // per namespace, no selector
  std::unordered_map<const config::Pod*, std::vector<const Compiled*>> selected_;  // selector policies per pod
};

}  // namespace meshlock::policy
