// SPIFFE IDs and trust domains as peers' certificates carry them. Besides not
// crashing, a property: whatever parses is canonical, so parsing its URI again
// gives the same identity (two spellings never name one identity).
#include <cstdint>
#include <string_view>

#include "identity/spiffe_id.h"

using meshlock::identity::SpiffeId;
using meshlock::identity::TrustDomain;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto id = SpiffeId::parse(text)) {
    if (id->uri() != text) __builtin_trap();  // accepted means already canonical
    auto again = SpiffeId::parse(id->uri(), id->trustDomain());
    if (!again || *again != *id) __builtin_trap();
    auto rebuilt = SpiffeId::forServiceAccount(id->trustDomain(), id->ns(), id->serviceAccount());
    if (!rebuilt || *rebuilt != *id) __builtin_trap();
  }
  if (auto domain = TrustDomain::parse(text)) {
    if (domain->name() != text) __builtin_trap();
  }
  return 0;
}
