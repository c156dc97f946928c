// The validation rules. Each one is a question about the index; the codes are
// stable so scripts and docs can refer to them.
#include "policy/validate.h"

#include "config/credentials.h"

#include <algorithm>
#include <charconv>
#include <map>
#include <set>
#include <tuple>

namespace meshlock::policy {

using config::DestinationRule;
using config::PeerAuthentication;
using config::Pod;
using config::Service;
using config::TlsMode;

std::string_view toString(Severity severity) {
  return severity == Severity::kError ? "error" : "warning";
}

std::string Finding::describe() const {
  return std::string(toString(severity)) + " " + code + " " + resource + ": " + message;
}

namespace {

class Validator {
 public:
  explicit Validator(const PolicyIndex& index) : ix_(index), st_(index.state()) {}

  std::vector<Finding> run() {
    peerAuthentications();
    destinationRules();
    services();
    namespaces();
    controlPlanes();
    trustDomains();
    authorizationPolicies();
    unappliedFields();
    duplicates();
    std::sort(out_.begin(), out_.end(), [](const Finding& a, const Finding& b) {
      return std::tie(a.code, a.resource, a.message) < std::tie(b.code, b.resource, b.message);
    });
    return std::move(out_);
  }

 private:
  void add(std::string code, const config::ObjectRef& ref, std::string message) {
    out_.push_back(Finding{std::move(code), Severity::kWarning, ref.toString(), std::move(message)});
  }
  // What Istio's own validation rejects, or what cannot work at all.
  void addError(std::string code, const config::ObjectRef& ref, std::string message) {
    out_.push_back(Finding{std::move(code), Severity::kError, ref.toString(), std::move(message)});
  }

  std::vector<const Pod*> podsSelected(const std::string& ns, const config::Labels& selector) const {
    std::vector<const Pod*> out;
    for (const Pod& p : st_.pods) {
      if (p.ns() == ns && config::selectorMatches(selector, p.labels())) out.push_back(&p);
    }
    return out;
  }

  // What an AuthorizationPolicy does at L4 that its author may not expect
  // (agent/policy/authorization.h; the same cases istiod reports in the
  // policy's status for ztunnel: pilot/pkg/serviceregistry/ambient/authorization.go).
  void authorizationPolicies() {
    auto joined = [](const std::vector<std::string>& names) {
      std::string out;
      for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
      return out;
    };
    for (const config::AuthorizationPolicy& ap : st_.authorization_policies) {
      const auto& ref = ap.meta.ref;
      if (!ap.target_refs.empty()) {
        add("ML021", ref, "targetRefs (" + joined(ap.target_refs) +
                              ") address a gateway or waypoint: meshlock, a node proxy, does not apply this policy");
        continue;
      }
      if (ap.action == config::AuthzAction::kCustom) {
        add("ML018", ref, "CUSTOM (external authorizer" + (ap.provider.empty() ? std::string() : " " + ap.provider) +
                              ") is not supported: every connection to the workloads it selects is denied");
        continue;
      }
      for (std::size_t i = 0; i < ap.rules.size(); ++i) {
        const config::AuthzRule& rule = ap.rules[i];
        std::vector<std::string> http;
        bool l4_left = true;  // DENY: every source, operation and condition keeps an L4 part
        auto layer4 = [](const config::AuthzSource& s) {
          return !(s.principals.empty() && s.not_principals.empty() && s.namespaces.empty() &&
                   s.not_namespaces.empty() && s.service_accounts.empty() && s.not_service_accounts.empty() &&
                   s.ip_blocks.empty() && s.not_ip_blocks.empty() && s.remote_ip_blocks.empty() &&
                   s.not_remote_ip_blocks.empty());
        };
        for (const auto& s : rule.from) {
          for (const auto& f : s.l7_fields) http.push_back("source." + f);
          if (!s.l7_fields.empty() && !layer4(s)) l4_left = false;
        }
        for (const auto& o : rule.to) {
          for (const auto& f : o.l7_fields) http.push_back("operation." + f);
          if (!o.l7_fields.empty() && o.ports.empty() && o.not_ports.empty()) l4_left = false;
        }
        static const std::set<std::string> kConnectionKeys = {"source.ip", "remote.ip", "source.namespace",
                                                              "source.principal", "destination.ip",
                                                              "destination.port", "connection.sni"};
        for (const auto& w : rule.when) {
          if (!kConnectionKeys.contains(w.key)) {
            http.push_back("when " + w.key);
            l4_left = false;
          }
        }
        const std::string where = "rule " + std::to_string(i) + " ";
        if (!http.empty() && ap.action == config::AuthzAction::kDeny) {
          add("ML020", ref, where + "uses HTTP attributes (" + joined(http) + "), which a node proxy cannot see: " +
                                (l4_left ? "they are left out, so it denies every connection its other fields match"
                                         : "it has no part left to match and has no effect"));
        } else if (!http.empty()) {
          add("ML019", ref, where + "uses HTTP attributes (" + joined(http) +
                                "), which a node proxy cannot see: it never matches (fails closed); HTTP rules need a "
                                "sidecar or waypoint");
        }
        auto badEntries = [&](const std::vector<std::string>& values, const char* field, bool ip) {
          for (const auto& v : values) {
            bool ok = false;
            if (ip) {
              ok = IpPrefix::parse(v).has_value();
            } else {
              unsigned n = 0;
              auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
              ok = !v.empty() && ec == std::errc() && end == v.data() + v.size() && n >= 1 && n <= 65535;
            }
            if (!ok)
              add("ML022", ref, where + field + " \"" + v + "\" is not " + (ip ? "an IP or CIDR" : "a port number") +
                                    ": ignored, as istiod ignores it");
          }
        };
        for (const auto& s : rule.from) {
          badEntries(s.ip_blocks, "ipBlocks", true);
          badEntries(s.not_ip_blocks, "notIpBlocks", true);
          badEntries(s.remote_ip_blocks, "remoteIpBlocks", true);
          badEntries(s.not_remote_ip_blocks, "notRemoteIpBlocks", true);
        }
        for (const auto& o : rule.to) {
          badEntries(o.ports, "ports", false);
          badEntries(o.not_ports, "notPorts", false);
        }
      }
    }
  }

  void peerAuthentications() {
    std::map<std::string, std::vector<const PeerAuthentication*>> ns_wide;
    std::map<const Pod*, std::vector<const PeerAuthentication*>> per_pod;
    for (const PeerAuthentication& pa : st_.peer_authentications) {
      const auto& ref = pa.meta.ref;
      if (ref.kind == "Policy") {
        if (!pa.maistra_targets.empty()) {
          for (const auto& target : pa.maistra_targets) {
            const Service* svc = nullptr;
            for (const Service& s : st_.services) {
              if (s.ns() == ref.ns && s.name() == target.service) svc = &s;
            }
            if (!svc) {
              add("ML012", ref, "target service " + target.service + " does not exist in namespace " + ref.ns +
                                    "; this target is not applied");
            } else if (!svc->selector) {
              add("ML012", ref, "target service " + target.service +
                                    " has no selector, so its pods are unknown; this target is not applied");
            }
          }
        } else if (ref.name != "default") {
          add("ML012", ref, "a namespace-wide Policy must be named `default`; this one is ignored");
        } else {
          ns_wide[ref.ns].push_back(&pa);
        }
        continue;
      }
      if (pa.mesh_wide_kind) {
        ns_wide[ref.ns.empty() ? ix_.mesh().root_namespace : ix_.meshFor(ref.ns).root_namespace].push_back(&pa);
        continue;
      }
      // istio/istio pkg/config/validation/validation.go ValidatePeerAuthentication.
      if (pa.port_level_declared && pa.port_level.empty()) {
        addError("ML023", ref, "portLevelMtls is empty: Istio's validation rejects it (\"port level mTLS, if "
                               "defined, must have at least one element\")");
      }
      if (!pa.hasSelector()) {
        ns_wide[ref.ns].push_back(&pa);
        if (!pa.port_level.empty()) {
          addError("ML004", ref, "portLevelMtls on a policy without a selector: Istio's validation rejects it "
                                 "(\"mesh/namespace peer authentication cannot have port level mTLS\"); "
                                 "meshlock ignores it");
        }
        continue;
      }
      if (ix_.isRootNamespace(ref.ns)) {
        add("ML008", ref, "a PeerAuthentication with a selector in the root namespace " + ref.ns +
                              " is ignored (Istio applies root-namespace policies mesh-wide only without selector)");
        continue;
      }
      auto pods = podsSelected(ref.ns, *pa.selector);
      if (pods.empty()) add("ML006", ref, "selector matches no pod in namespace " + ref.ns);
      for (const Pod* p : pods) per_pod[p].push_back(&pa);
      for (const auto& [port, mode] : pa.port_level) {
        if (pods.empty()) break;
        bool declared = std::any_of(pods.begin(), pods.end(), [&](const Pod* p) { return p->hasContainerPort(port); });
        if (!declared) {
          add("ML005", ref, "portLevelMtls port " + std::to_string(port) +
                                " is not a container port of any selected pod (ports are container ports, not service ports)");
        }
      }
    }
    for (auto& [ns, list] : ns_wide) {
      if (list.size() < 2) continue;
      std::sort(list.begin(), list.end(), [](auto* a, auto* b) { return olderThan(a->meta, b->meta); });
      for (std::size_t i = 1; i < list.size(); ++i) {
        add("ML003", list[i]->meta.ref,
            std::string(ix_.isRootNamespace(ns) ? "more than one mesh-wide" : "more than one namespace-wide") +
                " policy in namespace " + ns + "; the oldest, " + list[0]->meta.ref.toString() + ", wins and this one is ignored");
      }
    }
    for (auto& [pod, list] : per_pod) {
      if (list.size() < 2) continue;
      std::sort(list.begin(), list.end(), [](auto* a, auto* b) { return olderThan(a->meta, b->meta); });
      for (std::size_t i = 1; i < list.size(); ++i) {
        add("ML007", list[i]->meta.ref, "pod " + pod->ns() + "/" + pod->name() + " is also selected by " +
                                            list[0]->meta.ref.toString() + ", which is older and wins");
      }
    }
  }

  // credentialName as a sidecar (and so meshlock) applies it (config/credentials.h).
  void credentialFindings(const DestinationRule& dr, const config::ClientTlsSettings& tls, const std::string& where) {
    const auto& ref = dr.meta.ref;
    const std::string field = "credentialName \"" + tls.credential_name + "\"" + where;
    if (config::namesConfigMap(tls.credential_name)) {
      configMapFindings(dr, tls, field);
      return;
    }
    auto secret = config::credentialSecret(tls.credential_name, ref.ns);
    if (!secret) {
      addError("ML024", ref, field + ": " + secret.error().describe() + "; the rule's connections are refused");
      return;
    }
    if (!config::credentialApplies(dr)) {
      // buildUpstreamClusterTLSContext (cluster_tls.go) builds no TLS context for it at a sidecar.
      add("ML024", ref, field + " in a rule without workloadSelector: Istio applies it at gateways only, and its "
                        "sidecars, like meshlock, then originate no TLS at all for this host; add a workloadSelector "
                        "to apply it to the selected pods");
      return;
    }
    // Secrets among the inputs are read as the agent will read them; others
    // are the agent's to fetch at run time (get by name, in the pods' namespace).
    bool given = false;
    for (const config::Secret& s : st_.secrets) {
      given |= s.meta.ref.ns == secret->ns &&
               (s.meta.ref.name == secret->name || s.meta.ref.name == secret->name + std::string(config::kCaSecretSuffix));
    }
    if (!given) return;
    config::Pod client;  // any pod of the rule's namespace: manifests' Secrets need no access review
    client.meta.ref.ns = ref.ns;
    if (auto credential = config::clientCredential(tls, client, st_); !credential) {
      addError("ML024", ref, field + ": " + credential.error().describe() + "; the rule's connections are refused");
    }
  }

  // configmap://ns/name: Istio's ValidateTLS (pkg/config/validation/agent)
  // refuses a malformed name and another namespace than the rule's; the CA
  // is read from the ConfigMap, with or without workloadSelector.
  void configMapFindings(const DestinationRule& dr, const config::ClientTlsSettings& tls, const std::string& field) {
    const auto& ref = dr.meta.ref;
    auto map = config::credentialConfigMap(tls.credential_name);
    if (!map) {
      addError("ML024", ref, field + ": invalid configmap:// credentialName: " + map.error().describe() +
                                 " (Istio refuses the rule); its connections are refused");
      return;
    }
    if (map->ns != ref.ns) {
      addError("ML024", ref, field + ": invalid configmap:// credentialName: namespace must match the configuration "
                                 "namespace \"" + ref.ns + "\" (Istio refuses the rule)");
      return;
    }
    bool given = false;
    for (const config::ConfigMap& m : st_.config_maps) given |= m.meta.ref.ns == map->ns && m.meta.ref.name == map->name;
    if (!given && tls.mode != config::TlsMode::kMutual) return;  // the agent reads it by name at run time
    config::Pod client;
    client.meta.ref.ns = ref.ns;
    if (auto credential = config::clientCredential(tls, client, st_); !credential) {
      addError("ML024", ref, field + ": " + credential.error().describe() + "; the rule's connections are refused");
    }
  }

  void destinationRules() {
    std::vector<const DestinationRule*> rules;
    for (const auto& dr : st_.destination_rules) rules.push_back(&dr);
    for (const auto* dr : ix_.syntheticRules()) rules.push_back(dr);
    // Rules istiod merges into one: same namespace and host, no selector, same exportTo.
    std::map<std::tuple<std::string, std::string, std::set<std::string>>, std::vector<const DestinationRule*>> same_host;
    const std::string suffix = "svc." + ix_.mesh().domain_suffix;
    for (const DestinationRule* dr : rules) {
      const auto& ref = dr->meta.ref;
      std::string host = ix_.ruleHost(*dr);
      if (!dr->workload_selector && !dr->synthetic) {
        same_host[{ref.ns, host, std::set<std::string>(dr->export_to.begin(), dr->export_to.end())}].push_back(dr);
      }
      bool cluster_local = host.ends_with("." + suffix) && !host.starts_with("*");
      if (cluster_local && !ix_.serviceByHost(host)) {
        add("ML009", ref, "host " + host + " matches no Service in the manifests");
      } else if (!host.starts_with("*") && !dr->synthetic && !ix_.inRegistry(host)) {
        add("ML009", ref, "host " + host + " matches no Service or ServiceEntry: istiod ignores the rule and the "
                          "traffic passes through; add a ServiceEntry for the host");
      }
      // The TLS settings meshlock originates with (SIMPLE, MUTUAL).
      auto checkOrigination = [&](const config::ClientTlsSettings& tls, const std::string& where) {
        if (tls.mode != TlsMode::kSimple && tls.mode != TlsMode::kMutual) return;
        const std::string mode = tls.mode == TlsMode::kMutual ? "MUTUAL" : "SIMPLE";
        if (tls.mode == TlsMode::kMutual && tls.credential_name.empty() &&
            (tls.client_certificate.empty() || tls.private_key.empty())) {
          add("ML014", ref, "MUTUAL TLS" + where + " without clientCertificate and privateKey");
        }
        if (!tls.credential_name.empty()) credentialFindings(*dr, tls, where);
        if (tls.insecure_skip_verify) {
          add("ML025", ref, "insecureSkipVerify" + where + " is not applied: meshlock verifies the server's "
                            "certificate anyway (against caCertificates, or the node's system roots)");
        }
        // istioctl analyze IST0128/IST0129 (NoServerCertificateVerification...,
        // CaCertificateAnalyzer): no caCertificates, unless a credentialName
        // with a workloadSelector brings the CA.
        const bool credential_ca = !tls.credential_name.empty() && config::credentialApplies(*dr);
        if (tls.ca_certificates.empty() && !credential_ca) {
          add("ML026", ref, mode + where + " without caCertificates" +
                                (tls.credential_name.empty()
                                     ? ": the server is verified against the node's system roots (Istio does the "
                                       "same with VERIFY_CERTIFICATE_AT_CLIENT, its default); set caCertificates "
                                       "for a private CA"
                                     : ", and its credentialName does not apply without workloadSelector (ML024)"));
        }
      };
      if (dr->tls) checkOrigination(*dr->tls, "");
      for (const auto& pls : dr->port_level) {
        if (pls.tls) checkOrigination(*pls.tls, " on port " + std::to_string(pls.port));
      }
      for (const std::string& subset : dr->subsets_with_tls) {
        add("ML027", ref, "subset " + subset + " sets TLS: it applies only where a VirtualService routes to the "
                          "subset, and meshlock does not read VirtualServices, so it is not applied");
      }
    }
    // istiod keeps the first trafficPolicy (oldest first) and adds the subsets
    // of the others: a later rule's trafficPolicy is ignored when an older one has one.
    for (auto& [key, list] : same_host) {
      if (list.size() < 2) continue;
      std::sort(list.begin(), list.end(), [](auto* a, auto* b) { return olderThan(a->meta, b->meta); });
      const DestinationRule* policy_from = nullptr;
      for (const DestinationRule* dr : list) {
        if (!dr->has_traffic_policy) continue;
        if (!policy_from) {
          policy_from = dr;
          continue;
        }
        add("ML010", dr->meta.ref, "its trafficPolicy is ignored: another DestinationRule for " + std::get<1>(key) +
                                       " in namespace " + std::get<0>(key) + ", " + policy_from->meta.ref.toString() +
                                       ", is older and has one (istiod merges the rules: the first trafficPolicy "
                                       "wins, subsets are added)");
      }
    }
    effectiveRules();
  }

  // The rule a client actually uses depends on its namespace, so the checks
  // that compare a rule with its destination are made from each namespace
  // that has meshlock-served clients, with the rule Istio's lookup picks.
  void effectiveRules() {
    std::map<std::string, const Pod*> clients;  // one served pod per namespace
    for (const Pod& p : st_.pods) {
      if (ix_.served(p)) clients.emplace(p.ns(), &p);
    }
    std::set<std::string> reported;
    for (const auto& [ns, client] : clients) {
      for (const Service& svc : st_.services) {
        std::string fqdn = ix_.fqdn(svc);
        const DestinationRule* dr = ix_.destinationRuleFor(*client, fqdn);
        if (!dr) continue;
        const auto& ref = dr->meta.ref;
        for (const auto& sp : svc.ports) {
          const auto* tls = PolicyIndex::portTls(*dr, sp.port);
          if (!tls) continue;
          auto backends = ix_.backendsOf(svc, sp.port);
          std::string where = fqdn + ":" + std::to_string(sp.port);
          if (!reported.insert(ref.toString() + " " + where).second) continue;
          if (tls->mode == TlsMode::kIstioMutual) {
            bool any_served = std::any_of(backends.begin(), backends.end(),
                                          [&](const Backend& b) {
                                            return b.pod && (ix_.served(*b.pod) || ix_.hasSidecar(*b.pod));
                                          });
            if (!any_served) {
              add("ML002", ref, "ISTIO_MUTUAL towards " + where +
                                    ", which has no meshlock or mesh proxy: connections will fail; "
                                    "add a DestinationRule with tls.mode DISABLE for it");
            }
            continue;
          }
          for (const Backend& b : backends) {
            if (!b.pod) continue;
            auto in = ix_.inbound(*b.pod, b.port);
            if (in.mode != ServerMode::kStrict) continue;
            std::string reason;
            for (const Reason& r : in.decided_by) reason = r.describe();
            if (tls->mode == TlsMode::kDisable) {
              add("ML001", ref, "sends plaintext to " + where + " but pod " + b.pod->ns() + "/" + b.pod->name() +
                                    " port " + std::to_string(b.port) + " is STRICT (" + reason +
                                    "): connections will be refused");
            } else {
              add("ML011", ref, std::string(config::toString(tls->mode)) + " TLS to " + where + " but pod " +
                                    b.pod->ns() + "/" + b.pod->name() + " port " + std::to_string(b.port) +
                                    " is STRICT (" + reason + ") and wants mesh mTLS: handshakes will fail");
            }
            break;  // one finding per service port
          }
        }
      }
    }
  }

  void services() {
    for (const Service& svc : st_.services) {
      if (!svc.selector) continue;
      auto pods = podsSelected(svc.ns(), *svc.selector);
      for (const auto& sp : svc.ports) {
        if (sp.target.name.empty() || pods.empty()) continue;
        for (const Pod* p : pods) {
          if (!p->containerPortNamed(sp.target.name)) {
            add("ML015", svc.meta.ref, "targetPort \"" + sp.target.name + "\" of port " + std::to_string(sp.port) +
                                           " is not a named container port of pod " + p->ns() + "/" + p->name() +
                                           ": the pod is not an endpoint of this port");
          }
        }
      }
    }
  }

  void namespaces() {
    std::set<std::string> known;
    for (const auto& ns : st_.namespaces) known.insert(ns.meta.ref.name);
    std::map<std::string, std::vector<const Pod*>> orphans;
    for (const Pod& p : st_.pods) {
      if (!known.contains(p.ns())) orphans[p.ns()].push_back(&p);
    }
    for (const auto& [ns, pods] : orphans) {
      add("ML017", pods.front()->meta.ref, "namespace " + ns + " has no Namespace object in the manifests, so its " +
                                               std::to_string(pods.size()) +
                                               " pod(s) are treated as not enrolled");
    }
    // Enrolled and injected: new pods get Envoy sidecars, which meshlock then leaves to them.
    for (const auto& ns : st_.namespaces) {
      const auto& labels = ns.meta.labels;
      auto enroll = labels.find(config::kEnrollLabel);
      auto inject = labels.find(config::kInjectionLabel);
      auto revision = labels.find(config::kRevisionLabel);
      const bool enrolled = enroll != labels.end() && enroll->second == "enabled";
      const bool injected = (inject != labels.end() && inject->second == "enabled") || revision != labels.end();
      if (enrolled && injected) {
        add("ML028", ns.meta.ref, "enrolled in meshlock and marked for Istio sidecar injection (" +
                                      std::string(inject != labels.end() ? "istio-injection" : "istio.io/rev") +
                                      "): pods created with a sidecar are left to it, not served by meshlock; "
                                      "remove one of the two labels");
      }
    }
  }

  void controlPlanes() {
    // Two control planes of one kind for one control namespace: one mesh, the oldest's settings.
    std::map<std::pair<config::ControlPlaneKind, std::string>, std::vector<const config::ControlPlane*>> by_kind;
    for (const auto& cp : st_.control_planes) by_kind[{cp.kind, cp.control_namespace}].push_back(&cp);
    for (auto& [kind, list] : by_kind) {
      if (list.size() < 2) continue;
      std::sort(list.begin(), list.end(), [](auto* a, auto* b) { return olderThan(a->meta, b->meta); });
      for (std::size_t i = 1; i < list.size(); ++i) {
        add("ML013", list[i]->meta.ref, "more than one " + list[i]->meta.ref.kind + " for control namespace " +
                                            kind.second + "; the settings of " + list[0]->meta.ref.toString() +
                                            " are used");
      }
    }
    // Several meshes: each namespace must be discovered by one of them only.
    const auto meshes = ix_.meshes();
    if (meshes.size() < 2) return;
    for (const auto& ns : st_.namespaces) {
      std::vector<std::string> takers;
      for (const MeshSettings* m : meshes) {
        if (ix_.discovers(*m, ns)) takers.push_back(m->control_namespace);
      }
      if (takers.size() < 2) continue;
      std::string list;
      for (const auto& t : takers) list += (list.empty() ? "" : ", ") + t;
      add("ML029", ns.meta.ref, "discovered by the control planes of " + list + ": the first, " + takers.front() +
                                    ", governs it; make their discoverySelectors (or member rolls) disjoint");
    }
  }

  // The agent has one identity per node: the primary mesh's trust domain and
  // CA. A namespace with served pods that another mesh governs, with another
  // trust domain, is decided with that domain (secure naming) but served with
  // the primary's: its peers expect identities it cannot present.
  void trustDomains() {
    const std::string& primary = ix_.mesh().trust_domain;
    std::map<std::string, std::size_t> served;  // namespace -> served pods
    for (const auto& pod : st_.pods) {
      if (!pod.terminated && ix_.served(pod)) ++served[pod.ns()];
    }
    for (const auto& ns : st_.namespaces) {
      auto it = served.find(ns.meta.ref.name);
      if (it == served.end()) continue;
      const MeshSettings& mesh = ix_.meshFor(ns.meta.ref.name);
      if (mesh.control_namespace.empty() || mesh.trust_domain == primary) continue;
      add("ML031", ns.meta.ref,
          std::to_string(it->second) + " served pod(s) governed by the control plane of " + mesh.control_namespace +
              ", whose trust domain is " + mesh.trust_domain + ": meshlock serves them with identities of the primary "
              "mesh's trust domain " + primary + " (one identity and CA per node), so peers that expect " +
              mesh.trust_domain + " refuse them");
    }
  }

  // Fields the parser found that meshlock reads but does not apply (ObjectMeta::unapplied).
  void unappliedFields() {
    auto report = [&](const config::ObjectMeta& meta) {
      for (const std::string& note : meta.unapplied) add("ML030", meta.ref, "not applied: " + note);
    };
    for (const auto& x : st_.peer_authentications) report(x.meta);
    for (const auto& x : st_.destination_rules) report(x.meta);
    for (const auto& x : st_.service_entries) report(x.meta);
    for (const auto& x : st_.control_planes) report(x.meta);
  }

  void duplicates() {
    std::map<config::ObjectRef, const config::ObjectMeta*> seen;
    auto check = [&](const config::ObjectMeta& meta) {
      auto [it, inserted] = seen.emplace(meta.ref, &meta);
      if (!inserted) {
        add("ML016", meta.ref, "defined twice: in " + it->second->source.describe() + " and " + meta.source.describe() +
                                   "; both are loaded, which is probably not meant");
      }
    };
    for (const auto& x : st_.namespaces) check(x.meta);
    for (const auto& x : st_.pods) check(x.meta);
    for (const auto& x : st_.services) check(x.meta);
    for (const auto& x : st_.peer_authentications) check(x.meta);
    for (const auto& x : st_.destination_rules) check(x.meta);
  }

  const PolicyIndex& ix_;
  const config::ClusterState& st_;
  std::vector<Finding> out_;
};

}  // namespace

std::vector<Finding> validate(const PolicyIndex& index) { return Validator(index).run(); }

}  // namespace meshlock::policy
