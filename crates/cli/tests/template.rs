//! `vserver G export FILE` and `vserver NEW build -m template -- --source FILE` on an RPM guest
//! built from generated fixtures with the real rpm and dnf: the round trip keeps the package set,
//! the files (owners, setuid bits, hard links, symlinks) and verifies clean; the new guest has an
//! identity of its own; a running source is exported and keeps running. Hostile archives
//! (`..`, absolute names, an entry through a planted symlink, hard links out of the tree or
//! through a link, a size larger than the disk, a forged database) are refused or contained,
//! with nothing outside the new guest changed and no guest left behind.
//!
//! Needs root, rpm, dnf and busybox; skips with a reason otherwise, fails instead when
//! VSERVER_TEST_REQUIRE_ALL=1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::{TestHost, snapshot};

#[test]
fn a_template_round_trip_keeps_packages_and_files() {
    let Some(host) =
        TestHost::with_rpm_fixture("vserver-template", 17, 6, "fx-shell fx-00001 fx-00002")
    else {
        return;
    };
    host.ok(&["g", "build", "-m", "yum", "--", "-d", "fixture"]);
    let root_g = host.dir.join("vservers/g");
    std::fs::write(
        root_g.join("etc/machine-id"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    std::fs::write(root_g.join("root/data"), "data\n").unwrap();
    std::fs::hard_link(root_g.join("root/data"), root_g.join("root/data-link")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root_g.join("root/abs-link")).unwrap();
    std::fs::write(root_g.join("root/suid"), "x").unwrap();
    std::os::unix::fs::chown(root_g.join("root/suid"), Some(12), Some(34)).unwrap();
    std::fs::set_permissions(
        root_g.join("root/suid"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    let packages = host.rpm_packages("g");
    let before_g = snapshot(&root_g);

    for name in ["g.tar.zst", "g.tar"] {
        let archive = host.dir.join(name);
        let started = std::time::Instant::now();
        host.ok(&["g", "export", archive.to_str().unwrap()]);
        eprintln!("export {name}: {:.2} s", started.elapsed().as_secs_f64());
        assert_eq!(
            std::fs::metadata(&archive).unwrap().mode() & 0o777,
            0o600,
            "a template holds the guest's secrets"
        );
    }
    assert_eq!(snapshot(&root_g), before_g, "the export changed the source");

    let archive = host.dir.join("g.tar.zst");
    let started = std::time::Instant::now();
    let out = import(&host, "t", archive.to_str().unwrap());
    eprintln!("import: {:.2} s", started.elapsed().as_secs_f64());
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("setuid") && stderr.contains("/root/suid"),
        "{stderr}"
    );

    let root_t = host.dir.join("vservers/t");
    assert_eq!(host.rpm_packages("t"), packages);
    // Verifies clean: no packaged file differs; the setuid file no package owns is the
    // source's, reported the same way.
    let verify = host.vserver(&["t", "verify", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&verify.stdout).unwrap();
    assert_eq!(report[0]["findings"], serde_json::json!([]), "{verify:?}");
    assert_eq!(
        report[0]["unexpected_setid"],
        serde_json::json!(["/root/suid"]),
        "{verify:?}"
    );
    assert_eq!(
        std::fs::read_to_string(root_t.join("etc/hostname")).unwrap(),
        "t\n"
    );
    assert_eq!(std::fs::read(root_t.join("etc/machine-id")).unwrap(), b"");
    let data = std::fs::metadata(root_t.join("root/data")).unwrap();
    assert_eq!(
        data.ino(),
        std::fs::metadata(root_t.join("root/data-link"))
            .unwrap()
            .ino()
    );
    assert_eq!(
        std::fs::read_link(root_t.join("root/abs-link")).unwrap(),
        Path::new("/etc/hostname")
    );
    let suid = std::fs::metadata(root_t.join("root/suid")).unwrap();
    assert_eq!(
        (suid.mode() & 0o7777, suid.uid(), suid.gid()),
        (0o4755, 12, 34)
    );
    assert!(root_t.join("dev/null").exists());
    // The database is the guest's own, in .pkg, and not inside the guest.
    assert!(host.dir.join("vservers/.pkg/t/rpm/state").is_dir());
    assert!(
        std::fs::read_dir(root_t.join("var/lib/rpm"))
            .map(|d| d.count() == 0)
            .unwrap_or(true)
    );
    // It works: a package comes off, the source keeps it.
    host.ok(&["vrpm", "t", "--", "-e", "--nodeps", "fx-00002"]);
    assert_eq!(host.rpm_packages("g"), packages);

    // A running source is exported and keeps running; the template boots.
    host.ok(&["g", "start", "--init", "/bin/busybox sleep 1000"]);
    let running = host.dir.join("running.tar");
    host.ok(&["g", "export", running.to_str().unwrap()]);
    host.ok(&["g", "exec", "/bin/busybox", "true"]);
    host.ok(&["g", "stop", "--timeout", "1"]);
    let out = import(&host, "r", running.to_str().unwrap());
    assert!(out.status.success(), "{out:?}");
    host.ok(&["r", "start", "--init", "/bin/busybox sleep 1000"]);
    assert_eq!(
        host.ok(&["r", "exec", "/bin/busybox", "hostname"]).trim(),
        "r"
    );
    host.ok(&["r", "stop", "--timeout", "1"]);

    // Refusals, each with one line and nothing made.
    let bad_name = host.dir.join("g.zip");
    for (args, says) in [
        (vec!["x", "build", "-m", "template"], "--source"),
        (
            vec!["g", "export", bad_name.to_str().unwrap()],
            "FILE.tar or FILE.tar.zst",
        ),
        (
            vec![
                "x",
                "build",
                "-m",
                "template",
                "--",
                "--source",
                "/nonexistent.tar",
            ],
            "cannot open the template",
        ),
    ] {
        let out = host.vserver(&args);
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{args:?}: {out:?}"
        );
    }
    assert!(!host.dir.join("vservers/x").exists());
    assert!(!bad_name.exists());

    // A forged database is input, not trust: rpm cannot read it, the import is undone.
    let forged = host.dir.join("forged.tar");
    hostile_template_of(
        &forged,
        &info("rpm", "fixture"),
        &[(
            b"pkgdb/rpmdb.sqlite",
            tar::EntryType::Regular,
            b"",
            b"SQLite format 3\0 not really",
        )],
    );
    let out = import(&host, "x", forged.to_str().unwrap());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("holds no package rpm can read"),
        "{out:?}"
    );
    assert!(!host.dir.join("vservers/x").exists());
    assert!(!host.dir.join("vservers/.pkg/x/rpm").exists());
}

/// `vserver GUEST build -m template -- --source ARCHIVE`.
fn import(host: &TestHost, guest: &str, archive: &str) -> std::process::Output {
    host.vserver(&[guest, "build", "-m", "template", "--", "--source", archive])
}

/// An archive entry as written by hand: name, type, link target, contents.
type RawEntry<'a> = (&'a [u8], tar::EntryType, &'a [u8], &'a [u8]);

/// A raw tar header: no checks on the name, as an attacker writes it.
fn raw_entry(archive: &mut Vec<u8>, name: &[u8], kind: tar::EntryType, link: &[u8], data: &[u8]) {
    let mut header = tar::Header::new_gnu();
    {
        let gnu = header.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name);
        gnu.linkname[..link.len()].copy_from_slice(link);
    }
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_size(data.len() as u64);
    header.set_cksum();
    archive.extend_from_slice(header.as_bytes());
    archive.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    archive.extend(std::iter::repeat_n(0u8, pad));
}

/// A template description of a guest of `family` from `distribution`.
fn info(family: &str, distribution: &str) -> String {
    format!(
        "format = 1\nguest = \"evil\"\nfamily = \"{family}\"\ndistribution = \"{distribution}\"\nreleasever = \"\"\narch = \"\"\nhostname = \"evil\"\n"
    )
}

/// A skeleton template whose entries after the description and the root directory are
/// `entries`.
fn hostile_template(path: &Path, entries: &[RawEntry<'_>]) {
    hostile_template_of(path, &info("", ""), entries);
}

fn hostile_template_of(path: &Path, info: &str, entries: &[RawEntry<'_>]) {
    let mut archive = Vec::new();
    raw_entry(
        &mut archive,
        b"vserver-template.toml",
        tar::EntryType::Regular,
        b"",
        info.as_bytes(),
    );
    raw_entry(&mut archive, b"root/", tar::EntryType::Directory, b"", b"");
    raw_entry(
        &mut archive,
        b"root/etc/",
        tar::EntryType::Directory,
        b"",
        b"",
    );
    for (name, kind, link, data) in entries {
        raw_entry(&mut archive, name, *kind, link, data);
    }
    archive.extend(std::iter::repeat_n(0u8, 1024));
    std::fs::File::create(path)
        .unwrap()
        .write_all(&archive)
        .unwrap();
}

#[test]
fn hostile_templates_change_nothing_outside_the_new_guest() {
    if !common::available(common::is_root(), "needs root") {
        return;
    }
    let host = TestHost::new("vserver-template-hostile");
    let canary = host.dir.join("canary");
    std::fs::create_dir_all(&canary).unwrap();
    std::fs::write(canary.join("file"), "host\n").unwrap();
    let before = snapshot(&canary);
    let passwd = std::fs::read("/etc/passwd").unwrap();
    let outside = canary.display().to_string();
    let dotdots = format!(
        "root/{}{}/file",
        "../".repeat(host.dir.join("vservers/x").components().count() + 1),
        outside.trim_start_matches('/')
    );
    use tar::EntryType::{Block, Directory, Link, Regular, Symlink};
    let cases: Vec<(&str, Vec<RawEntry<'_>>, &str)> = vec![
        (
            "dotdot",
            vec![(dotdots.as_bytes(), Regular, b"", b"owned\n")],
            "not a plain relative path",
        ),
        (
            "absolute",
            vec![(b"/tmp/vserver-template-owned", Regular, b"", b"owned\n")],
            "unexpected entry",
        ),
        (
            "through a planted link",
            vec![
                (b"root/etc/out", Symlink, outside.as_bytes(), b""),
                (b"root/etc/out/file", Regular, b"", b"owned\n"),
            ],
            "not a directory the archive made",
        ),
        (
            "hard link out of the tree",
            vec![(
                b"root/etc/passwd",
                Link,
                b"root/../../../../etc/passwd",
                b"",
            )],
            "not a plain relative path",
        ),
        (
            "hard link through a link",
            vec![
                (b"root/etc/out", Symlink, outside.as_bytes(), b""),
                (b"root/etc/stolen", Link, b"root/etc/out/file", b""),
            ],
            "not a directory the archive made",
        ),
        (
            "hard link to a symlink",
            vec![
                (b"root/etc/out", Symlink, outside.as_bytes(), b""),
                (b"root/etc/stolen", Link, b"root/etc/out", b""),
            ],
            "must name a regular file",
        ),
        (
            "a name taken twice",
            vec![
                (b"root/etc/out", Symlink, outside.as_bytes(), b""),
                (b"root/etc/out", Regular, b"", b"owned\n"),
            ],
            "already taken",
        ),
        (
            "unknown top",
            vec![(b"other/file", Regular, b"", b"x")],
            "unexpected entry",
        ),
        (
            "a directory where a link is",
            vec![
                (b"root/etc/out", Symlink, outside.as_bytes(), b""),
                (b"root/etc/out/", Directory, b"", b""),
            ],
            "already taken",
        ),
    ];
    for (what, entries, says) in cases {
        let path = host.dir.join(format!("{}.tar", what.replace(' ', "-")));
        hostile_template(&path, &entries);
        let out = import(&host, "x", path.to_str().unwrap());
        assert_eq!(out.status.code(), Some(1), "{what}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{what}: {stderr}");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(snapshot(&canary), before, "{what}: something changed");
        assert_eq!(std::fs::read("/etc/passwd").unwrap(), passwd, "{what}");
        assert!(
            !host.dir.join("vservers/x").exists(),
            "{what}: a guest was left"
        );
        assert!(!Path::new("/tmp/vserver-template-owned").exists(), "{what}");
    }

    // Sizes are charged before anything is read.
    let path = host.dir.join("huge.tar");
    {
        let mut archive = Vec::new();
        let info = "format = 1\nguest = \"evil\"\nfamily = \"\"\ndistribution = \"\"\nreleasever = \"\"\narch = \"\"\nhostname = \"evil\"\n";
        raw_entry(
            &mut archive,
            b"vserver-template.toml",
            Regular,
            b"",
            info.as_bytes(),
        );
        raw_entry(&mut archive, b"root/", Directory, b"", b"");
        let mut header = tar::Header::new_gnu();
        header.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"root/huge");
        header.set_entry_type(Regular);
        header.set_mode(0o644);
        header.set_size(1 << 50);
        header.set_cksum();
        archive.extend_from_slice(header.as_bytes());
        std::fs::write(&path, archive).unwrap();
    }
    let out = import(&host, "x", path.to_str().unwrap());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("more than the"),
        "{out:?}"
    );
    std::fs::remove_file(&path).unwrap();
    assert_eq!(snapshot(&canary), before);
    assert!(!host.dir.join("vservers/x").exists());

    // Device nodes are left out (and said so); a skeleton template builds.
    let path = host.dir.join("devices.tar");
    hostile_template(
        &path,
        &[
            (b"root/etc/hostname", Regular, b"", b"evil\n"),
            (b"root/disk", Block, b"", b""),
        ],
    );
    let out = import(&host, "x", path.to_str().unwrap());
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("device nodes"),
        "{out:?}"
    );
    assert!(!host.dir.join("vservers/x/disk").exists());
    assert_eq!(
        std::fs::read_to_string(host.dir.join("vservers/x/etc/hostname")).unwrap(),
        "x\n"
    );
    assert_eq!(
        std::fs::read_to_string(canary.join("file")).unwrap(),
        "host\n"
    );
}
