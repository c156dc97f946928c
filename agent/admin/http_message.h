// HTTP/1.1 messages as the admin API speaks them: the request and response
// types handlers see, the target (path, query) decoding, the canned response
// the accept gate writes, and meshlockctl's response parser. civetweb parses
// request heads on the server side; nothing here reads a socket.
#pragma once

#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/error.h"

namespace meshlock::admin {

enum class Method { kGet, kPost, kPut };

[[nodiscard]] std::string_view methodName(Method method);

struct Request {
  Method method = Method::kGet;
  std::string path;                                // percent-decoded, without the query
  std::multimap<std::string, std::string> query;   // percent-decoded, '+' is a space
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  // Set by the server: the request came over the Unix socket (root or the
  // agent's user, by SO_PEERCRED) rather than TCP (any local user). Handlers
  // that change state may insist on it.
  bool from_unix_socket = false;

  // The first value of a query parameter, if present.
  [[nodiscard]] std::optional<std::string> param(std::string_view name) const;
  // The first value of a header (name compared case-insensitively).
  [[nodiscard]] std::optional<std::string> header(std::string_view name) const;
};

struct Response {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers

  static Response text(int status, std::string body);
  // A JSON body; `json_text` must already be serialised JSON.
  static Response json(int status, std::string json_text);
  // {"error": reason}, with the given status.
  static Response error(int status, std::string_view reason);
};

[[nodiscard]] std::string_view statusReason(int status);

// Bounds every request must fit in; anything larger is refused, not buffered
// (the head bound is civetweb's max_request_size).
struct RequestLimits {
  std::size_t max_head_bytes = 16 * 1024;     // request line + headers
  std::size_t max_body_bytes = 1024 * 1024;
};

// A request target as civetweb hands it over: the path it has already
// percent-decoded (must start with '/') and the raw query, decoded here into
// pairs with any #fragment dropped. Plain function so a fuzz target can call it.
struct Target {
  std::string path;
  std::multimap<std::string, std::string> query;
};
[[nodiscard]] Result<Target> parseTarget(std::string_view path, std::string_view raw_query);

// Splits "a=1&b=x%20y" into decoded pairs. Fails on malformed percent-escapes.
[[nodiscard]] Result<std::multimap<std::string, std::string>> parseQuery(std::string_view query);

// Percent-decodes; `plus_is_space` for query strings. Fails on bad escapes.
[[nodiscard]] Result<std::string> percentDecode(std::string_view text, bool plus_is_space);
// Percent-encodes everything but RFC 3986 unreserved characters.
[[nodiscard]] std::string percentEncode(std::string_view text);

// The bytes of a whole response (status line, headers, body), Connection:
// close; what the accept gate writes before closing a refused connection.
[[nodiscard]] std::string serializeResponse(const Response& response);

// A response as the client sees it.
struct ClientResponse {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  [[nodiscard]] std::optional<std::string> header(std::string_view name) const;
};

// Parses a complete response read until the server closed the connection.
[[nodiscard]] Result<ClientResponse> parseResponse(std::string_view bytes);

}  // namespace meshlock::admin
