// One-shot HTTP/1.1 client over TCP or a Unix socket, bounded in time and size.
#include "admin/client.h"

#include <poll.h>
#include <sys/socket.h>

namespace meshlock::admin {
namespace {

using Clock = std::chrono::steady_clock;

int millisLeft(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() < 0 ? 0 : static_cast<int>(left.count());
}

Status waitFor(int fd, short events, Clock::time_point deadline, const std::string& what) {
  for (;;) {
    pollfd pfd{fd, events, 0};
    const int ready = ::poll(&pfd, 1, millisLeft(deadline));
    if (ready > 0) return {};
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return failErrno(what + ": poll");
    return failErrno(what + ": no answer within the timeout", ETIMEDOUT);
  }
}

Error describeHttpError(const ClientResponse& response, const std::string& what) {
  std::string reason;
  try {
    auto body = nlohmann::json::parse(response.body);
    if (body.is_object() && body.contains("error") && body["error"].is_string()) {
      reason = body["error"].get<std::string>();
    }
  } catch (const nlohmann::json::exception&) {
  }
  if (reason.empty()) reason = response.body.substr(0, 200);
  while (!reason.empty() && (reason.back() == '\n' || reason.back() == '\r')) reason.pop_back();
  return Error{what + ": HTTP " + std::to_string(response.status) + " " +
                   std::string(statusReason(response.status)) + (reason.empty() ? "" : ": " + reason),
               0};
}

}  // namespace

AdminClient::AdminClient(Endpoint endpoint, ClientOptions options)
    : endpoint_(std::move(endpoint)), options_(options) {}

Result<ClientResponse> AdminClient::request(Method method, std::string_view target, std::string_view body) {
  const std::string what = std::string(methodName(method)) + " " + endpoint_.describe() + std::string(target);
  const auto deadline = Clock::now() + options_.timeout;
  auto fd = connectTo(endpoint_, options_.timeout);
  if (!fd) return std::unexpected(fd.error().context("admin API unreachable"));

  std::string host = endpoint_.kind == Endpoint::Kind::kUnix ? "localhost" : endpoint_.host;
  if (endpoint_.kind == Endpoint::Kind::kTcp) {
    if (host.find(':') != std::string::npos) host = "[" + host + "]";
    host += ":" + std::to_string(endpoint_.port);
  }
  std::string out = std::string(methodName(method)) + " " + std::string(target) + " HTTP/1.1\r\n";
  out += "Host: " + host + "\r\n";
  out += "User-Agent: meshlockctl\r\nAccept: application/json, text/plain\r\nConnection: close\r\n";
  if (method != Method::kGet || !body.empty()) {
    out += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  }
  out += "\r\n";
  out += body;

  std::string_view pending = out;
  int send_error = 0;
  while (!pending.empty()) {
    if (auto ok = waitFor(fd->get(), POLLOUT, deadline, what); !ok) return std::unexpected(ok.error());
    const ssize_t sent = ::send(fd->get(), pending.data(), pending.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    // The server may answer and close before reading the request (the admin
    // server's accept gate does, with a 403 or 503): read what it said.
    if (sent < 0 && (errno == EPIPE || errno == ECONNRESET)) {
      send_error = errno;
      break;
    }
    if (sent < 0) return failErrno(what + ": send");
    pending.remove_prefix(static_cast<std::size_t>(sent));
  }

  std::string received;
  char chunk[16384];
  for (;;) {
    if (auto ok = waitFor(fd->get(), POLLIN, deadline, what); !ok) return std::unexpected(ok.error());
    const ssize_t got = ::recv(fd->get(), chunk, sizeof(chunk), MSG_DONTWAIT);
    if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (got < 0) {
      // A reset after a complete response (the server closed with our bytes
      // unread) still leaves a usable answer.
      if (errno == ECONNRESET && !received.empty()) break;
      return failErrno(what + ": recv");
    }
    if (got == 0) break;
    received.append(chunk, static_cast<std::size_t>(got));
    if (received.size() > options_.max_response_bytes) {
      return fail(what + ": response larger than " + std::to_string(options_.max_response_bytes) + " bytes");
    }
  }
  if (received.empty() && send_error != 0) return failErrno(what + ": send", send_error);
  auto response = parseResponse(received);
  if (!response) return std::unexpected(response.error().context(what));
  return response;
}

Result<std::string> AdminClient::getText(std::string_view target) {
  auto response = request(Method::kGet, target);
  if (!response) return std::unexpected(response.error());
  if (response->status / 100 != 2) {
    return std::unexpected(describeHttpError(*response, "GET " + std::string(target)));
  }
  return std::move(response->body);
}

namespace {

Result<nlohmann::json> toJson(Result<ClientResponse> response, const std::string& what) {
  if (!response) return std::unexpected(response.error());
  if (response->status / 100 != 2) return std::unexpected(describeHttpError(*response, what));
  try {
    return nlohmann::json::parse(response->body);
  } catch (const nlohmann::json::exception& e) {
    return fail(what + ": the answer is not JSON: " + e.what());
  }
}

}  // namespace

Result<nlohmann::json> AdminClient::getJson(std::string_view target) {
  return toJson(request(Method::kGet, target), "GET " + std::string(target));
}

Result<nlohmann::json> AdminClient::postJson(std::string_view target, std::string_view body) {
  return toJson(request(Method::kPost, target, body), "POST " + std::string(target));
}

}  // namespace meshlock::admin
