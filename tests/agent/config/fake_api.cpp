#include "fake_api.h"

#include <algorithm>

namespace meshlock::config::kube::testing {
namespace {

std::map<std::string, std::string> parseQuery(const std::string& query) {
  std::map<std::string, std::string> out;
  std::size_t pos = 0;
  while (pos < query.size()) {
    std::size_t amp = query.find('&', pos);
    if (amp == std::string::npos) amp = query.size();
    std::string pair = query.substr(pos, amp - pos);
    std::size_t eq = pair.find('=');
    std::string key = pair.substr(0, eq);
    std::string value = eq == std::string::npos ? "" : pair.substr(eq + 1);
    std::string decoded;
    for (std::size_t i = 0; i < value.size(); ++i) {
      if (value[i] == '%' && i + 2 < value.size()) {
        decoded.push_back(static_cast<char>(std::stoi(value.substr(i + 1, 2), nullptr, 16)));
        i += 2;
      } else {
        decoded.push_back(value[i]);
      }
    }
    out[key] = decoded;
    pos = amp + 1;
  }
  return out;
}

std::string keyOf(const json& object) {
  const json& md = object["metadata"];
  return md.value("namespace", "") + "/" + md.value("name", "");
}

HttpResponse status(int code, const std::string& message) {
  return {code, json{{"kind", "Status"}, {"code", code}, {"message", message}}.dump()};
}

class FakeTransport final : public HttpTransport {
 public:
  explicit FakeTransport(std::shared_ptr<FakeApi> api) : api_(std::move(api)) {}
  Result<HttpResponse> get(const std::string& target, const std::string& token) override {
    return api_->handle(target, token, nullptr);
  }
  Result<HttpResponse> send(const std::string& method, const std::string& target, const std::string&,
                            const std::string& body) override {
    if (method == "POST") return api_->post(target, body);
    return HttpResponse{.status = 405, .body = "the fake API serves no " + method + " (" + target + ")"};
  }
  Result<HttpResponse> stream(const std::string& target, const std::string& token,
                              const std::function<bool(std::string_view)>& on_data) override {
    return api_->handle(target, token, &on_data);
  }

 private:
  std::shared_ptr<FakeApi> api_;
};

}  // namespace

Result<std::unique_ptr<HttpTransport>> FakeApi::open() {
  return std::unique_ptr<HttpTransport>(new FakeTransport(shared_from_this()));
}

void FakeApi::serveGroup(const std::string& group, std::vector<std::string> versions) {
  std::lock_guard l(mutex_);
  groups_[group] = std::move(versions);
}
void FakeApi::removeGroup(const std::string& group) {
  std::lock_guard l(mutex_);
  groups_.erase(group);
}

void FakeApi::record(const std::string& path, const std::string& type, json object) {
  Collection& c = collections_[path];
  object["metadata"]["resourceVersion"] = std::to_string(rv_);
  json previous;
  if (auto it = c.objects.find(keyOf(object)); it != c.objects.end()) previous = it->second;
  if (type == "DELETED") {
    c.objects.erase(keyOf(object));
  } else {
    c.objects[keyOf(object)] = object;
  }
  c.history.push_back({rv_, type, std::move(object), std::move(previous)});
  cv_.notify_all();
}

void FakeApi::put(const std::string& path, json object) {
  std::lock_guard l(mutex_);
  ++rv_;
  const bool exists = collections_[path].objects.contains(keyOf(object));
  record(path, exists ? "MODIFIED" : "ADDED", std::move(object));
}

void FakeApi::remove(const std::string& path, const std::string& ns, const std::string& name) {
  std::lock_guard l(mutex_);
  auto& objects = collections_[path].objects;
  auto it = objects.find(ns + "/" + name);
  if (it == objects.end()) return;
  ++rv_;
  record(path, "DELETED", it->second);
}

void FakeApi::bookmark(const std::string& path) {
  std::lock_guard l(mutex_);
  ++rv_;
  collections_[path].history.push_back({rv_, "BOOKMARK", json{{"kind", "Pod"}, {"metadata", {{"resourceVersion", std::to_string(rv_)}}}}});
  cv_.notify_all();
}

void FakeApi::expireWatches(const std::string& path) {
  std::lock_guard l(mutex_);
  expired_at_[path] = ++rv_;
  cv_.notify_all();
}

void FakeApi::closeWatches() {
  std::lock_guard l(mutex_);
  ++close_generation_;
  cv_.notify_all();
}

void FakeApi::forceStatus(const std::string& prefix, int code) {
  std::lock_guard l(mutex_);
  if (code == 0) {
    forced_.erase(prefix);
  } else {
    forced_[prefix] = code;
  }
}

void FakeApi::requireToken(std::string token) {
  std::lock_guard l(mutex_);
  token_ = std::move(token);
}

std::vector<std::string> FakeApi::requests() const {
  std::lock_guard l(mutex_);
  return requests_;
}

std::size_t FakeApi::openWatches() const {
  std::lock_guard l(mutex_);
  return open_watches_;
}

bool FakeApi::selected(const json& object, const std::map<std::string, std::string>& query) const {
  auto it = query.find("fieldSelector");
  if (it == query.end()) return true;
  const std::string& sel = it->second;
  std::size_t ne = sel.find("!=");
  std::size_t eq = sel.find('=');
  const bool negate = ne != std::string::npos;
  std::string field = sel.substr(0, negate ? ne : eq);
  std::string value = sel.substr(negate ? ne + 2 : eq + 1);
  std::string actual;
  if (field == "spec.nodeName") actual = object.contains("spec") ? object["spec"].value("nodeName", "") : "";
  if (field == "metadata.name") actual = object["metadata"].value("name", "");
  return negate ? actual != value : actual == value;
}

HttpResponse FakeApi::list(const std::string& path, const std::map<std::string, std::string>& query) {
  std::vector<json> items;
  for (const auto& [key, object] : collections_[path].objects) {
    if (selected(object, query)) items.push_back(object);
  }
  std::size_t offset = 0;
  if (auto c = query.find("continue"); c != query.end()) {
    if (expire_continue_) {
      expire_continue_ = false;
      return status(410, "continue token expired");
    }
    offset = std::stoul(c->second);
  }
  std::size_t limit = query.contains("limit") ? std::stoul(query.at("limit")) : items.size();
  json page = json::array();
  for (std::size_t i = offset; i < items.size() && i < offset + limit; ++i) {
    json item = items[i];
    item.erase("apiVersion");  // as the API server does in lists
    item.erase("kind");
    page.push_back(std::move(item));
  }
  json md = {{"resourceVersion", std::to_string(rv_)}};
  if (offset + limit < items.size()) md["continue"] = std::to_string(offset + limit);
  std::string api_version = path.starts_with("/api/") ? path.substr(5, path.find('/', 5) - 5)
                                                      : path.substr(6, path.rfind('/') - 6);
  return {200, json{{"apiVersion", api_version}, {"kind", "List"}, {"metadata", md}, {"items", page}}.dump()};
}

Result<HttpResponse> FakeApi::post(const std::string& target, const std::string& body) {
  std::lock_guard l(mutex_);
  requests_.push_back("POST " + target);
  for (const auto& [prefix, code] : forced_) {
    if (target.starts_with(prefix)) return status(code, "forced by the test");
  }
  if (target != "/apis/authorization.k8s.io/v1/subjectaccessreviews") return status(404, "not served by the fake");
  json review = json::parse(body, nullptr, false);
  const json spec = review.is_object() ? review.value("spec", json::object()) : json::object();
  const std::string user = spec.value("user", "");
  const json attrs = spec.value("resourceAttributes", json::object());
  const std::string own = "system:serviceaccount:" + attrs.value("namespace", "") + ":";
  const bool allowed = attrs.value("verb", "") == "list" && attrs.value("resource", "") == "secrets" &&
                       user.starts_with(own) &&
                       std::find(secret_listers_.begin(), secret_listers_.end(), user) != secret_listers_.end();
  review["status"] = {{"allowed", allowed}};
  return HttpResponse{201, review.dump()};
}

Result<HttpResponse> FakeApi::handle(const std::string& target, const std::string& token,
                                     const std::function<bool(std::string_view)>* on_data) {
  std::unique_lock l(mutex_);
  requests_.push_back(target);
  std::size_t q = target.find('?');
  std::string path = target.substr(0, q);
  auto query = q == std::string::npos ? std::map<std::string, std::string>{} : parseQuery(target.substr(q + 1));
  if (!token_.empty() && token != token_) return status(401, "Unauthorized");
  for (const auto& [prefix, code] : forced_) {
    if (path.starts_with(prefix)) return status(code, "forced by the test");
  }
  if (path.starts_with("/apis/") && std::count(path.begin(), path.end(), '/') == 2) {
    auto g = groups_.find(path.substr(6));
    if (g == groups_.end()) return status(404, "the server could not find the requested resource");
    json versions = json::array();
    for (const std::string& v : g->second) versions.push_back({{"groupVersion", g->first + "/" + v}, {"version", v}});
    return HttpResponse{200, json{{"kind", "APIGroup"}, {"name", g->first}, {"versions", versions},
                                  {"preferredVersion", versions[0]}}.dump()};
  }
  if (path.starts_with("/apis/")) {
    std::string group = path.substr(6, path.find('/', 6) - 6);
    if (group != "discovery.k8s.io" && !groups_.contains(group)) return status(404, "no such group");
  }
  // GET of one namespaced core object: /api/v1/namespaces/NS/RESOURCE/NAME
  // is looked up in the collection /api/v1/RESOURCE.
  if (path.starts_with("/api/v1/namespaces/") && std::count(path.begin(), path.end(), '/') == 6) {
    std::vector<std::string> parts;
    for (std::size_t at = 1, next; at <= path.size(); at = next + 1) {
      next = path.find('/', at);
      if (next == std::string::npos) next = path.size();
      parts.push_back(path.substr(at, next - at));
    }
    auto& objects = collections_["/api/v1/" + parts[4]].objects;
    auto it = objects.find(parts[3] + "/" + parts[5]);
    if (it == objects.end()) return status(404, parts[4] + " \"" + parts[5] + "\" not found");
    return HttpResponse{200, it->second.dump()};
  }
  if (!query.contains("watch")) return list(path, query);

  // A watch: stream history after resourceVersion, then wait for more.
  int64_t from = std::stoll(query.count("resourceVersion") ? query.at("resourceVersion") : "0");
  auto expired = [&] { return expired_at_.contains(path) && from < expired_at_[path]; };
  if (expired()) {
    l.unlock();
    std::string line = json{{"type", "ERROR"}, {"object", {{"kind", "Status"}, {"code", 410}, {"message", "too old resource version"}}}}.dump() + "\n";
    if (on_data != nullptr && (*on_data)({})) (*on_data)(line);
    return HttpResponse{200, ""};
  }
  const uint64_t generation = close_generation_;
  ++open_watches_;
  l.unlock();
  if (!(*on_data)({})) {
    l.lock();
    --open_watches_;
    return HttpResponse{200, ""};
  }
  l.lock();
  int64_t seen = from;
  while (true) {
    std::vector<Event> pending;
    for (const Event& e : collections_[path].history) {
      if (e.rv <= seen) continue;
      if (e.type == "BOOKMARK") {
        pending.push_back(e);
        continue;
      }
      // An object moving out of (into) a field selector is DELETED (ADDED) for that watch, as the cacher does.
      const bool now_in = selected(e.object, query);
      const bool was_in = e.type == "MODIFIED" && selected(e.previous, query);
      if (e.type == "MODIFIED" && was_in && !now_in) {
        pending.push_back({e.rv, "DELETED", e.object, {}});
      } else if (e.type == "MODIFIED" && !was_in && now_in) {
        pending.push_back({e.rv, "ADDED", e.object, {}});
      } else if (now_in) {
        pending.push_back(e);
      }
    }
    for (const Event& e : collections_[path].history) seen = std::max(seen, e.rv);
    bool keep = true;
    if (!pending.empty()) {
      l.unlock();
      for (const Event& e : pending) {
        if (!(*on_data)(json{{"type", e.type}, {"object", e.object}}.dump() + "\n")) {
          keep = false;
          break;
        }
      }
      l.lock();
    }
    if (!keep || close_generation_ != generation) break;
    if (expired()) {
      l.unlock();
      (*on_data)(json{{"type", "ERROR"}, {"object", {{"kind", "Status"}, {"code", 410}, {"message", "too old resource version"}}}}.dump() + "\n");
      l.lock();
      break;
    }
    cv_.wait_for(l, std::chrono::milliseconds(10));
    // Idle: an empty piece lets the reflector notice a stop.
    l.unlock();
    keep = (*on_data)({});
    l.lock();
    if (!keep) break;
  }
  --open_watches_;
  return HttpResponse{200, ""};
}

}  // namespace meshlock::config::kube::testing
