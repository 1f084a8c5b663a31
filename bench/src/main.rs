//! `lb-bench`: the pktgen-style generator (`gen`) and the benchmark runner
//! (`run`) that measures the dataplane against `dpdk-testpmd` in one run.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use lb_core::wire::MacAddr;

mod appliance;
mod loss;
mod memory;
mod noise;
mod pcap;
mod perf;
mod port_gen;
mod profile;
mod report;
mod run;
mod testpmd;

use appliance::Mode;
use profile::{Profile, Template};

#[derive(Debug, Parser)]
#[command(
    name = "lb-bench",
    version,
    about = "pktgen-style generator and benchmark runner for the lb dataplane",
    after_help = "Examples:\n  lb-bench gen --template data --flows 100000 --size 64 --out fnat-100k.pcap\n  lb-bench gen --template syn --flows 1000000 --port net_tap0,iface=gen0 --rate 100000 --duration 5\n  lb-bench run --quick\n  lb-bench run --out bench/results --readme README.md"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct ProfileArgs {
    /// What every packet is.
    #[arg(long, value_enum, default_value = "data")]
    template: Template,
    /// Flows (5-tuples) the profile walks.
    #[arg(long, default_value_t = 1000)]
    flows: u32,
    /// Packet size on the wire, FCS included (64 to 1518).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// The first client address (IPv6 for an IPv6 profile).
    #[arg(long, default_value = appliance::CLIENTS)]
    clients: IpAddr,
    /// Client ports, FIRST-LAST.
    #[arg(long, default_value = "1024-65535", value_parser = parse_range)]
    client_ports: (u16, u16),
    /// The service: VIP:port (or [VIP6]:port).
    #[arg(long, default_value = appliance::VIP)]
    vip: SocketAddr,
    /// Passes over the flows (data and UDP).
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Keep flow order in every pass instead of shuffling each.
    #[arg(long)]
    in_order: bool,
    /// Data: leave out the SYN that opens each flow.
    #[arg(long)]
    no_handshake: bool,
    /// Source MAC of the frames.
    #[arg(long, default_value = "02:00:00:00:01:01")]
    src_mac: MacAddr,
    /// Destination MAC (the device under test's port).
    #[arg(long, default_value = "02:70:63:61:70:00")]
    dst_mac: MacAddr,
}

impl ProfileArgs {
    fn profile(&self) -> Result<Profile, String> {
        let p = Profile {
            template: self.template,
            pkt_bytes: self.size,
            flows: self.flows,
            clients: self.clients,
            client_ports: self.client_ports,
            vip: self.vip,
            src_mac: self.src_mac,
            dst_mac: self.dst_mac,
            rounds: self.rounds,
            shuffle: !self.in_order,
            handshake: !self.no_handshake,
            replies: Vec::new(),
        };
        p.validate().map_err(|e| e.to_string())?;
        Ok(p)
    }
}

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?}: give FIRST-LAST, e.g. 1024-65535"))?;
    let port = |v: &str| {
        v.trim()
            .parse::<u16>()
            .map_err(|_| format!("{v:?} is not a port"))
    };
    Ok((port(a)?, port(b)?))
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make a traffic profile: write it to a pcap file, or send it on a
    /// DPDK port and count what comes back.
    Gen {
        #[command(flatten)]
        profile: ProfileArgs,
        /// Write the profile to this pcap file.
        #[arg(long, value_name = "FILE", required_unless_present = "port")]
        out: Option<PathBuf>,
        /// Send on this DPDK device (devargs, e.g. `net_tap0,iface=gen0`).
        #[arg(long, value_name = "DEVARGS")]
        port: Option<String>,
        /// Packets per second (flat out when not given).
        #[arg(long)]
        rate: Option<f64>,
        /// Seconds to send for.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        /// EAL arguments for the port run (default: no hugepages, lcore 0).
        #[arg(last = true, value_name = "EAL_ARGS")]
        eal: Vec<String>,
    },
    /// Run the benchmark matrix and write the results.
    Run {
        /// The one-minute smoke run: three cases, short windows.
        #[arg(long)]
        quick: bool,
        /// Where the results go.
        #[arg(long, default_value = "bench/results")]
        out: PathBuf,
        /// Scratch space for profiles and case logs.
        #[arg(long, default_value = "target/lb-bench")]
        work: PathBuf,
        /// The dataplane binary (default: beside this one).
        #[arg(long)]
        dataplane: Option<PathBuf>,
        /// The testpmd binary.
        #[arg(long, default_value = "dpdk-testpmd")]
        testpmd: PathBuf,
        /// Never reserve hugepages.
        #[arg(long)]
        no_huge: bool,
        /// Only cases of these modes.
        #[arg(long, value_enum, value_delimiter = ',')]
        modes: Vec<Mode>,
        /// Seconds of measurement per case.
        #[arg(long)]
        window: Option<f64>,
        /// Put the Markdown table into this README's bench section.
        #[arg(long)]
        readme: Option<PathBuf>,
        /// Record where each case's worker spends its cycles (`perf record`).
        #[arg(long)]
        perf: bool,
        /// Interleaved pairs per case: testpmd's 5tswap, then the
        /// appliance, fresh processes each; the case's ratio is the median
        /// of the pairs' (default 5, 2 with --quick).
        #[arg(long)]
        pairs: Option<u32>,
        /// Only the cases whose label contains this text (as the progress
        /// lines print it, e.g. "fnat established 100000 sessions, 64 B");
        /// may be given more than once.
        #[arg(long, value_name = "TEXT")]
        only: Vec<String>,
        /// Skip the loss runs below the maximum.
        #[arg(long)]
        no_loss: bool,
        /// Seconds of each loss window (default 60, the case window with
        /// --quick).
        #[arg(long)]
        loss_window: Option<f64>,
    },
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lb-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn seconds(s: f64, what: &str) -> Result<Duration, String> {
    if s.is_finite() && s > 0.0 {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(format!("{what} {s}: give a positive number of seconds"))
    }
}

fn real_main() -> Result<(), String> {
    match Cli::parse().command {
        Command::Gen {
            profile,
            out,
            port,
            rate,
            duration,
            eal,
        } => {
            let p = profile.profile()?;
            if let Some(out) = out {
                let n = p.write_pcap(&out)?;
                println!("{}: {n} packets", out.display());
            }
            if let Some(devargs) = port {
                if rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
                    return Err("--rate: give a positive number of packets per second".into());
                }
                const LIMIT: u64 = 4 << 20;
                if p.packets() > LIMIT {
                    return Err(format!(
                        "the profile has {} packets; a port run holds at most {LIMIT} in memory",
                        p.packets()
                    ));
                }
                let mut frames = Vec::new();
                p.for_each_frame(|f| frames.push(f.to_vec()));
                let eal = if eal.is_empty() {
                    lb_dataplane::probe::default_eal_args()
                } else {
                    eal
                };
                let r = port_gen::run(
                    &eal,
                    &devargs,
                    &frames,
                    rate,
                    seconds(duration, "--duration")?,
                )?;
                println!(
                    "{}",
                    serde_json::to_string(&r).expect("the report serialises")
                );
            }
            Ok(())
        }
        Command::Run {
            quick,
            out,
            work,
            dataplane,
            testpmd,
            no_huge,
            modes,
            window,
            readme,
            perf,
            pairs,
            only,
            no_loss,
            loss_window,
        } => {
            let dataplane = match dataplane {
                Some(p) => p,
                None => beside_me("lb-dataplane")?,
            };
            let default_window = if quick { 0.5 } else { 3.0 };
            let opts = run::Options {
                quick,
                dataplane,
                testpmd,
                work,
                allow_huge: !no_huge,
                warmup: Duration::from_secs(1),
                window: seconds(window.unwrap_or(default_window), "--window")?,
                modes,
                perf,
                generator: std::env::current_exe().map_err(|e| format!("where am I? {e}"))?,
                pairs: pairs.unwrap_or(if quick { 2 } else { 5 }),
                only,
                loss: !no_loss,
                loss_window: seconds(
                    loss_window.unwrap_or(if quick { default_window } else { 60.0 }),
                    "--loss-window",
                )?,
            };
            let results = run::run(&opts)?;
            let json = report::write(&results, &out)?;
            print!("{}", report::markdown(&results));
            eprintln!("lb-bench: results in {}", json.display());
            if let Some(readme) = readme {
                // The run's own Markdown report, as the README links it.
                let md = json.with_extension("md");
                let base = readme.parent().unwrap_or(Path::new(""));
                let link = md.strip_prefix(base).unwrap_or(&md).display().to_string();
                report::update_readme(&readme, &report::summary(&results, &link))?;
            }
            if !results.failures.is_empty() {
                let names: Vec<&str> = results.failures.iter().map(|f| f.case.as_str()).collect();
                return Err(format!(
                    "{} failed twice (the report lists them with their errors): {}",
                    names.len(),
                    names.join("; ")
                ));
            }
            Ok(())
        }
    }
}

/// A binary in this one's directory (cargo puts the workspace's together).
fn beside_me(name: &str) -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| format!("where am I? {e}"))?;
    let p = me.parent().unwrap_or(Path::new(".")).join(name);
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "no {name} beside {} (build the workspace, or pass --dataplane)",
            me.display()
        ))
    }
}
