//! The systemd units in contrib/systemd: every one passes `systemd-analyze verify` without a
//! warning (with `/usr/bin/vserver` pointed at the binary under test, which the check wants to
//! exist). Loading them into a running systemd needs systemd as PID 1, which a build machine or
//! container often lacks: then that part is skipped with the reason, the verify still runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{available, run};

const UNITS: &[&str] = &[
    "vserver@.service",
    "vservers.service",
    "vserver-verify.service",
    "vserver-verify.timer",
    "vrepo-mirror@.service",
    "vrepo-mirror@.timer",
];

#[test]
fn units_pass_systemd_analyze_verify() {
    if !available(
        Path::new("/usr/bin/systemd-analyze").exists(),
        "needs systemd-analyze (package systemd)",
    ) {
        return;
    }
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/systemd");
    let dir = tempfile::tempdir().unwrap();
    let binary = env!("CARGO_BIN_EXE_vserver");
    for unit in UNITS {
        let text = std::fs::read_to_string(source.join(unit)).unwrap();
        // vrepo is the same multi-call binary under another name.
        let text = text
            .replace("/usr/bin/vserver ", &format!("{binary} "))
            .replace(
                "ExecStart=/usr/bin/vrepo",
                &format!("ExecStart={binary} vrepo"),
            );
        std::fs::write(dir.path().join(unit), text).unwrap();
    }
    // Instances of the templates, as `systemctl enable vserver@web` would name them.
    for (template, instance) in [
        ("vserver@.service", "vserver@web.service"),
        ("vrepo-mirror@.service", "vrepo-mirror@bookworm.service"),
        ("vrepo-mirror@.timer", "vrepo-mirror@bookworm.timer"),
    ] {
        std::os::unix::fs::symlink(template, dir.path().join(instance)).unwrap();
    }
    for unit in [
        "vserver@web.service",
        "vservers.service",
        "vserver-verify.service",
        "vserver-verify.timer",
        "vrepo-mirror@bookworm.service",
        "vrepo-mirror@bookworm.timer",
    ] {
        let output = run(Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(dir.path().join(unit)));
        let stderr = String::from_utf8_lossy(&output.stderr);
        // Complaints about the host's own units are not ours.
        let ours: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains(&*dir.path().to_string_lossy()) || l.contains(unit))
            .collect();
        assert!(
            output.status.success() && ours.is_empty(),
            "{unit}: {stderr}"
        );
        println!("{unit}: systemd-analyze verify passed");
    }
    if !Path::new("/run/systemd/system").exists() {
        println!(
            "live load into the host's systemd skipped: PID 1 is not systemd here (no /run/systemd/system)"
        );
        return;
    }
    // A running systemd: the units load (from a runtime directory that vanishes at reboot).
    let runtime = Path::new("/run/systemd/system");
    for unit in ["vserver@.service", "vservers.service"] {
        std::fs::copy(dir.path().join(unit), runtime.join(unit)).unwrap();
    }
    run(Command::new("systemctl").arg("daemon-reload"));
    for unit in ["vserver@web.service", "vservers.service"] {
        let shown = run(Command::new("systemctl").args(["show", "-p", "LoadState", unit]));
        assert_eq!(
            String::from_utf8_lossy(&shown.stdout).trim(),
            "LoadState=loaded",
            "{unit}"
        );
    }
    for unit in ["vserver@.service", "vservers.service"] {
        let _ = std::fs::remove_file(runtime.join(unit));
    }
    run(Command::new("systemctl").arg("daemon-reload"));
}
