// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* sockops, attached at the pods cgroup root (the agent's own DaemonSet pod is
 * below it on a node, so its sockets are seen too):
 *
 * - when a captured connect completes its handshake (before the agent can
 *   accept it), move its original destination from the socket cookie to the
 *   key the agent can compute from the accepted socket: (netns cookie, client
 *   address, port);
 * - with the pod-local shortcut on, put both ends of every app <-> agent
 *   connection in ml_pod_legs, where sk_msg (sk_msg.bpf.c) finds the peer:
 *   the active end when it is a captured app socket or a socket the agent
 *   marked (ml_leg_marks), the passive end when it was accepted on the
 *   agent's outbound port or comes from the pod's own address. Both happen
 *   during the handshake, before either end can send. */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "compat.bpf.h"
#include "maps.bpf.h"

/* Set by the loader: enum ml_leg_mode (0: the shortcut is off). */
const volatile __u32 pod_legs = 0;
/* The agent's outbound listener port (loopback, in each pod's netns). */
const volatile __u16 outbound_port = 15001;

/* Context fields are read one by one (ML_CTX_READ): the verifier refuses
 * loads through a modified ctx pointer. (sk_msg.bpf.c has the same two
 * readers for its context: one macro for both, tried, let clang compute
 * ctx+offset once again, and both programs were refused.) */
static __always_inline void local_end(struct bpf_sock_ops *skops, struct ml_addr *addr)
{
	__u32 ip6[4];

	if (ML_CTX_READ(skops->family) == ML_AF_INET) {
		ml_addr_from_v4(addr, ML_CTX_READ(skops->local_ip4));
		return;
	}
	ip6[0] = ML_CTX_READ(skops->local_ip6[0]);
	ip6[1] = ML_CTX_READ(skops->local_ip6[1]);
	ip6[2] = ML_CTX_READ(skops->local_ip6[2]);
	ip6[3] = ML_CTX_READ(skops->local_ip6[3]);
	ml_addr_from_v6(addr, ip6);
}

static __always_inline void remote_end(struct bpf_sock_ops *skops, struct ml_addr *addr)
{
	__u32 ip6[4];

	if (ML_CTX_READ(skops->family) == ML_AF_INET) {
		ml_addr_from_v4(addr, ML_CTX_READ(skops->remote_ip4));
		return;
	}
	ip6[0] = ML_CTX_READ(skops->remote_ip6[0]);
	ip6[1] = ML_CTX_READ(skops->remote_ip6[1]);
	ip6[2] = ML_CTX_READ(skops->remote_ip6[2]);
	ip6[3] = ML_CTX_READ(skops->remote_ip6[3]);
	ml_addr_from_v6(addr, ip6);
}

/* Returns the counter to bump, or ML_CTR_MAX when the socket is not ours. */
static __always_inline enum ml_counter publish_orig_dst(struct bpf_sock_ops *skops)
{
	struct ml_flow_key key = {};
	struct ml_orig_dst orig, *pending;
	__u64 cookie = bpf_get_socket_cookie(skops);

	pending = bpf_map_lookup_elem(&ml_inflight, &cookie);
	if (!pending)
		return ML_CTR_MAX;
	orig = *pending;
	bpf_map_delete_elem(&ml_inflight, &cookie);
	key.netns_cookie = bpf_get_netns_cookie(skops);
	local_end(skops, &key.addr);
	key.port = (__u16)ML_CTX_READ(skops->local_port);
	if (bpf_map_update_elem(&ml_orig_dst, &key, &orig, BPF_ANY) != 0)
		return ML_CTR_ORIG_DST_ERROR;
	return ML_CTR_ORIG_DST_PUBLISHED;
}

static __always_inline void leg_key(struct bpf_sock_ops *skops, struct ml_leg_key *key)
{
	key->netns_cookie = bpf_get_netns_cookie(skops);
	local_end(skops, &key->local);
	remote_end(skops, &key->remote);
	key->local_port = (__u16)ML_CTX_READ(skops->local_port);
	key->remote_port = ML_REMOTE_PORT(ML_CTX_READ(skops->remote_port));
}

static __always_inline void insert_leg(struct bpf_sock_ops *skops, struct ml_leg_key *key)
{
	__u64 addr = (__u64)ML_CTX_READ(skops->sk);

	if (bpf_sock_hash_update(skops, &ml_pod_legs, key, BPF_ANY) != 0) {
		ml_count(ML_CTR_LEG_INSERT_ERROR);
		return;
	}
	bpf_map_update_elem(&ml_leg_socks, key, &addr, BPF_ANY);
	ml_count(ML_CTR_LEG_INSERTED);
}

static __always_inline bool is_loopback(const struct ml_addr *addr, __u32 family)
{
	if (family == ML_AF_INET)
		return addr->bytes[12] == 127;
	for (int i = 0; i < 15; i++)
		if (addr->bytes[i] != 0)
			return false;
	return addr->bytes[15] == 1;
}

static __always_inline bool same_addr(const struct ml_addr *a, const struct ml_addr *b)
{
	for (int i = 0; i < 16; i++)
		if (a->bytes[i] != b->bytes[i])
			return false;
	return true;
}

/* The passive (accepted) end of a pod-local connection:
 * - the agent's end of an app's captured connect: accepted on the outbound
 *   listener (loopback:outbound_port in the pod's netns); marked as the
 *   agent's, so sk_msg knows which way its bytes go;
 * - the app's end of the agent's connection to it: from the pod's own
 *   address to the pod's own address (a pod talking to itself by its IP
 *   matches too; its other end is not in the map, so it stays on TCP). */
static __always_inline void passive_leg(struct bpf_sock_ops *skops)
{
	struct ml_leg_key key = {};
	struct bpf_sock *sk = ML_CTX_READ(skops->sk);
	__u32 family = ML_CTX_READ(skops->family);
	__u32 *mark;

	leg_key(skops, &key);
	if (key.local_port == outbound_port && is_loopback(&key.local, family)) {
		if (!sk)
			return;
		mark = bpf_sk_storage_get(&ml_leg_marks, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (mark)
			*mark = ML_LEG_MARK_AGENT_ACCEPTED;
		insert_leg(skops, &key);
	} else if (same_addr(&key.local, &key.remote) && bpf_map_lookup_elem(&ml_pod_addrs, &key.local)) {
		insert_leg(skops, &key);
	}
}

static __always_inline bool agent_marked(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = ML_CTX_READ(skops->sk);
	__u32 *mark;

	if (!sk)
		return false;
	mark = bpf_sk_storage_get(&ml_leg_marks, sk, 0, 0);
	return mark && *mark == ML_LEG_MARK_AGENT_UPSTREAM;
}

SEC("sockops")
int ml_sockops(struct bpf_sock_ops *skops)
{
	struct ml_leg_key key = {};
	enum ml_counter counter;
	__u32 op = ML_CTX_READ(skops->op);

	if (op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB) {
		counter = publish_orig_dst(skops);
		if (counter != ML_CTR_MAX)
			ml_count(counter);
		if (!pod_legs)
			return 1;
		if (counter == ML_CTR_ORIG_DST_PUBLISHED || agent_marked(skops)) {
			leg_key(skops, &key);
			insert_leg(skops, &key);
		}
	} else if (op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB && pod_legs) {
		passive_leg(skops);
	}
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
