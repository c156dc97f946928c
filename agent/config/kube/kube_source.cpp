// Reflectors and their store. The list/watch protocol is the one client-go's
// reflector speaks (k8s.io/client-go/tools/cache/reflector.go): paged list
// (limit/continue, 410 on an expired continue restarts the list), then watch
// from the list's resourceVersion with allowWatchBookmarks, resume from the
// last seen resourceVersion, relist on 410 Gone.
#include "config/kube/kube_source.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <set>
#include <unordered_set>

#include "config/credentials.h"
#include "config/manifest.h"

namespace meshlock::config::kube {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

Backoff::Backoff(std::chrono::milliseconds initial, std::chrono::milliseconds max, uint64_t seed)
    : initial_(initial), max_(max), rng_(seed) {}

std::chrono::milliseconds Backoff::next() {
  int64_t d = initial_.count();
  for (unsigned i = 0; i < attempt_ && d < max_.count(); ++i) d *= 2;
  d = std::min<int64_t>(d, max_.count());
  if (attempt_ < 64) ++attempt_;
  std::uniform_int_distribution<int64_t> jitter(0, d / 2);
  return std::chrono::milliseconds(d - d / 2 + jitter(rng_));
}

namespace {

constexpr std::size_t kMaxEventSize = 64u << 20;

// One object of a list or watch event, decoded (or not) for the store.
struct DecodedItem {
  std::string key;     // metadata.uid, or ns/name
  std::string origin;  // "api Pod/shop/web", for errors
  std::optional<ClusterState> state;
  std::optional<ManifestError> error;
};

std::string stringAt(const json& object, const char* a, const char* b) {
  auto ia = object.find(a);
  if (ia == object.end() || !ia->is_object()) return {};
  auto ib = ia->find(b);
  if (ib == ia->end() || !ib->is_string()) return {};
  return ib->get<std::string>();
}

std::string keyOf(const json& object) {
  std::string uid = stringAt(object, "metadata", "uid");
  if (!uid.empty()) return uid;
  return stringAt(object, "metadata", "namespace") + "/" + stringAt(object, "metadata", "name");
}

DecodedItem decodeItem(const json& object, const ResourceKind& kind, const std::string& api_version) {
  DecodedItem item;
  item.key = keyOf(object);
  std::string ns = stringAt(object, "metadata", "namespace");
  item.origin = "api " + kind.kind + "/" + (ns.empty() ? "" : ns + "/") + stringAt(object, "metadata", "name");
  ParsedManifests parsed = decodeApiObject(object, item.origin, api_version, kind.kind);
  if (!parsed.errors.empty()) {
    item.error = std::move(parsed.errors.front());
  } else {
    item.state = std::move(parsed.state);
  }
  return item;
}

// A Kubernetes Status body's message, else the start of the body.
std::string statusMessage(const HttpResponse& response) {
  json body = json::parse(response.body, nullptr, false);
  if (body.is_object()) {
    auto it = body.find("message");
    if (it != body.end() && it->is_string()) return "HTTP " + std::to_string(response.status) + ": " + it->get<std::string>();
  }
  return "HTTP " + std::to_string(response.status) + (response.body.empty() ? "" : ": " + response.body.substr(0, 200));
}

struct KindStore {
  ResourceKind spec;
  std::map<std::string, ClusterState> objects;
  std::map<std::string, ManifestError> bad;  // latest version did not decode; its last good one (if any) stays
  std::map<std::string, ClusterState> waiting;  // new objects over the source's limit, taken when room frees
  SourceKindStatus status;
  std::optional<Clock::time_point> last_event;
  Clock::time_point fresh_at = Clock::now();
};

}  // namespace

struct KubeSource::Shared {
  std::shared_ptr<TransportFactory> transports;
  std::shared_ptr<BearerToken> token;
  KubeSourceOptions options;

  mutable std::mutex mutex;
  std::condition_variable changed;  // poll() waits for it
  std::condition_variable wake;     // reflectors sleep on it; stop wakes them
  std::condition_variable done;
  std::atomic<bool> stopping{false};
  uint64_t changes = 0;  // every applied change (and every first list) bumps it
  std::vector<KindStore> kinds;
  std::vector<bool> finished;  // one per kind, then the Secret reader's
  // Secrets named by credentialName: what poll() found wanted, what was read.
  std::set<SecretName> secrets_wanted;
  uint64_t secrets_wanted_changes = 0;
  std::map<SecretName, Secret> secrets_held;
  // ConfigMaps named by configmap:// credentials (any namespace, any node's rules).
  std::set<SecretName> config_maps_wanted;
  std::map<SecretName, ConfigMap> config_maps_held;
  // Service accounts (ns, name) whose MUTUAL credentials need a review, and the answers.
  std::set<SecretName> access_wanted;
  std::map<SecretName, SecretAccess> access_held;
  SourceKindStatus secrets_status{.name = "secrets.referenced", .api_version = "v1", .state = "listed",
                                  .listed = true, .connected = true};
  SourceKindStatus config_maps_status{.name = "configmaps.referenced", .api_version = "v1", .state = "listed",
                                      .listed = true, .connected = true};

  // A request with the current token; after a 401 the token is reread and,
  // if it changed, the request is made once more.
  template <typename Call>
  Result<HttpResponse> withToken(const Call& call) {
    auto r = call(token ? token->current() : std::string());
    if (r && r->status == 401 && token && token->refresh()) r = call(token->current());
    return r;
  }

  bool allListed() const {
    return std::all_of(kinds.begin(), kinds.end(), [](const KindStore& k) { return k.status.listed; });
  }
  void bump() {
    ++changes;
    changed.notify_all();
  }
  // Sleeps up to `d`; false when stopping.
  bool sleepFor(std::chrono::milliseconds d) {
    std::unique_lock lock(mutex);
    wake.wait_for(lock, d, [&] { return stopping.load(); });
    return !stopping;
  }

  void failed(std::size_t i, const std::string& state, const std::string& error) {
    std::lock_guard lock(mutex);
    KindStore& k = kinds[i];
    // Once listed, a lost watch keeps the kind's state in effect: it reconnects.
    k.status.state = k.status.listed && state == "failing" ? "reconnecting" : state;
    k.status.last_error = error;
    ++k.status.errors;
    k.status.connected = false;
    spdlog::warn("kubernetes {}: {}", k.spec.name, error);
  }

  void absent(std::size_t i, const std::string& why) {
    std::lock_guard lock(mutex);
    KindStore& k = kinds[i];
    const bool was_listed = k.status.listed;
    const bool had_objects = !k.objects.empty();
    if (k.status.state != "absent") spdlog::info("kubernetes {}: {} (empty until it appears)", k.spec.name, why);
    k.objects.clear();
    k.bad.clear();
    k.waiting.clear();
    k.status.listed = true;
    k.status.connected = true;
    k.status.state = "absent";
    k.status.last_error = why;
    k.status.objects = 0;
    k.status.resource_version.clear();
    k.fresh_at = Clock::now();
    if (!was_listed || had_objects) bump();
  }

  void setVersion(std::size_t i, const std::string& api_version) {
    std::lock_guard lock(mutex);
    kinds[i].status.api_version = api_version;
  }

  void noteBad(KindStore& k, const DecodedItem& item) {
    const bool kept = k.objects.contains(item.key);
    spdlog::warn("kubernetes {}: skipping a malformed object{}: {}", k.spec.name,
                 kept ? " (its last good version stays)" : "", item.error->describe());
    k.bad[item.key] = *item.error;
    ++k.status.errors;
    k.status.last_error = item.error->describe();
  }

  // Room under the limit again: objects that waited for it are taken, oldest key first.
  void admitWaiting() {
    for (KindStore& k : kinds) {
      while (!k.waiting.empty() && objectCount() < options.max_objects) {
        auto w = k.waiting.begin();
        k.bad.erase(w->first);
        k.objects[w->first] = std::move(w->second);
        k.waiting.erase(w);
        k.status.objects = k.objects.size();
      }
    }
  }

  std::size_t objectCount() const {
    std::size_t n = 0;
    for (const KindStore& k : kinds) n += k.objects.size();
    return n;
  }

  // A complete list: apply the difference to what is stored. A list that
  // would take the source over its object limit is not taken (what the kind
  // held stays; a kind never listed keeps the source unsynced): false, with
  // the reason in `error`.
  bool replace(std::size_t i, std::vector<DecodedItem> items, const std::string& rv, bool relist, std::string& error) {
    std::lock_guard lock(mutex);
    KindStore& k = kinds[i];
    if (const std::size_t total = objectCount() - k.objects.size() + items.size(); total > options.max_objects) {
      error = fmt::format("{} objects listed, {} with the other kinds, over the source's limit of {} objects "
                          "(setting maxSourceObjects): not taken, {}",
                          items.size(), total, options.max_objects,
                          k.status.listed ? "its last good state kept" : "the source stays unsynced");
      return false;
    }
    bool changed_any = !k.status.listed;
    std::map<std::string, ClusterState> next;
    std::map<std::string, ManifestError> bad_before = std::move(k.bad);
    k.bad.clear();
    k.waiting.clear();  // the list is the whole kind
    for (DecodedItem& item : items) {
      auto old = k.objects.find(item.key);
      if (item.error) {
        if (!bad_before.contains(item.key)) noteBad(k, item);
        k.bad[item.key] = *item.error;
        if (old != k.objects.end()) next.emplace(item.key, std::move(old->second));
        continue;
      }
      if (old == k.objects.end() || !(old->second == *item.state)) changed_any = true;
      next.emplace(std::move(item.key), std::move(*item.state));
    }
    for (const auto& [key, state] : k.objects) {
      if (!next.contains(key)) changed_any = true;
    }
    if (bad_before.size() != k.bad.size()) changed_any = true;  // the errors an update reports changed
    k.objects = std::move(next);
    k.status.listed = true;
    k.status.state = "listed";
    k.status.resource_version = rv;
    k.status.objects = k.objects.size();
    if (relist) ++k.status.relists;
    k.fresh_at = Clock::now();
    if (changed_any) bump();
    return true;
  }

  void event(std::size_t i, const std::string& type, DecodedItem item, const std::string& rv) {
    std::lock_guard lock(mutex);
    KindStore& k = kinds[i];
    ++k.status.events[type];
    k.last_event = Clock::now();
    k.fresh_at = *k.last_event;
    if (!rv.empty()) k.status.resource_version = rv;
    if (type == "BOOKMARK" || type == "ERROR") return;
    bool changed_any = false;
    if (type == "DELETED") {
      changed_any = k.objects.erase(item.key) > 0;
      changed_any = k.bad.erase(item.key) > 0 || changed_any;
      k.waiting.erase(item.key);
      if (changed_any) admitWaiting();
    } else if (item.error) {
      noteBad(k, item);
      changed_any = true;  // the update's errors name it
    } else {
      if (!k.objects.contains(item.key) && objectCount() >= options.max_objects) {
        item.error = ManifestError{item.origin, -1, "",
                                   fmt::format("not taken: the source holds its limit of {} objects (setting "
                                               "maxSourceObjects); taken when others go",
                                               options.max_objects)};
        noteBad(k, item);
        k.waiting[item.key] = std::move(*item.state);
        bump();  // the update's errors name it
        return;
      }
      k.waiting.erase(item.key);
      changed_any = k.bad.erase(item.key) > 0;
      auto [it, inserted] = k.objects.try_emplace(item.key);
      if (inserted || !(it->second == *item.state)) {
        it->second = std::move(*item.state);
        changed_any = true;
      }
    }
    k.status.objects = k.objects.size();
    if (changed_any) bump();
  }

  void connected(std::size_t i, bool on) {
    std::lock_guard lock(mutex);
    KindStore& k = kinds[i];
    k.status.connected = on;
    k.fresh_at = Clock::now();
    if (on && k.status.state != "absent") {
      k.status.state = "listed";
    }
  }

  void reconnecting(std::size_t i) {
    std::lock_guard lock(mutex);
    ++kinds[i].status.reconnects;
  }
};

namespace {

enum class Outcome { kOk, kGone, kAbsent, kForbidden, kUnauthorized, kCapped, kFailed, kStopped };

struct Reflector {
  std::shared_ptr<KubeSource::Shared> sh;
  std::size_t index;
  ResourceKind spec;
  std::unique_ptr<HttpTransport> http;
  Backoff backoff;
  std::mt19937_64 rng;
  std::string version;
  std::string resource_version;
  std::string error;

  std::string selectorQuery() const {
    std::string selector = fieldSelector(spec.selection, sh->options.node_name);
    return selector.empty() ? "" : "&fieldSelector=" + urlEncode(selector);
  }

  Result<HttpResponse> get(const std::string& target) {
    return sh->withToken([&](const std::string& bearer) { return http->get(target, bearer); });
  }

  Outcome classify(const HttpResponse& r, const std::string& what) {
    error = what + ": " + statusMessage(r);
    if (r.status == 404 && spec.custom) return Outcome::kAbsent;
    if (r.status == 410) return Outcome::kGone;
    if (r.status == 401) return Outcome::kUnauthorized;
    if (r.status == 403) return Outcome::kForbidden;
    return Outcome::kFailed;
  }

  Outcome transportFailed(const Error& e) {
    error = e.describe();
    http.reset();  // a new connection next time
    return Outcome::kFailed;
  }

  Outcome discover() {
    auto r = get("/apis/" + spec.group);
    if (!r) return transportFailed(r.error());
    if (r->status != 200) {
      Outcome o = classify(*r, "discovery of " + spec.group);
      if (r->status == 404) {
        error = "API group " + spec.group + " is not served (CRD not installed)";
        return Outcome::kAbsent;
      }
      return o;
    }
    json group = json::parse(r->body, nullptr, false);
    if (!group.is_object()) {
      error = "discovery of " + spec.group + ": not a JSON APIGroup";
      return Outcome::kFailed;
    }
    std::string preferred;
    if (auto p = group.find("preferredVersion"); p != group.end() && p->is_object()) preferred = p->value("version", "");
    std::vector<std::string> served;
    if (auto v = group.find("versions"); v != group.end() && v->is_array()) {
      for (const json& entry : *v) {
        if (entry.is_object()) served.push_back(entry.value("version", ""));
      }
    }
    version = chooseVersion(spec, preferred, served);
    if (version.empty()) {
      std::string list;
      for (const std::string& s : served) list += (list.empty() ? "" : ", ") + s;
      error = spec.group + " serves no version the agent understands (served: " + list + ")";
      return Outcome::kAbsent;
    }
    sh->setVersion(index, spec.group + "/" + version);
    return Outcome::kOk;
  }

  Outcome list(bool relist) {
    const std::string path = collectionPath(spec, version);
    std::vector<DecodedItem> items;
    std::string cont;
    std::string rv;
    int restarts = 0;
    for (;;) {
      if (sh->stopping) return Outcome::kStopped;
      std::string target = path + "?limit=" + std::to_string(sh->options.page_limit) + selectorQuery();
      if (!cont.empty()) {
        target += "&continue=" + urlEncode(cont);
      } else if (!relist) {
        // The first list, as client-go's reflector makes it: resourceVersion=0
        // lets the API server answer from its watch cache (whole, ignoring the
        // limit, up to Kubernetes 1.32) instead of a quorum read of etcd per
        // page, which matters when every node's agent starts at once. A relist
        // after 410 Gone asks for the latest state (no resourceVersion).
        target += "&resourceVersion=0";
      }
      auto r = get(target);
      if (!r) return transportFailed(r.error());
      if (r->status == 410 && !cont.empty() && restarts++ < 3) {
        // The continue token expired: the list starts again, all of it.
        items.clear();
        cont.clear();
        continue;
      }
      if (r->status != 200) return classify(*r, "list " + path);
      // Each item is decoded as soon as it is parsed, then dropped from the
      // document (nlohmann's parser callback): a 10k-pod list never exists
      // as one JSON tree, which took the agent's RSS from 40 to 115 MiB.
      // List items carry no apiVersion: they are of the version asked for.
      const std::string api_version = spec.group.empty() ? version : spec.group + "/" + version;
      bool in_items = false;
      const json::parser_callback_t each_item = [&](int depth, json::parse_event_t event, json& parsed) {
        if (depth == 1 && event == json::parse_event_t::key) in_items = parsed == "items";
        if (depth != 2 || !in_items || event != json::parse_event_t::object_end) return true;
        items.push_back(decodeItem(parsed, spec, api_version));
        return false;
      };
      const std::size_t before = items.size();
      json body = json::parse(r->body, each_item, false);
      r->body = std::string();
      if (!body.is_object()) {
        items.resize(before);  // what a broken page yielded before it broke
        error = "list " + path + ": the answer is not JSON";
        return Outcome::kFailed;
      }
      rv = stringAt(body, "metadata", "resourceVersion");
      cont = stringAt(body, "metadata", "continue");
      if (cont.empty()) break;
    }
    if (spec.group.empty() || !spec.custom) sh->setVersion(index, spec.group.empty() ? version : spec.group + "/" + version);
    if (!sh->replace(index, std::move(items), rv, relist, error)) return Outcome::kCapped;
    resource_version = rv;
    return Outcome::kOk;
  }

  // One watch request, until the server ends it or something goes wrong.
  Outcome watch() {
    std::uniform_int_distribution<int64_t> timeout(sh->options.watch_timeout_min.count(),
                                                   std::max(sh->options.watch_timeout_min, sh->options.watch_timeout_max).count());
    const std::string path = collectionPath(spec, version);
    std::string target = path + "?watch=1&allowWatchBookmarks=true&resourceVersion=" + urlEncode(resource_version) +
                         "&timeoutSeconds=" + std::to_string(timeout(rng)) + selectorQuery();
    std::string buffer;
    bool opened = false;
    Outcome outcome = Outcome::kOk;
    auto handle = [&](std::string_view line) {
      json ev = json::parse(line, nullptr, false);
      if (!ev.is_object() || !ev.contains("type") || !ev["type"].is_string() || !ev.contains("object") ||
          !ev["object"].is_object()) {
        error = "watch " + path + ": an event is not a JSON watch event";
        outcome = Outcome::kFailed;
        return false;
      }
      const std::string type = ev["type"].get<std::string>();
      const json& object = ev["object"];
      if (type == "ERROR") {
        const int code = object.value("code", 0);
        error = "watch " + path + ": " + object.value("message", std::string("ERROR event"));
        sh->event(index, type, {}, "");
        outcome = code == 410 ? Outcome::kGone : Outcome::kFailed;
        return false;
      }
      std::string rv = stringAt(object, "metadata", "resourceVersion");
      if (!rv.empty()) resource_version = rv;
      if (type == "BOOKMARK") {
        sh->event(index, type, {}, rv);
      } else if (type == "DELETED") {
        DecodedItem item;
        item.key = keyOf(object);
        sh->event(index, type, std::move(item), rv);
      } else if (type == "ADDED" || type == "MODIFIED") {
        const std::string api_version = object.value("apiVersion", spec.group.empty() ? version : spec.group + "/" + version);
        sh->event(index, type, decodeItem(object, spec, api_version), rv);
      }
      return true;
    };
    auto on_data = [&](std::string_view data) {
      if (sh->stopping) {
        outcome = Outcome::kStopped;
        return false;
      }
      if (!opened) {
        opened = true;
        sh->connected(index, true);
        backoff.reset();
      }
      buffer.append(data);
      std::size_t start = 0;
      for (std::size_t nl; (nl = buffer.find('\n', start)) != std::string::npos; start = nl + 1) {
        std::string_view line(buffer.data() + start, nl - start);
        if (line.find_first_not_of(" \r\t") == std::string_view::npos) continue;
        if (!handle(line)) return false;
      }
      buffer.erase(0, start);
      if (buffer.size() > kMaxEventSize) {
        error = "watch " + path + ": an event larger than 64 MiB";
        outcome = Outcome::kFailed;
        return false;
      }
      return true;
    };
    auto r = sh->withToken([&](const std::string& bearer) { return http->stream(target, bearer, on_data); });
    if (opened) sh->connected(index, false);
    if (outcome == Outcome::kStopped || sh->stopping) return Outcome::kStopped;
    if (!r) return transportFailed(r.error());
    if (r->status / 100 != 2) return classify(*r, "watch " + path);
    if (outcome != Outcome::kOk) {
      if (outcome == Outcome::kFailed) http.reset();  // the stream was left mid-body
      return outcome;
    }
    return Outcome::kOk;  // the server ended the watch (timeoutSeconds): resume from resource_version
  }

  void onProblem(Outcome o) {
    switch (o) {
      case Outcome::kForbidden: sh->failed(index, "forbidden", error); break;
      case Outcome::kUnauthorized: sh->failed(index, "unauthorized", error); break;
      case Outcome::kCapped: sh->failed(index, "capped", error); break;
      default: sh->failed(index, "failing", error); break;
    }
  }

  void run() {
    bool listed_once = false;
    bool need_list = true;
    if (!spec.custom) version = spec.versions.front();
    while (!sh->stopping) {
      if (!http) {
        auto opened = sh->transports->open();
        if (!opened) {
          error = opened.error().describe();
          onProblem(Outcome::kFailed);
          if (!sh->sleepFor(backoff.next())) break;
          continue;
        }
        http = std::move(*opened);
      }
      if (need_list) {
        Outcome o = spec.custom ? discover() : Outcome::kOk;
        if (o == Outcome::kOk) o = list(listed_once);
        if (o == Outcome::kStopped) break;
        if (o == Outcome::kAbsent) {
          sh->absent(index, error);
          listed_once = false;  // when it appears, its first list is a first list
          if (!sh->sleepFor(sh->options.absent_retry)) break;
          continue;
        }
        if (o != Outcome::kOk) {
          onProblem(o);
          if (!sh->sleepFor(backoff.next())) break;
          continue;
        }
        listed_once = true;
        need_list = false;
        backoff.reset();
      }
      Outcome o = watch();
      if (o == Outcome::kStopped) break;
      if (o == Outcome::kOk) {  // ended by the server: watch again from the last resourceVersion
        sh->reconnecting(index);
        continue;
      }
      if (o == Outcome::kGone || o == Outcome::kAbsent) {
        spdlog::info("kubernetes {}: {}: listing again", spec.name, error);
        need_list = true;
        continue;
      }
      onProblem(o);
      sh->reconnecting(index);
      if (!sh->sleepFor(backoff.next())) break;
    }
    std::lock_guard lock(sh->mutex);
    sh->finished[index] = true;
    sh->done.notify_all();
  }
};


// `held` keeps only what `wanted` names; a fresh answer replaces what it
// held (nullopt: there is none now). Whether anything changed.
template <typename T>
bool refreshHeld(std::map<SecretName, T>& held, const std::set<SecretName>& wanted,
                 std::map<SecretName, std::optional<T>>& fresh) {
  bool changed = std::erase_if(held, [&](const auto& entry) { return !wanted.contains(entry.first); }) > 0;
  for (auto& [name, value] : fresh) {
    if (!wanted.contains(name)) continue;
    auto it = held.find(name);
    if (!value) {
      if (it != held.end()) {
        held.erase(it);
        changed = true;
      }
    } else if (it == held.end() || !(it->second == *value)) {
      held[name] = std::move(*value);
      changed = true;
    }
  }
  return changed;
}

// Reads the Secrets that poll() found named, one GET each: 404 is "not
// there" (the connection that needs it is refused, with the name), anything
// else keeps what was read before. No list or watch: a node's agent holds
// only the Secrets its own pods' rules name. And asks, for each service
// account a MUTUAL credential is for, a SubjectAccessReview.
struct SecretReader {
  std::shared_ptr<KubeSource::Shared> sh;
  std::unique_ptr<HttpTransport> http;

  // One request on this reader's connection (opened when needed, dropped after a transport failure).
  template <typename Call>
  Result<HttpResponse> request(const Call& call) {
    if (!http) {
      auto opened = sh->transports->open();
      if (!opened) return std::unexpected(opened.error());
      http = std::move(*opened);
    }
    auto r = sh->withToken([&](const std::string& bearer) { return call(*http, bearer); });
    if (!r) http.reset();
    return r;
  }

  // One object by name: it, nullopt when absent, or an error. `kind`:
  // "Secret" or "ConfigMap"; `resource`: "secrets" or "configmaps".
  template <typename T>
  Result<std::optional<T>> read(const SecretName& name, const std::string& kind, const std::string& resource,
                                SharedList<T> ClusterState::*list) {
    const std::string what = "get " + kind + " " + name.toString();
    const std::string target = "/api/v1/namespaces/" + urlEncode(name.ns) + "/" + resource + "/" + urlEncode(name.name);
    auto r = request([&](HttpTransport& h, const std::string& bearer) { return h.get(target, bearer); });
    if (!r) return std::unexpected(r.error().context(what));
    if (r->status == 404) return std::optional<T>();
    if (r->status != 200) {
      std::string hint = r->status == 403 ? " (the agent's ClusterRole needs get on " + resource +
                                                ": deploy/daemonset/base/rbac.yaml)"
                                          : "";
      return fail(what + ": " + statusMessage(*r) + hint);
    }
    json body = json::parse(r->body, nullptr, false);
    if (!body.is_object()) return fail(what + ": the answer is not JSON");
    ParsedManifests parsed = decodeApiObject(body, "api " + kind + "/" + name.toString(), "v1", kind);
    if (!parsed.errors.empty()) return std::unexpected(Error{parsed.errors.front().describe()});
    if ((parsed.state.*list).size() != 1) return fail(what + ": not a " + kind);
    return std::optional<T>((parsed.state.*list).front());
  }

  // Every object of `wanted`, read now; failures counted, the last one kept.
  template <typename T>
  std::map<SecretName, std::optional<T>> readAll(const std::set<SecretName>& wanted, const std::string& kind,
                                                 const std::string& resource, SharedList<T> ClusterState::*list,
                                                 uint64_t& errors, std::string& last_error) {
    std::map<SecretName, std::optional<T>> out;
    for (const SecretName& name : wanted) {
      if (sh->stopping) break;
      auto object = read(name, kind, resource, list);
      if (!object) {
        last_error = object.error().describe();
        ++errors;
        continue;
      }
      out.emplace(name, std::move(*object));
    }
    return out;
  }

  // May this service account list secrets in its namespace? istiod's
  // question before it serves a Secret's key (secrets.go Authorize). A review
  // that cannot be asked is a "no", with the reason.
  SecretAccess review(const SecretName& account) {
    SecretAccess access{account.ns, account.name, false, ""};
    const json body = {{"apiVersion", "authorization.k8s.io/v1"},
                       {"kind", "SubjectAccessReview"},
                       {"spec", {{"user", "system:serviceaccount:" + account.ns + ":" + account.name},
                                 {"resourceAttributes", {{"namespace", account.ns}, {"verb", "list"}, {"resource", "secrets"}}}}}};
    const std::string target = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
    const std::string text = body.dump();
    auto r = request([&](HttpTransport& h, const std::string& bearer) { return h.send("POST", target, bearer, text); });
    if (!r) {
      access.reason = "SubjectAccessReview: " + r.error().describe();
      return access;
    }
    if (r->status != 200 && r->status != 201) {
      access.reason = "SubjectAccessReview: " + statusMessage(*r) +
                      (r->status == 403 ? " (the agent's ClusterRole needs create on subjectaccessreviews)" : "");
      return access;
    }
    json answer = json::parse(r->body, nullptr, false);
    const json status = answer.is_object() ? answer.value("status", json::object()) : json::object();
    access.allowed = status.is_object() && status.value("allowed", false);
    access.reason = status.is_object() ? status.value("reason", std::string()) : std::string();
    return access;
  }

  // What one round of reads found, into a kind's status.
  static void report(SourceKindStatus& st, size_t held, uint64_t errors, const std::string& last_error,
                     size_t gets) {
    st.objects = held;
    st.errors += errors;
    if (errors > 0) {
      if (st.last_error != last_error) spdlog::warn("kubernetes {}: {}", st.name, last_error);
      st.last_error = last_error;
      st.state = last_error.find("HTTP 403") != std::string::npos ? "forbidden" : "failing";
    } else {
      st.state = "listed";
    }
    if (gets > 0) st.events["GET"] += gets;
  }

  void run() {
    uint64_t seen = 0;
    while (!sh->stopping) {
      std::set<SecretName> wanted;
      std::set<SecretName> maps_wanted;
      std::set<SecretName> accounts;
      {
        std::unique_lock lock(sh->mutex);
        seen = sh->secrets_wanted_changes;
        wanted = sh->secrets_wanted;
        maps_wanted = sh->config_maps_wanted;
        accounts = sh->access_wanted;
      }
      std::string last_error, maps_error;
      uint64_t errors = 0, map_errors = 0;
      auto read_now = readAll(wanted, "Secret", "secrets", &ClusterState::secrets, errors, last_error);
      auto maps_now =
          readAll(maps_wanted, "ConfigMap", "configmaps", &ClusterState::config_maps, map_errors, maps_error);
      std::map<SecretName, std::optional<SecretAccess>> reviewed;
      for (const SecretName& account : accounts) {
        if (sh->stopping) break;
        SecretAccess access = review(account);
        if (!access.allowed && access.reason.starts_with("SubjectAccessReview: ")) {
          last_error = access.reason;
          ++errors;
        }
        reviewed.emplace(account, std::move(access));
      }
      std::unique_lock lock(sh->mutex);
      const bool changed = refreshHeld(sh->access_held, sh->access_wanted, reviewed) |
                           refreshHeld(sh->secrets_held, sh->secrets_wanted, read_now) |
                           refreshHeld(sh->config_maps_held, sh->config_maps_wanted, maps_now);
      report(sh->secrets_status, sh->secrets_held.size(), errors, last_error, wanted.size());
      if (!accounts.empty()) sh->secrets_status.events["REVIEW"] += accounts.size();
      report(sh->config_maps_status, sh->config_maps_held.size(), map_errors, maps_error, maps_wanted.size());
      if (changed) sh->bump();
      sh->wake.wait_for(lock, sh->options.secret_refresh,
                        [&] { return sh->stopping.load() || sh->secrets_wanted_changes != seen; });
    }
    std::lock_guard lock(sh->mutex);
    sh->finished.back() = true;
    sh->done.notify_all();
  }
};

}  // namespace

std::unique_ptr<KubeSource> KubeSource::start(std::shared_ptr<TransportFactory> transports,
                                              std::shared_ptr<BearerToken> token, KubeSourceOptions options) {
  auto shared = std::make_shared<Shared>();
  shared->transports = std::move(transports);
  shared->token = std::move(token);
  shared->options = std::move(options);
  for (const ResourceKind& kind : shared->options.kinds) {
    KindStore k;
    k.spec = kind;
    k.status.name = kind.name;
    k.status.state = "waiting";
    shared->kinds.push_back(std::move(k));
  }
  shared->finished.assign(shared->kinds.size() + 1, false);
  std::random_device random;
  for (std::size_t i = 0; i < shared->kinds.size(); ++i) {
    uint64_t seed = (static_cast<uint64_t>(random()) << 32) ^ random();
    // Each thread owns a reference to the shared state: one still blocked in a
    // read at shutdown is left to finish on its own (see ~KubeSource).
    std::thread([shared, i, seed] {
      Reflector r{shared, i, shared->kinds[i].spec, nullptr,
                  Backoff(shared->options.backoff_initial, shared->options.backoff_max, seed),
                  std::mt19937_64(seed ^ 0x9e3779b97f4a7c15ull), "", "", ""};
      r.run();
    }).detach();
  }
  std::thread([shared] { SecretReader{shared, nullptr}.run(); }).detach();
  return std::unique_ptr<KubeSource>(new KubeSource(std::move(shared)));
}

KubeSource::~KubeSource() {
  std::unique_lock lock(shared_->mutex);
  shared_->stopping = true;
  shared_->wake.notify_all();
  // A reflector blocked in a watch read (neon cannot be interrupted) exits at
  // its next byte or read timeout; it holds its own reference to what it uses.
  const bool all_done = shared_->done.wait_for(lock, std::chrono::seconds(2), [&] {
    return std::all_of(shared_->finished.begin(), shared_->finished.end(), [](bool f) { return f; });
  });
  if (!all_done) spdlog::debug("kubernetes: some watches still blocked in a read at shutdown");
}

std::optional<ClusterUpdate> KubeSource::poll(std::chrono::milliseconds timeout) {
  Shared& sh = *shared_;
  std::unique_lock lock(sh.mutex);
  auto pending = [&] { return sh.allListed() && (generation_ == 0 || sh.changes != published_changes_); };
  if (!sh.changed.wait_for(lock, timeout, pending)) return std::nullopt;
  // Debounce a burst of events into one update, as istiod debounces its
  // pushes (pilot/pkg/xds/discovery.go, PILOT_DEBOUNCE_AFTER / _MAX): publish
  // once the events pause for `coalesce`, or `coalesce_max` after the first.
  // Each update rebuilds the policy index, so a steady trickle of events
  // (20/s at 10k pods) costs two builds a second, not one per event.
  const auto first = Clock::now();
  for (uint64_t seen = sh.changes;; seen = sh.changes) {
    const auto until = std::min(Clock::now() + sh.options.coalesce, first + sh.options.coalesce_max);
    const bool more = sh.changed.wait_until(lock, until, [&] { return sh.stopping.load() || sh.changes != seen; });
    if (!more || sh.stopping || Clock::now() >= first + sh.options.coalesce_max) break;
  }
  if (!pending()) return std::nullopt;
  published_changes_ = sh.changes;
  ClusterUpdate update;
  update.generation = ++generation_;
  std::unordered_set<std::string> local_pods;
  std::size_t pods = 0;
  for (const KindStore& k : sh.kinds) {
    if (k.spec.kind == "Pod") pods += k.objects.size();
  }
  update.state.pods.reserve(pods);
  for (const KindStore& k : sh.kinds) {
    const bool local = k.spec.selection == Selection::kThisNode;
    const bool other = k.spec.selection == Selection::kOtherNodes;
    for (const auto& [key, state] : k.objects) {
      if (local) local_pods.insert(key);
      // A pod moving between the two selections is in both for a moment: this node's copy wins.
      if (other && local_pods.contains(key)) continue;
      update.state.append(state);
    }
    for (const auto& [key, error] : k.bad) update.errors.push_back(error);
  }
  // The Secrets this state names: asked for (the reader wakes when the set
  // changes) and, those already read, published with it.
  std::set<SecretName> wanted = referencedSecrets(update.state, sh.options.node_name);
  std::set<SecretName> accounts = credentialUsers(update.state, sh.options.node_name);
  std::set<SecretName> maps = referencedConfigMaps(update.state);
  if (wanted != sh.secrets_wanted || accounts != sh.access_wanted || maps != sh.config_maps_wanted) {
    sh.secrets_wanted = std::move(wanted);
    sh.access_wanted = std::move(accounts);
    sh.config_maps_wanted = std::move(maps);
    ++sh.secrets_wanted_changes;
    sh.wake.notify_all();
  }
  for (const auto& [name, secret] : sh.secrets_held) {
    if (sh.secrets_wanted.contains(name)) update.state.secrets.push_back(secret);
  }
  for (const auto& [name, map] : sh.config_maps_held) {
    if (sh.config_maps_wanted.contains(name)) update.state.config_maps.push_back(map);
  }
  update.state.secret_access_reviewed = true;
  for (const auto& [account, access] : sh.access_held) {
    if (sh.access_wanted.contains(account)) update.state.secret_access.push_back(access);
  }
  return update;
}

SourceStatus KubeSource::status() const {
  const Shared& sh = *shared_;
  std::lock_guard lock(sh.mutex);
  SourceStatus s;
  s.kind = "kubernetes";
  s.server = sh.transports->server();
  s.origin = sh.options.origin;
  s.synced = sh.allListed() && generation_ > 0;
  s.connected = true;
  const auto now = Clock::now();
  for (const KindStore& k : sh.kinds) {
    SourceKindStatus ks = k.status;
    if (k.last_event) ks.last_event_age_seconds = std::chrono::duration<double>(now - *k.last_event).count();
    if (!ks.connected) {
      s.connected = false;
      s.staleness_seconds = std::max(s.staleness_seconds, std::chrono::duration<double>(now - k.fresh_at).count());
    }
    s.kinds.push_back(std::move(ks));
  }
  s.kinds.push_back(sh.secrets_status);
  s.kinds.push_back(sh.config_maps_status);
  return s;
}

}  // namespace meshlock::config::kube
