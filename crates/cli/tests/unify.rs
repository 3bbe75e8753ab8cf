//! `vserver --all unify` on RPM guests built from generated fixtures with the real rpm and dnf,
//! on an xfs file system with reflinks in a loop image: identical packaged files end up sharing
//! their extents (the disk use falls, measured with statfs), every guest still verifies, a write
//! to a unified file in one guest leaves the others' copies unchanged, a second run asks the
//! kernel about nothing (the index), a run killed at random points leaves every guest verifying;
//! on ext4 nothing changes and the report says what would be saved. The same on two real
//! Debian minbase guests (the cached bookworm packages), where the candidates come from dpkg's
//! md5sums and conffiles are left alone.
//!
//! Needs root, rpm, dnf, busybox, mkfs.xfs and loop devices; skips with a reason otherwise,
//! fails instead when VSERVER_TEST_REQUIRE_ALL=1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{TestHost, available, checked};

const PACKAGES: &str = "fx-shell fx-00000 fx-00001 fx-00002 fx-00003 fx-00004 fx-00005";

/// An xfs image mounted on `at`, unmounted and removed when dropped.
struct Xfs {
    at: PathBuf,
    image: PathBuf,
}

impl Xfs {
    fn mount(at: &Path) -> Option<Xfs> {
        Xfs::mount_sized(at, "1G")
    }

    fn mount_sized(at: &Path, size: &str) -> Option<Xfs> {
        let image = at.with_extension("img");
        std::fs::create_dir_all(at).unwrap();
        checked(Command::new("truncate").arg("-s").arg(size).arg(&image));
        checked(
            Command::new("mkfs.xfs")
                .args(["-q", "-m", "reflink=1"])
                .arg(&image),
        );
        let mounted = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(at)
            .status()
            .unwrap()
            .success();
        available(mounted, "cannot mount an xfs image on a loop device").then_some(Xfs {
            at: at.to_owned(),
            image,
        })
    }

    fn used(&self) -> u64 {
        let stat = rustix_statfs(&self.at);
        stat.0 - stat.1
    }
}

impl Drop for Xfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.at).status();
        let _ = std::fs::remove_file(&self.image);
    }
}

/// (total, free) bytes of the file system holding `path`.
fn rustix_statfs(path: &Path) -> (u64, u64) {
    let out = checked(
        Command::new("stat")
            .args(["-f", "-c", "%S %b %f"])
            .arg(path),
    );
    let fields: Vec<u64> = out.split_whitespace().map(|w| w.parse().unwrap()).collect();
    (fields[0] * fields[1], fields[0] * fields[2])
}

fn unify_json(host: &TestHost) -> serde_json::Value {
    let out = host.ok(&["--all", "unify", "--json"]);
    serde_json::from_str(&out).unwrap()
}

/// Files `--all verify` did not read again because they share every extent with one it read.
fn digests_reused(host: &TestHost) -> u64 {
    let out = host.ok(&["--all", "verify", "--json"]);
    let reports: serde_json::Value = serde_json::from_str(&out).unwrap();
    reports
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["digests_reused"].as_u64().unwrap())
        .sum()
}

fn assert_all_verify(host: &TestHost, what: &str) {
    let out = host.vserver(&["--all", "verify"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn unify_shares_identical_files_and_keeps_every_guest_its_own() {
    if !available(
        Path::new("/usr/sbin/mkfs.xfs").exists() || Path::new("/sbin/mkfs.xfs").exists(),
        "needs mkfs.xfs (xfsprogs)",
    ) {
        return;
    }
    let Some(host) = TestHost::with_rpm_fixture("vserver-unify", 18, 40, PACKAGES) else {
        return;
    };
    let Some(xfs) = Xfs::mount(&host.dir.join("vservers")) else {
        return;
    };
    let base = xfs.used();
    host.ok(&["a", "build", "-m", "yum", "--", "-d", "fixture"]);
    let one = xfs.used() - base;
    for guest in ["b", "c", "d"] {
        host.ok(&[guest, "build", "-m", "yum", "--", "-d", "fixture"]);
    }
    let four = xfs.used() - base;
    // Package state is hostile input too: links out of it (absolute, `..`) and a FIFO where
    // unify looks are neither followed nor waited on.
    let canary = host.dir.join("canary");
    std::fs::write(&canary, "host\n").unwrap();
    // (A tree of dpkg's state, which unify reads in every guest that has one and nothing
    // purges in an rpm guest.)
    let info = host.dir.join("vservers/.pkg/d/dpkg/state/info");
    std::fs::create_dir_all(&info).unwrap();
    std::os::unix::fs::symlink(&canary, info.join("abs.list")).unwrap();
    std::os::unix::fs::symlink("../../../../../../canary", info.join("up.list")).unwrap();
    std::os::unix::fs::symlink("loop.list", info.join("loop.list")).unwrap();
    checked(Command::new("mkfifo").arg(info.join("fifo.list")));
    for guest in ["a", "b", "c"] {
        let info = host
            .dir
            .join("vservers/.pkg")
            .join(guest)
            .join("dpkg/state/info");
        std::fs::create_dir_all(&info).unwrap();
        for name in ["abs.list", "up.list", "fifo.list", "loop.list"] {
            std::fs::write(info.join(name), "host\n").unwrap();
        }
    }
    let report = unify_json(&host);
    assert_eq!(std::fs::read_to_string(&canary).unwrap(), "host\n");
    assert!(std::fs::symlink_metadata(&canary).unwrap().is_file());
    assert!(
        std::fs::symlink_metadata(info.join("abs.list"))
            .unwrap()
            .is_symlink()
    );
    let after = xfs.used() - base;
    eprintln!(
        "one guest {} KiB, four {} KiB, after unify {} KiB ({:.2}x one guest); {report}",
        one / 1024,
        four / 1024,
        after / 1024,
        after as f64 / one as f64
    );
    assert_eq!(report["supported"], true, "{report}");
    assert!(report["shared_files"].as_u64().unwrap() > 50, "{report}");
    let shared = report["shared_bytes"].as_u64().unwrap();
    assert!(
        four - after >= shared / 2,
        "saved {} of {shared}",
        four - after
    );
    // Package state (the plugin copies, here) is shared too.
    assert!(report["state_files"].as_u64().unwrap() >= 4, "{report}");
    assert!(
        (after as f64) < 2.0 * one as f64,
        "four guests still use {after} bytes, one used {one}"
    );
    assert_all_verify(&host, "after unify");
    // Unified files are read once for all guests.
    let reused = digests_reused(&host);
    assert!(
        reused >= report["shared_files"].as_u64().unwrap() / 2,
        "verify read again {reused} of {report}"
    );

    // A second run finds everything in its index.
    let again = unify_json(&host);
    assert_eq!(again["shared_files"], 0, "{again}");
    assert!(again["known_files"].as_u64().unwrap() >= report["shared_files"].as_u64().unwrap());
    // Without its index, the extent maps say the same: the kernel is asked about nothing.
    std::fs::remove_file(host.dir.join("vservers/.pkg/.unify/index")).unwrap();
    let unindexed = unify_json(&host);
    assert_eq!(unindexed["shared_files"], 0, "{unindexed}");
    assert_eq!(
        unindexed["known_files"], again["known_files"],
        "{unindexed}"
    );

    // A write into one guest's unified file stays in that guest.
    let owned = host.ok(&["vrpm", "a", "--", "-ql", "fx-00001"]);
    let file = owned
        .lines()
        .find(|p| p.ends_with("-tool"))
        .unwrap()
        .trim_start_matches('/')
        .to_owned();
    let b_before = std::fs::read(host.dir.join("vservers/b").join(&file)).unwrap();
    std::fs::write(
        host.dir.join("vservers/a").join(&file),
        "#!/bin/sh\necho changed\n",
    )
    .unwrap();
    assert_eq!(
        std::fs::read(host.dir.join("vservers/b").join(&file)).unwrap(),
        b_before
    );
    for guest in ["b", "c", "d"] {
        let out = host.vserver(&[guest, "verify"]);
        assert_eq!(out.status.code(), Some(0), "{guest}");
    }
    let out = host.vserver(&["a", "verify"]);
    assert_eq!(out.status.code(), Some(5));
    // Put it back as it was, time included.
    let restored = host.dir.join("vservers/a").join(&file);
    std::fs::write(&restored, &b_before).unwrap();
    let mtime = std::fs::metadata(host.dir.join("vservers/b").join(&file))
        .unwrap()
        .modified()
        .unwrap();
    std::fs::File::options()
        .write(true)
        .open(&restored)
        .unwrap()
        .set_modified(mtime)
        .unwrap();

    // Killed at random points (new guests make new work each time): every guest verifies.
    let mut seed: u64 = 0x0123_4567_89ab_cdef;
    let mut killed = 0;
    for trial in 0..10 {
        let guest = format!("k{trial}");
        host.ok(&[&guest, "build", "-m", "clone", "--", "--source", "b"]);
        let _ = std::fs::remove_file(host.dir.join("vservers/.pkg/.unify/index"));
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut child = host.command(&["--all", "unify"]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(seed % 400));
        let _ = child.kill();
        if child.wait().unwrap().signal() == Some(9) {
            killed += 1;
        }
        assert_all_verify(&host, &format!("unify killed in trial {trial}"));
    }
    eprintln!("unify killed mid-run {killed} of 10 times; every guest verified after each");
    // The clones share nothing yet where the kills stopped early; a whole run finishes the work.
    let last = unify_json(&host);
    assert_eq!(last["differed"], 0, "{last}");
    assert_all_verify(&host, "after the last unify");
}

#[test]
fn without_shared_extents_unify_only_reports() {
    let Some(host) = TestHost::with_rpm_fixture("vserver-unify-ext4", 19, 10, PACKAGES) else {
        return;
    };
    host.ok(&["a", "build", "-m", "yum", "--", "-d", "fixture"]);
    host.ok(&["b", "build", "-m", "yum", "--", "-d", "fixture"]);
    let fs = checked(Command::new("stat").args(["-f", "-c", "%T"]).arg(&host.dir));
    if fs.trim() == "xfs" || fs.trim() == "btrfs" {
        eprintln!("skipped: the work directory is on {fs}, which shares extents");
        return;
    }
    let before = common::snapshot(&host.dir.join("vservers/a"));
    let report = unify_json(&host);
    assert_eq!(report["supported"], false, "{report}");
    assert!(report["possible_bytes"].as_u64().unwrap() > 0, "{report}");
    assert!(report["note"].as_str().unwrap().contains("xfs"), "{report}");
    assert_eq!(common::snapshot(&host.dir.join("vservers/a")), before);
    assert_all_verify(&host, "after a report-only unify");
}

fn has_xfs() -> bool {
    available(
        Path::new("/usr/sbin/mkfs.xfs").exists() || Path::new("/sbin/mkfs.xfs").exists(),
        "needs mkfs.xfs (xfsprogs)",
    )
}

#[test]
fn debian_guests_share_their_packaged_files_but_not_their_conffiles() {
    if !has_xfs() || !available(common::is_root(), "needs root") {
        return;
    }
    let host = TestHost::new("vserver-unify-deb");
    let work = host.dir.join("work");
    if common::debian_cache::minbase(&work).is_none() {
        return;
    }
    let mirror = host.dir.join("mirror");
    common::debian_cache::local_mirror(&work, &mirror);
    let Some(xfs) = Xfs::mount_sized(&host.dir.join("vservers"), "2G") else {
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
    let base = xfs.used();
    host.ok(&["a", "build", "-m", "apt", "--", "-d", "localdeb"]);
    let one = xfs.used() - base;
    host.ok(&["b", "build", "-m", "apt", "--", "-d", "localdeb"]);
    let two = xfs.used() - base;
    // First only the large files: those and nothing else are shared, and the small ones are
    // counted as left out.
    let large: serde_json::Value =
        serde_json::from_str(&host.ok(&["--all", "unify", "--min-size", "64K", "--json"])).unwrap();
    let large_files = large["shared_files"].as_u64().unwrap();
    assert!(large_files >= 10, "{large}");
    assert!(
        large["shared_bytes"].as_u64().unwrap() >= large_files * 65536,
        "{large}"
    );
    assert!(large["below_min_size"].as_u64().unwrap() > 1000, "{large}");
    let after_large = xfs.used() - base;
    assert!(after_large < two, "{large}");
    let report = unify_json(&host);
    assert!(
        report["known_files"].as_u64().unwrap() >= large_files,
        "the large files were not remembered: {report}"
    );
    let after = xfs.used() - base;
    eprintln!(
        "one Debian guest {} KiB, two {} KiB, after unify {} KiB ({:.2}x one guest); {report}",
        one / 1024,
        two / 1024,
        after / 1024,
        after as f64 / one as f64
    );
    assert_eq!(report["supported"], true, "{report}");
    assert!(report["shared_files"].as_u64().unwrap() > 1000, "{report}");
    assert_eq!(report["differed"], 0, "{report}");
    assert!(
        (after as f64) < 1.1 * one as f64,
        "two guests still use {after} bytes, one used {one}"
    );
    assert_all_verify(&host, "after unify");
    assert!(digests_reused(&host) > 1000);
    for guest in ["a", "b"] {
        host.ok(&["vdpkg", guest, "--", "--verify"]);
    }

    // A conffile is never a candidate: its extents stay the guest's own (FIEMAP's
    // FIEMAP_EXTENT_SHARED, 0x2000, as xfs_io shows it).
    let shared = |guest: &str, file: &str| {
        let map = checked(
            Command::new("xfs_io")
                .args(["-r", "-c", "fiemap -v"])
                .arg(host.dir.join("vservers").join(guest).join(file)),
        );
        map.lines()
            .filter_map(|l| l.split_whitespace().last()?.strip_prefix("0x"))
            .filter_map(|flags| u64::from_str_radix(flags, 16).ok())
            .any(|flags| flags & 0x2000 != 0)
    };
    let conffile = "etc/debian_version";
    assert!(
        std::fs::read_to_string(
            host.dir
                .join("vservers/.pkg/a/dpkg/state/info/base-files.conffiles")
        )
        .unwrap()
        .contains(&format!("/{conffile}"))
    );
    assert!(!shared("a", conffile), "a conffile was unified");
    assert!(
        shared("a", "usr/bin/dpkg"),
        "a packaged binary was not unified"
    );
    assert!(
        shared("a", "usr/share/doc/dpkg/copyright"),
        "a small file was not unified by the run without --min-size"
    );

    // A write into one guest's unified file stays in that guest.
    let file = "usr/share/doc/dpkg/copyright";
    let b_before = std::fs::read(host.dir.join("vservers/b").join(file)).unwrap();
    std::fs::write(host.dir.join("vservers/a").join(file), "changed\n").unwrap();
    assert_eq!(
        std::fs::read(host.dir.join("vservers/b").join(file)).unwrap(),
        b_before
    );
    assert_eq!(host.vserver(&["b", "verify"]).status.code(), Some(0));
    assert_eq!(host.vserver(&["a", "verify"]).status.code(), Some(5));
}
