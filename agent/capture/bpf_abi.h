// The BPF programs' map layout (bpf/meshlock_maps.h) seen from C++, with the
// sizes pinned so a change on one side cannot silently break the other.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

extern "C" {
#include "meshlock_maps.h"
}

static_assert(sizeof(ml_addr) == 16);
static_assert(sizeof(ml_pod) == 16);
static_assert(sizeof(ml_port_key) == 16);
static_assert(sizeof(ml_listener_key) == 16);
static_assert(sizeof(ml_orig_dst) == 32);
static_assert(sizeof(ml_flow_key) == 32);
static_assert(sizeof(ml_leg_key) == 48);

namespace meshlock::capture {

// Counter names as exported (metrics, `meshlock-agent capture-counters`).
inline constexpr std::array<std::string_view, ML_CTR_MAX> kCounterNames = {
    "connect_captured",
    "connect_not_enrolled",
    "connect_not_tcp",
    "connect_bypass_loopback",
    "connect_bypass_excluded_port",
    "connect_bypass_agent_port",
    "connect_error",
    "orig_dst_published",
    "orig_dst_error",
    "lookup_steered",
    "lookup_bypass_local",
    "lookup_bypass_excluded_port",
    "lookup_bypass_agent_port",
    "lookup_no_listener_dropped",
    "lookup_no_listener_passed",
    "lookup_error",
    "leg_inserted",
    "leg_insert_error",
    "leg_redirected",
    "leg_pass_no_peer",
    "leg_pass_unread",
    "leg_pass_backlog",
};

// The maps every BPF object shares, pinned under <pin dir>/maps/<name>.
inline constexpr std::array<std::string_view, 10> kSharedMapNames = {
    "ml_pod_cgroups", "ml_pod_addrs", "ml_ports",    "ml_listeners", "ml_inflight",
    "ml_orig_dst",    "ml_counters",  "ml_pod_legs", "ml_leg_socks", "ml_leg_marks",
};

}  // namespace meshlock::capture
