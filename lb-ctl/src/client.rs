//! The admin socket's client side: one request line, one answer line, in
//! the types of [`lb_admin_proto`].

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lb_admin_proto::{decode_reply, Answered, Code, Op, VersionInfo, PROTOCOL_VERSION};
use serde::de::DeserializeOwned;

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
        let v: VersionInfo = c.call(&Op::Version)?;
        if v.protocol == PROTOCOL_VERSION {
            return Ok(c);
        }
        Err(Failure::Version(format!(
            "the dataplane at {} speaks admin protocol {}, this lb-ctl {PROTOCOL_VERSION} (lb-ctl {}, dataplane {}): use the lb-ctl that came with it",
            path.display(),
            v.protocol,
            env!("CARGO_PKG_VERSION"),
            v.version
        )))
    }

    /// Sends `op`; the answer's data, of the type `op` answers with.
    pub fn call<T: DeserializeOwned>(&mut self, op: &Op) -> Result<T, Failure> {
        let lost = |e: std::io::Error| Failure::Unreachable {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        self.w.write_all(op.to_line().as_bytes()).map_err(lost)?;
        let mut answer = String::new();
        self.r.read_line(&mut answer).map_err(lost)?;
        if answer.is_empty() {
            return Err(Failure::Unreachable {
                path: self.path.clone(),
                reason: "the dataplane closed the connection".into(),
            });
        }
        decode_reply(&answer).map_err(|a| match a {
            Answered::Refused(e, Some(Code::Version)) => Failure::Version(format!(
                "the dataplane does not speak this lb-ctl's protocol: {e}"
            )),
            Answered::Refused(e, None) => Failure::Rejected(e),
            Answered::Unreadable(e) => Failure::Rejected(format!("unreadable answer: {e}")),
        })
    }
}
