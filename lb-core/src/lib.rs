//! The load-balancing engine: everything that decides what happens to a
//! packet, with no DPDK in it, so it is tested and benchmarked on plain bytes.
//!
//! So far it holds the configuration schema that the dataplane reads.

#![forbid(unsafe_code)]

pub mod config;
