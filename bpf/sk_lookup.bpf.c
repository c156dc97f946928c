// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* sk_lookup, attached to each enrolled pod's netns: a new TCP connection to
 * one of the pod's addresses goes to the agent's inbound listener (15006) in
 * that netns. Connections that start inside the pod's own netns are left
 * alone: the agent opens its upstream connections to the app there (the
 * in-pod model), so they must reach the app, not come back to 15006. */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "compat.bpf.h"
#include "maps.bpf.h"

const volatile __u16 agent_ports[ML_MAX_AGENT_PORTS] = {};

/* True when the connection was opened inside the pod's own netns: it came
 * in on lo, or from one of the pod's own addresses (the kernel reports the
 * address's device, not lo, as ingress for traffic to a local address). A
 * forged source address cannot use this: the SYN-ACK would go to the pod
 * itself, so the handshake never completes. */
static __always_inline bool from_inside_pod(const struct ml_pod *pod, __u32 ingress_ifindex,
					    const struct ml_addr *remote)
{
	struct ml_pod *source;

	if (ingress_ifindex == ML_LOOPBACK_IFINDEX)
		return true;
	source = bpf_map_lookup_elem(&ml_pod_addrs, remote);
	return source && source->pod_cgroup_id == pod->pod_cgroup_id;
}

/* The decision for a lookup that matched a pod address, as its counter;
 * ML_CTR_LOOKUP_STEERED means "assign to the pod's listener". */
static __always_inline enum ml_counter decide_lookup(const struct ml_pod *pod, bool inside_pod,
						     __u16 port)
{
	__u32 verdict;

	if (inside_pod)
		return ML_CTR_LOOKUP_BYPASS_LOCAL;
	if (ml_port_in(port, agent_ports))
		return ML_CTR_LOOKUP_BYPASS_AGENT_PORT;
	verdict = ml_port_verdict(pod->pod_cgroup_id, port, ML_DIR_INBOUND);
	if (verdict == ML_PORT_EXCLUDE)
		return ML_CTR_LOOKUP_BYPASS_EXCLUDED_PORT;
	if ((pod->flags & ML_POD_INBOUND_LISTED_PORTS) && verdict != ML_PORT_CAPTURE)
		return ML_CTR_LOOKUP_BYPASS_EXCLUDED_PORT;
	return ML_CTR_LOOKUP_STEERED;
}

/* Assigns the listener; returns the counter and the sk_lookup verdict. */
static __always_inline enum ml_counter steer(struct bpf_sk_lookup *ctx, const struct ml_pod *pod,
					     int *action)
{
	struct ml_listener_key key = {
		.pod_cgroup_id = pod->pod_cgroup_id,
		.family = ctx->family,
	};
	struct bpf_sock *listener;
	long err;

	*action = SK_PASS;
	listener = bpf_map_lookup_elem(&ml_listeners, &key);
	if (!listener) {
		if (pod->flags & ML_POD_INBOUND_FAIL_CLOSED) {
			*action = SK_DROP;
			return ML_CTR_LOOKUP_NO_LISTENER_DROPPED;
		}
		return ML_CTR_LOOKUP_NO_LISTENER_PASSED;
	}
	/* NO_REUSEPORT: the listener in the map, not any socket of its
	 * reuseport group. During a rolling update both agents listen on
	 * 15006 (SO_REUSEPORT); new connections go to the agent that put its
	 * listener here last, and no other root process of the pod that
	 * joined the group can take a connection STRICT would refuse. */
	err = bpf_sk_assign(ctx, listener, BPF_SK_LOOKUP_F_NO_REUSEPORT);
	bpf_sk_release(listener);
	if (err != 0) {
		if (pod->flags & ML_POD_INBOUND_FAIL_CLOSED)
			*action = SK_DROP;
		return ML_CTR_LOOKUP_ERROR;
	}
	return ML_CTR_LOOKUP_STEERED;
}

SEC("sk_lookup")
int ml_sk_lookup(struct bpf_sk_lookup *ctx)
{
	struct ml_addr local, remote;
	struct ml_pod *pod;
	enum ml_counter counter;
	__u32 ip6[4];
	int action = SK_PASS;
	/* Read ctx fields up front: see ML_CTX_READ in compat.bpf.h. */
	__u32 family = ML_CTX_READ(ctx->family);
	__u32 port = ML_CTX_READ(ctx->local_port);
	__u32 ingress_ifindex = ML_CTX_READ(ctx->ingress_ifindex);

	if (ctx->protocol != IPPROTO_TCP)
		return SK_PASS;
	if (family == ML_AF_INET) {
		ml_addr_from_v4(&local, ctx->local_ip4);
		ml_addr_from_v4(&remote, ctx->remote_ip4);
	} else {
		ip6[0] = ctx->local_ip6[0];
		ip6[1] = ctx->local_ip6[1];
		ip6[2] = ctx->local_ip6[2];
		ip6[3] = ctx->local_ip6[3];
		ml_addr_from_v6(&local, ip6);
		ip6[0] = ctx->remote_ip6[0];
		ip6[1] = ctx->remote_ip6[1];
		ip6[2] = ctx->remote_ip6[2];
		ip6[3] = ctx->remote_ip6[3];
		ml_addr_from_v6(&remote, ip6);
	}
	pod = bpf_map_lookup_elem(&ml_pod_addrs, &local);
	if (!pod || !(pod->flags & ML_POD_INBOUND))
		return SK_PASS;
	counter = decide_lookup(pod, from_inside_pod(pod, ingress_ifindex, &remote), (__u16)port);
	if (counter == ML_CTR_LOOKUP_STEERED)
		counter = steer(ctx, pod, &action);
	ml_count(counter);
	return action;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
