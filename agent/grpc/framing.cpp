// gRPC framing, status codes and header encodings (framing.h).
#include "grpc/framing.h"

#include <array>
#include <cctype>
#include <charconv>
#include <fmt/format.h>

namespace meshlock::grpc {
namespace {

constexpr std::array<std::string_view, 17> kNames = {
    "OK",        "CANCELLED",         "UNKNOWN",        "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
    "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};

}  // namespace

std::string_view toString(StatusCode code) {
  auto index = static_cast<std::size_t>(code);
  return index < kNames.size() ? kNames[index] : "UNKNOWN";
}

std::string metricLabel(StatusCode code) {
  std::string label(toString(code));
  for (char& c : label) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return label;
}

StatusCode parseStatusCode(std::string_view text) {
  int value = -1;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < 0 || value > 16) return StatusCode::kUnknown;
  return static_cast<StatusCode>(value);
}

StatusCode statusForHttp(int httpStatus) {
  switch (httpStatus) {
    case 400: return StatusCode::kInternal;
    case 401: return StatusCode::kUnauthenticated;
    case 403: return StatusCode::kPermissionDenied;
    case 404: return StatusCode::kUnimplemented;
    case 429:
    case 502:
    case 503:
    case 504: return StatusCode::kUnavailable;
    default: return StatusCode::kUnknown;
  }
}

std::string GrpcStatus::describe() const {
  if (message.empty()) return std::string(toString(code));
  return fmt::format("{}: {}", toString(code), message);
}

std::string frameMessage(std::string_view payload) {
  std::string out;
  out.reserve(kFrameHeaderBytes + payload.size());
  const auto size = static_cast<uint32_t>(payload.size());
  out.push_back('\0');
  out.push_back(static_cast<char>(size >> 24));
  out.push_back(static_cast<char>(size >> 16));
  out.push_back(static_cast<char>(size >> 8));
  out.push_back(static_cast<char>(size));
  out.append(payload);
  return out;
}

Status MessageReader::feed(std::string_view bytes) {
  if (failed_) return std::unexpected(*failed_);
  buffer_.append(bytes);
  while (buffer_.size() >= kFrameHeaderBytes) {
    const auto* p = reinterpret_cast<const unsigned char*>(buffer_.data());
    if (p[0] != 0) {
      failure_ = p[0] == 1 ? Failure::kCompressed : Failure::kBadFlag;
      failed_ = Error{p[0] == 1 ? "grpc: compressed message, but no encoding was offered"
                                : fmt::format("grpc: bad message flag {}", p[0])};
      return std::unexpected(*failed_);
    }
    const std::size_t size = (std::size_t{p[1]} << 24) | (std::size_t{p[2]} << 16) | (std::size_t{p[3]} << 8) | p[4];
    if (size > max_) {
      failure_ = Failure::kTooLarge;
      failed_ = Error{fmt::format("grpc: message of {} bytes exceeds the limit of {}", size, max_)};
      return std::unexpected(*failed_);
    }
    if (buffer_.size() < kFrameHeaderBytes + size) break;
    ready_.append(buffer_, 0, kFrameHeaderBytes + size);
    buffer_.erase(0, kFrameHeaderBytes + size);
  }
  return {};
}

std::optional<std::string> MessageReader::next() {
  if (ready_.size() < kFrameHeaderBytes) return std::nullopt;
  const auto* p = reinterpret_cast<const unsigned char*>(ready_.data());
  const std::size_t size = (std::size_t{p[1]} << 24) | (std::size_t{p[2]} << 16) | (std::size_t{p[3]} << 8) | p[4];
  std::string message = ready_.substr(kFrameHeaderBytes, size);
  ready_.erase(0, kFrameHeaderBytes + size);
  return message;
}

std::string encodeTimeout(std::chrono::nanoseconds timeout) {
  constexpr int64_t kMax = 99'999'999;
  struct Unit {
    int64_t nanos;
    char symbol;
  };
  constexpr std::array<Unit, 6> units = {{{1, 'n'},
                                          {1'000, 'u'},
                                          {1'000'000, 'm'},
                                          {1'000'000'000, 'S'},
                                          {60'000'000'000, 'M'},
                                          {3'600'000'000'000, 'H'}}};
  const int64_t nanos = std::max<int64_t>(timeout.count(), 1);
  for (const Unit& unit : units) {
    const int64_t value = (nanos + unit.nanos - 1) / unit.nanos;  // rounded up: never earlier
    if (value <= kMax) return fmt::format("{}{}", value, unit.symbol);
  }
  return fmt::format("{}H", kMax);
}

Result<std::chrono::nanoseconds> parseTimeout(std::string_view text) {
  if (text.size() < 2 || text.size() > 9) return fail(fmt::format("grpc-timeout \"{}\": expected 1-8 digits and a unit", text));
  int64_t value = 0;
  auto digits = text.substr(0, text.size() - 1);
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (ec != std::errc() || end != digits.data() + digits.size() || value < 0)
    return fail(fmt::format("grpc-timeout \"{}\": not a number", text));
  using namespace std::chrono;
  constexpr int64_t kMaxHours = 24 * 365 * 100;
  switch (text.back()) {
    case 'H': return duration_cast<nanoseconds>(hours(std::min(value, kMaxHours)));
    case 'M': return duration_cast<nanoseconds>(minutes(value));
    case 'S': return duration_cast<nanoseconds>(seconds(value));
    case 'm': return duration_cast<nanoseconds>(milliseconds(value));
    case 'u': return duration_cast<nanoseconds>(microseconds(value));
    case 'n': return nanoseconds(value);
    default: return fail(fmt::format("grpc-timeout \"{}\": unknown unit", text));
  }
}

std::string percentEncode(std::string_view text) {
  std::string out;
  for (unsigned char c : text) {
    if (c >= 0x20 && c <= 0x7e && c != '%') {
      out.push_back(static_cast<char>(c));
    } else {
      out += fmt::format("%{:02X}", c);
    }
  }
  return out;
}

std::string percentDecode(std::string_view text) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size()) {
      int high = hex(text[i + 1]);
      int low = hex(text[i + 2]);
      if (high >= 0 && low >= 0) {
        out.push_back(static_cast<char>(high * 16 + low));
        i += 2;
        continue;
      }
    }
    out.push_back(text[i]);
  }
  return out;
}

}  // namespace meshlock::grpc
