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

    // An unknown guest is one clear error line with a hint.
    let unknown = host.vserver(&["vrpm", "tt", "--", "-qa"]);
    assert_eq!(unknown.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(stderr.contains("tt"), "{stderr}");
}
