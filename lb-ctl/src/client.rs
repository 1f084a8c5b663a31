//! The admin socket's client side: one JSON request per line, one answer
//! per line (see lb-dataplane's admin module for the protocol).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

/// Why a request did not succeed, with the exit code that goes with it.
#[derive(Debug)]
pub enum Failure {
    /// The dataplane refused the request (exit 1).
    Rejected(String),
    /// The socket could not be reached (exit 3).
    Unreachable { path: PathBuf, reason: String },
    /// The dataplane speaks another protocol version (exit 4).
    Version(String),
}

/// The protocol version this lb-ctl speaks.
pub const PROTOCOL_VERSION: u64 = 1;

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Rejected(_) => 1,
            Failure::Unreachable { .. } => 3,
            Failure::Version(_) => 4,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Rejected(e) => f.write_str(e),
            Failure::Version(e) => f.write_str(e),
            Failure::Unreachable { path, reason } => write!(
                f,
                "cannot reach the dataplane's admin socket {}: {reason} (is lb-dataplane running with [admin] socket = \"{}\"? --socket or LB_CTL_SOCKET choose another path)",
                path.display(),
                path.display()
            ),
        }
    }
}

/// A connection to the dataplane.
#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    w: UnixStream,
    r: BufReader<UnixStream>,
}

impl Client {
    pub fn connect(path: &Path) -> Result<Client, Failure> {
        let unreachable = |e: std::io::Error| Failure::Unreachable {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        let w = UnixStream::connect(path).map_err(unreachable)?;
        w.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(unreachable)?;
        let r = BufReader::new(w.try_clone().map_err(unreachable)?);
        let mut c = Client {
            path: path.to_owned(),
            w,
            r,
        };
        // Versions first: a dataplane of another protocol says which it
        // speaks (it answers `version` in any), and nothing else is sent.
        let v = c.call("version", json!({}))?;
        match v["protocol"].as_u64() {
            Some(PROTOCOL_VERSION) => Ok(c),
            other => Err(Failure::Version(format!(
                "the dataplane at {} speaks admin protocol {}, this lb-ctl {PROTOCOL_VERSION} (lb-ctl {}, dataplane {}): use the lb-ctl that came with it",
                path.display(),
                other.map_or("?".to_owned(), |p| p.to_string()),
                env!("CARGO_PKG_VERSION"),
                v["version"].as_str().unwrap_or("?")
            ))),
        }
    }

    /// Sends `op` with its fields; the answer's data.
    pub fn call(&mut self, op: &str, mut fields: Value) -> Result<Value, Failure> {
        fields["v"] = json!(PROTOCOL_VERSION);
        fields["op"] = json!(op);
        let lost = |e: std::io::Error| Failure::Unreachable {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let mut line = fields.to_string();
        line.push('\n');
        self.w.write_all(line.as_bytes()).map_err(lost)?;
        let mut answer = String::new();
        self.r.read_line(&mut answer).map_err(lost)?;
        if answer.is_empty() {
            return Err(Failure::Unreachable {
                path: self.path.clone(),
                reason: "the dataplane closed the connection".into(),
            });
        }
        let a: Value = serde_json::from_str(&answer)
            .map_err(|e| Failure::Rejected(format!("unreadable answer: {e}")))?;
        if a["ok"] == json!(true) {
            Ok(a["data"].clone())
        } else if a["code"] == json!("version") {
            Err(Failure::Version(format!(
                "the dataplane does not speak this lb-ctl's protocol: {}",
                a["error"].as_str().unwrap_or("?")
            )))
        } else {
            Err(Failure::Rejected(
                a["error"].as_str().unwrap_or("unknown error").to_owned(),
            ))
        }
    }
}
