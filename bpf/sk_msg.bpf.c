// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* sk_msg on ml_pod_legs: a message sent on one end of a pod-local connection
 * (app <-> agent, both ends in the same pod netns) goes straight into the
 * peer socket's receive queue, without the loopback TCP stack.
 *
 * Three rules keep it exactly as reliable as the TCP it replaces:
 *
 * - Order. A message may skip TCP only when every byte this socket sent by
 *   TCP has been read by the peer (our write_seq == the peer's rcv_nxt, and
 *   nothing waits in its TCP queue); otherwise it goes by TCP behind them. The reverse switch is always safe:
 *   a reader takes the redirected queue before the TCP queue.
 * - Backpressure. The redirected queue has no window (on Linux 6.18 a reader
 *   that reads nothing takes 256 MB and more). When the peer holds what TCP
 *   would let one socket hold (tcp_rmem's maximum) there, the message goes
 *   by TCP, whose window then stops the writer; so a slow reader never
 *   holds more than with TCP alone, plus one message.
 * - No peer, no shortcut. A peer not in the map (closed, or not yet there)
 *   means TCP; the kernel drops a closing socket from the map itself.
 *
 * By default only app -> agent bytes take the shortcut: the agent reads
 * with recv(), which serves the redirected queue, while an app may read with
 * splice(), which sees only TCP's queue (ML_LEG_BOTH turns the other way on).
 *
 * FIN and RST are not messages: they always go by TCP, after the bytes
 * (the redirected ones are already queued when sendmsg returns). */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "compat.bpf.h"
#include "maps.bpf.h"

/* One end of the message's socket, as the key form wants it. Context fields
 * are read one by one (ML_CTX_READ): the verifier refuses loads through a
 * modified ctx pointer. */
static __always_inline void msg_local(struct sk_msg_md *msg, __u32 family, struct ml_addr *addr)
{
	__u32 ip6[4];

	if (family == ML_AF_INET) {
		ml_addr_from_v4(addr, ML_CTX_READ(msg->local_ip4));
		return;
	}
	ip6[0] = ML_CTX_READ(msg->local_ip6[0]);
	ip6[1] = ML_CTX_READ(msg->local_ip6[1]);
	ip6[2] = ML_CTX_READ(msg->local_ip6[2]);
	ip6[3] = ML_CTX_READ(msg->local_ip6[3]);
	ml_addr_from_v6(addr, ip6);
}

static __always_inline void msg_remote(struct sk_msg_md *msg, __u32 family, struct ml_addr *addr)
{
	__u32 ip6[4];

	if (family == ML_AF_INET) {
		ml_addr_from_v4(addr, ML_CTX_READ(msg->remote_ip4));
		return;
	}
	ip6[0] = ML_CTX_READ(msg->remote_ip6[0]);
	ip6[1] = ML_CTX_READ(msg->remote_ip6[1]);
	ip6[2] = ML_CTX_READ(msg->remote_ip6[2]);
	ip6[3] = ML_CTX_READ(msg->remote_ip6[3]);
	ml_addr_from_v6(addr, ip6);
}

/* Set by the loader: enum ml_leg_mode. */
const volatile __u32 leg_mode = ML_LEG_APP_TO_AGENT;

/* sk->sk_user_data carries flag bits below the psock pointer
 * (include/net/sock.h: SK_USER_DATA_PTRMASK). */
#define ML_USER_DATA_PTRMASK (~7UL)

/* Bytes the peer holds in its redirected queue, not yet read. A kernel
 * without the count cannot bound the queue: there it reads as full, and
 * every message goes by TCP. */
static __always_inline __u32 queued_for(struct tcp_sock *peer)
{
	struct sk_psock *psock;
	__u64 data;

	if (!bpf_core_field_exists(struct sk_psock, msg_tot_len))
		return 0xffffffff;
	data = (__u64)BPF_CORE_READ(peer, inet_conn.icsk_inet.sk.sk_user_data);
	psock = (struct sk_psock *)(data & ML_USER_DATA_PTRMASK);
	if (!psock)
		return 0;
	return BPF_CORE_READ(psock, msg_tot_len);
}

/* The most the peer's redirected queue may hold: what TCP would let one
 * socket hold (net.ipv4.tcp_rmem's maximum, of the peer's netns), or its
 * receive buffer if that cannot be read. */
static __always_inline __u32 queue_limit(struct tcp_sock *peer)
{
	int limit = BPF_CORE_READ(peer, inet_conn.icsk_inet.sk.__sk_common.skc_net.net, ipv4.sysctl_tcp_rmem[2]);
	int rcvbuf = BPF_CORE_READ(peer, inet_conn.icsk_inet.sk.sk_rcvbuf);

	return (__u32)(limit > rcvbuf ? limit : rcvbuf);
}

static __always_inline bool agent_end(struct bpf_sock *self)
{
	__u32 *mark = bpf_sk_storage_get(&ml_leg_marks, self, 0, 0);

	return mark && *mark != 0;
}

SEC("sk_msg")
int ml_pod_leg_msg(struct sk_msg_md *msg)
{
	struct ml_leg_key peer = {};
	struct bpf_sock *self = ML_CTX_READ(msg->sk);
	__u32 family = ML_CTX_READ(msg->family);
	struct tcp_sock *self_tp, *peer_tp;
	enum ml_counter verdict;
	__u64 *peer_addr;
	__u32 unread;

	if (!self)
		return SK_PASS;
	if (leg_mode != ML_LEG_BOTH && agent_end(self))
		return SK_PASS; /* agent -> app stays on TCP: the app may splice() */
	peer.netns_cookie = bpf_get_netns_cookie(msg);
	msg_remote(msg, family, &peer.local);
	msg_local(msg, family, &peer.remote);
	peer.local_port = ML_REMOTE_PORT(ML_CTX_READ(msg->remote_port));
	peer.remote_port = (__u16)ML_CTX_READ(msg->local_port);

	peer_addr = bpf_map_lookup_elem(&ml_leg_socks, &peer);
	self_tp = bpf_skc_to_tcp_sock(self);
	if (!peer_addr || !self_tp) {
		ml_count(ML_CTR_LEG_PASS_NO_PEER);
		return SK_PASS;
	}
	peer_tp = (struct tcp_sock *)*peer_addr;
	/* Every byte we gave TCP has reached the peer (rcv_nxt), and its TCP
	 * queue is empty. (copied_seq would not do: reading redirected bytes
	 * advances it too.) */
	unread = BPF_CORE_READ(self_tp, write_seq) - BPF_CORE_READ(peer_tp, rcv_nxt);
	if (unread == 0)
		unread = BPF_CORE_READ(peer_tp, inet_conn.icsk_inet.sk.sk_receive_queue.qlen);
	if (unread != 0)
		verdict = ML_CTR_LEG_PASS_UNREAD;
	else if (queued_for(peer_tp) >= queue_limit(peer_tp))
		verdict = ML_CTR_LEG_PASS_BACKLOG;
	else if (bpf_msg_redirect_hash(msg, &ml_pod_legs, &peer, BPF_F_INGRESS) != SK_PASS)
		verdict = ML_CTR_LEG_PASS_NO_PEER; /* the peer left the map: TCP tells the app */
	else
		verdict = ML_CTR_LEG_REDIRECTED;
	ml_count(verdict);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
