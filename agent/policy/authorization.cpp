// AuthorizationPolicy compiled for L4 decisions (authorization.h).
#include "policy/authorization.h"

#include <algorithm>
#include <charconv>
#include <optional>

namespace meshlock::policy {
namespace {

using config::AuthzAction;

// Istio's string match (pilot/pkg/serviceregistry/ambient/authorization.go
// stringToMatch): "*" any non-empty value, "*abc" a suffix, "abc*" a prefix.
struct Pattern {
  enum class Kind : uint8_t { kExact, kPrefix, kSuffix, kPresence } kind = Kind::kExact;
  std::string text;

  static Pattern of(std::string_view written) {
    if (written == "*") return {Kind::kPresence, {}};
    if (written.starts_with('*')) return {Kind::kSuffix, std::string(written.substr(1))};
    if (written.ends_with('*')) return {Kind::kPrefix, std::string(written.substr(0, written.size() - 1))};
    return {Kind::kExact, std::string(written)};
  }
  [[nodiscard]] bool matches(std::string_view value) const {
    switch (kind) {
      case Kind::kPresence: return !value.empty();
      case Kind::kPrefix: return value.starts_with(text);
      case Kind::kSuffix: return value.ends_with(text);
      case Kind::kExact: break;
    }
    return value == text;
  }
};

// The peer's identity in the forms the fields compare: principals without
// "spiffe://" (ztunnel StringMatch::matches_principal), and its namespace
// and service account. All empty for plaintext.
struct Peer {
  std::string_view principal;  // "cluster.local/ns/shop/sa/web"
  std::string_view ns;
  std::string_view service_account;

  static Peer of(std::string_view spiffe) {
    Peer peer;
    constexpr std::string_view kScheme = "spiffe://";
    if (!spiffe.starts_with(kScheme)) return peer;
    peer.principal = spiffe.substr(kScheme.size());
    // <trust domain>/ns/<ns>/sa/<sa>: a verified peer's ID always has this form.
    const std::size_t ns_at = peer.principal.find("/ns/");
    const std::size_t sa_at = peer.principal.find("/sa/", ns_at == std::string_view::npos ? 0 : ns_at + 4);
    if (ns_at != std::string_view::npos && sa_at != std::string_view::npos) {
      peer.ns = peer.principal.substr(ns_at + 4, sa_at - ns_at - 4);
      peer.service_account = peer.principal.substr(sa_at + 4);
    }
    return peer;
  }
};

struct Connection {
  Peer peer;
  const AuthzRequest& request;
};

// Positive values must have one hit (if any are given), negative ones none.
template <typename T, typename Hit>
bool fieldMatches(const std::vector<T>& positive, const std::vector<T>& negative, Hit hit) {
  if (!positive.empty() && std::none_of(positive.begin(), positive.end(), hit)) return false;
  return negative.empty() || std::none_of(negative.begin(), negative.end(), hit);
}

// One source, operation or condition: ztunnel's RbacMatch. Fields present are ANDed.
struct Match {
  std::vector<Pattern> principals, not_principals, namespaces, not_namespaces, snis, not_snis;
  std::vector<std::pair<std::string, std::string>> service_accounts, not_service_accounts;  // ns, sa
  std::vector<IpPrefix> source_ips, not_source_ips, destination_ips, not_destination_ips;
  std::vector<uint16_t> ports, not_ports;

  [[nodiscard]] bool empty() const {
    return principals.empty() && not_principals.empty() && namespaces.empty() && not_namespaces.empty() &&
           snis.empty() && not_snis.empty() && service_accounts.empty() && not_service_accounts.empty() &&
           source_ips.empty() && not_source_ips.empty() && destination_ips.empty() && not_destination_ips.empty() &&
           ports.empty() && not_ports.empty();
  }

  [[nodiscard]] bool matches(const Connection& c) const {
    const AuthzRequest& r = c.request;
    // A principal pattern never matches a connection without one (not even "*").
    auto principal = [&](const Pattern& p) { return !c.peer.principal.empty() && p.matches(c.peer.principal); };
    auto ns = [&](const Pattern& p) { return p.matches(c.peer.ns); };
    auto account = [&](const std::pair<std::string, std::string>& a) {
      return !c.peer.ns.empty() && a.first == c.peer.ns && a.second == c.peer.service_account;
    };
    auto source = [&](const IpPrefix& p) { return p.contains(r.source_ip); };
    auto destination = [&](const IpPrefix& p) { return p.contains(r.destination_ip); };
    auto port = [&](uint16_t p) { return p == r.destination_port; };
    auto sni = [&](const Pattern& p) { return p.matches(r.sni); };
    return fieldMatches(principals, not_principals, principal) && fieldMatches(namespaces, not_namespaces, ns) &&
           fieldMatches(service_accounts, not_service_accounts, account) &&
           fieldMatches(source_ips, not_source_ips, source) &&
           fieldMatches(destination_ips, not_destination_ips, destination) && fieldMatches(ports, not_ports, port) &&
           fieldMatches(snis, not_snis, sni);
  }
};

// A clause is the OR of its matches; none at all is true; empty matches are
// skipped (ztunnel Authorization::matches), so a clause of only empty ones is false.
using Clause = std::vector<Match>;

bool clauseMatches(const Clause& clause, const Connection& c) {
  if (clause.empty()) return true;
  return std::any_of(clause.begin(), clause.end(), [&](const Match& m) { return !m.empty() && m.matches(c); });
}

std::vector<Pattern> patterns(const std::vector<std::string>& written) {
  std::vector<Pattern> out;
  for (const auto& w : written) out.push_back(Pattern::of(w));
  return out;
}

// Entries that do not parse are dropped, as istiod drops them (stringToIP, stringToPort).
std::vector<IpPrefix> prefixes(const std::vector<std::string>& written) {
  std::vector<IpPrefix> out;
  for (const auto& w : written)
    if (auto p = IpPrefix::parse(w)) out.push_back(*p);
  return out;
}

std::vector<uint16_t> ports(const std::vector<std::string>& written) {
  std::vector<uint16_t> out;
  for (const auto& w : written) {
    unsigned value = 0;
    auto [end, ec] = std::from_chars(w.data(), w.data() + w.size(), value);
    if (!w.empty() && ec == std::errc() && end == w.data() + w.size() && value >= 1 && value <= 65535)
      out.push_back(static_cast<uint16_t>(value));
  }
  return out;
}

// "ns/sa", or "sa" in the policy's namespace (istiod stringToServiceAccountMatch).
std::vector<std::pair<std::string, std::string>> accounts(const std::vector<std::string>& written,
                                                          const std::string& policy_ns) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& w : written) {
    const std::size_t slash = w.find('/');
    if (slash == std::string::npos) out.emplace_back(policy_ns, w);
    else out.emplace_back(w.substr(0, slash), w.substr(slash + 1));
  }
  return out;
}

// The `when` keys a connection answers (Istio's TCP attributes, the ones a
// sidecar's network RBAC filter matches too).
std::optional<Match> conditionMatch(const config::AuthzCondition& when) {
  Match m;
  const std::string& key = when.key;
  if (key == "source.ip" || key == "remote.ip") {
    m.source_ips = prefixes(when.values);
    m.not_source_ips = prefixes(when.not_values);
  } else if (key == "source.namespace") {
    m.namespaces = patterns(when.values);
    m.not_namespaces = patterns(when.not_values);
  } else if (key == "source.principal") {
    m.principals = patterns(when.values);
    m.not_principals = patterns(when.not_values);
  } else if (key == "destination.ip") {
    m.destination_ips = prefixes(when.values);
    m.not_destination_ips = prefixes(when.not_values);
  } else if (key == "destination.port") {
    m.ports = ports(when.values);
    m.not_ports = ports(when.not_values);
  } else if (key == "connection.sni") {
    m.snis = patterns(when.values);
    m.not_snis = patterns(when.not_values);
  } else {
    return std::nullopt;  // needs a request (request.headers[...], request.auth.claims[...], ...)
  }
  return m;
}

bool selectorApplies(const config::AuthorizationPolicy& policy, const config::Pod& pod) {
  return config::selectorMatches(*policy.selector, pod.labels());
}

}  // namespace

struct AuthorizationIndex::Compiled {
  const config::AuthorizationPolicy* policy = nullptr;
  struct Rule {
    std::vector<Clause> clauses;  // from, to, one per condition: all must hold
    bool never = false;           // an ALLOW rule that needs L7 attributes
  };
  std::vector<Rule> rules;

  explicit Compiled(const config::AuthorizationPolicy& p) : policy(&p) {
    const bool allow_like = p.action != AuthzAction::kDeny;
    for (const config::AuthzRule& written : p.rules) {
      Rule rule;
      bool needs_request = false;
      Clause from;
      for (const config::AuthzSource& s : written.from) {
        needs_request |= !s.l7_fields.empty();
        Match m;
        m.principals = patterns(s.principals);
        m.not_principals = patterns(s.not_principals);
        m.namespaces = patterns(s.namespaces);
        m.not_namespaces = patterns(s.not_namespaces);
        m.service_accounts = accounts(s.service_accounts, p.meta.ref.ns);
        m.not_service_accounts = accounts(s.not_service_accounts, p.meta.ref.ns);
        // At L4 the remote address is the peer's: nothing in front rewrites it.
        m.source_ips = prefixes(s.ip_blocks);
        for (auto& r : prefixes(s.remote_ip_blocks)) m.source_ips.push_back(r);
        m.not_source_ips = prefixes(s.not_ip_blocks);
        for (auto& r : prefixes(s.not_remote_ip_blocks)) m.not_source_ips.push_back(r);
        from.push_back(std::move(m));
      }
      Clause to;
      for (const config::AuthzOperation& o : written.to) {
        needs_request |= !o.l7_fields.empty();
        Match m;
        m.ports = ports(o.ports);
        m.not_ports = ports(o.not_ports);
        to.push_back(std::move(m));
      }
      rule.clauses.push_back(std::move(from));
      rule.clauses.push_back(std::move(to));
      for (const config::AuthzCondition& when : written.when) {
        auto m = conditionMatch(when);
        needs_request |= !m.has_value();
        // DENY: a condition that needs a request is an empty match, so this rule never fires.
        rule.clauses.push_back(Clause{m.value_or(Match{})});
      }
      rule.never = allow_like && needs_request;
      rules.push_back(std::move(rule));
    }
  }

  // The first rule that matches, or -1. No rules: never.
  [[nodiscard]] int firstMatch(const Connection& c) const {
    for (std::size_t i = 0; i < rules.size(); ++i) {
      const Rule& rule = rules[i];
      if (rule.never) continue;
      if (std::all_of(rule.clauses.begin(), rule.clauses.end(),
                      [&](const Clause& clause) { return clauseMatches(clause, c); }))
        return static_cast<int>(i);
    }
    return -1;
  }
};

AuthorizationIndex::AuthorizationIndex(const config::ClusterState& state, RootOf root_of)
    : root_of_(std::move(root_of)) {
  std::vector<const config::AuthorizationPolicy*> ordered;
  for (const auto& p : state.authorization_policies) ordered.push_back(&p);
  // Oldest first, as Istio orders policies of one kind; it decides which policy a decision names.
  std::stable_sort(ordered.begin(), ordered.end(), [](const auto* a, const auto* b) { return config::olderThan(a->meta, b->meta); });
  for (const config::AuthorizationPolicy* policy : ordered) {
    if (!policy->target_refs.empty()) continue;  // a gateway's or waypoint's policy
    compiled_.push_back(std::make_unique<Compiled>(*policy));
    const Compiled* c = compiled_.back().get();
    const std::string& ns = policy->meta.ref.ns;
    const bool in_root = root_of_(ns) == ns;  // a root namespace: its policies reach its whole mesh
    if (!policy->hasSelector()) {
      (in_root ? mesh_wide_[ns] : namespace_[ns]).push_back(c);
      continue;
    }
    for (const auto& pod : state.pods) {
      if ((pod.ns() == ns || (in_root && root_of_(pod.ns()) == ns)) && selectorApplies(*policy, pod)) {
        selected_[&pod].push_back(c);
      }
    }
  }
}

AuthorizationIndex::~AuthorizationIndex() = default;

template <typename Fn>
void AuthorizationIndex::forEachApplying(const config::Pod& destination, Fn&& fn) const {
  if (!mesh_wide_.empty()) {
    if (auto it = mesh_wide_.find(root_of_(destination.ns())); it != mesh_wide_.end())
      for (const Compiled* c : it->second) fn(*c);
  }
  if (auto it = namespace_.find(destination.ns()); it != namespace_.end())
    for (const Compiled* c : it->second) fn(*c);
  if (auto it = selected_.find(&destination); it != selected_.end())
    for (const Compiled* c : it->second) fn(*c);
}

bool AuthorizationIndex::anyApplies(const config::Pod& destination) const {
  if (!mesh_wide_.empty() && mesh_wide_.contains(root_of_(destination.ns()))) return true;
  return namespace_.contains(destination.ns()) || selected_.contains(&destination);
}

std::vector<const config::AuthorizationPolicy*> AuthorizationIndex::applying(const config::Pod& destination) const {
  std::vector<const config::AuthorizationPolicy*> out;
  forEachApplying(destination, [&](const Compiled& c) { out.push_back(c.policy); });
  return out;
}

AuthzDecision AuthorizationIndex::decide(const config::Pod& destination, const AuthzRequest& request) const {
  AuthzDecision decision;
  if (!anyApplies(destination)) {
    decision.why = "no ALLOW policy applies";
    return decision;
  }
  const Connection c{Peer::of(request.source_principal), request};
  const Compiled* custom = nullptr;
  const Compiled* denied = nullptr;
  const Compiled* allowed = nullptr;
  int denied_rule = -1, allowed_rule = -1;
  bool any_allow = false;
  forEachApplying(destination, [&](const Compiled& p) {
    switch (p.policy->action) {
      case AuthzAction::kCustom:
        if (!custom) custom = &p;
        break;
      case AuthzAction::kDeny:
        if (!denied) {
          if (int rule = p.firstMatch(c); rule >= 0) denied = &p, denied_rule = rule;
        }
        break;
      case AuthzAction::kAudit:
        if (!decision.audited) decision.audited = p.firstMatch(c) >= 0;
        break;
      case AuthzAction::kAllow:
        any_allow = true;
        if (!allowed) {
          if (int rule = p.firstMatch(c); rule >= 0) allowed = &p, allowed_rule = rule;
        }
        break;
    }
  });
  if (custom) {
    decision.result = AuthzResult::kDeny;
    decision.policy = &custom->policy->meta.ref;
    decision.why = "CUSTOM policies (external authorizers) are not supported: denied";
  } else if (denied) {
    decision.result = AuthzResult::kDeny;
    decision.policy = &denied->policy->meta.ref;
    decision.rule = denied_rule;
    decision.why = "DENY policy matched";
  } else if (!any_allow) {
    decision.why = "no ALLOW policy applies";
  } else if (allowed) {
    decision.policy = &allowed->policy->meta.ref;
    decision.rule = allowed_rule;
    decision.why = "ALLOW policy matched";
  } else {
    decision.result = AuthzResult::kDeny;
    decision.why = "ALLOW policies apply, none matched";
  }
  return decision;
}

std::string_view AuthzDecision::keyword() const {
  if (result == AuthzResult::kDeny) return "deny";
  return audited ? "audit" : "allow";
}

std::string AuthzDecision::policyName() const { return policy ? policy->ns + "/" + policy->name : std::string(); }

std::string AuthzDecision::describe() const {
  std::string out = std::string(keyword()) + ": " + std::string(why);
  if (policy) out += " (AuthorizationPolicy " + policyName() + (rule >= 0 ? " rule " + std::to_string(rule) : "") + ")";
  return out;
}

}  // namespace meshlock::policy
