//! The load-balancer appliance: a safe layer over DPDK ([`dpdk`]), the
//! run-to-completion workers that move packets ([`forward`]), their counters
//! ([`stats`]), and the process that ties them to a configuration file
//! ([`app`]). `unsafe` lives in [`dpdk`] only.

#![deny(unsafe_code)]

pub mod app;
pub mod dpdk;
pub mod forward;
pub mod probe;
pub mod stats;
