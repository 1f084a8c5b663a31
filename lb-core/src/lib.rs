//! The load-balancing engine: everything that decides what happens to a
//! packet, with no DPDK in it, so it is tested and benchmarked on plain bytes.
//!
//! - [`types`]: the shared vocabulary (stored addresses, the 5-tuple,
//!   protocol, forwarding mode, timeouts, statistics, the prefetch hook);
//! - [`wire`]: zero-copy views over the headers, with incremental checksums;
//! - [`service`]: services, real servers and the immutable snapshot;
//! - [`sched`]: the LVS schedulers;
//! - [`engine`]: the per-packet entry point of a worker;
//! - [`net`]: interfaces, addresses and routes;
//! - [`packet`]: one parse per frame, and the buffer trait;
//! - [`offload`]: receive checksums finished or verified where no NIC did;
//! - [`mode`]: DR, NAT, TUN and Full-NAT rewrites;
//! - [`laddr`]: Full-NAT local-address pools, split between workers;
//! - [`filter`]: allow and deny lists of client prefixes;
//! - [`session`]: per-worker session tables, TCP states, expiry;
//! - [`stats`]: ipvsadm-style statistics and rates, summed over workers;
//! - [`sync`]: the connection-sync messages between directors;
//! - [`testpkt`]: test frames built field by field;
//! - [`config`]: the configuration schema the dataplane reads.
//!
//! Modules import only those in the layers below theirs (`tests/layers.rs`
//! fails on a circle):
//!
//! 1. `types`, `wire`: nothing of the crate;
//! 2. `packet` (types, wire); `offload` (packet, wire); `sched`, `laddr`,
//!    `filter`, `sync` (types); `session` (types, wire);
//! 3. `net` (offload); `mode` (packet, session);
//! 4. `service` (net, sched); `stats` (service, sched);
//! 5. `engine` (everything below); `config` (service, sched, offload,
//!    filter).
//!
//! `testpkt` is for tests only and may use anything.

#![forbid(unsafe_code)]

pub mod config;
pub mod engine;
pub mod filter;
pub mod laddr;
pub mod mode;
pub mod net;
pub mod offload;
pub mod packet;
pub mod sched;
pub mod service;
pub mod session;
pub mod stats;
pub mod sync;
pub mod testpkt;
pub mod types;
pub mod wire;
