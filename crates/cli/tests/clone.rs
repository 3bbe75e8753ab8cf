//! `vserver NEW build -m clone -- --source G` on an RPM guest built from generated fixtures with
//! the real rpm and dnf: the clone holds the same packages and verifies the same, its database
//! is a copy (a change to one guest's packages leaves the other's alone), it has an identity of
//! its own (host name, emptied machine id, no ssh host keys, its own configuration identity), it
//! boots, a running source is cloned and keeps running, and links the source planted (absolute,
//! `..`, loops, at the very files the clone rewrites) are copied as links without anything
//! outside the guests changing.
//!
//! Needs root, rpm, dnf and busybox; skips with a reason otherwise, fails instead when
//! VSERVER_TEST_REQUIRE_ALL=1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{TestHost, snapshot};

fn va(host: &TestHost, guest: &str) -> Vec<String> {
    let out = host.vserver(&["vrpm", guest, "--", "-Va", "--noscripts"]);
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

fn config_line(host: &TestHost, guest: &str, key: &str) -> String {
    std::fs::read_to_string(host.dir.join("etc").join(guest).join("config.toml"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn a_clone_is_a_whole_guest_of_its_own() {
    let Some(host) =
        TestHost::with_rpm_fixture("vserver-clone", 15, 6, "fx-shell fx-00001 fx-00002")
    else {
        return;
    };
    host.ok(&["g", "build", "-m", "yum", "--", "-d", "fixture"]);
    let root_g = host.dir.join("vservers/g");
    // What a booted guest has that a clone must not share.
    std::fs::write(
        root_g.join("etc/machine-id"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    std::fs::create_dir_all(root_g.join("etc/ssh")).unwrap();
    std::fs::write(root_g.join("etc/ssh/ssh_host_ed25519_key"), "secret\n").unwrap();
    std::fs::write(root_g.join("etc/ssh/sshd_config"), "Port 22\n").unwrap();
    // A hard link and a setuid file, kept as they are.
    std::fs::write(root_g.join("root/data"), "data\n").unwrap();
    std::fs::hard_link(root_g.join("root/data"), root_g.join("root/data-link")).unwrap();
    std::fs::write(root_g.join("root/suid"), "x").unwrap();
    std::os::unix::fs::chown(root_g.join("root/suid"), Some(12), Some(34)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        root_g.join("root/suid"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    let packages = host.rpm_packages("g");
    let verify = va(&host, "g");
    let before_g = snapshot(&root_g);

    let started = std::time::Instant::now();
    host.ok(&["c", "build", "-m", "clone", "--", "--source", "g"]);
    eprintln!("clone: {:.2} s", started.elapsed().as_secs_f64());
    let root_c = host.dir.join("vservers/c");
    assert_eq!(host.rpm_packages("c"), packages);
    assert_eq!(va(&host, "c"), verify);
    assert_eq!(snapshot(&root_g), before_g, "the source changed");
    assert_eq!(
        std::fs::read_to_string(root_c.join("etc/hostname")).unwrap(),
        "c\n"
    );
    assert!(
        std::fs::read_to_string(root_c.join("etc/hosts"))
            .unwrap()
            .contains("\tc")
    );
    assert_eq!(std::fs::read(root_c.join("etc/machine-id")).unwrap(), b"");
    assert!(!root_c.join("etc/ssh/ssh_host_ed25519_key").exists());
    assert!(root_c.join("etc/ssh/sshd_config").is_file());
    use std::os::unix::fs::MetadataExt;
    let data = std::fs::metadata(root_c.join("root/data")).unwrap();
    assert_eq!(
        data.ino(),
        std::fs::metadata(root_c.join("root/data-link"))
            .unwrap()
            .ino()
    );
    assert_ne!(
        data.ino(),
        std::fs::metadata(root_g.join("root/data")).unwrap().ino()
    );
    let suid = std::fs::metadata(root_c.join("root/suid")).unwrap();
    assert_eq!(
        (suid.mode() & 0o7777, suid.uid(), suid.gid()),
        (0o4755, 12, 34)
    );
    assert!(root_c.join("dev/null").exists());
    assert_eq!(config_line(&host, "c", "name"), "name = \"c\"");
    assert_ne!(config_line(&host, "c", "id"), config_line(&host, "g", "id"));
    assert!(config_line(&host, "c", "root").contains("vservers/c"));

    // The database is a copy: removing a package from the clone leaves the source's.
    host.ok(&["vrpm", "c", "--", "-e", "--nodeps", "fx-00002"]);
    assert_eq!(host.rpm_packages("g"), packages);
    assert_eq!(host.rpm_packages("c").len(), packages.len() - 1);

    // The clone boots, under its own name.
    host.ok(&["c", "start", "--init", "/bin/busybox sleep 1000"]);
    let out = host.ok(&["c", "exec", "/bin/busybox", "hostname"]);
    assert_eq!(out.trim(), "c");
    host.ok(&["c", "stop", "--timeout", "1"]);

    // A running source is cloned and keeps running (it is frozen only for its database).
    host.ok(&["g", "start", "--init", "/bin/busybox sleep 1000"]);
    host.ok(&["r", "build", "-m", "clone", "--", "--source", "g"]);
    assert_eq!(host.rpm_packages("r"), packages);
    host.ok(&["g", "exec", "/bin/busybox", "true"]);
    host.ok(&["g", "stop", "--timeout", "1"]);

    // Refusals: no source, itself, an unknown one.
    for (args, says) in [
        (vec!["x", "build", "-m", "clone"], "--source"),
        (
            vec![
                "g", "build", "--force", "-m", "clone", "--", "--source", "g",
            ],
            "onto itself",
        ),
        (
            vec!["x", "build", "-m", "clone", "--", "--source", "nosuch"],
            "unknown guest",
        ),
    ] {
        let out = host.vserver(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{args:?}: {out:?}"
        );
    }
    assert!(!host.dir.join("vservers/x").exists());
}

#[test]
fn links_a_source_planted_are_copied_as_links_and_nothing_outside_changes() {
    let Some(host) =
        TestHost::with_rpm_fixture("vserver-clone-hostile", 16, 4, "fx-shell fx-00001")
    else {
        return;
    };
    host.ok(&["g", "build", "-m", "yum", "--", "-d", "fixture"]);
    let canary = host.dir.join("canary");
    std::fs::create_dir_all(canary.join("ssh")).unwrap();
    std::fs::write(canary.join("hostname"), "host\n").unwrap();
    std::fs::write(canary.join("ssh/ssh_host_rsa_key"), "host key\n").unwrap();
    let before = snapshot(&canary);
    let root_g = host.dir.join("vservers/g");
    let dotdots = format!(
        "{}{}",
        "../".repeat(root_g.components().count() + 2),
        canary.display().to_string().trim_start_matches('/')
    );
    let plant = |link: &str, target: &str| {
        let at = root_g.join(link);
        let _ = std::fs::remove_file(&at);
        let _ = std::fs::remove_dir_all(&at);
        std::os::unix::fs::symlink(target, &at).unwrap();
    };
    plant(
        "etc/hostname",
        &canary.join("hostname").display().to_string(),
    );
    plant("etc/hosts", &format!("{dotdots}/hostname"));
    plant("etc/machine-id", "/etc/machine-id");
    plant("etc/ssh", &canary.join("ssh").display().to_string());
    plant("loop", "loop");
    plant("up", &dotdots);
    plant("dev", &canary.display().to_string());
    host.ok(&["c", "build", "-m", "clone", "--", "--source", "g"]);
    assert_eq!(snapshot(&canary), before);
    let root_c = host.dir.join("vservers/c");
    assert_eq!(
        std::fs::read_to_string(root_c.join("etc/hostname")).unwrap(),
        "c\n"
    );
    assert!(
        std::fs::symlink_metadata(root_c.join("etc/ssh"))
            .unwrap()
            .is_symlink()
    );
    assert!(
        std::fs::symlink_metadata(root_c.join("loop"))
            .unwrap()
            .is_symlink()
    );
    assert!(
        std::fs::symlink_metadata(root_c.join("up"))
            .unwrap()
            .is_symlink()
    );
    assert!(
        std::fs::symlink_metadata(root_c.join("dev"))
            .unwrap()
            .is_dir()
    );
    assert!(Path::new(&root_c.join("dev/null")).exists());
    // And deleting the clone leaves the canary too.
    host.ok(&["c", "delete", "--yes"]);
    assert_eq!(snapshot(&canary), before);
}
