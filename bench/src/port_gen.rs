//! The generator on a real DPDK port, as Pktgen-DPDK runs: the profile's
//! frames sent in order, round and round, flat out or at a target rate,
//! and whatever the port receives counted. What the port refuses is lost,
//! as on a wire: a loss test reads it from `refused`.

use std::time::{Duration, Instant};

use lb_dataplane::dpdk::{
    monotonic_ns, Eal, MbufBurst, Mempool, Port, PortConfig, DEFAULT_DATA_ROOM,
};
use serde::Serialize;

/// The most frames a paced generator sends back to back.
const MAX_AHEAD: u64 = 64;
/// Refusals are counted in slots of this length (ns) on the machine's
/// monotonic clock, so that a loss run can set them beside the
/// appliance's stalls.
pub const REFUSAL_SLOT_NS: u64 = 100_000;
/// The most slots with refusals a run records (the rest are only counted).
const MAX_REFUSAL_SLOTS: usize = 1 << 20;

/// What a run on a port did.
#[derive(Debug, Clone, Serialize)]
pub struct PortReport {
    pub port: String,
    pub driver: String,
    pub seconds: f64,
    pub sent: u64,
    pub received: u64,
    /// Frames the port refused (its queue full: the far side is not
    /// keeping up). They are dropped, as a wire would, and counted here.
    pub refused: u64,
    /// Frames a paced run did not offer because it was descheduled: it
    /// skips what it missed rather than sending it in one burst.
    pub skipped: u64,
    /// When frames were refused: (slot start on `CLOCK_MONOTONIC` in ns,
    /// frames refused in that slot of [`REFUSAL_SLOT_NS`]), in time order.
    pub refusals: Vec<(u64, u64)>,
    pub sent_pps: f64,
    pub received_pps: f64,
}

/// Sends `frames` on the device `devargs` for `duration`, at `rate`
/// packets per second or as fast as the port takes them.
pub fn run(
    eal_args: &[String],
    devargs: &str,
    frames: &[Vec<u8>],
    rate: Option<f64>,
    duration: Duration,
) -> Result<PortReport, String> {
    if frames.is_empty() {
        return Err("the profile has no frames".into());
    }
    let eal = Eal::init(eal_args).map_err(|e| e.to_string())?;
    eal.probe(devargs).map_err(|e| format!("{devargs}: {e}"))?;
    let name = devargs.split(',').next().unwrap_or_default();
    let pool = Mempool::create(&eal, "gen_mbufs", 16_383, 256, DEFAULT_DATA_ROOM)
        .map_err(|e| e.to_string())?;
    let (port, mut rx, mut tx) =
        Port::open(&eal, name, pool, &PortConfig::default()).map_err(|e| e.to_string())?;
    let (mut rxq, mut txq) = (rx.remove(0), tx.remove(0));
    // Like pktgen, send only once the link is up, and give the far side a
    // moment to finish its own half of the connection (a memif server's
    // control thread shares a core with us).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !port.link().up {
        if Instant::now() > deadline {
            return Err(format!("{name}: the link did not come up within 5 s"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    let mut out = MbufBurst::new();
    let mut inbox = MbufBurst::new();
    let (mut sent, mut received, mut refused) = (0u64, 0u64, 0u64);
    // Frames a paced run did not offer because it fell behind.
    let mut skipped = 0u64;
    let mut refusals: Vec<(u64, u64)> = Vec::new();
    let mut next = 0usize;
    let start = Instant::now();
    loop {
        let elapsed = start.elapsed();
        if elapsed >= duration {
            break;
        }
        // Flat out, or as many as the rate allows by now. A generator that
        // fell behind (descheduled) skips what it missed, and counts it,
        // instead of catching up in a burst at its own top speed, which no
        // wire at this rate would carry and which the far side's ring would
        // refuse (capping each pass alone does not do it: refused frames
        // are quick to offer). The report's rates say what it achieved.
        let allowed = match rate {
            None => u64::MAX,
            Some(r) => {
                // A rate times seconds, floored: saturating and non-negative.
                #[allow(clippy::cast_possible_truncation)]
                let due = ((r * elapsed.as_secs_f64()) as u64).saturating_sub(skipped);
                let offered = sent + refused;
                if due > offered + MAX_AHEAD {
                    skipped += due - offered - MAX_AHEAD;
                }
                offered + MAX_AHEAD.min(due.saturating_sub(offered))
            }
        };
        while !out.is_full() && sent + refused + (out.len() as u64) < allowed {
            let Some(mut m) = pool.alloc() else { break };
            let f = &frames[next];
            let len = u16::try_from(f.len()).map_err(|_| "a frame is too long")?;
            let Some(room) = m.append(len) else {
                return Err(format!("a {len}-byte frame does not fit one buffer"));
            };
            room.copy_from_slice(f);
            next = (next + 1) % frames.len();
            let _ = out.push(m);
        }
        let before = out.len();
        let n = txq.tx_burst(&mut out);
        sent += n as u64;
        let lost = (before - n) as u64;
        refused += lost;
        if lost > 0 {
            let slot = monotonic_ns() / REFUSAL_SLOT_NS * REFUSAL_SLOT_NS;
            let room = refusals.len() < MAX_REFUSAL_SLOTS;
            match refusals.last_mut() {
                Some((at, n)) if *at == slot => *n += lost,
                _ if room => refusals.push((slot, lost)),
                _ => {}
            }
        }
        out.clear();
        let got = rxq.rx_burst(&mut inbox);
        received += got as u64;
        inbox.clear();
    }
    let seconds = start.elapsed().as_secs_f64();
    out.clear();
    Ok(PortReport {
        port: port.name().to_owned(),
        driver: port.driver().to_owned(),
        seconds,
        sent,
        received,
        refused,
        skipped,
        refusals,
        sent_pps: sent as f64 / seconds,
        received_pps: received as f64 / seconds,
    })
}
