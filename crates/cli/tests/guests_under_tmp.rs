//! A guest whose roots (configuration, guest root, package state, repository) all lie below
//! the host's `/tmp`: built and managed like any other. The per-operation sandbox gives every
//! operation a private, writable `/tmp` (and `TMPDIR`) and shows the host's entries of `/tmp`
//! again on it, so dnf's metadata refresh (`--refresh` makes a temporary directory in `/tmp`)
//! works; before, it failed with "Cannot create repo temporary directory … Read-only file
//! system". The Debian side (apt's temporary files when it checks a signature) is covered by
//! `signed_subset.rs`, whose guest lies below `/tmp`.
//!
//! Needs root, rpm and dnf; skips with a reason otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{TestHost, rpm_guest_prerequisites};
use vserver_fixtures::{RpmSetOptions, Scriptlets};

#[test]
fn an_rpm_guest_below_tmp_is_built_and_refreshed() {
    if rpm_guest_prerequisites().is_none() {
        return;
    }
    let host = TestHost::below_tmp("vserver-under-tmp");
    assert!(host.dir.starts_with("/tmp"));
    let repo = host.dir.join("repo");
    vserver_fixtures::write_rpm_set_with_busybox(
        &repo,
        &RpmSetOptions {
            seed: 16,
            count: 6,
            scriptlets: Scriptlets::Shell,
            ..RpmSetOptions::default()
        },
        Path::new("/bin/busybox"),
    )
    .unwrap();
    host.register_fixture(&repo, "fx-shell fx-00002");
    host.ok(&["t", "build", "-m", "yum", "--", "-d", "fixture"]);
    // `--refresh` makes dnf check its cached metadata in a temporary directory below /tmp.
    host.ok(&[
        "vyum",
        "t",
        "--",
        "-q",
        "-y",
        "--refresh",
        "install",
        "fx-00004",
    ]);
    let query = host.ok(&["vrpm", "t", "--", "-q", "--qf", "%{NAME}\n", "fx-00004"]);
    assert_eq!(query, "fx-00004\n");
    host.ok(&["vyum", "t", "--", "-q", "-y", "--refresh", "makecache"]);
    // Nothing of the operations' temporary files is left in the host's /tmp or in the guest.
    let leftovers: Vec<String> = std::fs::read_dir("/tmp")
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.starts_with("tmpdir.").then_some(name)
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let guest = host.dir.join("vservers/t");
    assert!(
        host.dir
            .join("vservers/.pkg/t/rpm/state/rpmdb.sqlite")
            .is_file()
    );
    assert!(!guest.join("var/lib/rpm").exists());
    assert!(guest.join("bin/busybox").is_file());

    // A hostile guest: its /tmp and /var/tmp are links out of it (absolute, and `..` steps up
    // to the host's /tmp). The operation's private /tmp is the sandbox's, not the guest's, and
    // nothing outside the guest changes, whatever the operation makes of the links.
    let canary = host.dir.join("canary");
    std::fs::create_dir_all(&canary).unwrap();
    std::fs::write(canary.join("file"), "host data").unwrap();
    let before = common::snapshot(&canary);
    let host_tmp_before: Vec<_> = std::fs::read_dir("/tmp")
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    std::fs::remove_dir_all(guest.join("tmp")).unwrap();
    std::os::unix::fs::symlink(&canary, guest.join("tmp")).unwrap();
    let _ = std::fs::remove_dir_all(guest.join("var/tmp"));
    std::os::unix::fs::symlink("../../../../../../../../tmp", guest.join("var/tmp")).unwrap();
    let _ = host.vserver(&[
        "vyum",
        "t",
        "--",
        "-q",
        "-y",
        "--refresh",
        "install",
        "fx-00005",
    ]);
    assert_eq!(common::snapshot(&canary), before);
    let new_in_host_tmp: Vec<String> = std::fs::read_dir("/tmp")
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| !host_tmp_before.contains(name))
        .map(|name| name.to_string_lossy().into_owned())
        .collect();
    assert!(
        new_in_host_tmp
            .iter()
            .all(|n| !n.starts_with("tmpdir.") && !n.starts_with("rpm-tmp")),
        "{new_in_host_tmp:?}"
    );
}
