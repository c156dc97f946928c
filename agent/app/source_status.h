// The cluster source's status as the admin API and the metrics show it.
#pragma once

#include <nlohmann/json.hpp>

#include "admin/meshlock_metrics.h"
#include "config/source.h"

namespace meshlock::app {

// /status "source": kind, server, synced, connected, staleness, per-kind state.
[[nodiscard]] nlohmann::json sourceStatusJson(const config::SourceStatus& status);

// meshlock_config_source_* from one status snapshot (called at scrape).
void exportSourceStatus(const config::SourceStatus& status, admin::MeshlockMetrics& metrics);

}  // namespace meshlock::app
