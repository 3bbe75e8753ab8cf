//! `vserver G pkgmgmt internalize|externalize` on a Debian guest built from real bookworm
//! packages (the cache `deb_guest` fills, /var/tmp/vserver-test-debs): the dpkg database moves
//! into the guest's `/var/lib/dpkg`, the guest's own dpkg lists, installs and removes packages
//! there, and back out; a failure injected after each step leaves the guest in its previous
//! mode; a round trip keeps `dpkg -l` and `dpkg --verify`; a status file with an unknown field
//! is refused; a package installed and a file changed while internal are reported; symlinks
//! planted at `/var/lib/dpkg`, `/var/lib/apt`, `/var/lib`, `/etc/apt` (absolute, `..`) are
//! refused and the host canary stays as it was.
//!
//! Needs root, dpkg, chroot and the package cache; skips with a reason otherwise, fails instead
//! when VSERVER_TEST_REQUIRE_ALL=1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{WORK_BASE, available, built_plugin, snapshot};

use common::debian_cache::{CACHE, CACHE_LIST};
const INTERNALIZE_STEPS: usize = 5;
const EXTERNALIZE_STEPS: usize = 6;

fn checked(command: &mut Command) -> Output {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

struct Host {
    top: PathBuf,
}

impl Host {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vserver"));
        command
            .args(args)
            .env("VSERVER_CONFDIR", self.top.join("etc"))
            .env("VSERVER_ROOTDIR", self.top.join("vservers"))
            .env("VSERVER_PKGDIR", self.top.join("vservers/.pkg"))
            .env("VSERVER_RUNDIR", self.top.join("run"))
            .env_remove("VSERVER_TEST_FAIL_AT_STEP");
        if let Some(plugin) = built_plugin() {
            command.env("VSERVER_RPM_PLUGIN", plugin);
        }
        command
    }

    fn ok(&self, args: &[&str]) -> Output {
        checked(&mut self.command(args))
    }

    fn root(&self) -> PathBuf {
        self.top.join("vservers/d")
    }

    fn pkg(&self) -> PathBuf {
        self.top.join("vservers/.pkg/d")
    }

    fn failing_at(&self, step: usize, args: &[&str]) {
        let out = self
            .command(args)
            .env("VSERVER_TEST_FAIL_AT_STEP", step.to_string())
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "step {step}: {stderr}");
        assert!(
            stderr.contains(&format!("step {step} (")) && stderr.contains("rolled back"),
            "step {step}: {stderr}"
        );
    }

    fn config(&self) -> String {
        std::fs::read_to_string(self.top.join("etc/d/config.toml")).unwrap()
    }

    /// `dpkg -l` lines of installed packages, through the host's dpkg (external).
    fn external_list(&self) -> Vec<String> {
        let out = self.ok(&["vdpkg", "d", "--", "-l"]);
        installed_lines(&out.stdout)
    }

    fn external_verify(&self) -> Vec<String> {
        let out = self
            .command(&["vdpkg", "d", "--", "--verify"])
            .output()
            .unwrap();
        sorted(&out.stdout)
    }

    /// `dpkg -l` run by the guest's own dpkg, chrooted.
    fn internal_list(&self) -> Vec<String> {
        installed_lines(&in_guest(&self.root(), &["dpkg", "-l"]).stdout)
    }

    fn assert_external(&self, list: &[String]) {
        assert!(self.config().contains("package_management = \"external\""));
        let admin = self.root().join("var/lib/dpkg");
        assert!(
            std::fs::read_dir(&admin).unwrap().next().is_none(),
            "guest /var/lib/dpkg is not empty"
        );
        assert_eq!(self.external_list(), list);
        assert!(!self.root().join("etc/apt/sources.list").exists());
        assert!(!self.pkg().join("internal").exists());
        assert!(!self.pkg().join("dpkg/convert").exists());
    }

    fn assert_internal(&self, list: &[String]) {
        assert!(self.config().contains("package_management = \"internal\""));
        assert_eq!(self.internal_list(), list);
        assert!(self.root().join("etc/apt/sources.list").is_file());
        assert!(self.pkg().join("internal").is_file());
    }
}

fn sorted(bytes: &[u8]) -> Vec<String> {
    let mut lines: Vec<String> = text(bytes)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

fn installed_lines(bytes: &[u8]) -> Vec<String> {
    let mut lines: Vec<String> = text(bytes)
        .lines()
        .filter(|l| l.starts_with("ii "))
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .collect();
    lines.sort();
    lines
}

/// Entries a move set aside (`.NAME.vserver-aside`) anywhere in the guest.
fn set_aside(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .contains("vserver-aside")
            {
                found.push(entry.path());
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    found
}

fn in_guest(root: &Path, args: &[&str]) -> Output {
    checked(
        Command::new("/usr/sbin/chroot")
            .arg(root)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    )
}

/// An indexed flat mirror of the cached .debs, as `bookworm main`.
fn make_mirror(host: &Host, mirror: &Path) -> Option<PathBuf> {
    let pool = mirror.join("pool");
    std::fs::create_dir_all(&pool).unwrap();
    let mut hello = None;
    for entry in std::fs::read_dir(CACHE).ok()? {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "deb") {
            let name = path.file_name().unwrap().to_owned();
            if name.to_string_lossy().starts_with("hello_") {
                hello = Some(path.clone());
                continue;
            }
            std::fs::hard_link(&path, pool.join(&name))
                .or_else(|_| std::fs::copy(&path, pool.join(&name)).map(drop))
                .unwrap();
        }
    }
    // The archive's priorities, which decide the minbase set: every cached package of the
    // list is `required` for our purposes.
    let list = std::fs::read_to_string(CACHE_LIST).ok()?;
    let overrides: String = list
        .lines()
        .map(|name| format!("{name} required misc\n"))
        .collect();
    let override_file = host.top.join("override");
    std::fs::write(&override_file, overrides).unwrap();
    checked(
        host.command(&[
            "vrepo",
            "index",
            "--suite",
            "bookworm",
            "--component",
            "main",
        ])
        .arg("--override")
        .arg(&override_file)
        .arg(mirror),
    );
    hello
}

#[test]
fn debian_guest_internalize_externalize_round_trip_rollback_and_tamper() {
    let root =
        std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0);
    if !available(root, "needs root")
        || !available(
            Path::new("/usr/bin/dpkg").exists() && Path::new("/usr/sbin/chroot").exists(),
            "needs dpkg and chroot",
        )
        || !available(
            Path::new(CACHE_LIST).is_file(),
            "needs the bookworm package cache (run the deb_guest test first)",
        )
    {
        return;
    }
    std::fs::create_dir_all(WORK_BASE).unwrap();
    let tmp = tempfile::Builder::new()
        .prefix("pkgmode-deb")
        .tempdir_in(WORK_BASE)
        .unwrap();
    let host = Host {
        top: tmp.path().to_path_buf(),
    };
    let mirror = host.top.join("mirror");
    let hello = make_mirror(&host, &mirror);
    let Some(hello) = hello else {
        assert!(available(false, "the cache holds no hello .deb"));
        return;
    };
    host.ok(&[
        "vdistro",
        "add",
        "localdeb",
        "--family",
        "deb",
        "--releasever",
        "12",
        "--apt-source",
        &format!("file://{} bookworm main", mirror.display()),
        "--trusted",
    ]);
    let started = std::time::Instant::now();
    host.ok(&[
        "d",
        "build",
        "-m",
        "apt",
        "--",
        "-d",
        "localdeb",
        "--variant",
        "minbase",
    ]);
    eprintln!("build: {:.1} s", started.elapsed().as_secs_f64());
    let list = host.external_list();
    assert!(list.len() > 50, "{list:?}");
    // One file differs from the start, so that the verifications compared below are not empty.
    let license = host.root().join("usr/share/common-licenses/GPL-3");
    let mut content = std::fs::read(&license).unwrap();
    content.extend_from_slice(b"changed\n");
    std::fs::write(&license, content).unwrap();
    let verify_before = host.external_verify();
    assert_eq!(verify_before.len(), 1, "{verify_before:?}");

    // `vserver d verify` finds what `dpkg --verify` finds (a changed file, a changed conffile,
    // a removed file), and says the conffile is configuration.
    let conffile = host.root().join("etc/debian_version");
    let conffile_before = std::fs::read(&conffile).unwrap();
    std::fs::write(&conffile, "edited\n").unwrap();
    let removed = host.root().join("usr/share/common-licenses/Apache-2.0");
    let removed_before = std::fs::read(&removed).unwrap();
    std::fs::remove_file(&removed).unwrap();
    let started = std::time::Instant::now();
    let dpkg_paths: Vec<String> = host
        .external_verify()
        .iter()
        .map(|l| l.split_whitespace().last().unwrap().to_owned())
        .collect();
    let dpkg_time = started.elapsed();
    let started = std::time::Instant::now();
    let out = host.command(&["d", "verify", "--json"]).output().unwrap();
    let ours_time = started.elapsed();
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let findings = reports[0]["findings"].as_array().unwrap();
    let mut ours: Vec<String> = findings
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_owned())
        .collect();
    ours.sort();
    let mut dpkg_sorted = dpkg_paths.clone();
    dpkg_sorted.sort();
    assert_eq!(ours, dpkg_sorted, "vserver verify against dpkg --verify");
    assert_eq!(dpkg_sorted.len(), 3, "{dpkg_sorted:?}");
    assert!(
        findings
            .iter()
            .any(|f| f["path"] == "/etc/debian_version" && f["class"] == "config")
    );
    assert!(
        findings
            .iter()
            .any(|f| f["path"] == "/usr/share/common-licenses/Apache-2.0" && f["missing"] == true)
    );
    eprintln!(
        "verify: dpkg --verify {:.2} s, vserver verify {:.2} s",
        dpkg_time.as_secs_f64(),
        ours_time.as_secs_f64()
    );
    std::fs::write(&conffile, conffile_before).unwrap();
    std::fs::write(&removed, removed_before).unwrap();

    // The failure hook (VSERVER_TEST_FAIL_AT_STEP) exists in debug builds only: a release
    // build of the tool ignores it, so `cargo test --release` skips these rollbacks.
    if cfg!(debug_assertions) {
        for step in 1..=INTERNALIZE_STEPS {
            host.failing_at(step, &["d", "pkgmgmt", "internalize"]);
            host.assert_external(&list);
        }
    }
    let started = std::time::Instant::now();
    host.ok(&["d", "--", "pkgmgmt", "internalize"]);
    eprintln!("internalize: {:.2} s", started.elapsed().as_secs_f64());
    host.assert_internal(&list);
    // vdpkg runs the guest's own dpkg inside it now, and says so.
    let out = host
        .command(&["vdpkg", "d", "--", "-l", "dash"])
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("running its own `dpkg` inside it"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("ii  dash"),
        "{}",
        text(&out.stdout)
    );

    // The failure hook (VSERVER_TEST_FAIL_AT_STEP) exists in debug builds only: a release
    // build of the tool ignores it, so `cargo test --release` skips these rollbacks.
    if cfg!(debug_assertions) {
        for step in 1..=EXTERNALIZE_STEPS {
            host.failing_at(step, &["d", "pkgmgmt", "externalize"]);
            host.assert_internal(&list);
        }
    }
    let started = std::time::Instant::now();
    let out = host.ok(&["d", "pkgmgmt", "externalize"]);
    eprintln!("externalize: {:.2} s", started.elapsed().as_secs_f64());
    assert_eq!(sorted(&out.stdout), verify_before);
    host.assert_external(&list);
    assert_eq!(host.external_verify(), verify_before);

    // Killed at growing checkpoints (the log has an entry per file copied, so every step
    // would be thousands of trials): the next command finishes or undoes the move. The kill
    // hook (VSERVER_TEST_KILL_AT) exists in debug builds only; in release each loop runs once,
    // unkilled.
    for (operation, from_internal) in [("internalize", false), ("externalize", true)] {
        let mut at = 1;
        let mut trials = 0;
        loop {
            let internal = host.config().contains("package_management = \"internal\"");
            if internal != from_internal {
                let back = if internal {
                    "externalize"
                } else {
                    "internalize"
                };
                host.ok(&["d", "pkgmgmt", back]);
            }
            let out = host
                .command(&["d", "pkgmgmt", operation])
                .env(vserver_pkgmgmt::KILL_AT_VAR, at.to_string())
                .output()
                .unwrap();
            trials += 1;
            let killed = out.status.signal() == Some(9);
            assert!(killed || out.status.success(), "{}", text(&out.stderr));
            host.ok(&["--list"]);
            if host.config().contains("package_management = \"internal\"") {
                host.assert_internal(&list);
            } else {
                host.assert_external(&list);
                assert_eq!(host.external_verify(), verify_before);
            }
            assert!(!host.pkg().join("mode-change").exists());
            let left = set_aside(&host.root());
            assert!(left.is_empty(), "{operation} killed at {at}: {left:?}");
            if !killed {
                break;
            }
            at = at * 3 / 2 + 1;
        }
        eprintln!(
            "{operation}: killed {} times, every time recovered",
            trials - 1
        );
    }
    if host.config().contains("package_management = \"internal\"") {
        host.ok(&["d", "pkgmgmt", "externalize"]);
    }

    // Internal again: the guest's own dpkg installs a package and a packaged file changes.
    host.ok(&["d", "pkgmgmt", "internalize"]);
    std::fs::copy(&hello, host.root().join("tmp/hello.deb")).unwrap();
    in_guest(&host.root(), &["dpkg", "-i", "/tmp/hello.deb"]);
    std::fs::remove_file(host.root().join("tmp/hello.deb")).unwrap();
    assert_eq!(
        text(&in_guest(&host.root(), &["/usr/bin/hello"]).stdout),
        "Hello, world!\n"
    );
    let tampered = host.root().join("usr/bin/hello");
    let mut content = std::fs::read(&tampered).unwrap();
    content.extend_from_slice(b"tampered");
    std::fs::write(&tampered, content).unwrap();
    let with_hello = host.internal_list();
    assert!(with_hello.iter().any(|l| l.starts_with("ii hello ")));

    // A status file with a field dpkg never writes is refused; the guest stays internal.
    let status = host.root().join("var/lib/dpkg/status");
    let original = std::fs::read_to_string(&status).unwrap();
    std::fs::write(
        &status,
        format!(
            "{original}Package: evil\nStatus: install ok installed\nVersion: 1\nEvil-Field: x\n"
        ),
    )
    .unwrap();
    let out = host
        .command(&["d", "pkgmgmt", "externalize"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("unknown field `Evil-Field`"),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(&status, &original).unwrap();
    host.assert_internal(&with_hello);
    // An info file that belongs to no package is left out and reported.
    std::fs::write(
        host.root().join("var/lib/dpkg/info/nosuch.postinst"),
        "#!/bin/sh\n",
    )
    .unwrap();

    let out = host.ok(&["d", "pkgmgmt", "externalize"]);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(
        stdout.lines().any(|l| l.starts_with("+ hello:")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.ends_with(" /usr/bin/hello") && l.contains('5')),
        "{stdout}"
    );
    assert!(stderr.contains("info/nosuch.postinst"), "{stderr}");
    host.assert_external(&with_hello);
    // The host's tools work on the rebuilt database: purge what the guest installed.
    host.ok(&["vapt-get", "d", "--", "purge", "-y", "hello"]);
    assert_eq!(host.external_list(), list);
    // Hostile guest: symlinks at the directories internalize writes to, pointing at a host
    // canary (absolute and through `..`), are refused; the canary does not change.
    let canary = host.top.join("canary");
    std::fs::create_dir_all(canary.join("dpkg")).unwrap();
    std::fs::write(canary.join("status"), "host file\n").unwrap();
    let canary_before = snapshot(&canary);
    let dotdots = format!(
        "{}{}",
        "../".repeat(host.root().components().count() + 2),
        canary.display().to_string().trim_start_matches('/')
    );
    for (link, target) in [
        ("var/lib/dpkg", canary.display().to_string()),
        ("var/lib/dpkg", dotdots.clone()),
        ("etc/apt", canary.display().to_string()),
        ("var/lib/apt", dotdots.clone()),
        ("var/lib", canary.display().to_string()),
    ] {
        let at = host.root().join(link);
        let saved = host.root().join("saved");
        std::fs::rename(&at, &saved).unwrap();
        std::os::unix::fs::symlink(&target, &at).unwrap();
        let out = host
            .command(&["d", "pkgmgmt", "internalize"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{link}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("symlink"),
            "{link}: {}",
            text(&out.stderr)
        );
        assert_eq!(snapshot(&canary), canary_before, "{link} -> {target}");
        std::fs::remove_file(&at).unwrap();
        std::fs::rename(&saved, &at).unwrap();
        host.assert_external(&list);
    }
    let names: BTreeSet<String> = list
        .iter()
        .map(|l| l.split(' ').nth(1).unwrap().to_owned())
        .collect();
    assert!(names.contains("dpkg") && names.contains("apt"));
}
