//! `pcap-diff EXPECTED GOT`: compares two captures packet by packet (ignoring
//! timestamps) and names the packets and header fields that differ.
//! Exit status 0 when they match, 1 when they differ, 2 on a bad file.

use std::path::Path;
use std::process::ExitCode;

use lb_tests::{diff, pcap};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [expected, got] = args.as_slice() else {
        eprintln!("usage: pcap-diff EXPECTED.pcap GOT.pcap");
        return ExitCode::from(2);
    };
    let read = |p: &str| pcap::read(Path::new(p));
    let (expected, got) = match (read(expected), read(got)) {
        (Ok(e), Ok(g)) => (e.packets, g.packets),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("pcap-diff: {e}");
            return ExitCode::from(2);
        }
    };
    match diff::compare(&expected, &got) {
        None => {
            println!("{} packets, identical", got.len());
            ExitCode::SUCCESS
        }
        Some(d) => {
            println!("{d}");
            ExitCode::FAILURE
        }
    }
}
