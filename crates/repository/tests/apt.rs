//! `index_apt` against the real tools: apt-ftparchive for equivalence, apt-get as the client,
//! dpkg-deb for hand-written control files, plus `--update`, overrides and bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    IsolatedApt, assert_success, chain, fields, index, require_tool, run, stanzas_by_filename,
};
use sha2::Digest;
use vserver_fixtures::{Compression, DebPackage, DebSetOptions, write_deb_set};
use vserver_repository::apt::{AptIndexOptions, AptLayout, index_apt};
use vserver_repository::progress::NoProgress;

fn deb_set(dir: &Path, count: usize, prefix: &str, arch: &str) -> Vec<PathBuf> {
    let opts = DebSetOptions {
        seed: 7,
        count,
        files_per_package: 3,
        compression: Compression::Mix,
        maintainer_scripts: true,
        name_prefix: prefix.to_owned(),
        arch: arch.to_owned(),
    };
    write_deb_set(dir, &opts).expect("generate debs")
}

/// A .deb built by dpkg-deb from a hand-written control file with unusual formatting: fields
/// apt-ftparchive reorders, renames to canonical case, strips (Status) or keeps raw.
fn odd_deb(dir: &Path) -> PathBuf {
    let build = tempfile::tempdir().unwrap();
    let debian = build.path().join("pkg/DEBIAN");
    std::fs::create_dir_all(&debian).unwrap();
    std::fs::create_dir_all(build.path().join("pkg/usr/share/odd")).unwrap();
    std::fs::write(build.path().join("pkg/usr/share/odd/file"), "x\n").unwrap();
    std::fs::write(
        debian.join("control"),
        "Package: odd-one\n\
         Version: 2:0.1~rc1-1\n\
         Architecture: amd64\n\
         X-Custom-Field: kept as is\n\
         Maintainer: Odd Person <odd@example.invalid>\n\
         Installed-Size:   7\n\
         depends: libfoo (>= 1) | libbar, baz\n\
         Essential: no\n\
         Multi-Arch: foreign\n\
         Built-Using: src (= 1)\n\
         Homepage: https://example.invalid/odd\n\
         Description: an odd package\n  indented more\n .\n last line\n\
         Section: utils\n\
         Priority: extra\n",
    )
    .unwrap();
    let out = dir.join("odd-one_0.1~rc1-1_amd64.deb");
    run(Command::new("dpkg-deb")
        .arg("--root-owner-group")
        .arg("-Zxz")
        .arg("--build")
        .arg(build.path().join("pkg"))
        .arg(&out));
    out
}

fn apt_ftparchive_packages(dir: &Path, override_file: Option<&Path>) -> String {
    let mut command = Command::new("apt-ftparchive");
    command.current_dir(dir).arg("packages").arg(".");
    if let Some(path) = override_file {
        command.arg(path);
    }
    String::from_utf8(run(&mut command).stdout).unwrap()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn packages_match_apt_ftparchive_field_for_field() {
    if !require_tool("apt-ftparchive") || !require_tool("dpkg-deb") {
        return;
    }
    let repo = tempfile::tempdir().unwrap();
    deb_set(&repo.path().join("pool"), 24, "eq", "amd64");
    odd_deb(repo.path());
    DebPackage::new("eq-all", "1.0-1")
        .arch("all")
        .compression(Compression::Zstd)
        .write_to(&repo.path().join("pool"))
        .unwrap();

    let report = index(repo.path(), AptLayout::Flat);
    assert_eq!(report.packages, 26);
    let ours = stanzas_by_filename(&read(&repo.path().join("Packages")));
    let theirs = stanzas_by_filename(&apt_ftparchive_packages(repo.path(), None));
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    for (filename, their_stanza) in &theirs {
        assert_eq!(
            fields(&ours[filename]),
            fields(their_stanza),
            "stanza of {filename} differs"
        );
    }
}

#[test]
fn override_file_sets_priority_and_section_like_apt_ftparchive() {
    if !require_tool("apt-ftparchive") {
        return;
    }
    let repo = tempfile::tempdir().unwrap();
    deb_set(repo.path(), 3, "ov", "amd64");
    let override_file = repo.path().join("override");
    std::fs::write(
        &override_file,
        "# archive overrides\nov-00000 required admin\nov-00001 important libs\n",
    )
    .unwrap();
    let opts = AptIndexOptions {
        override_file: Some(override_file.clone()),
        ..AptIndexOptions::default()
    };
    index_apt(repo.path(), &opts, &NoProgress).unwrap();
    let ours = stanzas_by_filename(&read(&repo.path().join("Packages")));
    let by_name = |name: &str| {
        ours.values()
            .find(|s| s.get("Package") == Some(name))
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("ov-00000").get("Priority"), Some("required"));
    assert_eq!(by_name("ov-00000").get("Section"), Some("admin"));
    assert_eq!(by_name("ov-00001").get("Priority"), Some("important"));
    assert_eq!(by_name("ov-00002").get("Priority"), Some("optional"));

    let theirs = stanzas_by_filename(&apt_ftparchive_packages(repo.path(), Some(&override_file)));
    for (filename, their_stanza) in &theirs {
        assert_eq!(fields(&ours[filename]), fields(their_stanza));
    }
}

#[test]
fn real_apt_updates_and_downloads_from_a_flat_repository() {
    if !require_tool("apt-get") {
        return;
    }
    let repo = tempfile::tempdir().unwrap();
    deb_set(repo.path(), 12, "flat", "amd64");
    index(repo.path(), AptLayout::Flat);
    let release = read(&repo.path().join("Release"));
    for name in ["Packages", "Packages.gz", "Packages.xz"] {
        assert!(release.contains(&format!(" {name}\n")), "{release}");
    }

    apt_update_and_download(repo.path(), "./", "amd64", &["flat-00011"]);
}

#[test]
fn real_apt_updates_and_downloads_from_a_dists_layout() {
    if !require_tool("apt-get") {
        return;
    }
    let repo = tempfile::tempdir().unwrap();
    let pool = repo.path().join("pool/main");
    deb_set(&pool, 6, "dx", "amd64");
    deb_set(&pool, 4, "dy", "arm64");
    DebPackage::new("dz-common", "1.0-1")
        .arch("all")
        .write_to(&pool)
        .unwrap();
    let layout = AptLayout::Dists {
        suite: "stable".into(),
        component: "main".into(),
    };
    let report = index(repo.path(), layout.clone());
    assert_eq!(report.packages, 11);
    assert_eq!(report.architectures, ["amd64", "arm64"]);

    let dists = repo.path().join("dists/stable");
    let amd64 = stanzas_by_filename(&read(&dists.join("main/binary-amd64/Packages")));
    let arm64 = stanzas_by_filename(&read(&dists.join("main/binary-arm64/Packages")));
    assert_eq!(amd64.len(), 7);
    assert_eq!(arm64.len(), 5);
    assert!(amd64.contains_key("pool/main/dz-common_1.0-1_all.deb"));
    assert!(arm64.contains_key("pool/main/dz-common_1.0-1_all.deb"));
    let release = read(&dists.join("Release"));
    assert!(release.contains("Suite: stable\n"), "{release}");
    assert!(
        release.contains("Architectures: amd64 arm64\n"),
        "{release}"
    );
    assert!(release.contains("Components: main\n"), "{release}");
    assert!(
        release.contains(" main/binary-arm64/Packages.xz\n"),
        "{release}"
    );
    assert!(
        !release.contains(" Release\n"),
        "Release lists itself: {release}"
    );

    // The indexes are published by hash too (apt fetches them so), for every digest listed.
    assert!(release.contains("Acquire-By-Hash: yes\n"), "{release}");
    let by_hash = |digest: &str| {
        let dir = dists.join("main/binary-amd64/by-hash").join(digest);
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let xz = std::fs::read(dists.join("main/binary-amd64/Packages.xz")).unwrap();
    let xz_sha256 = hex::encode(sha2::Sha256::digest(&xz));
    assert!(
        by_hash("SHA256").contains(&xz_sha256),
        "{:?}",
        by_hash("SHA256")
    );
    assert_eq!(by_hash("SHA512").len(), by_hash("SHA256").len());

    // A second run must not pick up the first run's Release (or anything else in dists/).
    DebPackage::new("dx-later", "1.0-1")
        .write_to(&pool)
        .unwrap();
    index(repo.path(), layout);
    assert!(!read(&dists.join("Release")).contains(" Release\n"));
    // The previous generation's names stay for one more run (clients mid-update).
    assert!(by_hash("SHA256").contains(&xz_sha256));
    let leftovers: Vec<_> = std::fs::read_dir(repo.path().join("dists"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["stable"]);

    apt_update_and_download(
        repo.path(),
        "stable main",
        "amd64",
        &["dx-00005", "dz-common"],
    );
    apt_update_and_download(
        repo.path(),
        "stable main",
        "arm64",
        &["dy-00003", "dz-common"],
    );
}

/// Runs `apt-get update` and `apt-get install --download-only PACKAGES` in an isolated apt,
/// once with a `file:` source (apt reads the packages in place and checks their hashes) and
/// once with `copy:` (apt copies them into its archive cache, where we look for them).
fn apt_update_and_download(repo: &Path, dist: &str, arch: &str, packages: &[&str]) {
    for scheme in ["file", "copy"] {
        let state = tempfile::tempdir().unwrap();
        let source = format!("deb [trusted=yes] {scheme}:{} {dist}", repo.display());
        let apt = IsolatedApt::new(state.path(), &source, arch);
        let update = apt.apt_get(&["update"]);
        assert_success(&update, "apt-get update");
        let stderr = String::from_utf8_lossy(&update.stderr);
        assert!(
            !stderr.contains("W:") && !stderr.contains("N:"),
            "apt complained: {stderr}"
        );
        let mut args = vec!["install", "--download-only", "-y"];
        args.extend_from_slice(packages);
        let install = apt.apt_get(&args);
        assert_success(&install, "apt-get install --download-only");
        let stdout = String::from_utf8_lossy(&install.stdout);
        assert!(stdout.contains("Download complete"), "{stdout}");
        for package in packages {
            assert!(
                stdout.contains(&format!(" {package} ")),
                "{package} not fetched: {stdout}"
            );
            if scheme == "copy" {
                let downloaded = apt.downloaded();
                let prefix = format!("{package}_");
                assert!(
                    downloaded.iter().any(|n| n.starts_with(&prefix)),
                    "{downloaded:?}"
                );
            }
        }
    }
}

#[test]
fn update_reuses_unchanged_packages_and_follows_changes() {
    let repo = tempfile::tempdir().unwrap();
    let files = deb_set(repo.path(), 20, "up", "amd64");
    let cold = index(repo.path(), AptLayout::Flat);
    assert_eq!((cold.packages, cold.reused), (20, 0));

    let same = update(repo.path());
    assert_eq!((same.packages, same.reused), (20, 20));

    // Replace one package by another build (new size and mtime), remove one, add one.
    let replaced = DebPackage::new("up-00003", "9.9-1")
        .description("rebuilt with a longer description\n to change the size")
        .to_bytes()
        .unwrap();
    std::fs::write(&files[3], replaced).unwrap();
    std::fs::remove_file(&files[7]).unwrap();
    DebPackage::new("up-new", "1.0-1")
        .write_to(repo.path())
        .unwrap();
    let changed = update(repo.path());
    assert_eq!((changed.packages, changed.reused), (20, 18));
    let updated = read(&repo.path().join("Packages"));
    let stanzas = stanzas_by_filename(&updated);
    let name_of = |path: &Path| format!("./{}", path.file_name().unwrap().to_str().unwrap());
    assert_eq!(stanzas[&name_of(&files[3])].get("Version"), Some("9.9-1"));
    assert!(!stanzas.contains_key(&name_of(&files[7])));
    assert!(stanzas.contains_key("./up-new_1.0-1_amd64.deb"));

    // What --update wrote is exactly what a cold run writes.
    index(repo.path(), AptLayout::Flat);
    assert_eq!(read(&repo.path().join("Packages")), updated);

    // A new override file changes stanzas of unchanged packages: the cache must not hide that.
    let override_file = repo.path().join("override");
    std::fs::write(&override_file, "up-00000 required admin\n").unwrap();
    let opts = AptIndexOptions {
        update: true,
        override_file: Some(override_file),
        ..AptIndexOptions::default()
    };
    let overridden = index_apt(repo.path(), &opts, &NoProgress).unwrap();
    assert_eq!(overridden.reused, 0);
    let stanzas = stanzas_by_filename(&read(&repo.path().join("Packages")));
    let first = stanzas
        .values()
        .find(|s| s.get("Package") == Some("up-00000"))
        .unwrap();
    assert_eq!(first.get("Priority"), Some("required"));
}

/// Rewrites the size field of the `control.tar*` member header of a .deb.
fn claim_huge_control_member(bytes: &mut [u8]) {
    // After the 8-byte magic: debian-binary header (60) + content (4), then the control header.
    let header = 8 + 60 + 4;
    assert!(bytes[header..header + 16].starts_with(b"control.tar"));
    bytes[header + 48..header + 58].copy_from_slice(b"9999999999");
}

#[test]
fn bad_packages_fail_with_the_file_name_and_leave_metadata_untouched() {
    let repo = tempfile::tempdir().unwrap();
    let files = deb_set(repo.path(), 4, "bad", "amd64");
    index(repo.path(), AptLayout::Flat);
    let snapshot = |dir: &Path| {
        ["Packages", "Packages.gz", "Packages.xz", "Release"]
            .map(|name| std::fs::read(dir.join(name)).unwrap())
    };
    let before = snapshot(repo.path());
    let good = std::fs::read(&files[0]).unwrap();

    let mut huge = good.clone();
    claim_huge_control_member(&mut huge);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated.deb",
            good[..good.len() / 2].to_vec(),
            "truncated",
        ),
        (
            "garbage.deb",
            b"this is not a package\n".repeat(10),
            "not an ar archive",
        ),
        ("huge.deb", huge, "claims 9999999999 bytes"),
        ("evil\nname.deb", good.clone(), "control character"),
    ];
    for (name, bytes, expected) in &cases {
        let path = repo.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = index_apt(repo.path(), &AptIndexOptions::default(), &NoProgress)
            .expect_err("a bad package must fail the run");
        let message = chain(&err);
        let shown = path.display().to_string().escape_debug().to_string();
        assert!(
            message.contains(&shown),
            "{message:?} does not name {shown:?}"
        );
        assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        assert_eq!(
            snapshot(repo.path()),
            before,
            "metadata changed after {name}"
        );
        std::fs::remove_file(&path).unwrap();
    }

    for (name, bytes, _) in &cases {
        std::fs::write(repo.path().join(name), bytes).unwrap();
    }
    let opts = AptIndexOptions {
        skip_bad: true,
        ..AptIndexOptions::default()
    };
    let report = index_apt(repo.path(), &opts, &NoProgress).unwrap();
    assert_eq!(report.packages, 4);
    let mut skipped: Vec<_> = report
        .skipped
        .iter()
        .map(|bad| bad.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    skipped.sort();
    assert_eq!(
        skipped,
        ["evil\nname.deb", "garbage.deb", "huge.deb", "truncated.deb"]
    );
    assert_eq!(
        stanzas_by_filename(&read(&repo.path().join("Packages"))).len(),
        4
    );
}

#[test]
fn a_second_indexer_is_refused_while_the_first_holds_the_lock() {
    let repo = tempfile::tempdir().unwrap();
    deb_set(repo.path(), 2, "lk", "amd64");
    let _held = vserver_repository::publish::lock_repository(repo.path(), false).unwrap();
    let err = index_apt(repo.path(), &AptIndexOptions::default(), &NoProgress).unwrap_err();
    assert!(
        chain(&err).contains("another vrepo process"),
        "{}",
        chain(&err)
    );
}

#[test]
fn suite_and_component_must_be_plain_names() {
    let repo = tempfile::tempdir().unwrap();
    for (suite, component) in [("../etc", "main"), ("stable", "a/b"), ("", "main")] {
        let opts = AptIndexOptions {
            layout: AptLayout::Dists {
                suite: suite.into(),
                component: component.into(),
            },
            ..AptIndexOptions::default()
        };
        assert!(index_apt(repo.path(), &opts, &NoProgress).is_err());
    }
}

/// `vrepo index --update` of a flat repository.
fn update(dir: &Path) -> vserver_repository::apt::AptIndexReport {
    let opts = AptIndexOptions {
        update: true,
        ..AptIndexOptions::default()
    };
    index_apt(dir, &opts, &NoProgress).unwrap()
}

/// The real `gzip` and `xz` decode a compressed index to exactly the plain one.
fn assert_compressed_copies_match(dir: &Path) {
    let plain = std::fs::read(dir.join("Packages")).unwrap();
    for (tool, file) in [("gzip", "Packages.gz"), ("xz", "Packages.xz")] {
        let test = run(Command::new(tool).arg("-t").arg(dir.join(file)));
        assert_success(&test, &format!("{tool} -t {file}"));
        let decoded = run(Command::new(tool).arg("-dc").arg(dir.join(file)));
        assert!(
            decoded.stdout == plain,
            "{file} does not decode to Packages"
        );
    }
}

#[test]
fn update_recompresses_only_the_chunks_that_changed() {
    if !require_tool("gzip") || !require_tool("xz") || !require_tool("apt-get") {
        return;
    }
    let repo = tempfile::tempdir().unwrap();
    let files = deb_set(repo.path(), 400, "ch", "amd64");
    let cold = index(repo.path(), AptLayout::Flat);
    assert!(cold.chunks >= 5, "{} chunks", cold.chunks);
    assert_eq!(cold.chunks_reused, 0);
    assert_compressed_copies_match(repo.path());

    let same = update(repo.path());
    assert_eq!(
        (same.chunks, same.chunks_reused),
        (cold.chunks, cold.chunks)
    );

    // One package rebuilt in the middle: its chunk is compressed again, the others are copied.
    let replaced = DebPackage::new("ch-00200", "9.9-1")
        .description("rebuilt")
        .to_bytes()
        .unwrap();
    std::fs::write(&files[200], replaced).unwrap();
    let changed = update(repo.path());
    assert!(
        changed.chunks_reused + 2 >= changed.chunks && changed.chunks_reused < changed.chunks,
        "{} of {} chunks reused",
        changed.chunks_reused,
        changed.chunks
    );
    assert_compressed_copies_match(repo.path());
    // apt reads the multi-block Packages.xz to its end: the last package is there.
    apt_update_and_download(repo.path(), "./", "amd64", &["ch-00399"]);
    let names = ["Packages", "Packages.gz", "Packages.xz", "Release"];
    let updated: Vec<Vec<u8>> = names
        .iter()
        .map(|n| std::fs::read(repo.path().join(n)).unwrap())
        .collect();

    // What --update wrote is byte for byte what a cold run writes (Release apart from its date).
    index(repo.path(), AptLayout::Flat);
    for (name, bytes) in names.iter().zip(&updated).take(3) {
        assert!(
            std::fs::read(repo.path().join(name)).unwrap() == *bytes,
            "{name} differs from a cold run's"
        );
    }

    // A damaged chunk cache is ignored, not trusted.
    let cache = repo.path().join(".vrepo/apt.chunks");
    let mut bytes = std::fs::read(&cache).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&cache, bytes).unwrap();
    let after_damage = update(repo.path());
    assert_eq!(after_damage.chunks_reused, 0);
    assert_compressed_copies_match(repo.path());
}
