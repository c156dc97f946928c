// Ready-made handlers for the parts of the admin API that need nothing from
// the rest of the agent: /metrics from a registry, /logging on spdlog.
#pragma once

#include "admin/metrics.h"
#include "admin/router.h"

namespace meshlock::admin {

// GET /metrics: the registry in Prometheus text format 0.0.4.
[[nodiscard]] Handler metricsHandler(const MetricsRegistry& registry);

// GET /logging: {"level": "info"}. POST|PUT /logging?level=debug sets the
// level of spdlog's default logger and every registered logger, answers
// {"level": "debug", "previous": "info"}; an unknown level is a 400 naming the
// accepted ones (trace, debug, info, warn, error, critical, off).
[[nodiscard]] Handler loggingHandler();

}  // namespace meshlock::admin
