//! Raw bindings to DPDK 22.11, generated at build time from the system headers.
//!
//! Nothing here has logic: the safe layer lives in `lb-dataplane::dpdk`. The
//! `static inline` functions of DPDK's headers (burst I/O, mbuf allocation,
//! rings, TSC) are reachable through bindgen's generated C wrappers, and
//! DPDK's thread-local variables through `lb_rte_errno` and `lb_rte_lcore_id`.

#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case)]
#![allow(clippy::all, clippy::pedantic, missing_debug_implementations)]
#![allow(unsafe_op_in_unsafe_fn)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
