//! One benchmark case on the appliance: the `lb-dataplane` binary with one
//! worker core, its port `net_pcap0` replaying a profile forever
//! (`infinite_rx=1`) and its port `net_null0` swallowing what it forwards.
//! Counters come from the admin socket before and after a fixed window.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::noise::{preemptions, CpuTimes};

/// The forwarding modes, as the configuration spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Dr,
    Nat,
    Tun,
    Fnat,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Dr, Mode::Nat, Mode::Tun, Mode::Fnat];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Dr => "dr",
            Mode::Nat => "nat",
            Mode::Tun => "tun",
            Mode::Fnat => "fnat",
        }
    }
}

/// The service the profiles are sent to.
pub const VIP: &str = "198.18.0.10:80";
/// The first client address of every profile.
pub const CLIENTS: &str = "172.16.0.1";

/// The appliance's side of a case. The real servers' port has an MTU of
/// 1600, as IPIP deployments have, so a 1500-byte frame still fits after
/// the tunnel's outer header.
#[derive(Debug, Clone)]
pub struct Setup {
    pub mode: Mode,
    pub scheduler: String,
    pub reals: u32,
    /// Session table slots (the worker's capacity).
    pub capacity: u32,
    /// Full-NAT local addresses.
    pub local_addresses: u32,
    /// Port 0's device: the profile's replay (see [`replay`]) or a memif.
    pub input: String,
    pub mbufs: u32,
    pub data_room: u16,
    pub eal_memory: Vec<String>,
    pub admin_socket: PathBuf,
    /// Worker cores: one on CPU 1; two share CPU 0 with the control
    /// thread (idle under load) and take CPU 1.
    pub workers: u32,
}

/// The device that replays `pcaps` forever, one file per RX queue.
pub fn replay(pcaps: &[PathBuf]) -> String {
    let mut d = "net_pcap0".to_owned();
    for p in pcaps {
        d += &format!(",rx_pcap={}", p.display());
    }
    d + ",infinite_rx=1"
}

/// Real server `i`: 10.1.x.y on the null port's network.
pub fn real(i: u32) -> String {
    format!("10.1.{}.{}", 1 + i / 250, 1 + i % 250)
}

/// Full-NAT local address `i`.
pub fn local_address(i: u32) -> String {
    format!("10.1.255.{}", 1 + i)
}

impl Setup {
    /// The configuration file for this case.
    pub fn config(&self) -> String {
        let mut eal: Vec<String> = self
            .eal_memory
            .iter()
            .cloned()
            .chain(
                [
                    "--no-shconf",
                    "--no-pci",
                    "--log-level=lib.eal:warning",
                    "--log-level=pmd.net.pcap:warning",
                ]
                .map(String::from),
            )
            .collect();
        let lcores: Vec<u32> = (1..=self.workers.max(1)).collect();
        if self.workers > 1 {
            // lcore k on CPU k-1: worker 1 beside the control thread.
            let map: Vec<String> = std::iter::once("0@0".to_owned())
                .chain(lcores.iter().map(|l| format!("{l}@{}", l - 1)))
                .collect();
            eal.push(format!("--lcores={}", map.join(",")));
        }
        let mut c = format!(
            "[eal]\nargs = {eal:?}\n\n[workers]\nmain_lcore = 0\nlcores = {lcores:?}\n\n\
             [mempool]\nmbufs = {}\ndata_room = {}\n\n\
             [sessions]\ncapacity = {}\n\n\
             [admin]\nsocket = {:?}\n\n\
             [[port]]\nname = \"{}\"\ndevice = \"{}\"\n\
             addresses = [\"172.16.0.254/12\"]\n\n\
             [[port]]\nname = \"net_null0\"\ndevice = \"net_null0,no-rx=1\"\nmtu = 1600\n\
             addresses = [\"10.1.0.254/16\"]\n\n\
             # The clients, for what goes back to them (Full-NAT replies),\n\
             # behind a router whose MAC is known.\n\
             [[route]]\nprefix = \"172.16.0.0/16\"\nport = \"{}\"\ngateway = \"172.16.255.1\"\n\n\
             [[neighbor]]\naddress = \"172.16.255.1\"\nmac = \"02:00:00:00:01:01\"\nport = \"{}\"\n\n",
            self.mbufs,
            self.data_room,
            self.capacity,
            self.admin_socket.display().to_string(),
            self.input.split(',').next().unwrap_or_default(),
            self.input,
            self.input.split(',').next().unwrap_or_default(),
            self.input.split(',').next().unwrap_or_default(),
        );
        for i in 0..self.reals {
            c += &format!(
                "[[neighbor]]\naddress = \"{}\"\nmac = \"02:00:00:01:{:02x}:{:02x}\"\nport = \"net_null0\"\n\n",
                real(i),
                i >> 8,
                i & 0xff
            );
        }
        let (vip, port) = VIP.split_once(':').expect("VIP is address:port");
        c += &format!(
            "[[service]]\nprotocol = \"tcp\"\nvip = \"{vip}\"\nport = {port}\nscheduler = \"{}\"\n",
            self.scheduler
        );
        if self.mode == Mode::Fnat {
            let laddrs: Vec<String> = (0..self.local_addresses).map(local_address).collect();
            c += &format!("local_addresses = {laddrs:?}\n");
        }
        c += "\n";
        for i in 0..self.reals {
            c += &format!(
                "[[service.real]]\naddress = \"{}\"\nport = {port}\nmode = \"{}\"\n\n",
                real(i),
                self.mode.name()
            );
        }
        c
    }
}

/// A snapshot of the counters that matter.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub rx: u64,
    pub tx: u64,
    pub created: u64,
    pub sessions: u64,
    /// The worker's longest gap between two loop passes so far, ns.
    pub max_loop_gap_ns: u64,
    /// Every drop counter: the engine's and the worker's.
    pub drops: Vec<(String, u64)>,
    /// The machine's CPU times, for its steal time.
    pub cpu: CpuTimes,
    /// The worker's preemptions so far.
    pub preempted: u64,
}

/// The running appliance of one case.
#[derive(Debug)]
pub struct Appliance {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Appliance {
    /// Writes the configuration into `dir` and starts the binary; returns
    /// once its admin socket answers.
    pub fn start(binary: &Path, setup: &Setup, dir: &Path) -> Result<Appliance, String> {
        let config = dir.join("appliance.toml");
        std::fs::write(&config, setup.config())
            .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
        let log = dir.join("appliance.log");
        let log_file = std::fs::File::create(&log)
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let _ = std::fs::remove_file(&setup.admin_socket);
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config)
            .env("LB_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        let mut a = Appliance {
            child,
            socket: setup.admin_socket.clone(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if a.ask("version").is_ok() {
                return Ok(a);
            }
            if let Ok(Some(status)) = a.child.try_wait() {
                return Err(format!(
                    "the appliance exited ({status}) before it served its admin socket:\n{}",
                    a.log_tail()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the appliance did not serve its admin socket within 120 s:\n{}",
                    a.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn ask(&self, op: &str) -> Result<Value, String> {
        let mut s = UnixStream::connect(&self.socket).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        writeln!(s, "{{\"v\": 1, \"op\": \"{op}\"}}").map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(s)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&line).map_err(|e| e.to_string())?;
        if v["ok"] != Value::Bool(true) {
            return Err(format!("{op}: {}", v["error"]));
        }
        Ok(v["data"].clone())
    }

    /// Reads the counters now.
    pub fn sample(&self) -> Result<Sample, String> {
        let at = Instant::now();
        let c = self.ask("counters")?;
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        let workers = c["workers"].as_array().cloned().unwrap_or_default();
        let dps: Vec<&Value> = workers
            .iter()
            .map(|w| &w["dataplane"]["counters"])
            .collect();
        let sum = |key: &str| dps.iter().map(|dp| n(&dp[key])).sum::<u64>();
        let mut drops: Vec<(String, u64)> = Vec::new();
        for source in std::iter::once(&c["total"]).chain(dps.iter().copied()) {
            for (k, v) in source.as_object().into_iter().flatten() {
                if k.starts_with("drop_") {
                    match drops.iter_mut().find(|(name, _)| name == k) {
                        Some((_, total)) => *total += n(v),
                        None => drops.push((k.clone(), n(v))),
                    }
                }
            }
        }
        Ok(Sample {
            at,
            rx: sum("rx_packets"),
            tx: sum("tx_packets"),
            created: n(&c["total"]["sessions_created"]),
            sessions: workers.iter().map(|w| n(&w["sessions"])).sum(),
            max_loop_gap_ns: dps
                .iter()
                .map(|dp| n(&dp["max_loop_gap_ns"]))
                .max()
                .unwrap_or(0),
            drops,
            cpu: CpuTimes::now(),
            preempted: preemptions(self.pid()),
        })
    }

    /// Each worker's last stalls.
    pub fn stalls(&self) -> Result<lb_admin_proto::Stalls, String> {
        serde_json::from_value(self.ask("stalls")?).map_err(|e| format!("stalls: {e}"))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the appliance (SIGTERM, then SIGKILL after 10 s).
    pub fn stop(mut self) -> Result<(), String> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        Err(format!(
            "the appliance ignored SIGTERM:\n{}",
            self.log_tail()
        ))
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_is_valid_for_every_mode() {
        for mode in Mode::ALL {
            let s = Setup {
                mode,
                scheduler: "mh".into(),
                reals: 1000,
                capacity: 1 << 12,
                local_addresses: 4,
                input: replay(&["/tmp/x.pcap".into()]),
                mbufs: 8191,
                data_room: 384,
                eal_memory: vec!["--no-huge".into(), "-m".into(), "512".into()],
                admin_socket: "/tmp/x.sock".into(),
                workers: 1,
            };
            let c = lb_core::config::Config::from_toml(&s.config())
                .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
            let lb = c.lb.expect("load-balancer mode");
            assert_eq!(
                lb.neighbors.len(),
                1001,
                "the reals and the clients' router"
            );
            assert_eq!(c.services[0].reals.len(), 1000);
            assert_eq!(real(999), "10.1.4.250");
            assert_eq!(c.workers.lcores.get_ref(), &[1]);
            assert!(!c.eal.args.iter().any(|a| a.starts_with("--lcores")));
        }
    }

    #[test]
    fn two_workers_read_a_file_each_and_share_cpu_0_with_the_control_thread() {
        let s = Setup {
            mode: Mode::Fnat,
            scheduler: "rr".into(),
            reals: 10,
            capacity: 1 << 12,
            local_addresses: 4,
            input: replay(&["/tmp/a.pcap".into(), "/tmp/b.pcap".into()]),
            mbufs: 8191,
            data_room: 384,
            eal_memory: vec!["--no-huge".into()],
            admin_socket: "/tmp/x.sock".into(),
            workers: 2,
        };
        assert_eq!(
            s.input,
            "net_pcap0,rx_pcap=/tmp/a.pcap,rx_pcap=/tmp/b.pcap,infinite_rx=1"
        );
        let c = lb_core::config::Config::from_toml(&s.config()).unwrap();
        assert_eq!(c.workers.lcores.get_ref(), &[1, 2]);
        assert!(c.eal.args.contains(&"--lcores=0@0,1@0,2@1".to_owned()));
    }
}
