/* Kernel-version workarounds and definitions vmlinux.h cannot give, each with
 * its reason. Minimum kernel and why: docs/kernel.md. */
#ifndef MESHLOCK_BPF_COMPAT_BPF_H
#define MESHLOCK_BPF_COMPAT_BPF_H

/* Address families and the loopback ifindex are preprocessor macros in the
 * UAPI headers, so BTF (and vmlinux.h) never sees them. */
#define ML_AF_INET 2
#define ML_AF_INET6 10
#define ML_LOOPBACK_IFINDEX 1 /* lo is always ifindex 1 in every netns */

/* bpf_sock_addr.user_port holds the port in network byte order in its low
 * 16 bits, in a __u32 field; read and write it only through these. */
#define ML_SOCK_ADDR_PORT(ctx) bpf_ntohs((__u16)(ctx)->user_port)
#define ML_SOCK_ADDR_SET_PORT(ctx, port) ((ctx)->user_port = (__u32)bpf_htons(port))

/* Context fields must be loaded straight from the ctx pointer: clang may
 * otherwise compute ctx+offset once and load from the sum later, which the
 * verifier refuses ("dereference of modified ctx ptr"). Loading into a local
 * through a volatile read pins the access where it is written. */
#define ML_CTX_READ(field) (*(volatile typeof(field) *)&(field))

/* bpf_sk_lookup.ingress_ifindex appeared in 5.17; on older kernels the
 * verifier rejects the access: meshlock needs >= 5.17. */

/* bpf_sock_ops.local_port and sk_msg_md.local_port are in host byte order,
 * remote_port in network byte order as a 32-bit value: the port sits in the
 * high half on little-endian machines (historic asymmetry kept by the UAPI). */
#define ML_REMOTE_PORT(field) ((__u16)bpf_ntohl(field))

#endif /* MESHLOCK_BPF_COMPAT_BPF_H */
