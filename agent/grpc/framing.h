// gRPC over HTTP/2, the parts both a client and a server need: the
// length-prefixed message framing, status codes, grpc-timeout and
// grpc-message encodings (grpc/grpc doc/PROTOCOL-HTTP2.md). No I/O here.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/error.h"

namespace meshlock::grpc {

// grpc/grpc doc/statuscodes.md; the numbers are on the wire.
enum class StatusCode : int {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
  kUnauthenticated = 16,
};

// "OK", "UNAVAILABLE", ... as gRPC libraries print them.
[[nodiscard]] std::string_view toString(StatusCode code);
// snake_case for metric labels: "ok", "permission_denied", ...
[[nodiscard]] std::string metricLabel(StatusCode code);
// The grpc-status header's value; anything else than 0..16 is UNKNOWN.
[[nodiscard]] StatusCode parseStatusCode(std::string_view text);
// What a client reports when the HTTP status is not 200 (PROTOCOL-HTTP2.md
// "HTTP to gRPC Status Code Mapping").
[[nodiscard]] StatusCode statusForHttp(int httpStatus);

struct GrpcStatus {
  StatusCode code = StatusCode::kOk;
  std::string message;
  [[nodiscard]] bool ok() const { return code == StatusCode::kOk; }
  [[nodiscard]] std::string describe() const;  // "PERMISSION_DENIED: not on this node"
};

inline constexpr std::size_t kFrameHeaderBytes = 5;
// gRPC's default receive limit.
inline constexpr std::size_t kDefaultMaxMessageBytes = 4 * 1024 * 1024;

// One uncompressed message: flag 0, big-endian length, payload.
[[nodiscard]] std::string frameMessage(std::string_view payload);

// Reassembles messages from DATA chunks of any size. Bounded: a message
// longer than the limit, or a compressed one (we never offer an encoding),
// is an error and the reader stays failed.
class MessageReader {
 public:
  // Why feed() failed: each maps to its own status code.
  enum class Failure { kNone, kTooLarge, kCompressed, kBadFlag };

  explicit MessageReader(std::size_t maxMessageBytes = kDefaultMaxMessageBytes) : max_(maxMessageBytes) {}
  [[nodiscard]] Status feed(std::string_view bytes);
  [[nodiscard]] Failure failure() const { return failure_; }
  // The next complete message, if one is there.
  [[nodiscard]] std::optional<std::string> next();
  // Bytes of a message begun and not finished (a stream must not end so).
  [[nodiscard]] bool midMessage() const { return !buffer_.empty(); }

 private:
  std::size_t max_;
  std::string buffer_;
  std::string ready_;  // complete messages, each with its header
  std::optional<Error> failed_;
  Failure failure_ = Failure::kNone;
};

// grpc-timeout: at most 8 digits and a unit (H M S m u n). Encodes with the
// finest unit that fits; never rounds a deadline down to 0. Parsing caps a
// timeout at 100 years (99999999H would overflow nanoseconds).
[[nodiscard]] std::string encodeTimeout(std::chrono::nanoseconds timeout);
[[nodiscard]] Result<std::chrono::nanoseconds> parseTimeout(std::string_view text);

// grpc-message is percent-encoded UTF-8 (bytes outside 0x20..0x7E and '%').
[[nodiscard]] std::string percentEncode(std::string_view text);
// Lenient, as the spec asks: a malformed escape is kept as it is.
[[nodiscard]] std::string percentDecode(std::string_view text);

}  // namespace meshlock::grpc
