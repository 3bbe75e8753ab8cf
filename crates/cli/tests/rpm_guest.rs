//! An RPM guest as a new user makes one, through the `vserver` binary: a generated repository
//! indexed with `vrepo index`, mirrored with `vrepo mirror` and served by `vrepo serve` over HTTP,
//! registered with `vdistro add`, then `vserver t build -m yum`,
//! `vyum install`, `vrpm -q`, `vyum remove`, `vrpm -Va`. The database must end up outside the
//! guest, the guest must hold no rpm or dnf state, and the tools' exit statuses must come back.
//!
//! Needs root, rpm and dnf; skips with a reason otherwise, fails instead when
//! VSERVER_TEST_REQUIRE_ALL=1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::{TestHost, rpm_guest_prerequisites, serve};
use vserver_fixtures::{RpmSetOptions, Scriptlets};

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

#[test]
fn rpm_guest_as_a_new_user_makes_it() {
    if rpm_guest_prerequisites().is_none() {
        return;
    }
    let host = TestHost::new("vserver-cli-rpm");
    let repo = host.dir.join("repo");
    vserver_fixtures::write_rpm_set_with_busybox(
        &repo,
        &RpmSetOptions {
            seed: 3,
            count: 12,
            scriptlets: Scriptlets::Shell,
            ..RpmSetOptions::default()
        },
        Path::new("/bin/busybox"),
    )
    .unwrap();
    host.ok(&["vrepo", "index", "-q", repo.to_str().unwrap()]);
    // As the seed's step 1: the shipped packages are mirrored, then served to the builders,
    // both over HTTP by `vrepo serve`.
    let (_origin, origin_url) = serve(&repo);
    let mirror = host.dir.join("mirror");
    host.ok(&[
        "vrepo",
        "mirror",
        "-q",
        "--no-verify-signature",
        &origin_url,
        mirror.to_str().unwrap(),
    ]);
    let (_mirror_server, mirror_url) = serve(&mirror);
    host.ok(&[
        "vdistro",
        "add",
        "fixture",
        "--releasever",
        "1",
        "--repo",
        &format!("fx={mirror_url}/"),
        "--pkgs",
        "fx-shell fx-00002",
    ]);
    host.ok(&["t", "build", "-m", "yum", "--", "-d", "fixture"]);

    host.ok(&["vyum", "t", "--", "-q", "-y", "install", "fx-00011"]);
    let query = host.ok(&[
        "vrpm",
        "t",
        "--",
        "-q",
        "--qf",
        "%{NAME}\n",
        "fx-00011",
        "fx-shell",
    ]);
    assert_eq!(query.lines().collect::<Vec<_>>(), ["fx-00011", "fx-shell"]);
    // The tool's own exit status comes back: rpm -q of a missing package exits 1.
    let missing = host.vserver(&["vrpm", "t", "--", "-q", "no-such-package"]);
    assert_eq!(missing.status.code(), Some(1));
    host.ok(&["vyum", "t", "--", "-q", "-y", "remove", "fx-00011"]);
    assert_eq!(
        host.vserver(&["vrpm", "t", "--", "-q", "fx-00011"])
            .status
            .code(),
        Some(1)
    );
    host.ok(&["vrpm", "t", "--", "-Va"]);

    // The database lives under .pkg; the guest holds no database and no dnf state.
    let pkg = host.dir.join("vservers/.pkg/t");
    assert!(pkg.join("rpm/state/rpmdb.sqlite").is_file());
    let guest = host.dir.join("vservers/t");
    assert!(
        entries(&guest.join(".rpmdb")).is_empty(),
        "/.rpmdb is empty"
    );
    assert!(!guest.join("var/lib/rpm").exists());
    assert!(!guest.join("var/lib/dnf").exists());
    assert!(!guest.join("var/cache/dnf").exists());
    // A shell scriptlet of the generated packages ran inside the guest.
    assert!(guest.join("bin/busybox").is_file());
    // The root and its standard directories: root's, with the usual modes (as apt guests,
    // tests/service_guests.rs).
    common::assert_root_modes(&guest);

    // An unknown guest is one clear error line with a hint.
    let unknown = host.vserver(&["vrpm", "tt", "--", "-qa"]);
    assert_eq!(unknown.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(stderr.contains("tt"), "{stderr}");
}

/// The pids of processes whose command line holds `needle` (arguments joined by NULs).
fn processes_running(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            found.push(pid);
        }
    }
    found
}

/// Issue 13: a `%post` that stops rpm (`kill -STOP $PPID`, its parent) and sleeps would hold
/// the guest's lock for ever. With a short `operation_time_limit` in the guest's configuration
/// (and then with `VSERVER_OPERATION_TIME_LIMIT`, which wins over it) `vrpm -i` fails at the
/// limit with one line naming the scriptlet, nothing of it is left running, and the next
/// operation on the guest works at once.
#[test]
fn a_hung_scriptlet_is_killed_at_the_time_limit() {
    if rpm_guest_prerequisites().is_none() {
        return;
    }
    let host = TestHost::new("vserver-cli-time-limit");
    let repo = host.dir.join("repo");
    vserver_fixtures::busybox_shell_rpm(&repo, Path::new("/bin/busybox")).unwrap();
    host.register_fixture(&repo, "fx-shell");
    host.ok(&["t", "build", "-m", "yum", "--", "-d", "fixture"]);

    // A sleep nobody else runs, to look for leftovers by.
    let sleep_arg = format!("{}", 100_000 + std::process::id());
    let mut hung = vserver_fixtures::RpmPackage::new("hung-post", "1.0");
    hung.release("1")
        .file("/usr/share/hung-post/README", b"hung\n".to_vec(), 0o644)
        .post_install(format!(
            "kill -STOP $PPID\n/bin/busybox sleep {sleep_arg}\n"
        ));
    let package = hung.write_to(&host.dir).unwrap();
    let config = host.dir.join("etc/t/config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("operation_time_limit = \"3s\"\n{text}")).unwrap();

    let install = |env: &[(&str, &str)]| {
        let started = Instant::now();
        // Killed in its %post, the package is in the database (as after a crash of rpm), so
        // the second attempt reinstalls it.
        let out = host.vserver_with(
            env,
            &[
                "vrpm",
                "t",
                "--",
                "-i",
                "--replacepkgs",
                package.to_str().unwrap(),
            ],
        );
        (out, started.elapsed())
    };
    let check = |out: &Output, elapsed: Duration, limit: &str, seconds: u64| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!("{stderr}(after {elapsed:?})");
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        let error = stderr
            .lines()
            .find(|l| l.starts_with("vrpm: error: "))
            .unwrap_or_else(|| panic!("no error line: {stderr}"));
        assert!(
            error.starts_with("vrpm: error: guest `t`: `rpm --root ")
                && error.contains(&format!(
                    " did not finish within {limit}; killed it while it ran `/bin/sh /var/tmp/rpm-tmp."
                ))
                && error.ends_with(&format!(", which ran `/bin/busybox sleep {sleep_arg}`")),
            "{error}"
        );
        assert!(stderr.contains("vrpm: hint: "), "{stderr}");
        let limit = Duration::from_secs(seconds);
        assert!(
            elapsed >= limit && elapsed < limit + Duration::from_secs(5),
            "{elapsed:?}"
        );
        assert_eq!(
            processes_running(&format!("sleep\0{sleep_arg}")),
            Vec::<u32>::new()
        );
        // The lock is free and rpm's database usable: the next operation runs at once.
        let started = Instant::now();
        let query = host.ok(&["vrpm", "t", "--", "-q", "--qf", "%{NAME}\n", "fx-shell"]);
        assert_eq!(query, "fx-shell\n");
        assert!(started.elapsed() < Duration::from_secs(10));
    };
    let (out, elapsed) = install(&[]);
    check(&out, elapsed, "3s", 3);

    // The variable wins over the configuration, for one command; a bad value is refused.
    std::fs::write(&config, format!("operation_time_limit = \"1h\"\n{text}")).unwrap();
    let (out, elapsed) = install(&[("VSERVER_OPERATION_TIME_LIMIT", "2s")]);
    check(&out, elapsed, "2s", 2);
    let bad = host.vserver_with(
        &[("VSERVER_OPERATION_TIME_LIMIT", "soon")],
        &["vrpm", "t", "--", "-qa"],
    );
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("bad VSERVER_OPERATION_TIME_LIMIT `soon`"),
        "{stderr}"
    );
}
