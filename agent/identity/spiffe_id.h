// SPIFFE identities of Kubernetes service accounts, parsed strictly: a string
// from a peer's certificate becomes a SpiffeId only if it is exactly
// spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>.
#pragma once

#include <compare>
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

#include "common/error.h"

namespace meshlock::identity {

// A SPIFFE trust domain ("cluster.local"): lowercase letters, digits, '.', '-'
// and '_', as the SPIFFE ID specification allows, at most 255 bytes.
class TrustDomain {
 public:
  [[nodiscard]] static Result<TrustDomain> parse(std::string_view name);

  [[nodiscard]] const std::string& name() const { return name_; }
  auto operator<=>(const TrustDomain&) const = default;

 private:
  explicit TrustDomain(std::string name) : name_(std::move(name)) {}
  std::string name_;
};

// spiffe://<trust-domain>/ns/<ns>/sa/<sa>, Istio's form of a workload identity.
// Everything that could make two spellings name one identity is refused:
// uppercase, percent-encoding, empty, "." or ".." segments, extra segments,
// query, fragment, userinfo, port, NUL or any byte outside the allowed set.
class SpiffeId {
 public:
  [[nodiscard]] static Result<SpiffeId> parse(std::string_view uri);
  // As parse(), and the trust domain must be `expected`.
  [[nodiscard]] static Result<SpiffeId> parse(std::string_view uri, const TrustDomain& expected);
  [[nodiscard]] static Result<SpiffeId> forServiceAccount(const TrustDomain& domain,
                                                          std::string_view ns,
                                                          std::string_view serviceAccount);

  [[nodiscard]] const TrustDomain& trustDomain() const { return domain_; }
  [[nodiscard]] const std::string& ns() const { return ns_; }
  [[nodiscard]] const std::string& serviceAccount() const { return sa_; }
  // The canonical URI, as written into the certificate's URI SAN.
  [[nodiscard]] const std::string& uri() const { return uri_; }

  bool operator==(const SpiffeId& other) const { return uri_ == other.uri_; }
  auto operator<=>(const SpiffeId& other) const { return uri_ <=> other.uri_; }

 private:
  SpiffeId(TrustDomain domain, std::string ns, std::string sa);
  TrustDomain domain_;
  std::string ns_;
  std::string sa_;
  std::string uri_;
};

}  // namespace meshlock::identity

template <>
struct std::hash<meshlock::identity::SpiffeId> {
  std::size_t operator()(const meshlock::identity::SpiffeId& id) const noexcept {
    return std::hash<std::string>{}(id.uri());
  }
};
