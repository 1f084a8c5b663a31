//! The load-balancer appliance: a safe layer over DPDK ([`dpdk`]), the
//! run-to-completion workers (the load balancer's in [`worker`], with its
//! neighbour table in [`neigh`]; the plain forwarder's in [`forward`]),
//! their counters ([`stats`]), and the process that ties them to a
//! configuration file ([`app`]). `unsafe` lives in [`dpdk`] only.

#![deny(unsafe_code)]

pub mod admin;
pub mod announce;
pub mod app;
pub mod control;
pub mod dpdk;
pub mod forward;
pub mod health;
pub mod kernel_vips;
pub mod metrics;
pub mod neigh;
pub mod notify;
pub mod peers;
pub mod probe;
pub mod publish;
pub mod stall;
pub mod stats;
pub mod vlan;
pub mod worker;
