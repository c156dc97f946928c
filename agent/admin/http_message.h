// HTTP/1.1 messages as the admin API speaks them: parsing a request head with
// hard bounds, serialising a response, and the client side's response parser.
// Shared by the server (meshlock_admin) and meshlockctl (meshlock_admin_client).
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

// Bounds every request must fit in; anything larger is refused, not buffered.
struct RequestLimits {
  std::size_t max_head_bytes = 16 * 1024;     // request line + headers
  std::size_t max_body_bytes = 1024 * 1024;
};

// Why a request head could not be accepted: the status to answer with and a
// reason a person can act on.
struct RequestError {
  int status = 400;
  std::string reason;
};

// A parsed request line and headers; the body length comes from Content-Length.
struct RequestHead {
  Request request;
  std::size_t content_length = 0;
};

// Parses `head`, the bytes up to and including the blank line that ends the
// headers. Never throws, never reads past `head`.
[[nodiscard]] std::expected<RequestHead, RequestError> parseRequestHead(
    std::string_view head, const RequestLimits& limits);

// Splits "a=1&b=x%20y" into decoded pairs. Fails on malformed percent-escapes.
[[nodiscard]] Result<std::multimap<std::string, std::string>> parseQuery(std::string_view query);

// Percent-decodes; `plus_is_space` for query strings. Fails on bad escapes.
[[nodiscard]] Result<std::string> percentDecode(std::string_view text, bool plus_is_space);
// Percent-encodes everything but RFC 3986 unreserved characters.
[[nodiscard]] std::string percentEncode(std::string_view text);

// The bytes of a whole response (status line, headers, body), Connection: close.
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
