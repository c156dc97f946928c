// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* cgroup/connect4 and cgroup/connect6, attached once at the node's pods
 * cgroup root: an enrolled pod's TCP connects go to the agent's outbound
 * listener (127.0.0.1:15001 / [::1]:15001) in the pod's own netns, and the
 * original destination is remembered under the socket's cookie. */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "compat.bpf.h"
#include "maps.bpf.h"

/* Cgroup id of the pods root these programs are attached to. Its level in
 * the cgroup-v2 hierarchy is found here, not in userspace, because a
 * cgroup namespace hides the true level from the agent. */
const volatile __u64 pods_root_cgroup_id = 0;
const volatile __u16 outbound_port = 15001;
const volatile __u16 agent_ports[ML_MAX_AGENT_PORTS] = {};

/* The calling task's enrolled pod, found by trying the few levels a kubelet
 * pod cgroup can sit at (containers are children of it, so the task's own
 * cgroup is usually one level below). */
static __always_inline struct ml_pod *current_pod(void)
{
	__u32 root_level = ML_MAX_CGROUP_DEPTH;

	for (__u32 level = 0; level < ML_MAX_CGROUP_DEPTH; level++) {
		__u64 id = bpf_get_current_ancestor_cgroup_id(level);

		if (id == 0)
			return NULL; /* below the task's own cgroup: not under our root */
		if (id == pods_root_cgroup_id) {
			root_level = level;
			break;
		}
	}
	if (root_level == ML_MAX_CGROUP_DEPTH)
		return NULL;
	for (__u32 i = 1; i <= ML_POD_LEVEL_SPAN; i++) {
		__u64 id = bpf_get_current_ancestor_cgroup_id(root_level + i);
		struct ml_pod *pod;

		if (id == 0)
			break; /* the task's cgroup is above this level */
		pod = bpf_map_lookup_elem(&ml_pod_cgroups, &id);
		if (pod)
			return pod;
	}
	return NULL;
}

static __always_inline bool is_loopback(const struct ml_addr *a, __u16 family)
{
	if (family == ML_AF_INET)
		return a->bytes[12] == 127;
	for (int i = 0; i < 15; i++) {
		if (a->bytes[i] != 0)
			return false;
	}
	return a->bytes[15] == 1;
}

/* The decision, as the counter that records it. */
static __always_inline enum ml_counter decide_connect(__u32 protocol, const struct ml_pod *pod,
						      const struct ml_addr *dst, __u16 family,
						      __u16 dport)
{
	if (!pod || !(pod->flags & ML_POD_OUTBOUND))
		return ML_CTR_CONNECT_NOT_ENROLLED;
	if (protocol != IPPROTO_TCP)
		return ML_CTR_CONNECT_NOT_TCP;
	if (is_loopback(dst, family))
		return ML_CTR_CONNECT_BYPASS_LOOPBACK;
	if (dport == outbound_port || ml_port_in(dport, agent_ports))
		return ML_CTR_CONNECT_BYPASS_AGENT_PORT;
	if (ml_port_verdict(pod->pod_cgroup_id, dport, ML_DIR_OUTBOUND) == ML_PORT_EXCLUDE)
		return ML_CTR_CONNECT_BYPASS_EXCLUDED_PORT;
	return ML_CTR_CONNECT_CAPTURED;
}

/* Runs the decision; returns true when the connect must be rewritten. A
 * capture whose destination cannot be remembered is refused (returns the
 * hook's verdict 0 via *refuse), never let through in plaintext. */
static __always_inline bool capture(struct bpf_sock_addr *ctx, const struct ml_addr *dst,
				    __u16 family, __u16 dport, bool *refuse)
{
	struct ml_pod *pod = current_pod();
	enum ml_counter verdict = decide_connect(ctx->protocol, pod, dst, family, dport);
	struct ml_orig_dst orig = {};
	__u64 cookie;

	*refuse = false;
	if (verdict != ML_CTR_CONNECT_CAPTURED || !pod) {
		ml_count(verdict);
		return false;
	}
	orig.addr = *dst;
	orig.port = dport;
	orig.family = family;
	orig.pod_cgroup_id = pod->pod_cgroup_id;
	cookie = bpf_get_socket_cookie(ctx);
	if (bpf_map_update_elem(&ml_inflight, &cookie, &orig, BPF_ANY) != 0) {
		ml_count(ML_CTR_CONNECT_ERROR);
		*refuse = true;
		return false;
	}
	ml_count(ML_CTR_CONNECT_CAPTURED);
	return true;
}

SEC("cgroup/connect4")
int ml_connect4(struct bpf_sock_addr *ctx)
{
	struct ml_addr dst;
	bool refuse;

	ml_addr_from_v4(&dst, ctx->user_ip4);
	if (!capture(ctx, &dst, ML_AF_INET, ML_SOCK_ADDR_PORT(ctx), &refuse))
		return refuse ? 0 : 1;
	ctx->user_ip4 = bpf_htonl(0x7f000001);
	ML_SOCK_ADDR_SET_PORT(ctx, outbound_port);
	return 1;
}

SEC("cgroup/connect6")
int ml_connect6(struct bpf_sock_addr *ctx)
{
	struct ml_addr dst;
	__u32 ip6[4];
	bool v4mapped, refuse;

	ip6[0] = ctx->user_ip6[0];
	ip6[1] = ctx->user_ip6[1];
	ip6[2] = ctx->user_ip6[2];
	ip6[3] = ctx->user_ip6[3];
	ml_addr_from_v6(&dst, ip6);
	/* A dual-stack socket reaching an IPv4 peer: treat it as IPv4. */
	v4mapped = ip6[0] == 0 && ip6[1] == 0 && ip6[2] == bpf_htonl(0xffff);
	if (!capture(ctx, &dst, v4mapped ? ML_AF_INET : ML_AF_INET6, ML_SOCK_ADDR_PORT(ctx),
		     &refuse))
		return refuse ? 0 : 1;
	ctx->user_ip6[0] = 0;
	ctx->user_ip6[1] = 0;
	ctx->user_ip6[2] = v4mapped ? bpf_htonl(0xffff) : 0;
	ctx->user_ip6[3] = v4mapped ? bpf_htonl(0x7f000001) : bpf_htonl(1);
	ML_SOCK_ADDR_SET_PORT(ctx, outbound_port);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
