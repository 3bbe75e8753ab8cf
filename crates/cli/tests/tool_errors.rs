//! A failing package tool gives a short error line that leads with the cause and names the
//! operation log (issue 14, item 6): `vserver bad build` of a package that does not exist, and of
//! one whose `%pre` exits 1. The line must say `guest `bad`: dnf failed (exit 1): CAUSE (command
//! and full output: LOG)`, stay short, and the log in `.pkg/bad/log/` must hold the command line
//! and the output. The failed build leaves nothing but that log, and is no guest: the next build
//! of the same name goes ahead. With `-v` the command lines are shown as they run.
//!
//! Needs root, rpm, dnf and a static busybox; skips with a reason otherwise, fails instead when
//! VSERVER_TEST_REQUIRE_ALL=1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{TestHost, available, rpm_guest_prerequisites};

/// Builds guest `bad` with `package`, which must fail; checks the error line and returns the
/// log it names and the cause it shows.
fn failed_build(host: &TestHost, package: &str) -> (PathBuf, String) {
    failed_build_in(host, package, &host.dir.join("vservers/.pkg"))
}

/// [`failed_build`] with the package state in `pkgdir`.
fn failed_build_in(host: &TestHost, package: &str, pkgdir: &Path) -> (PathBuf, String) {
    let out = host
        .command(&[
            "bad", "build", "-m", "yum", "--", "-d", "fixture", "--", package,
        ])
        .env("VSERVER_PKGDIR", pkgdir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let line = stderr
        .lines()
        .find(|l| l.contains("error:"))
        .unwrap_or_else(|| panic!("no error line in {stderr}"));
    println!("{line}");
    let (_, failure) = line
        .split_once("guest `bad`: dnf failed (exit 1): ")
        .unwrap_or_else(|| panic!("the tool's failure does not lead: {line}"));
    let (cause, log) = failure
        .split_once(" (command and full output: ")
        .unwrap_or_else(|| panic!("no log named: {line}"));
    let log = PathBuf::from(log.strip_suffix(')').unwrap());
    assert!(log.starts_with(pkgdir.join("bad/log")), "{}", log.display());
    // Short: what is not the log's path (which is as long as the host's roots make it).
    let budget = line.chars().count() - log.as_os_str().len();
    assert!(budget < 250, "{budget} characters besides the log: {line}");
    assert!(
        !line.contains("--setopt") && !line.contains("--installroot"),
        "{line}"
    );
    let text = fs::read_to_string(&log).unwrap();
    let command = text
        .lines()
        .find(|l| l.starts_with("command: "))
        .unwrap_or_else(|| panic!("no command line in the log:\n{text}"));
    assert!(
        command.contains(" dnf ") && command.contains("--installroot") && command.contains(package),
        "{command}"
    );
    assert!(text.contains("status: exit 1\n"), "{text}");
    (log, cause.to_owned())
}

#[test]
fn tool_failures_lead_with_the_cause_and_name_the_log() {
    if rpm_guest_prerequisites().is_none() {
        return;
    }
    let host = TestHost::new("vserver-cli-errors");
    let repo = host.dir.join("repo");
    vserver_fixtures::busybox_shell_rpm(&repo, Path::new("/bin/busybox")).unwrap();
    let mut bad = vserver_fixtures::RpmPackage::new("bad-pre", "1.0");
    bad.release("1")
        .file("/usr/share/bad-pre/README", b"x\n".to_vec(), 0o644)
        .pre_install("echo 'bad-pre refuses to install' >&2\nexit 1\n");
    bad.write_to(&repo).unwrap();
    host.register_fixture(&repo, "fx-shell");

    let (first, cause) = failed_build(&host, "no-such-package");
    assert!(
        cause.contains("no-such-package") && cause.contains("match"),
        "{cause}"
    );
    let pkg = host.dir.join("vservers/.pkg/bad");
    assert!(vserver_pkgmgmt::holds_only_logs(&pkg));
    assert!(!host.dir.join("vservers/bad").exists());
    assert!(!host.dir.join("etc/bad").exists());

    // The failed build is no guest: the next one goes ahead (and fails on its own).
    let (second, cause) = failed_build(&host, "bad-pre");
    assert!(cause.contains("bad-pre"), "{cause}");
    assert_ne!(first, second);
    assert!(first.is_file(), "the earlier log is kept");
    let text = fs::read_to_string(&second).unwrap();
    assert!(text.contains("bad-pre refuses to install"), "{text}");

    // With -v the command lines are shown as they run.
    let out = host.vserver(&[
        "bad",
        "build",
        "-m",
        "yum",
        "-v",
        "--",
        "-d",
        "fixture",
        "--",
        "no-such-package",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("guest `bad`: running ") && l.contains(" dnf --setopt")),
        "{stderr}"
    );

    // And a build that works, after them.
    host.ok(&["bad", "build", "-m", "yum", "--", "-d", "fixture"]);
    assert!(second.is_file());
}

/// Unmounts a file system when the test ends.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The case of the fault-injection run: a build that fills the guest's file system. The line
/// leads with dnf's "At least …MB more space needed on the / filesystem".
#[test]
fn a_full_disk_is_the_cause_not_the_command_line() {
    if rpm_guest_prerequisites().is_none()
        || !available(Path::new("/usr/bin/mount").exists(), "needs mount(8)")
    {
        return;
    }
    let host = TestHost::new("vserver-cli-full");
    let repo = host.dir.join("repo");
    vserver_fixtures::busybox_shell_rpm(&repo, Path::new("/bin/busybox")).unwrap();
    let mut big = vserver_fixtures::RpmPackage::new("big", "1.0");
    big.release("1").file(
        "/usr/share/big/blob",
        vserver_fixtures::noise(7, 24 << 20),
        0o644,
    );
    big.write_to(&repo).unwrap();
    host.register_fixture(&repo, "fx-shell");
    // The guests' file system: 16 MiB. The package state lives elsewhere, as it may on a host.
    let rootdir = host.dir.join("vservers");
    fs::create_dir_all(&rootdir).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "vserver-test-full"])
        .arg(&rootdir)
        .status()
        .unwrap();
    assert!(mounted.success());
    let _unmount = Unmount(rootdir);
    let pkgdir = host.dir.join("pkg");
    let (log, cause) = failed_build_in(&host, "big", &pkgdir);
    assert!(
        cause.contains("more space needed on the / filesystem"),
        "{cause}"
    );
    assert!(log.is_file());
}
