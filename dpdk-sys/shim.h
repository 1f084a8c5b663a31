/* Hand-written helpers for what bindgen cannot reach: DPDK's per-lcore
 * (thread-local) variables are macros over __thread symbols, and Rust must not
 * touch them as statics. */
#ifndef LB_DPDK_SHIM_H
#define LB_DPDK_SHIM_H

int lb_rte_errno(void);
unsigned lb_rte_lcore_id(void);
unsigned lb_rte_socket_id(void);

#endif
