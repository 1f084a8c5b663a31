//! Every golden case in `tests/golden/` through the real binary.

use lb_tests::golden;

#[test]
fn golden_cases_pass() {
    let cases = golden::cases(&golden::root());
    assert!(
        cases.iter().any(|c| c.name == "forward-one-port"),
        "the golden cases are missing: {cases:?}"
    );
    let mut failures = Vec::new();
    for case in &cases {
        eprintln!("golden case {} ({} ports)", case.name, case.ports);
        if let Err(e) = golden::run(case) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
