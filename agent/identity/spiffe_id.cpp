// Strict parsing of SPIFFE IDs (see spiffe_id.h for what is refused and why).
#include "identity/spiffe_id.h"

#include <fmt/chrono.h>
#include <fmt/format.h>

namespace meshlock::identity {
namespace {

constexpr std::string_view kScheme = "spiffe://";
constexpr std::size_t kMaxUriLength = 2048;  // SPIFFE ID specification
constexpr std::size_t kMaxTrustDomainLength = 255;
constexpr std::size_t kMaxNamespaceLength = 63;         // a DNS label
constexpr std::size_t kMaxServiceAccountLength = 253;   // a DNS subdomain

bool isLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

// Printable form of untrusted input for error messages: no control bytes.
std::string quoted(std::string_view in) {
  std::string out = "\"";
  for (char c : in.substr(0, 128)) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f || c == '"' || c == '\\') {
      out += fmt::format("\\x{:02x}", u);
    } else {
      out += c;
    }
  }
  if (in.size() > 128) out += "...";
  return out + "\"";
}

// Kubernetes names: lowercase alphanumerics, '-' (and '.' for service
// accounts), starting and ending with an alphanumeric.
Status checkKubernetesName(std::string_view what, std::string_view name, std::size_t maxLength,
                           bool allowDot) {
  if (name.empty()) return fail(fmt::format("empty {}", what));
  if (name.size() > maxLength) return fail(fmt::format("{} longer than {} bytes", what, maxLength));
  for (char c : name) {
    if (isLowerAlnum(c) || c == '-' || (allowDot && c == '.')) continue;
    return fail(fmt::format("{} {} has a byte outside [a-z0-9-{}]", what, quoted(name),
                            allowDot ? "." : ""));
  }
  if (!isLowerAlnum(name.front()) || !isLowerAlnum(name.back())) {
    return fail(fmt::format("{} {} must start and end with [a-z0-9]", what, quoted(name)));
  }
  return {};
}

}  // namespace

Result<TrustDomain> TrustDomain::parse(std::string_view name) {
  if (name.empty()) return fail("empty trust domain");
  if (name.size() > kMaxTrustDomainLength) return fail("trust domain longer than 255 bytes");
  for (char c : name) {
    if (isLowerAlnum(c) || c == '.' || c == '-' || c == '_') continue;
    return fail(fmt::format("trust domain {} has a byte outside [a-z0-9._-]", quoted(name)));
  }
  if (name.front() == '.' || name.back() == '.' || name.find("..") != std::string_view::npos) {
    return fail(fmt::format("trust domain {} has an empty label", quoted(name)));
  }
  return TrustDomain(std::string(name));
}

SpiffeId::SpiffeId(TrustDomain domain, std::string ns, std::string sa)
    : domain_(std::move(domain)), ns_(std::move(ns)), sa_(std::move(sa)) {
  uri_ = fmt::format("spiffe://{}/ns/{}/sa/{}", domain_.name(), ns_, sa_);
}

Result<SpiffeId> SpiffeId::forServiceAccount(const TrustDomain& domain, std::string_view ns,
                                             std::string_view serviceAccount) {
  if (auto ok = checkKubernetesName("namespace", ns, kMaxNamespaceLength, false); !ok) {
    return std::unexpected(ok.error());
  }
  if (auto ok = checkKubernetesName("service account", serviceAccount, kMaxServiceAccountLength,
                                    true);
      !ok) {
    return std::unexpected(ok.error());
  }
  return SpiffeId(domain, std::string(ns), std::string(serviceAccount));
}

Result<SpiffeId> SpiffeId::parse(std::string_view uri) {
  auto bad = [&](std::string_view why) {
    return fail(fmt::format("SPIFFE ID {}: {}", quoted(uri), why));
  };
  if (uri.size() > kMaxUriLength) return bad("longer than 2048 bytes");
  if (!uri.starts_with(kScheme)) return bad("scheme must be exactly \"spiffe://\"");
  std::string_view rest = uri.substr(kScheme.size());
  std::size_t slash = rest.find('/');
  if (slash == std::string_view::npos) return bad("no path");
  auto domain = TrustDomain::parse(rest.substr(0, slash));
  if (!domain) return bad(domain.error().message);
  std::string_view path = rest.substr(slash);  // "/ns/<ns>/sa/<sa>"

  // Exactly four segments: ns, <ns>, sa, <sa>.
  std::string_view segments[4];
  std::size_t count = 0;
  while (!path.empty()) {
    if (path.front() != '/') return bad("malformed path");
    path.remove_prefix(1);
    std::size_t end = path.find('/');
    std::string_view segment = path.substr(0, end);
    if (count == 4) return bad("path has more than /ns/<ns>/sa/<sa>");
    segments[count++] = segment;
    path = end == std::string_view::npos ? std::string_view{} : path.substr(end);
  }
  if (count != 4 || segments[0] != "ns" || segments[2] != "sa") {
    return bad("path must be /ns/<namespace>/sa/<service-account>");
  }
  auto id = forServiceAccount(*domain, segments[1], segments[3]);
  if (!id) return bad(id.error().message);
  return id;
}

Result<SpiffeId> SpiffeId::parse(std::string_view uri, const TrustDomain& expected) {
  auto id = parse(uri);
  if (!id) return id;
  if (id->trustDomain() != expected) {
    return fail(fmt::format("SPIFFE ID {}: trust domain is not {}", quoted(uri), expected.name()));
  }
  return id;
}

}  // namespace meshlock::identity
