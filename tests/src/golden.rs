//! Golden pcap cases: a directory with a `config.toml`, inputs `in<K>.pcap`
//! and expected outputs `expect<K>.pcap` for ports `net_pcap<K>`, and a
//! README saying how the packets were made and checked. An optional
//! `expect-counters.txt` lists counters of the run's report that must have
//! given values (`engine.drop_l3_malformed = 1`, `worker.drop_neighbor = 0`;
//! worker counters are summed over workers).
//!
//! The runner starts the real `lb-dataplane` binary with one
//! `--vdev=net_pcap<K>,rx_pcap=...,tx_pcap=...` per port, waits until it has
//! been idle for a while and exits, then compares every port's output with
//! its expected capture and reports differences by packet and field.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{binary, diff, pcap};

/// How long the binary may run before the case fails as hung.
const TIMEOUT: Duration = Duration::from_secs(60);

/// One case directory.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub dir: PathBuf,
    /// How many `net_pcap` ports the case uses.
    pub ports: usize,
}

/// The golden cases shipped in the repository.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden")
}

/// Every case below `root`, by name.
pub fn cases(root: &Path) -> Vec<Case> {
    let mut out: Vec<Case> = std::fs::read_dir(root)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", root.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("config.toml").exists())
        .map(|dir| {
            let ports = (0..)
                .take_while(|k| {
                    dir.join(format!("in{k}.pcap")).exists()
                        || dir.join(format!("expect{k}.pcap")).exists()
                })
                .count();
            Case {
                name: dir.file_name().unwrap().to_string_lossy().into_owned(),
                dir,
                ports,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Runs `cmd`, killing it if it outlives `timeout`.
pub fn output_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let out = child.wait_with_output().map_err(|e| e.to_string())?;
                return Err(format!(
                    "{cmd:?} hung for {timeout:?} and was killed; stderr:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    child.wait_with_output().map_err(|e| e.to_string())
}

/// A scratch directory removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory under the system's temporary directory.
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "lb-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs one case through the binary; `Err` describes every difference.
pub fn run(case: &Case) -> Result<(), String> {
    let tmp = TempDir::new(&format!("golden-{}", case.name));
    let empty = tmp.0.join("empty.pcap");
    pcap::write(&empty, &[]).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(binary::path("lb-dataplane"));
    cmd.arg("--config")
        .arg(case.dir.join("config.toml"))
        .args(["--idle-exit-ms", "1000", "--report"])
        .arg(tmp.0.join("report.json"))
        .arg("--");
    for k in 0..case.ports {
        let input = case.dir.join(format!("in{k}.pcap"));
        let input = if input.exists() { input } else { empty.clone() };
        cmd.arg(format!(
            "--vdev=net_pcap{k},rx_pcap={},tx_pcap={}",
            input.display(),
            tmp.0.join(format!("out{k}.pcap")).display()
        ));
    }
    let out = output_with_timeout(&mut cmd, TIMEOUT)?;
    if !out.status.success() {
        return Err(format!(
            "case {}: lb-dataplane failed ({}):\n{}",
            case.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut problems = Vec::new();
    for k in 0..case.ports {
        let expect_path = case.dir.join(format!("expect{k}.pcap"));
        let expected = if expect_path.exists() {
            pcap::read(&expect_path).map_err(|e| e.to_string())?.packets
        } else {
            Vec::new()
        };
        let got = pcap::read(&tmp.0.join(format!("out{k}.pcap")))
            .map_err(|e| {
                format!(
                    "case {}: port net_pcap{k} wrote no readable output: {e}",
                    case.name
                )
            })?
            .packets;
        if let Some(d) = diff::compare(&expected, &got) {
            problems.push(format!("case {}, port net_pcap{k}:\n{d}", case.name));
        }
    }
    let counters = case.dir.join("expect-counters.txt");
    if counters.exists() {
        let text = std::fs::read_to_string(&counters).map_err(|e| e.to_string())?;
        let report =
            std::fs::read_to_string(tmp.0.join("report.json")).map_err(|e| e.to_string())?;
        let report: serde_json::Value = serde_json::from_str(&report).map_err(|e| e.to_string())?;
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (name, want) = line
                .split_once('=')
                .ok_or_else(|| format!("{}: {line:?} is not `name = value`", counters.display()))?;
            let (name, want) = (
                name.trim(),
                want.trim()
                    .parse::<u64>()
                    .map_err(|e| format!("{line:?}: {e}"))?,
            );
            let got = counter(&report, name)
                .ok_or_else(|| format!("case {}: no counter {name} in the report", case.name))?;
            if got != want {
                problems.push(format!(
                    "case {}: counter {name}: expected {want}, got {got}",
                    case.name
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n\n"))
    }
}

/// A counter of a run report: `engine.NAME`, or `worker.NAME` summed over
/// workers.
fn counter(report: &serde_json::Value, name: &str) -> Option<u64> {
    let (scope, key) = name.split_once('.')?;
    match scope {
        "engine" => report.get("engine")?.get("counters")?.get(key)?.as_u64(),
        "worker" => report
            .get("workers")?
            .as_array()?
            .iter()
            .map(|w| {
                w.get("counters")
                    .and_then(|c| c.get(key))
                    .and_then(serde_json::Value::as_u64)
            })
            .sum(),
        _ => None,
    }
}
