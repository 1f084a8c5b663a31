//! Every example configuration in `config/` (and the package's default)
//! goes through the real parser and validation, so an example cannot rot;
//! each says first, in a comment, what it is and the topology it assumes.

use std::path::Path;

use lb_core::config::Config;

#[test]
fn every_example_configuration_is_valid_and_explained() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut seen = 0;
    for entry in std::fs::read_dir(root.join("config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# "),
            "{} does not begin with a comment saying what it is",
            path.display()
        );
        if let Err(e) = Config::from_toml(&text) {
            panic!("{}: {e}", path.display());
        }
        seen += 1;
    }
    assert!(seen >= 8, "the examples: {seen}");
    // The package's default names the group its postinst creates; that
    // group is not on a build machine, so it is left out here.
    let packaged = std::fs::read_to_string(root.join("packaging/lb-dataplane.toml")).unwrap();
    let packaged: String = packaged
        .lines()
        .filter(|l| !l.starts_with("group ="))
        .map(|l| format!("{l}\n"))
        .collect();
    let config = Config::from_toml(&packaged).unwrap();
    assert_eq!(
        config.lb.map(|lb| lb.services.len()),
        Some(0),
        "it starts empty"
    );
}
