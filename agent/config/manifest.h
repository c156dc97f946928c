// Reading Kubernetes manifests (YAML or JSON, multi-document, `List` kinds)
// into a ClusterState. Never throws, whatever the input: a bad document becomes
// a ManifestError naming origin, document and field, and the rest still loads.
//
//   parseManifests(text, origin)      one text (fuzz entry point)
//   decodeApiObject(json, origin)     one object from the Kubernetes API
//   loadManifestDirectory(dir)        every *.yaml/*.yml/*.json below dir
//   ManifestSet                       per-file results that keep each file's
//                                     last good contents (used by the watcher)
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/error.h"
#include "config/types.h"

namespace meshlock::config {

struct ManifestError {
  std::string origin;      // file path, or what the caller passed as origin
  int document = -1;       // 0-based document index in the file; -1 = the file as a whole
  std::string field;       // e.g. "spec.mtls.mode", "items[2].metadata.name"; empty if none
  std::string message;     // what is wrong
  [[nodiscard]] std::string describe() const;  // "a.yaml: document 2: spec.mtls.mode: unknown mode ..."
};

struct ParsedManifests {
  ClusterState state;
  std::vector<ManifestError> errors;
  std::vector<std::string> ignored;  // "a.yaml: document 3: ConfigMap/shop/x (kind not used)"
  std::map<std::string, std::size_t> ignored_kinds;  // "apps/v1 Deployment" → objects not read
};

struct ParseOptions {
  // Where a namespaced object without metadata.namespace goes. The agent's
  // manifest directory uses "default", as `kubectl apply` with the default
  // context does; meshlockctl passes its -n, and without one (nullopt) such
  // an object is an error that names it.
  std::optional<std::string> default_namespace = "default";
};

// Parses one text holding one or more documents. `origin` names it in errors.
[[nodiscard]] ParsedManifests parseManifests(std::string_view text, std::string_view origin,
                                             const ParseOptions& options = {});

// One object as the Kubernetes API returns it (JSON), decoded by the same code
// as a manifest document, with the same errors (document -1: errors name
// `origin` and the field). `api_version`/`kind` stand in when the object has
// none (the items of a list response).
[[nodiscard]] ParsedManifests decodeApiObject(const nlohmann::json& object, std::string_view origin,
                                              std::string_view api_version = {}, std::string_view kind = {});

// Base64 (standard alphabet, whitespace ignored) → bytes; nullopt if the
// text is not base64 (Secret data, kubeconfig certificate data).
[[nodiscard]] std::optional<std::string> decodeBase64(std::string_view text);

// True for the files a manifest directory is made of (*.yaml, *.yml, *.json,
// not hidden).
[[nodiscard]] bool isManifestFile(const std::filesystem::path& path);

// The manifest files below `root` (or `root` itself if it is a file), sorted.
// Hidden entries (".git", Kubernetes' "..data" ConfigMap links) are skipped so
// a mounted ConfigMap is read once.
[[nodiscard]] Result<std::vector<std::filesystem::path>> listManifestFiles(
    const std::filesystem::path& root);

// The contents of a manifest directory, file by file. A file that fails to
// parse keeps its last good contents (if it ever had any) until it is fixed.
// What one source may hold (settings maxSourceBytes, maxSourceObjects): a
// cluster state is held in memory whole, about 3 KiB per object
// (docs/kubernetes.md), so a runaway input must not take the node's memory.
struct SourceLimits {
  uint64_t max_bytes = 64ull << 20;  // manifest files read, all together
  uint64_t max_objects = 100'000;    // objects in effect
};

class ManifestSet {
 public:
  struct FileState {
    ParsedManifests current;       // the latest read, with its errors
    ClusterState last_good;        // what is in effect for this file
    uint64_t bytes = 0;            // size of the contents in effect
    bool ever_good = false;
    bool keeping_last_good = false;  // current read had errors and an older good state is used
  };

  explicit ManifestSet(SourceLimits limits = {}, ParseOptions options = {})
      : limits_(limits), options_(std::move(options)) {}

  // Rereads every manifest file below `root`; files that vanished are dropped.
  // Fails only if `root` itself cannot be listed.
  [[nodiscard]] Status reload(const std::filesystem::path& root);
  // Reads (or forgets, if it no longer exists) one file. A file that would
  // take the set over its limits is not taken (an error says which limit);
  // its last good contents stay in effect.
  void reloadFile(const std::filesystem::path& file);

  // The union of every file's state in effect.
  [[nodiscard]] ClusterState state() const;
  // Errors of the latest read of every file, and a note per file whose last good state is kept.
  [[nodiscard]] std::vector<ManifestError> errors() const;
  // Objects of kinds meshlock does not read, counted per "apiVersion Kind", over the files in effect.
  [[nodiscard]] std::map<std::string, std::size_t> ignoredKinds() const;
  [[nodiscard]] const std::map<std::filesystem::path, FileState>& files() const { return files_; }

 private:
  SourceLimits limits_;
  ParseOptions options_;
  std::map<std::filesystem::path, FileState> files_;
};

struct LoadedManifests {
  ClusterState state;
  std::vector<ManifestError> errors;
  std::map<std::string, std::size_t> ignored_kinds;
};

// One-shot load of a directory or single file (what meshlockctl uses).
// Fails only when the path cannot be read at all; bad documents are in `errors`.
[[nodiscard]] Result<LoadedManifests> loadManifestDirectory(const std::filesystem::path& root,
                                                            const ParseOptions& options = {});

}  // namespace meshlock::config
