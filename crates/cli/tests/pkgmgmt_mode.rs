//! `vserver G pkgmgmt internalize|externalize` on an RPM guest built from generated fixtures
//! with the real rpm and dnf: the database moves into the guest (host `rpm --root G --dbpath
//! /var/lib/rpm -qa` sees every package) and back (vrpm works again, the guest holds no
//! database); a failure injected after each step leaves the guest in its previous mode; a round
//! trip changes neither the package set nor `rpm -Va`; a database and a file tampered with while
//! internal are reported on externalize; symlinks planted at the paths internalize writes to
//! (absolute, `..`, loops) are refused and the host canary stays as it was.
//!
//! Needs root, rpm and dnf; skips with a reason otherwise, fails instead when
//! VSERVER_TEST_REQUIRE_ALL=1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

/// Steps of internalize and externalize (the failure hook is tried after each).
const INTERNALIZE_STEPS: usize = 6;
const EXTERNALIZE_STEPS: usize = 7;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{TestHost, rpm_guest_prerequisites, snapshot};
use vserver_fixtures::{RpmSetOptions, Scriptlets};

struct Host(TestHost);

impl std::ops::Deref for Host {
    type Target = TestHost;

    fn deref(&self) -> &TestHost {
        &self.0
    }
}

impl Host {
    fn vserver(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.vserver(args);
        assert!(
            out.status.success(),
            "vserver {args:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn failing_at(&self, step: usize, args: &[&str]) -> String {
        let out = self
            .command(args)
            .env("VSERVER_TEST_FAIL_AT_STEP", step.to_string())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "step {step}: {stderr}");
        assert!(
            stderr.contains(&format!("step {step} (")) && stderr.contains("rolled back"),
            "step {step}: {stderr}"
        );
        stderr
    }

    fn guest(&self) -> PathBuf {
        self.dir.join("vservers/t")
    }

    fn pkg(&self) -> PathBuf {
        self.dir.join("vservers/.pkg/t")
    }

    fn config(&self) -> String {
        std::fs::read_to_string(self.dir.join("etc/t/config.toml")).unwrap()
    }

    /// `vrpm t -- -qa` (sorted), through the external database.
    fn external_packages(&self) -> Vec<String> {
        let out = self.ok(&["vrpm", "t", "--", "-qa", "--qf", "%{NVRA}\n"]);
        sorted_lines(&out.stdout)
    }

    /// `vrpm t -- -Va` lines (sorted); its exit status says whether anything differs.
    fn external_verify(&self) -> Vec<String> {
        let out = self.vserver(&["vrpm", "t", "--", "-Va", "--noscripts"]);
        sorted_lines(&out.stdout)
    }

    /// Host rpm on the guest's own database, as an administrator would look at it.
    fn internal_packages(&self) -> Vec<String> {
        self.internal_packages_at("/var/lib/rpm")
    }

    fn internal_packages_at(&self, dbpath: &str) -> Vec<String> {
        let out = Command::new("rpm")
            .arg("--root")
            .arg(self.guest())
            .args(["--dbpath", dbpath, "-qa", "--qf", "%{NVRA}\n"])
            .env("HOME", self.dir.join("home"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        sorted_lines(&out.stdout)
    }

    fn assert_external(&self, packages: &[String]) {
        assert!(self.config().contains("package_management = \"external\""));
        assert_eq!(self.external_packages(), packages);
        assert!(!self.guest().join("var/lib/rpm").exists());
        assert!(entries(&self.guest().join(".rpmdb")).is_empty());
        assert!(self.guest().join(".rpmdb").is_dir());
        assert!(!self.guest().join("etc/yum.repos.d/fx.repo").exists());
        assert!(!self.guest().join("etc/rpm/macros.vserver").exists());
        assert!(!self.pkg().join("internal").exists());
        assert!(!self.pkg().join("rpm/convert").exists());
        assert!(!self.pkg().join("mode-change").exists());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(self.pkg().join("rpm/state"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(hidden_leftovers(&self.guest()), Vec::<PathBuf>::new());
        for dir in ["var/lib/dnf", "etc/dnf", "etc/yum.repos.d"] {
            assert!(!self.guest().join(dir).exists(), "{dir} left in the guest");
        }
    }

    fn assert_internal(&self, packages: &[String]) {
        assert!(self.config().contains("package_management = \"internal\""));
        assert_eq!(self.internal_packages(), packages);
        assert!(!self.guest().join(".rpmdb").exists());
        assert!(self.pkg().join("internal").is_file());
        let repo = std::fs::read_to_string(self.guest().join("etc/yum.repos.d/fx.repo")).unwrap();
        assert!(!repo.contains("$releasever"), "{repo}");
        let macros = std::fs::read_to_string(self.guest().join("etc/rpm/macros.vserver")).unwrap();
        assert!(!macros.contains("%_dbpath"), "{macros}");
        assert!(macros.contains("%_netsharedpath"), "{macros}");
        assert!(self.guest().join("etc/dnf/dnf.conf").is_file());
        assert!(self.guest().join("var/lib/dnf/history.sqlite").is_file());
        assert_eq!(hidden_leftovers(&self.guest()), Vec::<PathBuf>::new());
    }
}

fn sorted_lines(bytes: &[u8]) -> Vec<String> {
    let mut lines: Vec<String> = String::from_utf8_lossy(bytes)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Set-aside files a mode change left in the guest (`.NAME.vserver-aside`).
fn hidden_leftovers(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(read) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in read {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.contains("vserver-aside") || name.contains("vserver-tmp") {
                found.push(entry.path());
            }
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            }
        }
    }
    found
}

#[test]
fn rpm_guest_internalize_externalize_round_trip_rollback_tamper_and_hostile_links() {
    if rpm_guest_prerequisites().is_none() {
        return;
    }
    let host = Host(TestHost::new("vserver-pkgmode"));
    std::fs::create_dir_all(host.dir.join("home")).unwrap();
    let repo = host.dir.join("repo");
    vserver_fixtures::write_rpm_set_with_busybox(
        &repo,
        &RpmSetOptions {
            seed: 7,
            count: 10,
            scriptlets: Scriptlets::Shell,
            ..RpmSetOptions::default()
        },
        Path::new("/bin/busybox"),
    )
    .unwrap();
    host.ok(&["vrepo", "index", "-q", repo.to_str().unwrap()]);
    host.ok(&[
        "vdistro",
        "add",
        "fixture",
        "--releasever",
        "1",
        "--repo",
        &format!("fx=file://{}", repo.display()),
        "--pkgs",
        "fx-shell fx-00002 fx-00005 fx-00007",
    ]);
    host.ok(&["t", "build", "-m", "yum", "--", "-d", "fixture"]);
    let packages = host.external_packages();
    assert!(packages.len() >= 4, "{packages:?}");
    // One file differs from the start, so that the verifications compared below are not empty.
    let files = host.ok(&["vrpm", "t", "--", "-ql", "fx-00002"]);
    let changed = sorted_lines(&files.stdout)
        .into_iter()
        .map(|f| host.guest().join(f.trim_start_matches('/')))
        .find(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
        .expect("fx-00002 owns a regular file");
    let mut content = std::fs::read(&changed).unwrap();
    content.extend_from_slice(b"changed\n");
    std::fs::write(&changed, content).unwrap();
    let verify_before = host.external_verify();
    assert_eq!(verify_before.len(), 1, "{verify_before:?}");

    // A failure after any step of internalize leaves the guest external, nothing lost.
    // The failure hook (VSERVER_TEST_FAIL_AT_STEP) exists in debug builds only: a release
    // build of the tool ignores it, so `cargo test --release` skips these rollbacks.
    if cfg!(debug_assertions) {
        for step in 1..=INTERNALIZE_STEPS {
            host.failing_at(step, &["t", "pkgmgmt", "internalize"]);
            host.assert_external(&packages);
        }
    }
    // Step N+1 does not exist: the hook then changes nothing.
    let out = host.vserver(&["t", "pkgmgmt", "externalize"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already external"));

    // A change killed before its log said anything had changed nothing: the next command
    // just clears the log (the kill tests in crash_safety.rs cover every later instant).
    std::fs::write(
        host.pkg().join("mode-change"),
        "vserver-mode-change-1 inter",
    )
    .unwrap();
    host.ok(&["vrpm", "t", "--", "-qa"]);
    host.assert_external(&packages);

    // internalize, in util-vserver's form.
    let started = std::time::Instant::now();
    host.ok(&["t", "--", "pkgmgmt", "internalize"]);
    eprintln!("internalize: {:.2} s", started.elapsed().as_secs_f64());
    host.assert_internal(&packages);
    let out = host.vserver(&["t", "pkgmgmt", "internalize"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already internal"));
    // vrpm now runs the guest's own rpm inside it, and says so (the fixture guest has none).
    let out = host.vserver(&["vrpm", "t", "--", "-qa"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("manages its own packages"), "{stderr}");
    assert!(
        stderr.contains("running its own `rpm` inside it"),
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(127), "{stderr}");

    // A failure after any step of externalize leaves the guest internal.
    // The failure hook (VSERVER_TEST_FAIL_AT_STEP) exists in debug builds only: a release
    // build of the tool ignores it, so `cargo test --release` skips these rollbacks.
    if cfg!(debug_assertions) {
        for step in 1..=EXTERNALIZE_STEPS {
            host.failing_at(step, &["t", "pkgmgmt", "externalize"]);
            host.assert_internal(&packages);
        }
    }

    // Round trip: the same packages and the same verification.
    let started = std::time::Instant::now();
    let out = host.ok(&["t", "pkgmgmt", "externalize", "--json"]);
    eprintln!("externalize: {:.2} s", started.elapsed().as_secs_f64());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["mode"], "external");
    let strings = |key: &str| -> Vec<String> {
        let mut list: Vec<String> = report[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        list.sort();
        list
    };
    assert_eq!(strings("packages"), packages);
    assert_eq!(strings("differences"), verify_before);
    assert!(strings("added").is_empty() && strings("removed").is_empty());
    host.assert_external(&packages);
    assert_eq!(host.external_verify(), verify_before);
    host.ok(&["t", "pkgmgmt", "internalize"]);
    host.assert_internal(&packages);
    // internalize → externalize → internalize: the guest's own database verifies the same.
    let verify = Command::new("rpm")
        .arg("--root")
        .arg(host.guest())
        .args(["--dbpath", "/var/lib/rpm", "-Va", "--noscripts"])
        .env("HOME", host.dir.join("home"))
        .output()
        .unwrap();
    assert_eq!(sorted_lines(&verify.stdout), verify_before);

    // Tampered while internal: a package entry removed from the guest's database behind rpm's
    // back (`--justdb`), and a packaged file changed.
    let victim = packages
        .iter()
        .find(|p| p.starts_with("fx-00005"))
        .unwrap()
        .clone();
    let erase = Command::new("rpm")
        .arg("--root")
        .arg(host.guest())
        .args([
            "--dbpath",
            "/var/lib/rpm",
            "-e",
            "--justdb",
            "--nodeps",
            "--noscripts",
        ])
        .arg(&victim)
        .env("HOME", host.dir.join("home"))
        .output()
        .unwrap();
    assert!(
        erase.status.success(),
        "{}",
        String::from_utf8_lossy(&erase.stderr)
    );
    let files = Command::new("rpm")
        .arg("--root")
        .arg(host.guest())
        .args(["--dbpath", "/var/lib/rpm", "-ql", "fx-00007"])
        .env("HOME", host.dir.join("home"))
        .output()
        .unwrap();
    let tampered = sorted_lines(&files.stdout)
        .into_iter()
        .find(|f| {
            let path = host.guest().join(f.trim_start_matches('/'));
            std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file())
        })
        .expect("fx-00007 owns a regular file");
    let tampered_host = host.guest().join(tampered.trim_start_matches('/'));
    let mut content = std::fs::read(&tampered_host).unwrap();
    content.extend_from_slice(b"tampered\n");
    std::fs::write(&tampered_host, content).unwrap();

    let out = host.ok(&["t", "pkgmgmt", "externalize"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.lines().any(|l| l == format!("- {victim}")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.ends_with(&format!(" {tampered}")) && l.starts_with("S.5")),
        "{stdout}"
    );
    assert!(stderr.contains("verification found"), "{stderr}");
    let expected: Vec<String> = packages.iter().filter(|p| **p != victim).cloned().collect();
    host.assert_external(&expected);
    // vrpm works on the rebuilt database: it sees the change too.
    let out = host.vserver(&["vrpm", "t", "--", "-V", "fx-00007"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&tampered));

    // Hostile guest: links at the paths internalize writes to, pointing at a host canary.
    let canary = host.dir.join("canary");
    std::fs::create_dir_all(canary.join("rpm")).unwrap();
    std::fs::write(canary.join("keep"), "host file\n").unwrap();
    let before = snapshot(&canary);
    let guest = host.guest();
    let depth = guest.components().count();
    let dotdots = format!(
        "{}{}",
        "../".repeat(depth + 2),
        canary.display().to_string().trim_start_matches('/')
    );
    let plants: Vec<(&str, String, Option<&str>)> = vec![
        ("var/lib/rpm", canary.display().to_string(), None),
        ("var/lib/rpm", dotdots.clone(), None),
        ("etc/yum.repos.d", canary.display().to_string(), None),
        ("etc/yum.repos.d", dotdots.clone(), None),
        ("etc/rpm", "/etc/rpm".to_owned(), None),
        ("etc/dnf", canary.display().to_string(), None),
        (
            "usr/lib/sysimage",
            canary.display().to_string(),
            Some("%_dbpath /usr/lib/sysimage/rpm\n"),
        ),
        ("var/lib", dotdots.clone(), None),
    ];
    for (link, target, macros) in &plants {
        let at = guest.join(link);
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        let moved = at.exists() && !at.is_symlink();
        if moved {
            std::fs::rename(&at, guest.join("saved")).unwrap();
        }
        std::os::unix::fs::symlink(target, &at).unwrap();
        if let Some(macros) = macros {
            std::fs::create_dir_all(guest.join("etc/rpm")).unwrap();
            std::fs::write(guest.join("etc/rpm/macros"), macros).unwrap();
        }
        let out = host.vserver(&["t", "pkgmgmt", "internalize"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{link} -> {target}: {stderr}");
        assert!(stderr.contains("symlink"), "{link} -> {target}: {stderr}");
        assert_eq!(snapshot(&canary), before, "{link} -> {target}");
        std::fs::remove_file(&at).unwrap();
        if moved {
            std::fs::rename(guest.join("saved"), &at).unwrap();
        }
        if macros.is_some() {
            std::fs::remove_file(guest.join("etc/rpm/macros")).unwrap();
        }
        host.assert_external(&expected);
    }
    // A database path that is not a plain path is refused too.
    std::fs::create_dir_all(guest.join("etc/rpm")).unwrap();
    std::fs::write(
        guest.join("etc/rpm/macros"),
        "%_dbpath /var/lib/../../proc/rpm\n",
    )
    .unwrap();
    let out = host.vserver(&["t", "pkgmgmt", "internalize"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a plain absolute path"));
    std::fs::remove_file(guest.join("etc/rpm/macros")).unwrap();
    assert_eq!(snapshot(&canary), before);
    host.assert_external(&expected);

    // A running guest is refused, unless --force: then it is frozen for the change and runs on.
    // The guest's init keeps inherited pipes open: no `output()` here.
    let started = host
        .command(&["t", "start", "--init", "/bin/busybox sleep 1000"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(started.success());
    let out = host.vserver(&["t", "pkgmgmt", "internalize"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is running"));
    host.assert_external(&expected);
    host.ok(&["t", "pkgmgmt", "internalize", "--force"]);
    host.assert_internal(&expected);
    let status = host.ok(&["t", "status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let cgroup = PathBuf::from(status["running"]["cgroups"][0].as_str().unwrap());
    for file in ["cgroup.freeze", "freezer.state"] {
        if let Ok(state) = std::fs::read_to_string(cgroup.join(file)) {
            assert!(
                state.trim() == "0" || state.trim() == "THAWED",
                "{file}: {state}"
            );
        }
    }
    host.ok(&["t", "pkgmgmt", "externalize", "--force"]);
    host.assert_external(&expected);
    host.ok(&["t", "stop", "--timeout", "1"]);

    // --purge-external: no archive is kept; externalize rebuilds the database all the same.
    host.ok(&["t", "pkgmgmt", "internalize", "--purge-external"]);
    assert!(!host.pkg().join("rpm/state").exists());
    host.assert_internal(&expected);
    host.ok(&["t", "pkgmgmt", "externalize"]);
    host.assert_external(&expected);

    // The database goes where the guest's own macros say, as Fedora's rpm does.
    std::fs::create_dir_all(guest.join("usr/lib/rpm")).unwrap();
    std::fs::write(
        guest.join("usr/lib/rpm/macros"),
        "%_dbpath\t\t%{_var}/lib/rpm\n%_dbpath %{_usr}/lib/sysimage/rpm\n%_db_backend sqlite\n",
    )
    .unwrap();
    host.ok(&["t", "pkgmgmt", "internalize"]);
    assert_eq!(host.internal_packages_at("/usr/lib/sysimage/rpm"), expected);
    assert!(!guest.join("var/lib/rpm").exists());
    host.ok(&["t", "pkgmgmt", "externalize"]);
    assert!(!guest.join("usr/lib/sysimage").exists());
    std::fs::remove_dir_all(guest.join("usr/lib/rpm")).unwrap();
    host.assert_external(&expected);
}
