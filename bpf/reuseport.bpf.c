// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* sk_reuseport, attached to the reuseport group of every in-pod listener
 * (15001, 15006). During a rolling update two agents listen on the same
 * in-pod ports at once (SO_REUSEPORT); when the old one closes its
 * listeners, the connections in their accept queues (and half-open ones)
 * must move to the new agent's listener instead of being reset. The kernel
 * migrates them only if net.ipv4.tcp_migrate_req is set in the pod's netns
 * (which a container cannot write: /proc/sys is read-only there) or if the
 * group runs a program of attach type BPF_SK_REUSEPORT_SELECT_OR_MIGRATE
 * (net/core/sock_reuseport.c reuseport_migrate_sock). This is that program:
 * it selects nothing, so new outbound connections (15001) and migrated ones
 * fall back to the kernel's own hash over the listening sockets of the
 * group. (Inbound, sk_lookup assigns the listener of its map with
 * BPF_SK_LOOKUP_F_NO_REUSEPORT: no selection there.) */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

SEC("sk_reuseport/migrate")
int ml_reuseport(struct sk_reuseport_md *md)
{
	(void)md;
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
