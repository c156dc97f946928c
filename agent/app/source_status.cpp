#include "app/source_status.h"

namespace meshlock::app {

nlohmann::json sourceStatusJson(const config::SourceStatus& s) {
  using nlohmann::json;
  json kinds = json::array();
  for (const config::SourceKindStatus& k : s.kinds) {
    kinds.push_back({{"name", k.name},
                     {"api_version", k.api_version},
                     {"state", k.state},
                     {"listed", k.listed},
                     {"connected", k.connected},
                     {"resource_version", k.resource_version},
                     {"last_event_age_seconds", k.last_event_age_seconds ? json(*k.last_event_age_seconds) : json(nullptr)},
                     {"objects", k.objects},
                     {"last_error", k.last_error},
                     {"errors", k.errors},
                     {"relists", k.relists},
                     {"reconnects", k.reconnects},
                     {"events", k.events}});
  }
  return {{"kind", s.kind},
          {"server", s.server},
          {"origin", s.origin},
          {"synced", s.synced},
          {"connected", s.connected},
          {"staleness_seconds", s.staleness_seconds},
          {"summary", s.summary()},
          {"kinds", kinds}};
}

void exportSourceStatus(const config::SourceStatus& s, admin::MeshlockMetrics& metrics) {
  metrics.config_source_connected.labels({}).set(s.connected ? 1 : 0);
  metrics.config_source_synced.labels({}).set(s.synced ? 1 : 0);
  metrics.config_source_last_sync_age.labels({}).set(s.staleness_seconds);
  for (const config::SourceKindStatus& k : s.kinds) {
    for (const auto& [type, count] : k.events) metrics.config_source_watch_events.labels({k.name, type}).mirror(count);
    metrics.config_source_relists.labels({k.name}).mirror(k.relists);
    metrics.config_source_reconnects.labels({k.name}).mirror(k.reconnects);
    metrics.config_source_errors.labels({k.name}).mirror(k.errors);
  }
}

}  // namespace meshlock::app
