// DestinationRule TLS contexts with file reloads (destination_tls.h).
#include "identity/destination_tls.h"

#include <spdlog/spdlog.h>
#include <openssl/sha.h>
#include <sys/stat.h>

#include <fmt/format.h>

namespace meshlock::identity {

DestinationTlsContexts::DestinationTlsContexts(MeshTlsSettings settings, Clock clock)
    : settings_(std::move(settings)), clock_(clock ? std::move(clock) : Clock(systemNow)) {}

std::string DestinationTlsContexts::key(const DestinationTlsConfig& config) {
  std::string out = fmt::format("{}|{}|{}|{}|{}|{}|{}", config.ruleName,
                                config.mode == DestinationTlsMode::kMutual ? "MUTUAL" : "SIMPLE",
                                config.caCertificates, config.clientCertificate, config.privateKey,
                                config.sni, config.credentialSource);
  for (const auto& name : config.subjectAltNames) out += "|" + name;
  return out;
}

std::string DestinationTlsContexts::filesSignature(const DestinationTlsConfig& config) {
  if (!config.credentialSource.empty()) {
    // A Secret's content: its digest, so a rotated Secret builds a new context.
    SHA256_CTX sha;
    SHA256_Init(&sha);
    for (const std::string* part : {&config.caPem, &config.certificatePem, &config.keyPem}) {
      const uint64_t size = part->size();
      SHA256_Update(&sha, &size, sizeof size);
      SHA256_Update(&sha, part->data(), part->size());
    }
    uint8_t digest[SHA256_DIGEST_LENGTH];
    SHA256_Final(digest, &sha);
    std::string signature = "secret:";
    for (uint8_t b : digest) signature += fmt::format("{:02x}", b);
    return signature;
  }
  std::string signature;
  std::string ca = config.caCertificates.empty() ? kSystemRootsFile : config.caCertificates;
  for (const std::string& path : {ca, config.clientCertificate, config.privateKey}) {
    if (path.empty()) continue;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
      signature += path + ":absent;";
    } else {
      signature += fmt::format("{}:{}:{}:{}.{};", path, st.st_ino, st.st_size, st.st_mtim.tv_sec,
                               st.st_mtim.tv_nsec);
    }
  }
  return signature;
}

Result<bssl::UniquePtr<SSL_CTX>> DestinationTlsContexts::context(const DestinationTlsConfig& config) {
  std::string signature = filesSignature(config);
  std::lock_guard lock(mutex_);
  Entry& entry = entries_[key(config)];
  bool current = entry.ctx && entry.filesSignature == signature;
  if (!current && !(entry.ctx && entry.failedSignature == signature)) {
    auto ctx = buildDestinationContext(config, settings_, clock_);
    if (ctx) {
      if (entry.ctx) spdlog::info("identity: DestinationRule {}: {} changed, reloaded", config.ruleName,
                                   config.credentialSource.empty() ? "files" : config.credentialSource);
      entry.config = config;
      entry.ctx = std::move(*ctx);
      entry.filesSignature = signature;
      entry.failedSignature.clear();
    } else if (entry.ctx) {
      spdlog::error("identity: {}; keeping the previous certificates", ctx.error().describe());
      entry.failedSignature = signature;
    } else {
      entries_.erase(key(config));
      return std::unexpected(ctx.error());
    }
  }
  SSL_CTX_up_ref(entry.ctx.get());
  return bssl::UniquePtr<SSL_CTX>(entry.ctx.get());
}

Result<bssl::UniquePtr<SSL>> DestinationTlsContexts::newSession(const DestinationTlsConfig& config) {
  auto ctx = context(config);
  if (!ctx) return std::unexpected(ctx.error());
  return newDestinationSession(ctx->get());
}

void DestinationTlsContexts::retain(const std::vector<DestinationTlsConfig>& current) {
  std::lock_guard lock(mutex_);
  std::map<std::string, Entry> kept;
  for (const auto& config : current) {
    auto it = entries_.find(key(config));
    if (it != entries_.end()) kept.emplace(it->first, std::move(it->second));
  }
  entries_ = std::move(kept);
}

}  // namespace meshlock::identity
