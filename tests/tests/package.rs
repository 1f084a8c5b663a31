//! The Debian package as an operator installs it: `scripts/package` builds
//! it from this checkout; it is installed with dpkg into a scratch root (an
//! overlay of this machine's root in a private mount namespace, so nothing
//! of the install reaches the machine) where its postinst creates the
//! `lbadmin` group; `systemd-analyze verify` accepts the unit there, the
//! default configuration validates with the installed binary, and both
//! manual pages render.

use std::path::Path;
use std::process::Command;

use lb_tests::golden::TempDir;

#[test]
fn the_package_installs_and_its_unit_verifies() {
    let installed = || {
        std::fs::read_to_string("/var/lib/dpkg/status")
            .unwrap_or_default()
            .contains("\nPackage: lb-dataplane\n")
    };
    let installed_before = installed();
    let tmp = TempDir::new("package");
    let out = tmp.0.join("out");
    let root_dir = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let built = Command::new("bash")
        .arg(root_dir.join("scripts/package"))
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "scripts/package failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let deb = String::from_utf8_lossy(&built.stdout).trim().to_owned();
    assert!(deb.ends_with(".deb") && Path::new(&deb).exists(), "{deb}");

    let info = Command::new("dpkg-deb")
        .args(["-I", &deb])
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.contains("Depends: ") && info.contains("librte-eal"),
        "{info}"
    );
    let files = Command::new("dpkg-deb")
        .args(["-c", &deb])
        .output()
        .unwrap();
    let files = String::from_utf8_lossy(&files.stdout);
    for f in [
        "./usr/bin/lb-dataplane",
        "./usr/bin/lb-ctl",
        "./lib/systemd/system/lb-dataplane.service",
        "./etc/lb-dataplane/lb-dataplane.toml",
        "./usr/share/man/man8/lb-dataplane.8.gz",
        "./usr/share/man/man8/lb-ctl.8.gz",
        "./usr/share/bash-completion/completions/lb-ctl",
    ] {
        assert!(files.contains(f), "{f} missing from the package:\n{files}");
    }

    // Install into an overlay of / whose upper layer is a tmpfs of a
    // private mount namespace: it is gone when the shell exits.
    let work = tmp.0.join("ovl");
    let script = format!(
        r#"set -e
w={w}
mkdir -p $w/upper $w/root
mount -t tmpfs tmpfs $w/upper
mkdir -p $w/upper/up $w/upper/work
mount -t overlay overlay -o lowerdir=/,upperdir=$w/upper/up,workdir=$w/upper/work $w/root
dpkg --root=$w/root -i {deb} >/dev/null
echo "group: $(grep -c '^lbadmin:' $w/root/etc/group)"
systemd-analyze verify --man=no --root=$w/root /lib/systemd/system/lb-dataplane.service
echo "verified"
chroot $w/root /usr/bin/lb-dataplane --check --config /etc/lb-dataplane/lb-dataplane.toml
for page in lb-dataplane lb-ctl; do
    MANWIDTH=80 man -P cat -l $w/root/usr/share/man/man8/$page.8.gz | head -6
done
"#,
        w = work.display(),
    );
    let run = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("group: 1"),
        "postinst made lbadmin: {stdout}"
    );
    assert!(stdout.contains("verified"), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("valid, a load balancer with 0 services"),
        "the default configuration starts empty: {stdout}"
    );
    assert!(
        stdout.contains("lb-dataplane - DPDK userspace L4"),
        "{stdout}"
    );
    assert!(
        stdout.contains("lb-ctl(8)") && stdout.contains("Administer"),
        "{stdout}"
    );
    assert_eq!(
        installed(),
        installed_before,
        "the install stayed in the scratch root"
    );
}
