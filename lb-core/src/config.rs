//! The dataplane's configuration file (TOML): schema, defaults and validation.
//!
//! Parsing is strict: an unknown key is an error, not a silently ignored typo.
//! Every error carries the line it concerns, so a message reads
//! `demo.toml:12: [[forward]] to: no port named "p9" (ports: p0, p1)`.

use std::collections::HashSet;
use std::fmt;

use serde::Deserialize;
use toml::Spanned;

/// A whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub eal: Eal,
    pub workers: Workers,
    #[serde(default)]
    pub mempool: MempoolConfig,
    #[serde(rename = "port")]
    pub ports: Vec<Port>,
    #[serde(default, rename = "forward")]
    pub forwards: Vec<Forward>,
}

/// `[eal]`: arguments for DPDK's environment abstraction layer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Eal {
    /// Passed to `rte_eal_init` as they are. Without `-l`/`-c`/`--lcores`
    /// the dataplane adds `-l` with the main and worker lcores; without
    /// `--file-prefix` it adds one unique to the process.
    #[serde(default)]
    pub args: Vec<String>,
}

/// `[workers]`: the lcores that run the forwarding loop.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workers {
    /// The main (control) lcore.
    #[serde(default)]
    pub main_lcore: u32,
    /// One worker per lcore; worker i polls queue i of every port.
    pub lcores: Spanned<Vec<u32>>,
    /// Packets per receive burst (1 to 64).
    #[serde(default = "default_burst")]
    pub burst: Spanned<u16>,
}

/// `[mempool]`: the packet-buffer pool shared by every port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MempoolConfig {
    /// Buffers in the pool; 0 sizes it from the ports' descriptor rings.
    #[serde(default)]
    pub mbufs: u32,
    /// Per-lcore cache.
    #[serde(default = "default_cache")]
    pub cache: u32,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig {
            mbufs: 0,
            cache: default_cache(),
        }
    }
}

/// `[[port]]`: one DPDK port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    /// The DPDK device name: a vdev name (`net_pcap0`) or a PCI address.
    pub name: Spanned<String>,
    /// Device arguments to probe at start-up (`net_pcap0,rx_pcap=in.pcap`);
    /// without it the device must come from EAL's own arguments.
    pub device: Option<Spanned<String>>,
    #[serde(default = "default_descriptors")]
    pub rx_descriptors: u16,
    #[serde(default = "default_descriptors")]
    pub tx_descriptors: u16,
    pub mtu: Option<u16>,
    #[serde(default = "default_true")]
    pub promiscuous: bool,
}

/// `[[forward]]`: packets received on `from` leave through `to`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forward {
    pub from: Spanned<String>,
    pub to: Spanned<String>,
}

fn default_burst() -> Spanned<u16> {
    Spanned::new(0..0, 32)
}
fn default_cache() -> u32 {
    256
}
fn default_descriptors() -> u16 {
    1024
}
fn default_true() -> bool {
    true
}

/// The largest receive burst the dataplane supports.
pub const MAX_BURST: u16 = 64;

/// What is wrong with a configuration file, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The key (path) concerned, e.g. `[[forward]] to`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

struct Checker<'a> {
    text: &'a str,
}

impl Checker<'_> {
    fn error(&self, span: std::ops::Range<usize>, key: &str, message: String) -> ConfigError {
        ConfigError {
            // Defaults carry an empty span at 0: they have no line.
            line: (span.end > 0).then(|| line_of(self.text, span.start)),
            key: key.to_owned(),
            message,
        }
    }
}

impl Config {
    /// Parses and validates a configuration file's text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            // toml's message already names the key; keep its first line only
            // (the rest is a snippet of the file) and give the line apart.
            let message = e.message().trim().to_owned();
            ConfigError {
                line: e.span().map(|s| line_of(text, s.start)),
                key: String::new(),
                message,
            }
        })?;
        config.validate(text)?;
        Ok(config)
    }

    fn validate(&self, text: &str) -> Result<(), ConfigError> {
        let c = Checker { text };
        let lcores = &self.workers.lcores;
        if lcores.get_ref().is_empty() {
            return Err(c.error(
                lcores.span(),
                "[workers] lcores",
                "needs at least one worker lcore, e.g. lcores = [1]".into(),
            ));
        }
        let mut seen = HashSet::new();
        for &l in lcores.get_ref() {
            if l == self.workers.main_lcore {
                return Err(c.error(
                    lcores.span(),
                    "[workers] lcores",
                    format!("lcore {l} is the main lcore; workers need lcores of their own"),
                ));
            }
            if !seen.insert(l) {
                return Err(c.error(
                    lcores.span(),
                    "[workers] lcores",
                    format!("lcore {l} is listed twice"),
                ));
            }
        }
        let burst = &self.workers.burst;
        if !(1..=MAX_BURST).contains(burst.get_ref()) {
            return Err(c.error(
                burst.span(),
                "[workers] burst",
                format!("{} is out of range: use 1 to {MAX_BURST}", burst.get_ref()),
            ));
        }
        if self.ports.is_empty() {
            return Err(ConfigError {
                line: None,
                key: "[[port]]".into(),
                message: "at least one port is needed".into(),
            });
        }
        let mut names = HashSet::new();
        for p in &self.ports {
            let name = p.name.get_ref();
            if name.is_empty() || name.contains(',') {
                return Err(c.error(
                    p.name.span(),
                    "[[port]] name",
                    format!("{name:?} is not a DPDK device name (e.g. \"net_pcap0\" or \"0000:01:00.0\")"),
                ));
            }
            if !names.insert(name.as_str()) {
                return Err(c.error(
                    p.name.span(),
                    "[[port]] name",
                    format!("port {name:?} is defined twice"),
                ));
            }
            if let Some(dev) = &p.device {
                let dev_name = dev.get_ref().split(',').next().unwrap_or_default();
                if dev_name != name {
                    return Err(c.error(
                        dev.span(),
                        "[[port]] device",
                        format!(
                            "the device {dev_name:?} does not match the port's name {name:?}; DPDK names the port after the device"
                        ),
                    ));
                }
            }
        }
        let known = || {
            self.ports
                .iter()
                .map(|p| p.name.get_ref().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if self.forwards.is_empty() {
            return Err(ConfigError {
                line: None,
                key: "[[forward]]".into(),
                message: "no forwarding rule: add [[forward]] from = \"...\" to = \"...\"".into(),
            });
        }
        for f in &self.forwards {
            for (end, key) in [(&f.from, "[[forward]] from"), (&f.to, "[[forward]] to")] {
                if !names.contains(end.get_ref().as_str()) {
                    return Err(c.error(
                        end.span(),
                        key,
                        format!("no port named {:?} (ports: {})", end.get_ref(), known()),
                    ));
                }
            }
        }
        let mut froms = HashSet::new();
        for f in &self.forwards {
            if !froms.insert(f.from.get_ref().as_str()) {
                return Err(c.error(
                    f.from.span(),
                    "[[forward]] from",
                    format!(
                        "port {:?} already forwards elsewhere; a port has one destination",
                        f.from.get_ref()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The index in `ports` of the port called `name`.
    pub fn port_index(&self, name: &str) -> Option<usize> {
        self.ports.iter().position(|p| p.name.get_ref() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[eal]
args = ["--no-huge"]

[workers]
lcores = [1]

[[port]]
name = "net_pcap0"
device = "net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap"

[[port]]
name = "net_null0"

[[forward]]
from = "net_pcap0"
to = "net_null0"
"#;

    #[test]
    fn parses_with_defaults() {
        let c = Config::from_toml(GOOD).unwrap();
        assert_eq!(c.eal.args, ["--no-huge"]);
        assert_eq!(c.workers.lcores.get_ref(), &[1]);
        assert_eq!(*c.workers.burst.get_ref(), 32);
        assert_eq!(c.ports[0].rx_descriptors, 1024);
        assert!(c.ports[1].device.is_none());
        assert_eq!(c.port_index("net_null0"), Some(1));
        assert_eq!(c.mempool.cache, 256);
    }

    fn err(text: &str) -> ConfigError {
        Config::from_toml(text).unwrap_err()
    }

    #[test]
    fn unknown_port_in_forward_names_line_and_ports() {
        let e = err(&GOOD.replace("to = \"net_null0\"", "to = \"p9\""));
        assert_eq!(e.line, Some(17));
        assert_eq!(e.key, "[[forward]] to");
        assert!(e.message.contains("\"p9\""), "{e}");
        assert!(e.message.contains("net_pcap0, net_null0"), "{e}");
    }

    #[test]
    fn unknown_key_is_an_error_with_its_line() {
        let e = err(&GOOD.replace("lcores = [1]", "lcores = [1]\nlcoers = [2]"));
        assert_eq!(e.line, Some(7));
        assert!(e.message.contains("lcoers"), "{e}");
    }

    #[test]
    fn malformed_toml_reports_line() {
        let e = err("[workers\nlcores = [1]\n");
        assert_eq!(e.line, Some(1));
    }

    #[test]
    fn missing_section_is_named() {
        let e = err("[[port]]\nname = \"x\"\n");
        assert!(e.message.contains("workers"), "{e}");
    }

    #[test]
    fn semantic_checks() {
        let e = err(&GOOD.replace("lcores = [1]", "lcores = [0]"));
        assert!(e.message.contains("main lcore"), "{e}");
        let e = err(&GOOD.replace("lcores = [1]", "lcores = [1, 1]"));
        assert!(e.message.contains("twice"), "{e}");
        let e = err(&GOOD.replace("lcores = [1]", "lcores = [1]\nburst = 65"));
        assert_eq!((e.key.as_str(), e.line), ("[workers] burst", Some(7)));
        let e = err(&GOOD.replace("name = \"net_null0\"", "name = \"net_pcap0\""));
        assert!(e.message.contains("defined twice"), "{e}");
        let e = err(&GOOD.replace("device = \"net_pcap0,", "device = \"net_pcap1,"));
        assert_eq!((e.key.as_str(), e.line), ("[[port]] device", Some(10)));
        let e = err(&format!(
            "{GOOD}\n[[forward]]\nfrom = \"net_pcap0\"\nto = \"net_pcap0\"\n"
        ));
        assert!(e.message.contains("already forwards"), "{e}");
    }
}
