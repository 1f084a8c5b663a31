//! Compares an output capture with the expected one, packet by packet, and
//! describes the first differences by header field.

use crate::dissect::{dissect, Field};
use crate::pcap::Packet;

/// How many differing packets are described before the rest are counted.
const SHOWN: usize = 5;

/// `None` when both hold the same frames in the same order (timestamps are
/// ignored); otherwise a report that names packets and fields.
pub fn compare(expected: &[Packet], got: &[Packet]) -> Option<String> {
    let mut report = Vec::new();
    if expected.len() != got.len() {
        report.push(format!(
            "expected {} packets, got {}",
            expected.len(),
            got.len()
        ));
    }
    let mut differing = 0;
    for (i, (e, g)) in expected.iter().zip(got).enumerate() {
        if e.data == g.data {
            continue;
        }
        differing += 1;
        if differing <= SHOWN {
            report.push(format!("packet {} of {}:", i + 1, expected.len()));
            report.extend(field_diff(&dissect(&e.data), &dissect(&g.data)));
        }
    }
    if differing > SHOWN {
        report.push(format!(
            "... and {} more differing packets",
            differing - SHOWN
        ));
    }
    let extra = |which: &str, pkts: &[Packet], from: usize, report: &mut Vec<String>| {
        for (i, p) in pkts.iter().enumerate().skip(from).take(SHOWN) {
            let summary: Vec<String> = dissect(&p.data)
                .into_iter()
                .filter(|f| !f.name.ends_with("checksum") && f.name != "payload")
                .map(|f| format!("{}={}", f.name, f.value))
                .collect();
            report.push(format!("{which} packet {}: {}", i + 1, summary.join(" ")));
        }
    };
    extra("missing", expected, got.len(), &mut report);
    extra("unexpected", got, expected.len(), &mut report);
    (!report.is_empty()).then(|| report.join("\n"))
}

fn field_diff(expected: &[Field], got: &[Field]) -> Vec<String> {
    let mut out = Vec::new();
    let mut names: Vec<&str> = expected.iter().map(|f| f.name.as_str()).collect();
    for f in got {
        if !names.contains(&f.name.as_str()) {
            names.push(&f.name);
        }
    }
    for name in names {
        let e: Vec<&str> = expected
            .iter()
            .filter(|f| f.name == name)
            .map(|f| f.value.as_str())
            .collect();
        let g: Vec<&str> = got
            .iter()
            .filter(|f| f.name == name)
            .map(|f| f.value.as_str())
            .collect();
        if e != g {
            let show = |v: &[&str]| {
                if v.is_empty() {
                    "(absent)".to_owned()
                } else {
                    v.join(", ")
                }
            };
            out.push(format!("  {name}: expected {}, got {}", show(&e), show(&g)));
        }
    }
    if out.is_empty() {
        out.push("  bytes differ in a way the dissector does not show".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(ttl: u8) -> Packet {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
        f.extend_from_slice(&[
            0x45, 0, 0, 28, 0, 0, 0, 0, ttl, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        f.extend_from_slice(&[0, 1, 0, 2, 0, 8, 0, 0]);
        Packet::new(f)
    }

    #[test]
    fn equal_captures_have_no_diff() {
        assert_eq!(compare(&[udp(64)], &[udp(64)]), None);
    }

    #[test]
    fn names_packet_and_field() {
        let d = compare(&[udp(64), udp(64)], &[udp(64), udp(63)]).unwrap();
        assert!(d.contains("packet 2 of 2:"), "{d}");
        assert!(d.contains("ipv4.ttl: expected 64, got 63"), "{d}");
    }

    #[test]
    fn counts_missing_and_extra() {
        let d = compare(&[udp(64), udp(9)], &[udp(64)]).unwrap();
        assert!(d.contains("expected 2 packets, got 1"), "{d}");
        assert!(d.contains("missing packet 2:"), "{d}");
        assert!(d.contains("ipv4.ttl=9"), "{d}");
        let d = compare(&[], &[udp(1)]).unwrap();
        assert!(d.contains("unexpected packet 1"), "{d}");
    }
}
