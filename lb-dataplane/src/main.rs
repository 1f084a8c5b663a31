//! The `lb-dataplane` binary: run the dataplane from a configuration file, or
//! probe devices.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use lb_dataplane::{app, probe};

#[derive(Debug, Parser)]
#[command(
    name = "lb-dataplane",
    version,
    about = "DPDK userspace L4 load balancer: the dataplane process",
    after_help = "Examples:\n  lb-dataplane -c config/demo.toml --idle-exit-ms 500\n  lb-dataplane -c config/forward.toml -- --vdev=net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap\n  lb-dataplane probe net_null0 net_tap0,iface=lbtap0"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The configuration file (TOML).
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Stop once no packet has arrived for this many milliseconds.
    #[arg(long, value_name = "MS")]
    idle_exit_ms: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Also write the exit report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Serve the admin socket at this path (overrides [admin] socket).
    #[arg(long, value_name = "PATH")]
    admin_socket: Option<PathBuf>,
    /// Only validate the configuration: print what is wrong (with its key
    /// and line) and exit 1, or say it is valid and exit 0. Starts nothing.
    #[arg(long)]
    check: bool,
    /// Print the manual page (roff) and exit; for packaging.
    #[arg(long, hide = true)]
    man: bool,
    /// EAL arguments, appended to the configuration's.
    #[arg(last = true, value_name = "EAL_ARGS")]
    eal: Vec<String>,
}

/// The manual page, from the command line's own definition.
fn man_page() -> String {
    use clap::CommandFactory;
    let cmd = Cli::command().name("lb-dataplane");
    let man = clap_mangen::Man::new(cmd).section("8").manual("lb manual");
    let mut out = Vec::new();
    if let Err(e) = man.render(&mut out) {
        return format!("cannot render the manual page: {e}\n");
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Probe devices, start a port on each, print what the driver reports.
    Probe {
        /// Print one JSON object per device.
        #[arg(long)]
        json: bool,
        /// Device arguments, e.g. `net_null0` or `net_pcap0,rx_pcap=in.pcap`.
        #[arg(required = true, value_name = "DEVARGS")]
        devices: Vec<String>,
        /// EAL arguments instead of the defaults (no hugepages, no PCI, lcore 0).
        #[arg(last = true, value_name = "EAL_ARGS")]
        eal: Vec<String>,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.man {
        print!("{}", man_page());
        return ExitCode::SUCCESS;
    }
    init_logging();
    let result = match cli.command {
        Some(Command::Probe { json, devices, eal }) => run_probe(json, &devices, eal),
        None => run(&cli),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("lb-dataplane: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The tunable that has glibc's malloc advise transparent huge pages for
/// its large allocations (glibc 2.35 and later).
const HUGE_MALLOC: &str = "glibc.malloc.hugetlb=1";

/// The session tables are most of the dataplane's memory and are read at
/// random: in 4 KiB pages nearly every lookup also misses the TLB (6% of
/// the engine's time at 1M sessions). glibc reads its tunables only when a
/// program starts, so the dataplane starts itself again, once, with
/// [`HUGE_MALLOC`]; the same process (exec keeps the pid). A
/// `GLIBC_TUNABLES` already in the environment, even empty, is left alone:
/// that is how to opt out. Returns only if nothing was done or the exec
/// failed (the run then goes on in 4 KiB pages).
fn restart_with_huge_malloc() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("GLIBC_TUNABLES").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("GLIBC_TUNABLES", HUGE_MALLOC)
        .exec();
    tracing::warn!("cannot restart with {HUGE_MALLOC} ({err}); the session tables use 4 KiB pages");
}

fn run(cli: &Cli) -> Result<ExitCode, String> {
    restart_with_huge_malloc();
    let Some(path) = &cli.config else {
        return Err("no configuration: pass --config FILE (see config/ for examples)".into());
    };
    let config = app::load_config(path).map_err(|e| e.to_string())?;
    if cli.check {
        let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        let role = match &config.lb {
            Some(lb) => format!(
                "a load balancer with {}",
                count(lb.services.len(), "service")
            ),
            None => format!("a forwarder with {}", count(config.forwards.len(), "rule")),
        };
        println!("{}: valid, {role}", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|e| format!("cannot install the handler for signal {signal}: {e}"))?;
    }
    // SIGHUP re-reads the file's services and timeouts (on the control
    // thread, which owns them), as daemons do.
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))
        .map_err(|e| format!("cannot install the handler for SIGHUP: {e}"))?;
    let duration = match cli.duration {
        Some(s) if !(s.is_finite() && s > 0.0) => {
            return Err(format!("--duration {s}: give a positive number of seconds"))
        }
        s => s.map(Duration::from_secs_f64),
    };
    let opts = app::RunOptions {
        extra_eal_args: cli.eal.clone(),
        idle_exit: cli.idle_exit_ms.map(Duration::from_millis),
        duration,
        admin_socket: cli.admin_socket.clone(),
        reload: Some((reload, path.clone())),
    };
    let report = app::run(&config, &opts, stop).map_err(|e| e.to_string())?;
    print!("{}", report.to_table());
    if let Some(out) = &cli.report {
        let json = serde_json::to_string_pretty(&report).expect("the report serialises");
        std::fs::write(out, json)
            .map_err(|e| format!("cannot write the report to `{}`: {e}", out.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn run_probe(json: bool, devices: &[String], eal: Vec<String>) -> Result<ExitCode, String> {
    let eal = if eal.is_empty() {
        probe::default_eal_args()
    } else {
        eal
    };
    let results = probe::probe(&eal, devices).map_err(|e| e.to_string())?;
    let mut all_ok = true;
    for r in &results {
        all_ok &= r.ok;
        if json {
            println!(
                "{}",
                serde_json::to_string(r).expect("a probe result serialises")
            );
        } else if r.ok {
            let link = r.link.expect("set when ok");
            println!(
                "{}: ok driver={} mac={} link={} speed={}Mbps",
                r.port,
                r.driver.as_deref().unwrap_or("?"),
                r.mac.as_deref().unwrap_or("?"),
                if link.up { "up" } else { "down" },
                link.speed_mbps
            );
        } else {
            println!("{}: FAILED {}", r.port, r.error.as_deref().unwrap_or("?"));
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
