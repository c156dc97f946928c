/* The maps every meshlock BPF object declares. Each hook is its own object;
 * the loader pins these by name so all objects share one instance of each. */
#ifndef MESHLOCK_BPF_MAPS_BPF_H
#define MESHLOCK_BPF_MAPS_BPF_H

#include "meshlock_maps.h"

/* Pod-level cgroup id -> enrolled pod (kept by the agent). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ML_MAX_PODS);
	__type(key, __u64);
	__type(value, struct ml_pod);
} ml_pod_cgroups SEC(".maps");

/* Pod address -> enrolled pod, for inbound steering. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ML_MAX_POD_ADDRS);
	__type(key, struct ml_addr);
	__type(value, struct ml_pod);
} ml_pod_addrs SEC(".maps");

/* (pod, port, direction) -> enum ml_port_verdict. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ML_MAX_PORT_RULES);
	__type(key, struct ml_port_key);
	__type(value, __u32);
} ml_ports SEC(".maps");

/* (pod, family) -> the agent's inbound listener in that pod's netns. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 2 * ML_MAX_PODS);
	__type(key, struct ml_listener_key);
	__type(value, __u64);
} ml_listeners SEC(".maps");

/* Client socket cookie -> original destination, from connect() until the
 * handshake completes. LRU: a connect that never completes ages out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, ML_MAX_INFLIGHT);
	__type(key, __u64);
	__type(value, struct ml_orig_dst);
} ml_inflight SEC(".maps");

/* (netns, client address, client port) -> original destination, until the
 * agent accepts the connection and reads (and deletes) it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, ML_MAX_ORIG_DST);
	__type(key, struct ml_flow_key);
	__type(value, struct ml_orig_dst);
} ml_orig_dst SEC(".maps");

/* Both ends of every pod-local connection (app <-> agent), for the sk_msg
 * shortcut. The kernel drops a socket from it when the socket closes. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, ML_MAX_POD_LEGS);
	__type(key, struct ml_leg_key);
	__type(value, __u64);
} ml_pod_legs SEC(".maps");

/* The same sockets' addresses, for sk_msg to read the peer's TCP state (how
 * much it has read, how much waits in its queue): sk_msg may not hold a
 * socket reference, so the pointer is kept as a number and read with
 * bpf_probe_read_kernel. It is used only while the peer is in ml_pod_legs
 * (a redirect to a key no longer there fails and the message goes by TCP),
 * and a stale entry ages out (LRU) or is overwritten by the next socket with
 * the same key. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, ML_MAX_POD_LEGS);
	__type(key, struct ml_leg_key);
	__type(value, __u64);
} ml_leg_socks SEC(".maps");

/* Socket -> enum ml_leg_mark, written by the agent through the socket's fd. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u32);
} ml_leg_marks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ML_CTR_MAX);
	__type(key, __u32);
	__type(value, __u64);
} ml_counters SEC(".maps");

static __always_inline void ml_count(enum ml_counter counter)
{
	__u32 key = counter;
	__u64 *value = bpf_map_lookup_elem(&ml_counters, &key);

	if (value)
		*value += 1;
}

static __always_inline void ml_addr_from_v4(struct ml_addr *addr, __u32 ip4_be)
{
	__builtin_memset(addr, 0, sizeof(*addr));
	addr->bytes[10] = 0xff;
	addr->bytes[11] = 0xff;
	__builtin_memcpy(&addr->bytes[12], &ip4_be, 4);
}

static __always_inline void ml_addr_from_v6(struct ml_addr *addr, const __u32 ip6_be[4])
{
	__builtin_memcpy(addr->bytes, ip6_be, 16);
}

static __always_inline bool ml_port_in(__u16 port, const volatile __u16 *ports)
{
	for (int i = 0; i < ML_MAX_AGENT_PORTS; i++) {
		if (ports[i] != 0 && ports[i] == port)
			return true;
	}
	return false;
}

static __always_inline __u32 ml_port_verdict(__u64 pod_cgroup_id, __u16 port, __u8 direction)
{
	struct ml_port_key key = {
		.pod_cgroup_id = pod_cgroup_id,
		.port = port,
		.direction = direction,
	};
	__u32 *verdict = bpf_map_lookup_elem(&ml_ports, &key);

	return verdict ? *verdict : 0;
}

#endif /* MESHLOCK_BPF_MAPS_BPF_H */
