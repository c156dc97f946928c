// A load client for Istio's CA API (`meshlock-agent ca` or istiod): THREADS
// connections, each asking CreateCertificate with ImpersonatedIdentity as a
// node agent does, back to back, for SECONDS. CSRs are made before the clock
// starts (the client's key generation is not what is measured). Prints one
// JSON line: calls, issued, refusals by gRPC code, seconds, rate. --calls 1
// makes it a one-call probe (scenario 28).
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "grpc/client.h"
#include "identity/ca_client.h"
#include "identity/csr.h"
#include "identity/proto/ca.pb.h"
#include "identity/x509_util.h"

namespace {

std::string readFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  std::string s = text.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ca_load: CreateCertificate calls against an Istio CA API"};
  std::string address, server_name, root_file, token_file, identity;
  unsigned threads = 4, seconds = 10, csrs = 32;
  uint64_t max_calls = 0;
  app.add_option("--address", address, "host:port")->required();
  app.add_option("--server-name", server_name, "the CA certificate's DNS name");
  app.add_option("--root", root_file, "the mesh root (PEM)")->required();
  app.add_option("--token-file", token_file, "bearer token (audience istio-ca)")->required();
  app.add_option("--identity", identity, "SPIFFE ID to ask for (ImpersonatedIdentity)")->required();
  app.add_option("--threads", threads, "connections, one call at a time each");
  app.add_option("--seconds", seconds, "duration");
  app.add_option("--csrs", csrs, "distinct CSRs per connection, used in turn");
  app.add_option("--calls", max_calls, "stop each connection after this many calls (0: only the time limits)");
  CLI11_PARSE(app, argc, argv);

  auto endpoint = meshlock::grpc::parseEndpoint(address);
  auto id = meshlock::identity::SpiffeId::parse(identity);
  if (!endpoint || !id) {
    std::fprintf(stderr, "bad --address or --identity\n");
    return 2;
  }
  const std::string token = readFile(token_file);
  const std::string roots = readFile(root_file) + "\n";

  std::vector<std::vector<std::string>> requests(threads);
  for (auto& mine : requests) {
    for (unsigned i = 0; i < csrs; ++i) {
      auto key = meshlock::identity::generateP256Key();
      auto csr = meshlock::identity::buildCsrPem(key->get(), *id);
      istio::v1::auth::IstioCertificateRequest request;
      request.set_csr(*csr);
      request.set_validity_duration(3600);
      (*request.mutable_metadata()->mutable_fields())[meshlock::identity::kImpersonatedIdentityKey].set_string_value(
          identity);
      mine.push_back(request.SerializeAsString());
    }
  }

  std::atomic<bool> go{false};
  std::mutex mutex;
  std::map<std::string, uint64_t> outcomes;
  const auto deadline_after = std::chrono::seconds(seconds);
  std::vector<std::thread> workers;
  std::chrono::steady_clock::time_point started;
  for (unsigned t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      auto channel = meshlock::grpc::UnaryChannel::create(meshlock::grpc::ChannelConfig{
          .endpoint = *endpoint, .serverName = server_name, .rootsPem = roots, .rootsOrigin = root_file});
      std::map<std::string, uint64_t> mine;
      if (!channel) {
        mine["channel_error"] = 1;
      } else {
        while (!go.load()) std::this_thread::yield();
        meshlock::grpc::CallOptions options;
        options.metadata = {{"authorization", "Bearer " + token}};
        for (std::size_t i = 0; std::chrono::steady_clock::now() - started < deadline_after && (max_calls == 0 || i < max_calls);
             ++i) {
          auto answer = (*channel)->call(meshlock::identity::kCreateCertificatePath, requests[t][i % requests[t].size()],
                                         options);
          ++mine[answer ? "issued" : meshlock::grpc::metricLabel(answer.error().code)];
        }
      }
      std::lock_guard lock(mutex);
      for (const auto& [k, v] : mine) outcomes[k] += v;
    });
  }
  started = std::chrono::steady_clock::now();
  go = true;
  for (auto& w : workers) w.join();
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  uint64_t calls = 0;
  for (const auto& [k, v] : outcomes) calls += v;
  nlohmann::json out = {{"threads", threads},       {"seconds", elapsed}, {"calls", calls},
                        {"outcomes", outcomes},     {"issued_per_second", (outcomes.count("issued") ? outcomes["issued"] : 0) / elapsed}};
  std::printf("%s\n", out.dump().c_str());
  return outcomes.count("issued") ? 0 : 1;
}
