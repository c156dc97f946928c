// How much the admin parts cost: a counter increment on the data path (alone
// and contended), the per-connection label lookup, a scrape of a registry with
// many Istio series, and one admin request over the Unix socket.
#include <benchmark/benchmark.h>

#include <filesystem>

#include "admin/client.h"
#include "admin/istio_metrics.h"
#include "admin/metrics.h"
#include "admin/server.h"
#include "admin/standard_handlers.h"

namespace meshlock::admin {
namespace {

void BM_CounterInc(benchmark::State& state) {
  static MetricsRegistry registry;
  static CounterFamily& family = registry.counter("bench_bytes_total", "b", {"worker"});
  // Threads share one series when range(0) is 1, else each has its own.
  const Counter counter = family.labels({state.range(0) == 1 ? "0" : std::to_string(state.thread_index())});
  for (auto _ : state) counter.inc(1500);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_CounterInc)->Arg(0)->Arg(1)->Threads(1)->Threads(2)->UseRealTime();

IstioTcpLabels benchLabels(int i) {
  IstioTcpLabels labels;
  labels.reporter = i % 2 ? "source" : "destination";
  labels.source_workload = "client-" + std::to_string(i % 50);
  labels.source_workload_namespace = "ns-" + std::to_string(i % 10);
  labels.source_principal = "spiffe://cluster.local/ns/ns-" + std::to_string(i % 10) + "/sa/client";
  labels.destination_workload = "server-" + std::to_string(i % 20);
  labels.destination_workload_namespace = "ns-" + std::to_string(i % 7);
  labels.destination_service = "server.ns.svc.cluster.local";
  labels.connection_security_policy = i % 5 ? "mutual_tls" : "none";
  return labels;
}

void BM_IstioForConnection(benchmark::State& state) {
  MetricsRegistry registry;
  IstioTcpMetrics istio(registry);
  const IstioTcpLabels labels = benchLabels(7);
  for (auto _ : state) {
    IstioTcpConnectionMetrics m = istio.forConnection(labels);
    m.opened.inc();
    benchmark::DoNotOptimize(m);
  }
}
BENCHMARK(BM_IstioForConnection);

void BM_RenderIstioSeries(benchmark::State& state) {
  MetricsRegistry registry;
  IstioTcpMetrics istio(registry);
  for (int i = 0; i < state.range(0); ++i) istio.forConnection(benchLabels(i)).opened.inc(i);
  std::size_t bytes = 0;
  for (auto _ : state) {
    const std::string text = registry.render();
    bytes = text.size();
    benchmark::DoNotOptimize(text.data());
  }
  state.counters["scrape_bytes"] = static_cast<double>(bytes);
}
// Distinct label sets: 1000 is 4000 series (one per family).
BENCHMARK(BM_RenderIstioSeries)->Arg(100)->Arg(1000)->Unit(benchmark::kMicrosecond);

void BM_AdminRequestUnixSocket(benchmark::State& state) {
  const std::string dir = std::filesystem::temp_directory_path() / ("meshlock-bench-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  Router router;
  router.handle("/healthz", [](const Request&) { return Response::json(200, R"({"status":"ok"})"); });
  ServerOptions options;
  options.listen = {Endpoint::unixSocket(dir + "/admin.sock")};
  auto server = HttpServer::start(options, std::move(router));
  if (!server) {
    state.SkipWithError(server.error().describe().c_str());
    return;
  }
  AdminClient client(Endpoint::unixSocket(dir + "/admin.sock"));
  for (auto _ : state) {
    auto response = client.request(Method::kGet, "/healthz");
    if (!response || response->status != 200) state.SkipWithError("request failed");
  }
  (*server)->stop();
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_AdminRequestUnixSocket)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace meshlock::admin

BENCHMARK_MAIN();
