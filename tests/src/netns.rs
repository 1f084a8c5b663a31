//! Network namespaces and veth pairs for tests, removed when dropped.
//!
//! Names carry the test process's id, so concurrent runs never clash, and a
//! new namespace first sweeps away those left by processes that died before
//! they could clean up (a killed test run).

use std::io;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

const PREFIX: &str = "lbt";

fn ip(args: &[&str]) -> io::Result<Output> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}

/// Deletes namespaces made by test processes that no longer exist.
pub fn sweep_stale() {
    let Ok(out) = ip(&["netns", "list"]) else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let mut parts = name.split('-');
        if parts.next() != Some(PREFIX) {
            continue;
        }
        let Some(pid) = parts.next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            delete(name);
        }
    }
}

fn delete(name: &str) {
    // Processes left inside would keep the namespace's interfaces alive.
    if let Ok(out) = ip(&["netns", "pids", name]) {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
    let _ = ip(&["netns", "del", name]);
}

/// A network namespace owned by this test process.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `lbt-<pid>-<n>-<tag>` with its loopback up.
    pub fn new(tag: &str) -> io::Result<Netns> {
        static N: AtomicU32 = AtomicU32::new(0);
        sweep_stale();
        let name = format!(
            "{PREFIX}-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <ns> args...`.
    pub fn ip(&self, args: &[&str]) -> io::Result<Output> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Creates a veth pair `a`/`b` inside the namespace, both up.
    pub fn veth(&self, a: &str, b: &str) -> io::Result<()> {
        self.ip(&["link", "add", a, "type", "veth", "peer", "name", b])?;
        self.ip(&["link", "set", a, "up"])?;
        self.ip(&["link", "set", b, "up"])?;
        Ok(())
    }

    /// The names of the namespace's interfaces.
    pub fn links(&self) -> io::Result<Vec<String>> {
        let out = self.ip(&["-o", "link", "show"])?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or_default().to_owned())
            .collect())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        delete(&self.name);
    }
}

/// Whether a namespace of that name exists.
pub fn exists(name: &str) -> bool {
    ip(&["netns", "list"])
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name))
        })
        .unwrap_or(false)
}
