/* Map keys, values and constants shared by the BPF programs (bpf/)
 * and the agent's loader (agent/capture). One definition for both sides; the
 * C++ side static_asserts the sizes (agent/capture/bpf_abi.h). */
#ifndef MESHLOCK_BPF_MESHLOCK_MAPS_H
#define MESHLOCK_BPF_MESHLOCK_MAPS_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* Ports of the agent itself that are never captured, at most this many. */
#define ML_MAX_AGENT_PORTS 8
/* How many cgroup levels below the attach root a pod cgroup may sit: kubelet
 * puts Guaranteed pods at root/pod<uid> and the others at root/<qos>/pod<uid>;
 * one more level leaves room for a root given one level higher. */
#define ML_POD_LEVEL_SPAN 3
/* Deepest cgroup level searched for the pods root. */
#define ML_MAX_CGROUP_DEPTH 32

#define ML_MAX_PODS 4096
#define ML_MAX_POD_ADDRS (4 * ML_MAX_PODS)
#define ML_MAX_PORT_RULES 65536
#define ML_MAX_INFLIGHT 65536 /* connects between connect() and established */
#define ML_MAX_ORIG_DST 65536 /* established, not yet accepted by the agent */
#define ML_MAX_POD_LEGS 131072 /* pod-local sockets (two per app<->agent pair) */

/* An IPv4 or IPv6 address in 16 bytes; IPv4 as ::ffff:a.b.c.d, the form an
 * IPv6 socket sees a v4-mapped peer in, so one key serves both families. */
struct ml_addr {
	__u8 bytes[16];
};

/* Value of ml_pod_cgroups (key: pod cgroup id) and ml_pod_addrs (key:
 * struct ml_addr, one entry per pod address). */
struct ml_pod {
	__u64 pod_cgroup_id; /* the pod's identity in every other map */
	__u32 flags;         /* enum ml_pod_flags */
	__u32 reserved;
};

enum ml_pod_flags {
	ML_POD_OUTBOUND = 1 << 0,             /* capture the pod's connects */
	ML_POD_INBOUND = 1 << 1,              /* steer SYNs to the pod's addresses */
	ML_POD_INBOUND_LISTED_PORTS = 1 << 2, /* inbound: only ports with ML_PORT_CAPTURE */
	ML_POD_INBOUND_FAIL_CLOSED = 1 << 3,  /* no inbound listener: drop, never pass */
};

enum ml_direction {
	ML_DIR_OUTBOUND = 0,
	ML_DIR_INBOUND = 1,
};

enum ml_port_verdict {
	ML_PORT_EXCLUDE = 1,
	ML_PORT_CAPTURE = 2,
};

/* Key of ml_ports (value: __u32 enum ml_port_verdict). */
struct ml_port_key {
	__u64 pod_cgroup_id;
	__u16 port; /* host byte order */
	__u8 direction; /* enum ml_direction */
	__u8 reserved[5];
};

/* Key of ml_listeners, the sockhash holding each pod's inbound listener. */
struct ml_listener_key {
	__u64 pod_cgroup_id;
	__u32 family; /* AF_INET or AF_INET6 */
	__u32 reserved;
};

/* Where a captured connect was going. Value of ml_inflight (key: the client
 * socket's cookie) and ml_orig_dst (key: struct ml_flow_key). */
struct ml_orig_dst {
	struct ml_addr addr;
	__u16 port;   /* host byte order */
	__u16 family; /* AF_INET or AF_INET6, as the application asked */
	__u32 reserved;
	__u64 pod_cgroup_id;
};

/* The client end of a captured connection as the agent sees it after
 * accept(): its netns (SO_NETNS_COOKIE) and getpeername(). */
struct ml_flow_key {
	__u64 netns_cookie;
	struct ml_addr addr;
	__u16 port; /* host byte order */
	__u16 reserved[3];
};

/* Key of ml_pod_legs, the sockhash of pod-local sockets (an app's socket and
 * the agent's socket at the other end of the same loopback connection): one
 * end as it sees itself. The peer's key is the same with the ends swapped. */
struct ml_leg_key {
	__u64 netns_cookie;
	struct ml_addr local;
	struct ml_addr remote;
	__u16 local_port;  /* host byte order */
	__u16 remote_port; /* host byte order */
	__u32 reserved;
};

/* Value of ml_leg_marks (socket storage): set by the agent on a socket it is
 * about to connect to a pod's app, so sockops puts it in ml_pod_legs. */
enum ml_leg_mark {
	ML_LEG_MARK_AGENT_UPSTREAM = 1, /* the agent's connection to a pod's app (inbound leg) */
	ML_LEG_MARK_AGENT_ACCEPTED = 2, /* the agent's end of an app's captured connect (outbound leg); set by sockops */
};

/* Which way the pod-local shortcut carries bytes (the loader's setting). */
enum ml_leg_mode {
	ML_LEG_OFF = 0,
	ML_LEG_APP_TO_AGENT = 1, /* the agent reads with recv(): safe for every app */
	ML_LEG_BOTH = 2,         /* also agent -> app: the app must read with recv()/read(), not splice() */
};

/* Per-CPU counters, one per decision (index into ml_counters). */
enum ml_counter {
	ML_CTR_CONNECT_CAPTURED = 0,
	ML_CTR_CONNECT_NOT_ENROLLED,
	ML_CTR_CONNECT_NOT_TCP,
	ML_CTR_CONNECT_BYPASS_LOOPBACK,
	ML_CTR_CONNECT_BYPASS_EXCLUDED_PORT,
	ML_CTR_CONNECT_BYPASS_AGENT_PORT,
	ML_CTR_CONNECT_ERROR, /* orig dst not stored: connect refused */
	ML_CTR_ORIG_DST_PUBLISHED,
	ML_CTR_ORIG_DST_ERROR,
	ML_CTR_LOOKUP_STEERED,
	ML_CTR_LOOKUP_BYPASS_LOCAL, /* opened inside the pod's netns: the agent's or the pod's own */
	ML_CTR_LOOKUP_BYPASS_EXCLUDED_PORT,
	ML_CTR_LOOKUP_BYPASS_AGENT_PORT,
	ML_CTR_LOOKUP_NO_LISTENER_DROPPED,
	ML_CTR_LOOKUP_NO_LISTENER_PASSED,
	ML_CTR_LOOKUP_ERROR,
	ML_CTR_LEG_INSERTED,       /* a pod-local socket entered ml_pod_legs */
	ML_CTR_LEG_INSERT_ERROR,   /* ... could not: it stays on plain TCP */
	ML_CTR_LEG_REDIRECTED,     /* a message went straight to the peer's queue */
	ML_CTR_LEG_PASS_NO_PEER,   /* ... went by TCP: the peer is not in the map (yet, or any more) */
	ML_CTR_LEG_PASS_UNREAD,    /* ... went by TCP: bytes sent by TCP are still unread */
	ML_CTR_LEG_PASS_BACKLOG,   /* ... went by TCP: the peer's queue is full (TCP's window pushes back) */
	ML_CTR_MAX,
};

#endif /* MESHLOCK_BPF_MESHLOCK_MAPS_H */
