//! The run-to-completion forwarding loop of one worker: receive a burst on a
//! port, send it out of the port the configuration pairs it with, count.
//!
//! Packets are not touched. This is the skeleton the load-balancer workers
//! grow from: it owns its queues, keeps one preallocated burst, and checks
//! the stop flag once per pass over its ports.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::dpdk::{MbufBurst, RxQueue, TxQueue};
use crate::stats::{Counter, WorkerCounters};

/// One worker's queues and routes.
#[derive(Debug)]
pub struct ForwardWorker {
    /// (receive queue, index into `tx`) pairs.
    pub routes: Vec<(RxQueue, usize)>,
    pub tx: Vec<TxQueue>,
    pub burst: usize,
    pub counters: WorkerCounters,
    pub stop: Arc<AtomicBool>,
}

impl ForwardWorker {
    /// Polls until the stop flag is set.
    pub fn run(mut self) {
        let mut burst = MbufBurst::with_limit(self.burst);
        while !self.stop.load(Ordering::Relaxed) {
            for (rx, t) in &mut self.routes {
                let n = rx.rx_burst(&mut burst);
                if n == 0 {
                    self.counters.add(Counter::IdlePolls, 1);
                    continue;
                }
                self.counters.add(Counter::BusyPolls, 1);
                self.counters.add(Counter::RxPackets, n as u64);
                let sent = self.tx[*t].tx_burst(&mut burst);
                self.counters.add(Counter::TxPackets, sent as u64);
                if !burst.is_empty() {
                    self.counters.add(Counter::DropTxFull, burst.len() as u64);
                    burst.clear();
                }
            }
        }
    }
}
