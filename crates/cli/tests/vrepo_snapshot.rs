//! Staging updates with snapshots, as a fleet does: mirror, snapshot A; the source gets a new
//! version of a package; mirror, snapshot B; publish B as `stable`: a guest whose
//! distribution points at `…/stable` sees the new version; publish A again: the guest's
//! `apt-get update` sees the old one. A snapshot costs its metadata only (measured). Killing
//! the publish switch at points across its whole run leaves `stable` at A or at B, complete.
//!
//! Needs root, gpg, apt, the host's bookworm apt lists and the cached minbase packages in
//! /var/tmp/vserver-test-debs (fetched through the host's apt when missing, as the `deb_guest` tests do); skips with a reason otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{WORK_BASE, built_plugin, checked, run, serve};
use vserver_fixtures::DebPackage;

fn vserver() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vserver"))
}

fn vrepo() -> Command {
    let mut command = vserver();
    command.arg("vrepo");
    command
}

use common::debian_cache::host_sources;

/// The archive's `PACKAGE PRIORITY SECTION` for the cached packages, from the host's lists.
fn overrides(work: &Path, names: &BTreeSet<String>) -> String {
    std::fs::create_dir_all(work.join("cache/archives/partial")).unwrap();
    std::fs::create_dir_all(work.join("empty")).unwrap();
    std::fs::write(work.join("sources.list"), host_sources().unwrap()).unwrap();
    std::fs::write(work.join("status"), "").unwrap();
    let mut command = Command::new("apt-cache");
    for (key, value) in [
        ("Dir::Etc::SourceList", work.join("sources.list")),
        ("Dir::Etc::SourceParts", work.join("empty")),
        ("Dir::State::status", work.join("status")),
        ("Dir::Cache", work.join("cache")),
    ] {
        command.arg(format!("-o{key}={}", value.display()));
    }
    let shown = checked(command.args(["show", "--no-all-versions"]).args(names));
    let mut out = String::new();
    let mut seen = BTreeSet::new();
    for stanza in shown.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                .map(str::to_owned)
        };
        if let Some(name) = field("Package")
            && seen.insert(name.clone())
        {
            out.push_str(&format!(
                "{name} {} {}\n",
                field("Priority").unwrap_or_else(|| "optional".into()),
                field("Section").unwrap_or_else(|| "misc".into())
            ));
        }
    }
    out
}

struct Host {
    conf: PathBuf,
    roots: PathBuf,
    pkg: PathBuf,
}

impl Host {
    fn command(&self, applet: &str) -> Command {
        let mut command = vserver();
        command
            .arg(applet)
            .env("VSERVER_CONFDIR", &self.conf)
            .env("VSERVER_ROOTDIR", &self.roots)
            .env("VSERVER_PKGDIR", &self.pkg);
        if let Some(plugin) = built_plugin() {
            command.env("VSERVER_RPM_PLUGIN", plugin);
        }
        command
    }

    fn candidate(&self, package: &str) -> String {
        let policy = checked(
            self.command("vapt-cache")
                .args(["d", "--", "policy", package]),
        );
        policy
            .lines()
            .find_map(|l| l.trim().strip_prefix("Candidate: "))
            .unwrap_or_else(|| panic!("no candidate in {policy}"))
            .to_owned()
    }
}

fn snapshot_json(output: &std::process::Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The snapshot `stable` shows, checking that it is complete.
fn stable_target(publish_root: &Path) -> String {
    // The published name leads to a publication, whose hidden `.snapshot` names the snapshot.
    let name = std::fs::read_to_string(publish_root.join("stable/.snapshot"))
        .unwrap()
        .trim()
        .to_owned();
    let release = publish_root.join("stable/dists/bookworm/InRelease");
    assert!(release.is_file(), "stable -> {name} is not complete");
    name
}

#[test]
fn snapshots_stage_an_update_and_the_switch_is_atomic() {
    if !common::debian_cache::signed_guest_prerequisites() {
        return;
    }
    std::fs::create_dir_all(WORK_BASE).unwrap();
    let top = tempfile::Builder::new()
        .prefix("snapshots")
        .tempdir_in(WORK_BASE)
        .unwrap();
    let top = top.path();

    let key = common::gpg::TestKey::new(&top.join("gnupg"), "fleet", "fleet@example.invalid");
    let home = key.home.clone();
    let sign = key.sign_args();
    let keyring = top.join("fleet.gpg");
    checked(
        vrepo()
            .args(["key", "export", "--binary", "fleet@example.invalid"])
            .arg("--gpg-homedir")
            .arg(&home)
            .arg("-o")
            .arg(&keyring),
    );

    // The source: the cached minbase plus `fxsnap` 1.0.
    let origin = top.join("origin");
    let pool = origin.join("pool");
    let names = common::debian_cache::link_cache_into(&pool);
    let override_file = top.join("override");
    std::fs::write(&override_file, overrides(&top.join("apt-work"), &names)).unwrap();
    let fxsnap = |version: &str| {
        let mut package = DebPackage::new("fxsnap", version);
        package.file(
            "/usr/share/fxsnap/VERSION",
            version.as_bytes().to_vec(),
            0o644,
        );
        package.write_to(&pool).unwrap()
    };
    let old = fxsnap("1.0");
    let index_origin = || {
        checked(
            vrepo()
                .args(["index", "-q", "--suite", "bookworm", "--override"])
                .arg(&override_file)
                .args(&sign)
                .arg(&origin),
        );
    };
    index_origin();
    let (_origin_server, origin_url) = serve(&origin);

    let mirror_dir = top.join("mirror");
    let publish_root = top.join("published");
    std::fs::create_dir_all(&publish_root).unwrap();
    let mirror = || {
        run(vrepo()
            .args(["mirror", "-q", "--suite", "bookworm", "--keyring"])
            .arg(&keyring)
            .args(&sign)
            .arg(&origin_url)
            .arg(&mirror_dir))
    };
    let create = |name: &str| {
        snapshot_json(&run(vrepo()
            .args(["snapshot", "create", name, "--json", "--from"])
            .arg(&mirror_dir)
            .arg("--root")
            .arg(&publish_root)))
    };
    assert_eq!(mirror().status.code(), Some(0));
    let a = create("A");

    // The source gets a new version; the mirror follows; snapshot B.
    std::fs::remove_file(&old).unwrap();
    fxsnap("2.0");
    index_origin();
    assert_eq!(mirror().status.code(), Some(0));
    let b = create("B");
    assert_eq!(a["packages"], b["packages"]);

    // What a snapshot costs: its copied metadata; every package is a link into the pool.
    let snapshot_b = publish_root.join(".vrepo-snapshots/snapshots/B");
    let mut new_bytes = 0;
    let mut shared = 0;
    for entry in walk(&snapshot_b) {
        let meta = std::fs::symlink_metadata(&entry).unwrap();
        if entry.extension().is_some_and(|e| e == "deb") {
            let mirrored = mirror_dir.join(entry.strip_prefix(&snapshot_b).unwrap());
            assert_eq!(
                meta.ino(),
                std::fs::metadata(&mirrored).unwrap().ino(),
                "{} is not shared with the mirror",
                entry.display()
            );
            shared += meta.len();
        } else if meta.is_file() {
            new_bytes += meta.blocks() * 512;
        }
    }
    eprintln!(
        "snapshot B: {} packages, {shared} bytes shared; {} metadata bytes ({new_bytes} bytes allocated)",
        b["packages"], b["metadata_bytes"]
    );
    assert!(new_bytes < shared / 10, "{new_bytes} of {shared}");

    // A signed snapshot is not published without its key (its Release is re-dated).
    let refused = run(vrepo()
        .args(["snapshot", "publish", "B", "--as", "stable", "--root"])
        .arg(&publish_root));
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--sign"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!publish_root.join("stable").exists());

    // Publish B as stable; a guest built from `stable` sees 2.0.
    checked(
        vrepo()
            .args(["snapshot", "publish", "B", "--as", "stable", "--root"])
            .arg(&publish_root)
            .args(&sign),
    );
    let (_server, url) = serve(&publish_root);
    let host = Host {
        conf: top.join("etc"),
        roots: top.join("vservers"),
        pkg: top.join("vservers/.pkg"),
    };
    checked(
        host.command("vdistro")
            .args(["add", "fleet", "--family", "deb", "--releasever", "12"])
            .args(["--apt-source", &format!("{url}/stable bookworm main")])
            .arg("--pubkey")
            .arg(&keyring),
    );
    let built = run(host.command("d").args([
        "build",
        "-m",
        "apt",
        "--",
        "-d",
        "fleet",
        "--variant",
        "minbase",
    ]));
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    assert_eq!(host.candidate("fxsnap"), "2.0");

    // A bad update is undone by switching back.
    checked(
        vrepo()
            .args(["snapshot", "publish", "A", "--as", "stable", "--root"])
            .arg(&publish_root)
            .args(&sign),
    );
    checked(host.command("vapt-get").args(["d", "--", "update"]));
    assert_eq!(host.candidate("fxsnap"), "1.0");

    // A published snapshot cannot be deleted; the list says where it is published.
    let refused = run(vrepo()
        .args(["snapshot", "delete", "A", "--root"])
        .arg(&publish_root));
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("published as `stable`"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(
        &run(vrepo()
            .args(["snapshot", "list", "--json", "--root"])
            .arg(&publish_root))
        .stdout,
    )
    .unwrap();
    assert_eq!(list[0]["name"], "A");
    assert_eq!(list[0]["published_as"][0], "stable");

    // Kill the switch at points spread over its whole run (each step pauses 20 ms, so the
    // kills land in every step): stable is always A or B, complete.
    let publish = |name: &str| {
        let mut command = vrepo();
        command
            .args(["snapshot", "publish", name, "--as", "stable", "--root"])
            .arg(&publish_root)
            .args(&sign)
            .env("VREPO_TEST_SWITCH_PAUSE_MS", "20")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    };
    let started = std::time::Instant::now();
    assert!(publish("B").status().unwrap().success());
    let whole = started.elapsed();
    assert_eq!(stable_target(&publish_root), "B");
    let mut seen = BTreeSet::new();
    let trials = 40u32;
    for i in 0..trials {
        let name = if i % 2 == 0 { "A" } else { "B" };
        let before = stable_target(&publish_root);
        let mut child = publish(name).spawn().unwrap();
        // Up to 1.5 times the measured run: killed runs leave work for the next one, which
        // then takes longer than the measured one (release builds: every kill landed before
        // the switch when the kills stopped at the measured time).
        std::thread::sleep(whole * 3 * i / (2 * trials));
        let _ = child.kill();
        let _ = child.wait();
        let after = stable_target(&publish_root);
        assert!(after == before || after == name, "stable -> {after}");
        seen.insert(after != before);
    }
    eprintln!(
        "publish takes {whole:?} with the test pauses; kills before and after the switch: {seen:?}"
    );
    assert_eq!(
        seen.len(),
        2,
        "the kills never landed on both sides of the switch"
    );
    // A switch that was killed before its rename left a temporary link; the next one clears it.
    checked(
        vrepo()
            .args(["snapshot", "publish", "B", "--as", "stable", "--root"])
            .arg(&publish_root)
            .args(&sign),
    );
    assert_eq!(stable_target(&publish_root), "B");
    let leftovers: Vec<String> = std::fs::read_dir(&publish_root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".switch-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Now A can go, and the pool keeps only what B or the mirror still use.
    checked(
        vrepo()
            .args(["snapshot", "delete", "A", "--root"])
            .arg(&publish_root),
    );
    assert!(!publish_root.join(".vrepo-snapshots/snapshots/A").exists());
    let pooled_old = walk(&publish_root.join(".vrepo-snapshots/pool"))
        .into_iter()
        .filter(|p| std::fs::metadata(p).unwrap().nlink() == 1)
        .count();
    assert_eq!(pooled_old, 0, "pool files nobody uses were kept");
    checked(host.command("vapt-get").args(["d", "--", "update"]));
    assert_eq!(host.candidate("fxsnap"), "2.0");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                out.push(entry.path());
            }
        }
    }
    out
}
