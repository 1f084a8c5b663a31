//! The end-to-end test kit: what the tests in `tests/tests/` (and later
//! crates' integration tests) share.
//!
//! - [`pcap`] reads and writes classic pcap files (as net_pcap writes them);
//! - [`dissect`] decodes frames into named header fields with a parser of its
//!   own, so the golden tests do not check the dataplane against itself;
//! - [`diff`] compares two captures and says which packet and which field;
//! - [`golden`] runs a case directory through the real binary;
//! - [`netns`] makes network namespaces and veth pairs that clean up after
//!   themselves;
//! - [`topology`] builds client / load balancer / real-server namespaces
//!   with HTTP servers, for real TCP through the appliance;
//! - [`routed`] builds the routed topology a new user builds by hand
//!   (client behind a kernel router, LB and servers on a bridge), kernel
//!   defaults everywhere;
//! - [`dataplane`] runs an idle dataplane with an admin socket;
//! - [`binary`] finds (building if needed) the workspace's binaries.

#![forbid(unsafe_code)]

pub mod binary;
pub mod dataplane;
pub mod diff;
pub mod dissect;
pub mod golden;
pub mod netns;
pub mod pcap;
pub mod routed;
pub mod topology;

/// Waits up to `limit` for `cond`, asking every 50 ms; how long it took,
/// or `None` if it never held.
pub fn within(limit: std::time::Duration, cond: impl Fn() -> bool) -> Option<std::time::Duration> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Some(start.elapsed());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    None
}

/// Compares `actual` with the recorded file `path`; with `LB_BLESS=1` in
/// the environment, records it first (after a deliberate change).
pub fn assert_recorded(path: &std::path::Path, actual: &str) {
    if std::env::var_os("LB_BLESS").is_some() {
        std::fs::write(path, actual).expect("record the expected text");
    }
    let expected = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (LB_BLESS=1 records it)", path.display()));
    assert_eq!(
        actual,
        expected,
        "{} changed: LB_BLESS=1 re-records it",
        path.display()
    );
}
