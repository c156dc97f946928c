// Registry, families and the text exposition format 0.0.4 renderer.
#include "admin/metrics.h"

#include <cctype>
#include <charconv>
#include <cmath>

#include "common/error.h"

namespace meshlock::admin {
namespace {

bool validMetricName(std::string_view name) {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':';
    if (!(alpha || (i > 0 && std::isdigit(static_cast<unsigned char>(c))))) return false;
  }
  return true;
}

bool validLabelName(std::string_view name) {
  if (name.empty() || name.starts_with("__")) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = std::isalpha(static_cast<unsigned char>(c)) || c == '_';
    if (!(alpha || (i > 0 && std::isdigit(static_cast<unsigned char>(c))))) return false;
  }
  return true;
}

// HELP text escapes only backslash and newline.
std::string escapeHelp(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

LabelValues toValues(std::initializer_list<std::string_view> values) {
  LabelValues out;
  out.reserve(values.size());
  for (std::string_view value : values) out.emplace_back(value);
  return out;
}

}  // namespace

std::string escapeLabelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string formatSampleValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buffer[64];
  const auto [end, ec] = std::to_chars(buffer, buffer + sizeof(buffer), value);
  MESHLOCK_CHECK(ec == std::errc());
  return std::string(buffer, end);
}

MetricFamily::MetricFamily(std::string name, std::string help, std::vector<std::string> label_names)
    : name_(std::move(name)), help_(std::move(help)), label_names_(std::move(label_names)) {
  MESHLOCK_CHECK(validMetricName(name_));
  for (const std::string& label : label_names_) MESHLOCK_CHECK(validLabelName(label));
}

void MetricFamily::checkArity(const LabelValues& values) const {
  // A caller passing the wrong number of labels is a programming error.
  MESHLOCK_CHECK(values.size() == label_names_.size());
}

void MetricFamily::renderSeries(std::string& out, const LabelValues& values, std::string_view value) const {
  out += name_;
  if (!label_names_.empty()) {
    out += '{';
    for (std::size_t i = 0; i < label_names_.size(); ++i) {
      if (i > 0) out += ',';
      out += label_names_[i];
      out += "=\"";
      out += escapeLabelValue(values[i]);
      out += '"';
    }
    out += '}';
  }
  out += ' ';
  out += value;
  out += '\n';
}

CounterFamily::CounterFamily(std::string name, std::string help, std::vector<std::string> label_names)
    : MetricFamily(std::move(name), std::move(help), std::move(label_names)) {}

Counter CounterFamily::labels(const LabelValues& values) {
  checkArity(values);
  std::lock_guard lock(mutex_);
  auto& cell = series_[values];
  if (!cell) cell = std::make_shared<std::atomic<std::uint64_t>>(0);
  return Counter(cell);
}

Counter CounterFamily::labels(std::initializer_list<std::string_view> values) {
  return labels(toValues(values));
}

void CounterFamily::remove(const LabelValues& values) {
  std::lock_guard lock(mutex_);
  series_.erase(values);
}

void CounterFamily::render(std::string& out) const {
  out += "# HELP " + name_ + " " + escapeHelp(help_) + "\n";
  out += "# TYPE " + name_ + " counter\n";
  std::lock_guard lock(mutex_);
  for (const auto& [values, cell] : series_) {
    renderSeries(out, values, std::to_string(cell->load(std::memory_order_relaxed)));
  }
}

GaugeFamily::GaugeFamily(std::string name, std::string help, std::vector<std::string> label_names)
    : MetricFamily(std::move(name), std::move(help), std::move(label_names)) {}

Gauge GaugeFamily::labels(const LabelValues& values) {
  checkArity(values);
  std::lock_guard lock(mutex_);
  auto& cell = series_[values];
  if (!cell) cell = std::make_shared<std::atomic<double>>(0.0);
  return Gauge(cell);
}

Gauge GaugeFamily::labels(std::initializer_list<std::string_view> values) {
  return labels(toValues(values));
}

void GaugeFamily::remove(const LabelValues& values) {
  std::lock_guard lock(mutex_);
  series_.erase(values);
}

void GaugeFamily::clear() {
  std::lock_guard lock(mutex_);
  series_.clear();
}

void GaugeFamily::render(std::string& out) const {
  out += "# HELP " + name_ + " " + escapeHelp(help_) + "\n";
  out += "# TYPE " + name_ + " gauge\n";
  std::lock_guard lock(mutex_);
  for (const auto& [values, cell] : series_) {
    renderSeries(out, values, formatSampleValue(cell->load(std::memory_order_relaxed)));
  }
}

CounterFamily& MetricsRegistry::counter(std::string name, std::string help,
                                        std::vector<std::string> label_names) {
  auto family = std::make_unique<CounterFamily>(name, std::move(help), std::move(label_names));
  CounterFamily& ref = *family;
  std::lock_guard lock(mutex_);
  MESHLOCK_CHECK(families_.emplace(std::move(name), std::move(family)).second);
  return ref;
}

GaugeFamily& MetricsRegistry::gauge(std::string name, std::string help, std::vector<std::string> label_names) {
  auto family = std::make_unique<GaugeFamily>(name, std::move(help), std::move(label_names));
  GaugeFamily& ref = *family;
  std::lock_guard lock(mutex_);
  MESHLOCK_CHECK(families_.emplace(std::move(name), std::move(family)).second);
  return ref;
}

void MetricsRegistry::onCollect(std::function<void()> collector) {
  std::lock_guard lock(mutex_);
  collectors_.push_back(std::move(collector));
}

std::string MetricsRegistry::render() const {
  // One scrape at a time: collectors clear and refill families, and two
  // interleaved would show a half-filled family.
  std::lock_guard scrape(scrape_mutex_);
  std::vector<std::function<void()>> collectors;
  {
    std::lock_guard lock(mutex_);
    collectors = collectors_;
  }
  // Outside the lock: a collector may register or look up families.
  for (const auto& collect : collectors) collect();
  std::string out;
  std::lock_guard lock(mutex_);
  for (const auto& [name, family] : families_) family->render(out);
  return out;
}

}  // namespace meshlock::admin
