//! Progress on a terminal, and nothing of it elsewhere: a build whose package transaction
//! runs on a pseudo-terminal (made by `script(1)`) shows the packages done of the total under
//! its phase lines; the same build into a pipe prints exactly the phase lines it always did, and
//! `-q` prints nothing. `vrepo index` on a terminal shows its files.
//!
//! Needs root, rpm, dnf, busybox and `script`; skips with a reason otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{TestHost, available};

/// Runs `vserver ARGS` (words without quotes or spaces) on a pseudo-terminal; returns the
/// transcript.
fn on_terminal(host: &TestHost, args: &[&str]) -> String {
    let program = env!("CARGO_BIN_EXE_vserver");
    let line = format!("{program} {}", args.join(" "));
    let out = common::run(
        host.command(&[])
            .get_envs()
            .fold(&mut Command::new("script"), |c, (k, v)| match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            })
            .args(["-qec", &line, "/dev/null"]),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{line}: {text}");
    text
}

#[test]
fn a_build_shows_packages_done_on_a_terminal_only() {
    if !available(Path::new("/usr/bin/script").exists(), "needs script(1)") {
        return;
    }
    let names: Vec<String> = (0..40).map(|i| format!("fx-{i:05}")).collect();
    let Some(host) = TestHost::with_rpm_fixture(
        "vserver-progress",
        5,
        40,
        &format!("fx-shell {}", names.join(" ")),
    ) else {
        return;
    };
    // A pipe: the phase lines, nothing drawn.
    let piped = host.vserver(&["a", "build", "-m", "yum", "--", "-d", "fixture"]);
    assert!(piped.status.success());
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(!stderr.contains('\r') && !stderr.contains('['), "{stderr}");
    let phases: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        phases[..6],
        [
            "vserver: a: skeleton",
            "vserver: a: configuration",
            "vserver: a: package state",
            "vserver: a: database",
            "vserver: a: package list 01",
            "vserver: a: clean-up",
        ],
        "{stderr}"
    );
    assert!(
        phases[6].starts_with("vserver: built guest `a`"),
        "{stderr}"
    );
    assert_eq!(phases.len(), 7, "{stderr}");

    // A terminal: the transaction's packages done of its total.
    let shown = on_terminal(&host, &["b", "build", "-m", "yum", "--", "-d", "fixture"]);
    assert!(shown.contains("vserver: b: package list 01"), "{shown}");
    let total = 41 * 2; // dnf numbers each package's install and its clean-up pass
    let drawn: Vec<&str> = shown
        .split(['\r', '\n'])
        .filter(|l| l.contains("package list 01 ["))
        .collect();
    assert!(!drawn.is_empty(), "no progress drawn:\n{shown}");
    assert!(
        drawn
            .iter()
            .any(|l| l.contains(&format!("/{}", total / 2)) || l.contains(&format!("/{total}"))),
        "{drawn:?}"
    );
    // Quiet on a terminal: nothing at all.
    let quiet = on_terminal(
        &host,
        &["c", "build", "-q", "-m", "yum", "--", "-d", "fixture"],
    );
    assert_eq!(quiet.trim(), "", "{quiet}");

    // vrepo index on a terminal: the files, with a rate.
    let repo = host.dir.join("repo");
    let indexed = on_terminal(&host, &["vrepo", "index", repo.to_str().unwrap()]);
    assert!(
        indexed.contains("/41 (") && indexed.contains("/s"),
        "{indexed}"
    );
}
