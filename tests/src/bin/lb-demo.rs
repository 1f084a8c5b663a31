//! The demo: a Full-NAT load balancer (config/demo.toml: wlc, three real
//! servers) carrying real HTTP traffic between network namespaces.
//!
//! It builds the one-arm topology of the end-to-end tests, starts
//! lb-dataplane in the load balancer's namespace, drives client traffic
//! through the VIP for about ten seconds while printing progress and
//! per-server rates, then stops the load balancer, prints its final
//! statistics table and the distribution per real server, and removes
//! everything, also on Ctrl-C.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use lb_tests::binary;
use lb_tests::topology::{ClientNet, OneArm, ServerSetup};

const CLIENT: &str = r#"
import sys, time, urllib.request
url, secs = sys.argv[1], float(sys.argv[2])
end = time.time() + secs
while time.time() < end:
    try:
        body = urllib.request.urlopen(url, timeout=2).read().decode()
        print("ok", body.split()[0], flush=True)
    except Exception as e:
        print("fail", type(e).__name__, flush=True)
"#;

const SECONDS: u64 = 10;
const CLIENTS: usize = 2;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lb-demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|e| e.to_string())?;
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let config = repo.join("config/demo.toml");
    println!("== building the topology: client 10.9.0.2, load balancer 10.0.0.1, real servers 10.0.0.10-12");
    let topo = OneArm::new("demo", 3, 8080, ClientNet::Routed, ServerSetup::Plain)
        .map_err(|e| e.to_string())?;

    println!(
        "== starting lb-dataplane with {} (Full-NAT, wlc, VIP 198.18.0.10:80)",
        config.display()
    );
    let scratch = lb_tests::golden::TempDir::new("demo");
    let socket = scratch.0.join("admin.sock");
    let mut lb = topo
        .lb
        .command(binary::path("lb-dataplane"))
        .arg("--config")
        .arg(&config)
        .arg("--admin-socket")
        .arg(&socket)
        .args(["--duration", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start lb-dataplane: {e}"))?;
    let mut stderr = lb.stderr.take().expect("piped");
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("forwarding") {
        let n = stderr.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("lb-dataplane exited:\n{seen}"));
        }
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = stderr.read_to_end(&mut sink);
    });

    println!("== {CLIENTS} clients requesting http://198.18.0.10/ for {SECONDS} s");
    let (tx, rx) = mpsc::channel::<String>();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut c = topo
            .client
            .command("python3")
            .args(["-c", CLIENT, "http://198.18.0.10/", &SECONDS.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let out = c.stdout.take().expect("piped");
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        clients.push(c);
    }
    drop(tx);
    let start = Instant::now();
    let mut total: BTreeMap<String, u64> = BTreeMap::new();
    let mut second: BTreeMap<String, u64> = BTreeMap::new();
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut tick = start + Duration::from_secs(1);
    loop {
        if stop.load(Ordering::Relaxed) {
            println!("== interrupted");
            break;
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                let mut w = line.split_whitespace();
                match (w.next(), w.next()) {
                    (Some("ok"), Some(server)) => {
                        ok += 1;
                        *total.entry(server.to_owned()).or_default() += 1;
                        *second.entry(server.to_owned()).or_default() += 1;
                    }
                    _ => failed += 1,
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if Instant::now() >= tick {
            let per: Vec<String> = second.iter().map(|(s, n)| format!("{s} {n}/s")).collect();
            println!(
                "[{:>2}s] {:>5} requests ok, {} failed   {}",
                tick.duration_since(start).as_secs(),
                ok,
                failed,
                per.join("  ")
            );
            second.clear();
            tick += Duration::from_secs(1);
        }
    }
    for mut c in clients {
        let _ = c.kill();
        let _ = c.wait();
    }
    for args in [&["-L", "-n", "--stats"][..], &["-L", "-n"][..]] {
        println!("\n== lb-ctl {}", args.join(" "));
        let out = Command::new(binary::path("lb-ctl"))
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        print!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = Command::new("kill")
        .args(["-TERM", &lb.id().to_string()])
        .status();
    let out = lb.wait_with_output().map_err(|e| e.to_string())?;
    println!("\n== lb-dataplane's report at exit");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    println!("\n== distribution seen by the clients");
    for (server, n) in &total {
        let share = 100.0 * *n as f64 / ok.max(1) as f64;
        println!("  {server}: {n:>6} requests ({share:.1}%)");
    }
    println!("  answered {ok} of {} requests", ok + failed);
    drop(topo);
    println!("== namespaces removed");
    if failed > 0 && !stop.load(Ordering::Relaxed) {
        return Err(format!("{failed} requests failed"));
    }
    Ok(())
}
