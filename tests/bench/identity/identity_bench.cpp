// Identity costs: issuing one workload certificate (P-256 key + signature),
// issuing it with its two TLS contexts, verifying a peer chain, and a full
// mesh mTLS handshake over memory BIOs.
#include <benchmark/benchmark.h>
#include <openssl/bio.h>
#include <stdlib.h>

#include <filesystem>


#include <spdlog/spdlog.h>

#include "identity/identity_manager.h"
#include "identity/mesh_ca.h"
#include "identity/peer_verifier.h"

namespace meshlock::identity {
namespace {

struct Fixture {
  Fixture() {
    spdlog::set_level(spdlog::level::warn);  // issuance logs would dominate the timing
    std::string pattern = (std::filesystem::temp_directory_path() / "meshlock-bench-XXXXXX").string();
    MESHLOCK_CHECK(::mkdtemp(pattern.data()) != nullptr);
    dir = pattern;
    ca = std::move(*MeshCa::open(dir / "ca", domain, systemNow()));
  }
  ~Fixture() { std::filesystem::remove_all(dir); }
  std::filesystem::path dir;
  TrustDomain domain = *TrustDomain::parse("cluster.local");
  SpiffeId id = *SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/web");
  std::unique_ptr<MeshCa> ca;
};

void BM_IssueWorkloadCertificate(benchmark::State& state) {
  Fixture f;
  for (auto _ : state) {
    auto cert = f.ca->issue(f.id, systemNow(), std::chrono::hours(24));
    MESHLOCK_CHECK(cert.has_value());
    benchmark::DoNotOptimize(cert->leaf.get());
  }
}
BENCHMARK(BM_IssueWorkloadCertificate)->Unit(benchmark::kMicrosecond);

// What the first pod of a service account costs: certificate plus server and client contexts.
void BM_AcquireNewIdentity(benchmark::State& state) {
  Fixture f;
  IdentityConfig config{.caDirectory = f.dir / "ca", .trustDomain = f.domain};
  auto manager = std::move(*IdentityManager::create(config));
  for (auto _ : state) {
    MESHLOCK_CHECK(manager->acquire(f.id).has_value());
    manager->release(f.id);
  }
}
BENCHMARK(BM_AcquireNewIdentity)->Unit(benchmark::kMicrosecond);

void BM_VerifyPeerChain(benchmark::State& state) {
  Fixture f;
  auto cert = std::move(*f.ca->issue(f.id, systemNow(), std::chrono::hours(24)));
  CertificateList roots;
  roots.push_back(copyCertificate(f.ca->signingCertificate()));
  auto bundle = std::move(*TrustBundle::create(std::move(roots), 1));
  X509* chain[] = {cert.leaf.get()};
  VerifyOptions options{.peerRole = PeerRole::kClient, .now = systemNow()};
  for (auto _ : state) {
    auto result = verifyPeerChain(chain, *bundle, f.domain, ExpectedPeers::any(), options);
    MESHLOCK_CHECK(result.has_value());
  }
}
BENCHMARK(BM_VerifyPeerChain)->Unit(benchmark::kMicrosecond);

// Both sides of a full TLS 1.3 mTLS handshake (no resumption), in one thread.
void BM_MeshHandshake(benchmark::State& state) {
  Fixture f;
  IdentityConfig config{.caDirectory = f.dir / "ca", .trustDomain = f.domain};
  auto manager = std::move(*IdentityManager::create(config));
  MESHLOCK_CHECK(manager->acquire(f.id).has_value());
  for (auto _ : state) {
    auto client = std::move(*manager->newClientSession(f.id, ExpectedPeers::oneOf({f.id})));
    auto server = std::move(*manager->newServerSession(f.id));
    BIO* a = nullptr;
    BIO* b = nullptr;
    MESHLOCK_CHECK(BIO_new_bio_pair(&a, 0, &b, 0));
    SSL_set_bio(client.get(), a, a);
    SSL_set_bio(server.get(), b, b);
    bool clientDone = false;
    bool serverDone = false;
    for (int i = 0; i < 16 && !(clientDone && serverDone); ++i) {
      clientDone = clientDone || SSL_do_handshake(client.get()) == 1;
      serverDone = serverDone || SSL_do_handshake(server.get()) == 1;
    }
    MESHLOCK_CHECK(clientDone && serverDone);
  }
}
BENCHMARK(BM_MeshHandshake)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace meshlock::identity

BENCHMARK_MAIN();
