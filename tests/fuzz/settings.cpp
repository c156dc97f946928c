// The agent's settings file (a ConfigMap in the DaemonSet).
#include <cstdint>
#include <string_view>

#include "app/settings.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto settings = meshlock::app::parseSettings(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.yaml");
  if (settings) (void)meshlock::app::validateSettings(*settings);
  else (void)settings.error().describe();
  return 0;
}
