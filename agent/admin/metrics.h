// A small Prometheus metrics registry: counter and gauge families with fixed
// label names, rendered in the text exposition format 0.0.4. The hot path holds
// a handle (a pointer to one atomic cell) obtained once per label set, so an
// increment is one relaxed atomic add with no lookup and no lock.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace meshlock::admin {

using LabelValues = std::vector<std::string>;

// A monotonically increasing count for one label set. Cheap to copy; stays
// valid (and harmless) even after its series is removed from the family.
class Counter {
 public:
  Counter() = default;
  void inc(std::uint64_t n = 1) const {
    if (cell_) cell_->fetch_add(n, std::memory_order_relaxed);
  }
  [[nodiscard]] std::uint64_t value() const {
    return cell_ ? cell_->load(std::memory_order_relaxed) : 0;
  }
  // For a count kept elsewhere (the engine's totals, a BPF map) and copied in
  // at scrape time from an onCollect() hook: sets the total. The source must
  // only grow, as Prometheus expects of a counter.
  void mirror(std::uint64_t total) const {
    if (cell_) cell_->store(total, std::memory_order_relaxed);
  }
  explicit operator bool() const { return cell_ != nullptr; }

 private:
  friend class CounterFamily;
  explicit Counter(std::shared_ptr<std::atomic<std::uint64_t>> cell) : cell_(std::move(cell)) {}
  std::shared_ptr<std::atomic<std::uint64_t>> cell_;
};

// A value that goes up and down for one label set.
class Gauge {
 public:
  Gauge() = default;
  void set(double value) const {
    if (cell_) cell_->store(value, std::memory_order_relaxed);
  }
  void add(double delta) const {
    if (cell_) cell_->fetch_add(delta, std::memory_order_relaxed);
  }
  [[nodiscard]] double value() const { return cell_ ? cell_->load(std::memory_order_relaxed) : 0.0; }
  explicit operator bool() const { return cell_ != nullptr; }

 private:
  friend class GaugeFamily;
  explicit Gauge(std::shared_ptr<std::atomic<double>> cell) : cell_(std::move(cell)) {}
  std::shared_ptr<std::atomic<double>> cell_;
};

// What both family kinds share: name, help, label names, rendering.
class MetricFamily {
 public:
  virtual ~MetricFamily() = default;
  [[nodiscard]] const std::string& name() const { return name_; }
  [[nodiscard]] const std::string& help() const { return help_; }
  [[nodiscard]] const std::vector<std::string>& labelNames() const { return label_names_; }
  // Appends HELP, TYPE and one line per series to `out`.
  virtual void render(std::string& out) const = 0;

 protected:
  MetricFamily(std::string name, std::string help, std::vector<std::string> label_names);
  void checkArity(const LabelValues& values) const;
  void renderSeries(std::string& out, const LabelValues& values, std::string_view value) const;

  std::string name_;
  std::string help_;
  std::vector<std::string> label_names_;
};

class CounterFamily final : public MetricFamily {
 public:
  CounterFamily(std::string name, std::string help, std::vector<std::string> label_names);
  // The series for `values` (one per label name, in order), created at 0 on
  // first use. Takes a lock: call it once per label set, keep the handle.
  [[nodiscard]] Counter labels(const LabelValues& values);
  [[nodiscard]] Counter labels(std::initializer_list<std::string_view> values);
  // Drops a series (e.g. a pod that left the node); existing handles keep working, unexported.
  void remove(const LabelValues& values);
  void render(std::string& out) const override;

 private:
  mutable std::mutex mutex_;
  std::map<LabelValues, std::shared_ptr<std::atomic<std::uint64_t>>> series_;
};

class GaugeFamily final : public MetricFamily {
 public:
  GaugeFamily(std::string name, std::string help, std::vector<std::string> label_names);
  [[nodiscard]] Gauge labels(const LabelValues& values);
  [[nodiscard]] Gauge labels(std::initializer_list<std::string_view> values);
  void remove(const LabelValues& values);
  void clear();  // drops every series (for gauges recomputed from state at each scrape)
  void render(std::string& out) const override;

 private:
  mutable std::mutex mutex_;
  std::map<LabelValues, std::shared_ptr<std::atomic<double>>> series_;
};

class MetricsRegistry {
 public:
  // Registers a family; names must be valid Prometheus names and unique
  // (a duplicate or invalid name is a programming error and aborts). The
  // reference stays valid for the registry's lifetime.
  CounterFamily& counter(std::string name, std::string help, std::vector<std::string> label_names = {});
  GaugeFamily& gauge(std::string name, std::string help, std::vector<std::string> label_names = {});

  // Runs before every render, on the scraping thread: the place to refresh
  // gauges computed from current state (seconds to certificate expiry, map sizes).
  void onCollect(std::function<void()> collector);

  // The whole registry in text format 0.0.4, families sorted by name.
  [[nodiscard]] std::string render() const;

 private:
  mutable std::mutex mutex_;
  mutable std::mutex scrape_mutex_;  // one render() at a time
  std::map<std::string, std::unique_ptr<MetricFamily>> families_;
  std::vector<std::function<void()>> collectors_;
};

// "text/plain; version=0.0.4; charset=utf-8"
inline constexpr std::string_view kPrometheusContentType = "text/plain; version=0.0.4; charset=utf-8";

// Escaping for label values: backslash, double quote and newline.
[[nodiscard]] std::string escapeLabelValue(std::string_view value);
// Formats a sample value as Prometheus expects (NaN, +Inf, -Inf, shortest round-trip).
[[nodiscard]] std::string formatSampleValue(double value);

}  // namespace meshlock::admin
