//! The golden harness itself: a case whose expectation is wrong must fail,
//! and say which packet and which field.

use lb_tests::golden::{self, Case, TempDir};
use lb_tests::pcap;

#[test]
fn a_wrong_expectation_fails_with_a_field_diff() {
    let src = golden::root().join("forward-one-port");
    let tmp = TempDir::new("harness");
    std::fs::copy(src.join("config.toml"), tmp.0.join("config.toml")).unwrap();
    std::fs::copy(src.join("in0.pcap"), tmp.0.join("in0.pcap")).unwrap();
    let mut expected = pcap::read(&src.join("expect0.pcap")).unwrap().packets;
    // Claim the SYN (packet 3) leaves with TTL 63 and the last packet is lost.
    expected[2].data[14 + 8] = 63;
    expected.pop();
    pcap::write(&tmp.0.join("expect0.pcap"), &expected).unwrap();

    let case = Case {
        name: "wrong".into(),
        dir: tmp.0.clone(),
        ports: 1,
    };
    let err = golden::run(&case).expect_err("a wrong expectation must fail");
    assert!(err.contains("expected 8 packets, got 9"), "{err}");
    assert!(err.contains("packet 3 of 8:"), "{err}");
    assert!(err.contains("ipv4.ttl: expected 63, got 64"), "{err}");
    assert!(err.contains("unexpected packet 9"), "{err}");
}
