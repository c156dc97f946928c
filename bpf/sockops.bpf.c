// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* sockops, attached with connect4/6 at the pods cgroup root: when a captured
 * connect completes its handshake (before the agent can accept it), move its
 * original destination from the socket cookie to the key the agent can
 * compute from the accepted socket: (netns cookie, client address, port). */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "compat.bpf.h"
#include "maps.bpf.h"

static __always_inline void client_end(const struct bpf_sock_ops *skops, struct ml_flow_key *key)
{
	__u32 ip6[4];

	if (skops->family == ML_AF_INET) {
		ml_addr_from_v4(&key->addr, skops->local_ip4);
	} else {
		ip6[0] = skops->local_ip6[0];
		ip6[1] = skops->local_ip6[1];
		ip6[2] = skops->local_ip6[2];
		ip6[3] = skops->local_ip6[3];
		ml_addr_from_v6(&key->addr, ip6);
	}
	key->port = (__u16)skops->local_port;
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
	client_end(skops, &key);
	if (bpf_map_update_elem(&ml_orig_dst, &key, &orig, BPF_ANY) != 0)
		return ML_CTR_ORIG_DST_ERROR;
	return ML_CTR_ORIG_DST_PUBLISHED;
}

SEC("sockops")
int ml_sockops(struct bpf_sock_ops *skops)
{
	enum ml_counter counter;

	if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
		return 1;
	counter = publish_orig_dst(skops);
	if (counter != ML_CTR_MAX)
		ml_count(counter);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
