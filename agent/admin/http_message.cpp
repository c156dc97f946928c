// Request targets, response bytes and the client's response parser, strict and
// bounded: bad input is an error naming it, never a crash.
#include "admin/http_message.h"

#include <algorithm>
#include <cctype>
#include <charconv>

namespace meshlock::admin {
namespace {

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

Result<Target> parseTarget(std::string_view path, std::string_view raw_query) {
  if (path.empty() || path.front() != '/') return fail("request target must be a path starting with '/'");
  if (path.find('\0') != std::string_view::npos) return fail("path contains a NUL byte");
  Target out;
  out.path = std::string(path);
  auto query = parseQuery(raw_query.substr(0, raw_query.find('#')));
  if (!query) return std::unexpected(query.error());
  out.query = std::move(*query);
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
