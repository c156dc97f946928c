// GCC's coverage callbacks for clang 14's libFuzzer runtime.
//
// The project builds with GCC 12 (clang 14 cannot compile libstdc++ 12's
// std::expected), and libFuzzer 14 no longer accepts the only edge callback
// GCC emits (-fsanitize-coverage=trace-pc: "no longer supported by
// libFuzzer"). This file takes that callback over (it is linked before the
// runtime, with --allow-multiple-definition) and feeds libFuzzer the way
// clang's inline-8bit-counters instrumentation does: one table of counters
// and one of PCs, registered before main; each trace-pc call bumps the
// counter its return address hashes to. GCC's trace-cmp callbacks have
// libFuzzer's names and go to the runtime unchanged (value profiles and the
// comparison table work), except the floating-point ones, which libFuzzer
// does not define.
#include <cstddef>
#include <cstdint>

extern "C" void __sanitizer_cov_8bit_counters_init(uint8_t* start, uint8_t* stop);
extern "C" void __sanitizer_cov_pcs_init(const uintptr_t* start, const uintptr_t* stop);

namespace {

constexpr size_t kCounters = size_t{1} << 17;  // hashed basic blocks; collisions only merge features
uint8_t counters[kCounters];
uintptr_t pc_table[2 * kCounters];             // {pc, flags} pairs, as clang's -fsanitize-coverage=pc-table

__attribute__((constructor(101), no_sanitize_coverage)) void registerCounters() {
  for (size_t i = 0; i < kCounters; ++i) {
    pc_table[2 * i] = i + 1;  // a stand-in PC per counter: libFuzzer only needs them distinct
    pc_table[2 * i + 1] = 0;
  }
  __sanitizer_cov_8bit_counters_init(counters, counters + kCounters);
  __sanitizer_cov_pcs_init(pc_table, pc_table + 2 * kCounters);
}

}  // namespace

extern "C" __attribute__((no_sanitize_coverage, no_sanitize_address, no_sanitize_undefined)) void
__sanitizer_cov_trace_pc() {
  uint64_t pc = reinterpret_cast<uintptr_t>(__builtin_return_address(0));
  pc ^= pc >> 17;
  pc *= 0x9E3779B97F4A7C15ull;  // Fibonacci hashing: spread nearby block addresses
  counters[(pc >> 40) & (kCounters - 1)]++;
}

extern "C" __attribute__((no_sanitize_coverage)) void __sanitizer_cov_trace_cmpf(float, float) {}
extern "C" __attribute__((no_sanitize_coverage)) void __sanitizer_cov_trace_cmpd(double, double) {}
