// What the admin endpoints parse of a request civetweb hands over (issue 20:
// the admin request path after the move to civetweb): the target's path and
// raw query (split at the first '?'), through admin::parseTarget; and the
// bytes of a response as meshlockctl's client reads them (parseResponse).
// Beyond "does not crash": percent-encoding round-trips, and a decoded
// query's pairs encode and decode back to themselves.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "admin/http_message.h"

using namespace meshlock;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t q = input.find('?');
  const std::string_view path = input.substr(0, q);
  const std::string_view query = q == std::string_view::npos ? std::string_view{} : input.substr(q + 1);
  if (auto target = admin::parseTarget(path, query)) {
    std::string again;
    for (const auto& [key, value] : target->query) {
      again += (again.empty() ? "" : "&") + admin::percentEncode(key) + "=" + admin::percentEncode(value);
    }
    auto reparsed = admin::parseQuery(again);
    if (!reparsed || *reparsed != target->query) std::abort();
  }
  auto decoded = admin::percentDecode(admin::percentEncode(input), false);
  if (!decoded || *decoded != input) std::abort();
  if (auto response = admin::parseResponse(input)) (void)response->header("content-type");
  return 0;
}
