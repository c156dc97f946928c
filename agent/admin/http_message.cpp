// HTTP/1.1 request-head parsing and response serialisation, strict and bounded:
// anything outside the small grammar the admin API needs is a 4xx, never a crash.
#include "admin/http_message.h"

#include <algorithm>
#include <cctype>
#include <charconv>

namespace meshlock::admin {
namespace {

bool isTokenChar(char c) {
  // RFC 9110 tchar.
  if (std::isalnum(static_cast<unsigned char>(c))) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool isFieldValueChar(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u == '\t' || (u >= 0x20 && u != 0x7f);
}

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trimOws(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::unexpected<RequestError> reject(int status, std::string reason) {
  return std::unexpected(RequestError{status, std::move(reason)});
}

}  // namespace

std::string_view methodName(Method method) {
  switch (method) {
    case Method::kGet: return "GET";
    case Method::kPost: return "POST";
    case Method::kPut: return "PUT";
  }
  return "GET";
}

std::optional<std::string> Request::param(std::string_view name) const {
  auto it = query.find(std::string(name));
  if (it == query.end()) return std::nullopt;
  return it->second;
}

std::optional<std::string> Request::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (equalsIgnoreCase(key, name)) return value;
  }
  return std::nullopt;
}

std::optional<std::string> ClientResponse::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (equalsIgnoreCase(key, name)) return value;
  }
  return std::nullopt;
}

Response Response::text(int status, std::string body) {
  Response response;
  response.status = status;
  response.body = std::move(body);
  return response;
}

Response Response::json(int status, std::string json_text) {
  Response response;
  response.status = status;
  response.content_type = "application/json";
  response.body = std::move(json_text);
  if (response.body.empty() || response.body.back() != '\n') response.body.push_back('\n');
  return response;
}

Response Response::error(int status, std::string_view reason) {
  // Hand-escaped so this file needs no JSON library: reasons are ours, but
  // may quote client input.
  std::string escaped;
  for (char c : reason) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      escaped += '\\';
      escaped += c;
    } else if (u < 0x20 || u == 0x7f) {
      static constexpr char kHex[] = "0123456789abcdef";
      escaped += "\\u00";
      escaped += kHex[u >> 4];
      escaped += kHex[u & 0xf];
    } else {
      escaped += c;
    }
  }
  return json(status, "{\"error\":\"" + escaped + "\"}");
}

std::string_view statusReason(int status) {
  switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

Result<std::string> percentDecode(std::string_view text, bool plus_is_space) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '%') {
      if (i + 2 >= text.size()) {
        return fail("truncated percent-escape in \"" + std::string(text) + "\"");
      }
      const int hi = hexValue(text[i + 1]);
      const int lo = hexValue(text[i + 2]);
      if (hi < 0 || lo < 0) return fail("bad percent-escape in \"" + std::string(text) + "\"");
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

std::string percentEncode(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += c;
    } else {
      out += '%';
      out += kHex[u >> 4];
      out += kHex[u & 0xf];
    }
  }
  return out;
}

Result<std::multimap<std::string, std::string>> parseQuery(std::string_view query) {
  std::multimap<std::string, std::string> out;
  while (!query.empty()) {
    const std::size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty()) continue;
    const std::size_t eq = pair.find('=');
    auto key = percentDecode(pair.substr(0, eq), true);
    if (!key) return std::unexpected(key.error());
    std::string value;
    if (eq != std::string_view::npos) {
      auto decoded = percentDecode(pair.substr(eq + 1), true);
      if (!decoded) return std::unexpected(decoded.error());
      value = std::move(*decoded);
    }
    out.emplace(std::move(*key), std::move(value));
  }
  return out;
}

std::expected<RequestHead, RequestError> parseRequestHead(std::string_view head,
                                                          const RequestLimits& limits) {
  if (head.size() > limits.max_head_bytes) {
    return reject(431, "request head larger than " + std::to_string(limits.max_head_bytes) + " bytes");
  }
  RequestHead out;
  Request& request = out.request;

  // Lines end in CRLF; a bare LF is tolerated as RFC 9112 allows.
  std::vector<std::string_view> lines;
  std::string_view rest = head;
  while (!rest.empty()) {
    const std::size_t lf = rest.find('\n');
    if (lf == std::string_view::npos) return reject(400, "request head does not end in a blank line");
    std::string_view line = rest.substr(0, lf);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    rest.remove_prefix(lf + 1);
    if (line.empty()) {
      if (lines.empty()) continue;  // RFC 9112: ignore empty lines before the request line
      if (!rest.empty()) return reject(400, "bytes after the end of the request head");
      break;
    }
    lines.push_back(line);
  }
  if (lines.empty()) return reject(400, "empty request");

  // Request line: METHOD SP request-target SP HTTP-version
  const std::string_view line = lines.front();
  const std::size_t sp1 = line.find(' ');
  const std::size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp1 == std::string_view::npos || sp2 == std::string_view::npos ||
      line.find(' ', sp2 + 1) != std::string_view::npos) {
    return reject(400, "malformed request line");
  }
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (method.empty() || !std::all_of(method.begin(), method.end(), isTokenChar)) {
    return reject(400, "malformed method");
  }
  if (version != "HTTP/1.1" && version != "HTTP/1.0") {
    if (version.starts_with("HTTP/")) return reject(505, "only HTTP/1.0 and HTTP/1.1 are spoken here");
    return reject(400, "malformed HTTP version");
  }
  if (method == "GET") {
    request.method = Method::kGet;
  } else if (method == "POST") {
    request.method = Method::kPost;
  } else if (method == "PUT") {
    request.method = Method::kPut;
  } else {
    return reject(501, "method " + std::string(method) + " is not supported (GET, POST, PUT)");
  }
  if (target.empty() || target.front() != '/') {
    return reject(400, "request target must be a path starting with '/'");
  }
  for (char c : target) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) return reject(400, "request target contains a control or non-ASCII byte");
  }
  const std::size_t question = target.find('?');
  const std::string_view raw_path = target.substr(0, question);
  auto path = percentDecode(raw_path, false);
  if (!path) return reject(400, path.error().message);
  if (path->find('\0') != std::string::npos) return reject(400, "path contains a NUL byte");
  request.path = std::move(*path);
  if (question != std::string_view::npos) {
    const std::string_view raw_query = target.substr(question + 1);
    std::string_view without_fragment = raw_query.substr(0, raw_query.find('#'));
    auto query = parseQuery(without_fragment);
    if (!query) return reject(400, query.error().message);
    request.query = std::move(*query);
  }

  // Header fields.
  std::optional<std::size_t> content_length;
  for (std::size_t i = 1; i < lines.size(); ++i) {
    const std::string_view field = lines[i];
    if (field.front() == ' ' || field.front() == '\t') {
      return reject(400, "obsolete header line folding is not accepted");
    }
    const std::size_t colon = field.find(':');
    if (colon == std::string_view::npos || colon == 0) return reject(400, "malformed header line");
    const std::string_view name = field.substr(0, colon);
    if (!std::all_of(name.begin(), name.end(), isTokenChar)) {
      return reject(400, "malformed header name");
    }
    const std::string_view value = trimOws(field.substr(colon + 1));
    if (!std::all_of(value.begin(), value.end(), isFieldValueChar)) {
      return reject(400, "header " + std::string(name) + " contains a control byte");
    }
    std::string lowered = lower(name);
    if (lowered == "transfer-encoding") {
      return reject(501, "Transfer-Encoding is not supported; send Content-Length");
    }
    if (lowered == "content-length") {
      std::size_t length = 0;
      const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), length);
      if (value.empty() || ec != std::errc() || end != value.data() + value.size()) {
        return reject(400, "malformed Content-Length");
      }
      if (content_length && *content_length != length) {
        return reject(400, "conflicting Content-Length headers");
      }
      content_length = length;
    }
    request.headers.emplace_back(std::move(lowered), std::string(value));
  }
  out.content_length = content_length.value_or(0);
  if (out.content_length > limits.max_body_bytes) {
    return reject(413, "request body larger than " + std::to_string(limits.max_body_bytes) + " bytes");
  }
  return out;
}

std::string serializeResponse(const Response& response) {
  std::string out = "HTTP/1.1 " + std::to_string(response.status) + " " +
                    std::string(statusReason(response.status)) + "\r\n";
  out += "Content-Type: " + response.content_type + "\r\n";
  out += "Content-Length: " + std::to_string(response.body.size()) + "\r\n";
  out += "Connection: close\r\n";
  out += "Cache-Control: no-store\r\n";
  for (const auto& [name, value] : response.headers) out += name + ": " + value + "\r\n";
  out += "\r\n";
  out += response.body;
  return out;
}

Result<ClientResponse> parseResponse(std::string_view bytes) {
  std::size_t head_end = bytes.find("\r\n\r\n");
  std::size_t separator = 4;
  if (head_end == std::string_view::npos) {
    head_end = bytes.find("\n\n");
    separator = 2;
  }
  if (head_end == std::string_view::npos) return fail("response ended before its headers did");
  std::string_view head = bytes.substr(0, head_end);
  ClientResponse out;

  std::size_t eol = head.find('\n');
  std::string_view status_line = head.substr(0, eol);
  if (!status_line.empty() && status_line.back() == '\r') status_line.remove_suffix(1);
  if (!status_line.starts_with("HTTP/1.") || status_line.size() < 12 || status_line[8] != ' ') {
    return fail("not an HTTP/1.x response: \"" + std::string(status_line.substr(0, 40)) + "\"");
  }
  const auto [end, ec] = std::from_chars(status_line.data() + 9, status_line.data() + 12, out.status);
  if (ec != std::errc() || end != status_line.data() + 12) return fail("malformed status code");

  std::optional<std::size_t> content_length;
  while (eol != std::string_view::npos) {
    head.remove_prefix(eol + 1);
    eol = head.find('\n');
    std::string_view field = head.substr(0, eol);
    if (!field.empty() && field.back() == '\r') field.remove_suffix(1);
    if (field.empty()) continue;
    const std::size_t colon = field.find(':');
    if (colon == std::string_view::npos) return fail("malformed response header");
    std::string name = lower(field.substr(0, colon));
    std::string value(trimOws(field.substr(colon + 1)));
    if (name == "content-length") {
      std::size_t length = 0;
      const auto [vend, vec] = std::from_chars(value.data(), value.data() + value.size(), length);
      if (vec != std::errc() || vend != value.data() + value.size()) return fail("malformed Content-Length");
      content_length = length;
    }
    if (name == "transfer-encoding" && lower(value) != "identity") {
      return fail("chunked responses are not supported");
    }
    out.headers.emplace_back(std::move(name), std::move(value));
  }
  std::string_view body = bytes.substr(head_end + separator);
  if (content_length) {
    if (body.size() < *content_length) {
      return fail("response body truncated: " + std::to_string(body.size()) + " of " +
                  std::to_string(*content_length) + " bytes");
    }
    body = body.substr(0, *content_length);
  }
  out.body = std::string(body);
  return out;
}

}  // namespace meshlock::admin
