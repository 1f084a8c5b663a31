//! The README's five-minute tour runs as written: its commands are read out
//! of README.md, the dataplane starts on `config/tour.toml`, every lb-ctl
//! line succeeds, and `lb-ctl -L -n` prints the listing the README shows.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lb_tests::binary;
use lb_tests::dataplane::wait_for_log;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The tour's section of the README.
fn tour() -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let start = readme
        .find("## A five-minute tour")
        .expect("the README has its tour");
    let rest = &readme[start..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    rest[..end].to_owned()
}

/// The indented (code) lines of `text` that start with `prefix`, without
/// their comments.
fn commands(text: &str, prefix: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter_map(|l| l.strip_prefix("    "))
        .filter(|l| l.starts_with(prefix))
        .map(|l| {
            l.split('#')
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

/// The listing the README quotes: the indented block after "prints what".
fn quoted_listing(text: &str) -> String {
    let at = text
        .find("prints what `ipvsadm -L -n` would")
        .expect("the quote");
    text[at..]
        .lines()
        .skip(1)
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| l.starts_with("    "))
        .map(|l| format!("{}\n", l[4..].trim_end()))
        .collect()
}

#[test]
fn the_tour_runs_as_the_readme_says() {
    let tour = tour();
    let start = commands(&tour, "target/release/lb-dataplane");
    assert_eq!(
        start,
        [[
            "target/release/lb-dataplane",
            "--config",
            "config/tour.toml",
            "&"
        ]],
        "the tour starts the dataplane on config/tour.toml"
    );
    let config = std::fs::read_to_string(repo().join("config/tour.toml")).unwrap();
    let socket = commands(&tour, "export LB_CTL_SOCKET=");
    let socket = socket[0][1].trim_start_matches("LB_CTL_SOCKET=");
    assert!(
        config.contains(&format!("socket = \"{socket}\"")),
        "the README's socket is the tour file's"
    );

    // The file's own socket would clash with another run of this test, so
    // the dataplane serves one in a scratch directory.
    let dir = std::env::temp_dir().join(format!("lb-tour-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("admin.sock");
    let mut child = Command::new(binary::path("lb-dataplane"))
        .current_dir(repo())
        .args(["--config", "config/tour.toml", "--duration", "120"])
        .arg("--admin-socket")
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    wait_for_log(&mut stderr, "admin socket ready");
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));

    let mut listing = None;
    let ctl = commands(&tour, "target/release/lb-ctl");
    assert!(ctl.len() >= 5, "{ctl:?}");
    for args in &ctl {
        let out = Command::new(binary::path("lb-ctl"))
            .args(&args[1..])
            .env("LB_CTL_SOCKET", &sock)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
        if args[1..] == ["-L", "-n"] {
            listing = Some(text);
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.is_some_and(|s| s.success()), "it stops on SIGTERM");
    let listing: String = listing
        .expect("the tour lists with -L -n")
        .lines()
        .map(|l| format!("{}\n", l.trim_end()))
        .collect();
    assert_eq!(
        listing,
        quoted_listing(&tour),
        "the README quotes the listing"
    );
}
