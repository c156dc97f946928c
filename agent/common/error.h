// Error values for every OS, BPF, TLS and input boundary: what failed, where,
// and the errno if there was one. No exceptions on the data path.
#pragma once

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <expected>
#include <string>
#include <string_view>
#include <utility>

namespace meshlock {

struct Error {
  std::string message;  // what went wrong, with context ("pod shop/web: setns: ...")
  int sys_errno = 0;    // errno when an OS call failed, else 0

  [[nodiscard]] std::string describe() const {
    if (sys_errno == 0) return message;
    return message + ": " + std::strerror(sys_errno);
  }

  // Prefix context while an error travels up: err.context("pod shop/web").
  [[nodiscard]] Error context(std::string_view what) const& {
    return Error{std::string(what) + ": " + message, sys_errno};
  }
};

template <typename T>
using Result = std::expected<T, Error>;
using Status = std::expected<void, Error>;

[[nodiscard]] inline std::unexpected<Error> fail(std::string message) {
  return std::unexpected(Error{std::move(message), 0});
}

// For a failed syscall: captures errno at the call site.
[[nodiscard]] inline std::unexpected<Error> failErrno(std::string message) {
  return std::unexpected(Error{std::move(message), errno});
}

[[nodiscard]] inline std::unexpected<Error> failErrno(std::string message, int err) {
  return std::unexpected(Error{std::move(message), err});
}

}  // namespace meshlock

// "Cannot happen": stop loudly, in every build type (NDEBUG does not apply).
#define MESHLOCK_CHECK(cond)                                                     \
  do {                                                                           \
    if (!(cond)) [[unlikely]] {                                                  \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                              \
    }                                                                            \
  } while (0)
