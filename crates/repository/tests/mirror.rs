//! `mirror` against a real HTTP server (`serve`) on 127.0.0.1: identical metadata, incremental
//! runs counted in requests, refusal of corrupt and hostile sources with the previous mirror
//! intact, resumption of partial downloads, apt suites, and dnf reading the result over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

// The isolated apt of the apt indexer tests (its own config, state and cache).
mod common;

use common::require_tool;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use vserver_fixtures::{DebSetOptions, RpmPackage, RpmSetOptions, write_deb_set, write_rpm_set};
use vserver_repository::apt::{AptIndexOptions, AptLayout, index_apt};
use vserver_repository::mirror::{
    FetchError, FetchOptions, MirrorError, MirrorOptions, MirrorReport, SignaturePolicy, mirror,
};
use vserver_repository::progress::NoProgress;
use vserver_repository::rpmmd::{Repomd, RpmIndexOptions, index_rpm, read_repository};
use vserver_repository::serve::{RequestLog, ServeOptions};

/// `serve` on an ephemeral loopback port, recording every request.
struct TestServer {
    served: common::Served,
    log: Arc<Mutex<Vec<RequestLog>>>,
}

impl TestServer {
    fn start(dir: &Path) -> TestServer {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        let served = common::Served::start(
            dir,
            ServeOptions {
                workers: 8,
                logger: Some(Arc::new(move |r: &RequestLog| {
                    sink.lock().unwrap().push(r.clone())
                })),
                ..ServeOptions::default()
            },
        );
        TestServer { served, log }
    }

    fn url(&self) -> String {
        self.served.url()
    }

    /// The requests since the last call.
    fn take_log(&self) -> Vec<RequestLog> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

fn options() -> MirrorOptions {
    MirrorOptions {
        signature: SignaturePolicy::Unverified,
        fetch: FetchOptions {
            retries: 1,
            backoff: Duration::from_millis(10),
            ..FetchOptions::default()
        },
        ..MirrorOptions::default()
    }
}

fn rpm_source(dir: &Path, count: usize) {
    write_rpm_set(
        dir,
        &RpmSetOptions {
            seed: 6,
            count,
            files_per_package: 2,
            changelog_entries: 1,
            ..RpmSetOptions::default()
        },
    )
    .unwrap();
    reindex(dir);
}

fn reindex(dir: &Path) {
    index_rpm(
        dir,
        &RpmIndexOptions {
            update: true,
            ..RpmIndexOptions::default()
        },
        &NoProgress,
    )
    .unwrap();
}

/// Every file under `dir/sub`, relative, with its content.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    if !dir.exists() {
        return out;
    }
    for entry in walk(dir) {
        out.push((
            entry.strip_prefix(dir).unwrap().to_owned(),
            std::fs::read(&entry).unwrap(),
        ));
    }
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            out.extend(walk(&entry.path()));
        } else {
            out.push(entry.path());
        }
    }
    out
}

fn rpm_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    tree(dir)
        .into_iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "rpm"))
        .collect()
}

fn package_gets(log: &[RequestLog], ext: &str) -> usize {
    log.iter()
        .filter(|r| r.method == "GET" && r.target.ends_with(ext))
        .count()
}

/// Checks that the repository at `dest` is usable: every package its metadata names is there
/// with its declared size. `None` when the metadata changed while looking (a new state).
fn consistent(dest: &Path) -> Option<bool> {
    let before = std::fs::read(dest.join("repodata/repomd.xml")).ok()?;
    let packages = read_repository(dest).ok()?;
    let ok = packages.iter().all(|p| {
        std::fs::metadata(dest.join(&p.location_href)).is_ok_and(|m| m.len() == p.size_package)
    });
    let after = std::fs::read(dest.join("repodata/repomd.xml")).ok()?;
    (before == after).then_some(ok)
}

#[test]
fn rpm_md_mirror_over_http_is_identical_and_incremental() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dest = tmp.path().join("dest");
    rpm_source(&src, 200);
    let server = TestServer::start(&src);

    let report = mirror(&server.url(), &dest, &options(), &NoProgress).unwrap();
    assert_eq!(report.packages, 200);
    assert_eq!(report.downloaded, 200);
    assert!(report.changed());
    assert_eq!(tree(&src.join("repodata")), tree(&dest.join("repodata")));
    assert_eq!(rpm_files(&src), rpm_files(&dest));
    assert_eq!(
        read_repository(&src).unwrap(),
        read_repository(&dest).unwrap()
    );
    assert_eq!(package_gets(&server.take_log(), ".rpm"), 200);

    // Nothing changed: only repomd.xml (and its absent signature) is asked for.
    let report = mirror(&server.url(), &dest, &options(), &NoProgress).unwrap();
    assert!(!report.changed(), "{report:?}");
    assert_eq!(report.present, 200);
    let log = server.take_log();
    assert_eq!(log.len(), 2, "{log:#?}");
    assert_eq!(report.requests, 2);

    // Change 1%: two new packages, one dropped.
    let mut dropped = rpm_files(&src)[17].0.clone();
    std::fs::remove_file(src.join(&dropped)).unwrap();
    RpmPackage::new("fx-new-a", "1.0").write_to(&src).unwrap();
    RpmPackage::new("fx-new-b", "2.0").write_to(&src).unwrap();
    reindex(&src);

    // A client reading the mirror during the run sees the old or the new state, never a mix.
    let done = Arc::new(AtomicBool::new(false));
    let checks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let watcher = {
        let done = Arc::clone(&done);
        let checks = Arc::clone(&checks);
        let dest = dest.clone();
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                if let Some(ok) = consistent(&dest) {
                    assert!(ok, "the mirror was inconsistent during a run");
                    checks.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    while checks.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let report = mirror(&server.url(), &dest, &options(), &NoProgress).unwrap();
    done.store(true, Ordering::SeqCst);
    watcher
        .join()
        .expect("the mirror was inconsistent during a run");
    assert_eq!(report.downloaded, 2, "{report:?}");
    assert_eq!(report.removed, 1);
    assert_eq!(report.present, 199);
    let log = server.take_log();
    assert_eq!(package_gets(&log, ".rpm"), 2, "{log:#?}");
    assert_eq!(tree(&src.join("repodata")), tree(&dest.join("repodata")));
    assert_eq!(rpm_files(&src), rpm_files(&dest));
    assert!(!dest.join(&dropped).exists());
    assert_eq!(consistent(&dest), Some(true));

    // --keep-removed keeps what the source drops.
    dropped = rpm_files(&src)[3].0.clone();
    std::fs::remove_file(src.join(&dropped)).unwrap();
    reindex(&src);
    let keep = MirrorOptions {
        keep_removed: true,
        ..options()
    };
    let report = mirror(&server.url(), &dest, &keep, &NoProgress).unwrap();
    assert_eq!(report.removed, 0);
    assert!(dest.join(&dropped).exists());
}

#[test]
fn a_corrupt_package_is_refused_and_the_previous_mirror_stays() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dest = tmp.path().join("dest");
    rpm_source(&src, 20);
    let server = TestServer::start(&src);
    mirror(&server.url(), &dest, &options(), &NoProgress).unwrap();
    let before = tree(&dest.join("repodata"));

    let new = RpmPackage::new("fx-corrupt", "1.0").write_to(&src).unwrap();
    reindex(&src);
    let good = std::fs::read(&new).unwrap();
    let mut bad = good.clone();
    let middle = bad.len() / 2;
    bad[middle] ^= 0xff;
    std::fs::write(&new, &bad).unwrap();

    let err = mirror(&server.url(), &dest, &options(), &NoProgress).unwrap_err();
    let MirrorError::Packages { failed, first, .. } = &err else {
        panic!("unexpected error {err}");
    };
    assert_eq!(*failed, 1);
    assert!(
        matches!(**first, FetchError::ChecksumMismatch { .. }),
        "{first}"
    );
    let message = err.to_string();
    assert!(
        message.contains("fx-corrupt-1.0") && message.contains("checksum"),
        "{message}"
    );
    assert_eq!(tree(&dest.join("repodata")), before);
    assert!(!dest.join(new.file_name().unwrap()).exists());
    assert_eq!(consistent(&dest), Some(true));

    // Once the source is fixed, the next run completes.
    std::fs::write(&new, &good).unwrap();
    let report = mirror(&server.url(), &dest, &options(), &NoProgress).unwrap();
    assert_eq!(report.downloaded, 1);
    assert_eq!(tree(&src.join("repodata")), tree(&dest.join("repodata")));
}

/// Rewrites the source's primary with `edit` and fixes repomd.xml to match, as a hostile
/// source would.
fn tamper_primary(src: &Path, edit: impl Fn(String) -> String) {
    let repomd_path = src.join("repodata/repomd.xml");
    let mut repomd = Repomd::parse(&std::fs::read(&repomd_path).unwrap()).unwrap();
    let record = repomd
        .records
        .iter_mut()
        .find(|r| r.kind == "primary")
        .unwrap();
    let path = src.join(&record.href);
    let mut xml = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap())
        .read_to_string(&mut xml)
        .unwrap();
    let xml = edit(xml);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(xml.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    std::fs::write(&path, &gz).unwrap();
    record.checksum = hex::encode(Sha256::digest(&gz));
    record.size = gz.len() as u64;
    record.open_checksum = Some(hex::encode(Sha256::digest(xml.as_bytes())));
    record.open_size = Some(xml.len() as u64);
    std::fs::write(&repomd_path, repomd.to_xml()).unwrap();
}

#[test]
fn hostile_sources_get_clear_errors_and_nothing_is_written_outside_dest() {
    let tmp = tempfile::tempdir().unwrap();
    let pristine = tmp.path().join("pristine");
    rpm_source(&pristine, 5);
    let first = rpm_files(&pristine)[0].0.to_string_lossy().into_owned();

    type Case = (&'static str, Box<dyn Fn(&Path)>, &'static str);
    let first_a = first.clone();
    let first_b = first.clone();
    let first_c = first.clone();
    let first_d = first.clone();
    let first_e = first.clone();
    let cases: Vec<Case> = vec![
        (
            "dot-dot location",
            Box::new(move |src: &Path| {
                tamper_primary(src, |x| x.replace(&first_a, &format!("../../{first_a}")))
            }),
            "leads out of the repository",
        ),
        (
            "absolute location",
            Box::new(move |src: &Path| {
                tamper_primary(src, |x| x.replace(&first_b, "/etc/evil.rpm"))
            }),
            "it is absolute",
        ),
        (
            "location in the metadata",
            Box::new(move |src: &Path| {
                tamper_primary(src, |x| x.replace(&first_c, "repodata/repomd.xml"))
            }),
            "metadata directories",
        ),
        (
            "file larger than declared",
            Box::new(move |src: &Path| {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(src.join(&first_d))
                    .unwrap();
                f.write_all(&[0u8; 4096]).unwrap();
            }),
            "larger than its declared size",
        ),
        (
            "file smaller than declared",
            Box::new(move |src: &Path| {
                let path = src.join(&first_e);
                let len = std::fs::metadata(&path).unwrap().len();
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_len(len - 100)
                    .unwrap();
            }),
            "declared size is",
        ),
    ];
    for (name, tamper, expected) in cases {
        let world = tmp.path().join(format!("world-{}", name.replace(' ', "-")));
        let src = world.join("src");
        copy_dir(&pristine, &src);
        tamper(&src);
        let dest = world.join("dest");
        let server = TestServer::start(&src);
        let before = tree(&world);
        let err = mirror(&server.url(), &dest, &options(), &NoProgress).unwrap_err();
        let message = err.to_string();
        assert!(message.contains(expected), "{name}: {message}");
        assert_eq!(
            message.lines().count(),
            1,
            "{name}: not a one-line error: {message}"
        );
        // Outside DEST the world is unchanged, and DEST publishes nothing.
        let outside: Vec<_> = tree(&world)
            .into_iter()
            .filter(|(p, _)| !p.starts_with("dest"))
            .collect();
        assert_eq!(outside, before, "{name}");
        assert!(!dest.join("repodata").exists(), "{name}");
        assert!(!tmp.path().join("evil.rpm").exists());
        assert!(rpm_files(&dest).is_empty(), "{name}");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for file in walk(from) {
        let target = to.join(file.strip_prefix(from).unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&file, &target).unwrap();
    }
}

#[test]
fn a_partial_download_is_resumed_with_a_range_request() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dest = tmp.path().join("dest");
    rpm_source(&src, 3);
    let server = TestServer::start(&src);
    let (rel, bytes) = rpm_files(&src).remove(1);
    let parts = dest.join(".vrepo/mirror-parts");
    std::fs::create_dir_all(&parts).unwrap();
    let digest = hex::encode(Sha256::digest(&bytes));
    std::fs::write(
        parts.join(format!("sha256-{digest}.part")),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();

    let report: MirrorReport = mirror(&server.url(), &dest, &options(), &NoProgress).unwrap();
    assert_eq!(report.resumed, 1, "{report:?}");
    assert_eq!(std::fs::read(dest.join(&rel)).unwrap(), bytes);
    let log = server.take_log();
    let ranged: Vec<_> = log.iter().filter(|r| r.status == 206).collect();
    assert_eq!(ranged.len(), 1, "{log:#?}");
    assert!(ranged[0].target.ends_with(&*rel.to_string_lossy()));
    assert_eq!(ranged[0].bytes, (bytes.len() - bytes.len() / 2) as u64);
    assert!(
        !parts.exists(),
        "the download area is cleaned after success"
    );
}

#[test]
fn apt_suite_mirror_over_http_is_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dest = tmp.path().join("dest");
    write_deb_set(
        &src.join("pool/main"),
        &DebSetOptions {
            seed: 3,
            count: 30,
            files_per_package: 2,
            ..DebSetOptions::default()
        },
    )
    .unwrap();
    index_apt(
        &src,
        &AptIndexOptions {
            layout: AptLayout::Dists {
                suite: "stable".into(),
                component: "main".into(),
            },
            ..AptIndexOptions::default()
        },
        &NoProgress,
    )
    .unwrap();
    let server = TestServer::start(&src);
    let apt = MirrorOptions {
        suites: vec!["stable".into()],
        ..options()
    };
    let report = mirror(&server.url(), &dest, &apt, &NoProgress).unwrap();
    assert_eq!(report.format, "apt");
    assert_eq!(report.packages, 30);
    assert_eq!(tree(&src.join("dists")), tree(&dest.join("dists")));
    assert_eq!(tree(&src.join("pool")), tree(&dest.join("pool")));
    server.take_log();

    let report = mirror(&server.url(), &dest, &apt, &NoProgress).unwrap();
    assert!(!report.changed(), "{report:?}");
    assert_eq!(package_gets(&server.take_log(), ".deb"), 0);

    // A flat repository (`deb URL ./`, what `vrepo index` writes by default) needs no suite.
    let flat = tmp.path().join("flat");
    copy_dir(&src.join("pool/main"), &flat);
    index_apt(&flat, &AptIndexOptions::default(), &NoProgress).unwrap();
    let flat_server = TestServer::start(&flat);
    let flat_dest = tmp.path().join("flat-dest");
    let report = mirror(&flat_server.url(), &flat_dest, &options(), &NoProgress).unwrap();
    assert_eq!(report.packages, 30);
    let visible = |dir: &Path| -> Vec<(PathBuf, Vec<u8>)> {
        tree(dir)
            .into_iter()
            .filter(|(p, _)| !p.starts_with(".vrepo"))
            .collect()
    };
    assert!(visible(&flat) == visible(&flat_dest), "flat mirror differs");
    let report = mirror(&flat_server.url(), &flat_dest, &options(), &NoProgress).unwrap();
    assert!(!report.changed());

    // An unknown suite is a clear error.
    let other = MirrorOptions {
        suites: vec!["nosuch".into()],
        ..options()
    };
    let err = mirror(&server.url(), &tmp.path().join("d2"), &other, &NoProgress).unwrap_err();
    assert!(err.to_string().contains("nosuch"), "{err}");
}

#[test]
fn dnf_installs_from_a_mirror_served_over_http() {
    if !require_tool("dnf") || !rustix::process::geteuid().is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dest = tmp.path().join("dest");
    rpm_source(&src, 25);
    let upstream = TestServer::start(&src);
    mirror(&upstream.url(), &dest, &options(), &NoProgress).unwrap();
    drop(upstream);
    let served = TestServer::start(&dest);
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let output = Command::new("dnf")
        .arg(format!("--installroot={}", root.display()))
        .arg(format!("--repofrompath=m,{}", served.url()))
        .args(["--repo=m", "--nogpgcheck", "--noplugins", "-y", "-q"])
        .arg("--setopt=reposdir=/nonexistent")
        .arg(format!(
            "--setopt=cachedir={}",
            tmp.path().join("cache").display()
        ))
        .arg(format!(
            "--setopt=persistdir={}",
            tmp.path().join("persist").display()
        ))
        .arg("--setopt=install_weak_deps=False")
        .env("HOME", tmp.path())
        .args(["install", "fx-00024"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "dnf failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rpms = served.take_log();
    assert!(package_gets(&rpms, ".rpm") >= 1);
    assert!(
        rpms.iter()
            .all(|r| r.status == 200 || r.status == 206 || r.status == 404)
    );
}

/// A throw-away OpenPGP key in its own GNUPGHOME; returns (home, exported public keyring).
fn test_key(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let home = dir.join(format!("gnupg-{name}"));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let gpg = |args: &[&str]| {
        let output = Command::new("gpg")
            .arg("--homedir")
            .arg(&home)
            .args([
                "--batch",
                "--quiet",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    };
    gpg(&[
        "--quick-gen-key",
        &format!("{name} <{name}@example.invalid>"),
        "ed25519",
        "sign",
        "never",
    ]);
    let keyring = dir.join(format!("{name}.gpg"));
    std::fs::write(&keyring, gpg(&["--export"])).unwrap();
    (home, keyring)
}

fn sign(home: &Path, file: &Path, clear: bool) {
    let mut command = Command::new("gpg");
    command.arg("--homedir").arg(home).args([
        "--batch",
        "--yes",
        "--quiet",
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        "",
    ]);
    if clear {
        let out = file.with_file_name("InRelease");
        command.arg("--clearsign").arg("--output").arg(out);
    } else {
        let out = PathBuf::from(format!("{}.asc", file.display()));
        command
            .arg("--armor")
            .arg("--detach-sign")
            .arg("--output")
            .arg(out);
    }
    let status = command.arg(file).status().unwrap();
    assert!(status.success());
}

#[test]
fn signatures_are_verified_against_the_keyring() {
    if !require_tool("gpg") || !require_tool("gpgv") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (home, keyring) = test_key(tmp.path(), "good");
    let (other_home, _) = test_key(tmp.path(), "evil");
    let src = tmp.path().join("src");
    rpm_source(&src, 3);
    let server = TestServer::start(&src);
    let verified = MirrorOptions {
        signature: SignaturePolicy::Keyring(keyring.clone()),
        ..options()
    };

    // Unsigned: refused, with the way out in the message.
    let err = mirror(
        &server.url(),
        &tmp.path().join("d1"),
        &verified,
        &NoProgress,
    )
    .unwrap_err();
    assert!(err.to_string().contains("no signature"), "{err}");

    sign(&home, &src.join("repodata/repomd.xml"), false);
    let dest = tmp.path().join("d2");
    mirror(&server.url(), &dest, &verified, &NoProgress).unwrap();
    assert!(dest.join("repodata/repomd.xml.asc").exists());

    // Signed by another key: refused, the previous mirror stays.
    RpmPackage::new("fx-late", "1.0").write_to(&src).unwrap();
    reindex(&src);
    sign(&other_home, &src.join("repodata/repomd.xml"), false);
    let before = tree(&dest.join("repodata"));
    let err = mirror(&server.url(), &dest, &verified, &NoProgress).unwrap_err();
    assert!(matches!(err, MirrorError::Signature(_)), "{err}");
    assert!(err.to_string().contains("does not verify"), "{err}");
    assert_eq!(tree(&dest.join("repodata")), before);

    // apt: a clear-signed InRelease.
    let apt_src = tmp.path().join("apt");
    write_deb_set(
        &apt_src.join("pool/main"),
        &DebSetOptions {
            count: 3,
            ..DebSetOptions::default()
        },
    )
    .unwrap();
    index_apt(
        &apt_src,
        &AptIndexOptions {
            layout: AptLayout::Dists {
                suite: "stable".into(),
                component: "main".into(),
            },
            ..AptIndexOptions::default()
        },
        &NoProgress,
    )
    .unwrap();
    sign(&home, &apt_src.join("dists/stable/Release"), true);
    let apt_server = TestServer::start(&apt_src);
    let apt = MirrorOptions {
        suites: vec!["stable".into()],
        ..verified.clone()
    };
    let apt_dest = tmp.path().join("apt-dest");
    let report = mirror(&apt_server.url(), &apt_dest, &apt, &NoProgress).unwrap();
    assert_eq!(report.packages, 3);
    assert!(apt_dest.join("dists/stable/InRelease").exists());
    // The unsigned Release beside it is not vouched for, so it is not published.
    assert!(!apt_dest.join("dists/stable/Release").exists());
}

/// The `by-hash/ALGORITHM/HEX` names under an index directory.
fn by_hash_names(dir: &Path) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for section in std::fs::read_dir(dir.join("by-hash")).into_iter().flatten() {
        let section = section.unwrap();
        for entry in std::fs::read_dir(section.path()).unwrap() {
            names.insert(format!(
                "{}/{}",
                section.file_name().to_string_lossy(),
                entry.unwrap().file_name().to_string_lossy()
            ));
        }
    }
    names
}

#[test]
fn apt_get_installs_from_an_apt_mirror_served_over_http() {
    if !require_tool("apt-get") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dest = tmp.path().join("dest");
    write_deb_set(
        &src.join("pool/main"),
        &DebSetOptions {
            seed: 5,
            count: 12,
            ..DebSetOptions::default()
        },
    )
    .unwrap();
    common::index(
        &src,
        AptLayout::Dists {
            suite: "stable".into(),
            component: "main".into(),
        },
    );
    // The source says Acquire-By-Hash (as Debian's archive and `vrepo index --suite` do):
    // clients fetch indexes by hash, which the mirror must serve.
    assert!(
        std::fs::read_to_string(src.join("dists/stable/Release"))
            .unwrap()
            .contains("Acquire-By-Hash: yes\n")
    );
    let upstream = TestServer::start(&src);
    let apt = MirrorOptions {
        suites: vec!["stable".into()],
        ..options()
    };
    mirror(&upstream.url(), &dest, &apt, &NoProgress).unwrap();
    let first_generation = by_hash_names(&dest.join("dists/stable/main/binary-amd64"));
    assert!(!first_generation.is_empty());
    let served = TestServer::start(&dest);
    let client = common::IsolatedApt::new(
        &tmp.path().join("apt"),
        &format!("deb [trusted=yes] {} stable main", served.url()),
        "amd64",
    );
    common::assert_success(&client.apt_get(&["update"]), "apt-get update");
    let log = served.take_log();
    assert!(
        log.iter()
            .any(|r| r.target.contains("/by-hash/SHA") && r.status == 200),
        "apt did not fetch by hash: {:?}",
        log.iter()
            .map(|r| (&r.target, r.status))
            .collect::<Vec<_>>()
    );
    // A new source generation: the previous by-hash names stay for clients mid-update.
    write_deb_set(
        &src.join("pool/main"),
        &DebSetOptions {
            seed: 6,
            count: 2,
            name_prefix: "gen2".into(),
            ..DebSetOptions::default()
        },
    )
    .unwrap();
    common::index(
        &src,
        AptLayout::Dists {
            suite: "stable".into(),
            component: "main".into(),
        },
    );
    mirror(&upstream.url(), &dest, &apt, &NoProgress).unwrap();
    drop(upstream);
    let second_generation = by_hash_names(&dest.join("dists/stable/main/binary-amd64"));
    assert!(
        second_generation.is_superset(&first_generation)
            && second_generation.len() > first_generation.len(),
        "{first_generation:?} -> {second_generation:?}"
    );
    common::assert_success(&client.apt_get(&["update"]), "apt-get update");
    let names: Vec<String> = std::fs::read_dir(dest.join("pool/main"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let package = names
        .iter()
        .max()
        .unwrap()
        .split('_')
        .next()
        .unwrap()
        .to_owned();
    common::assert_success(
        &client.apt_get(&["install", "--download-only", "-y", &package]),
        "apt-get install --download-only",
    );
    let downloaded = client.downloaded();
    assert!(
        downloaded
            .iter()
            .any(|d| d.starts_with(&format!("{package}_"))),
        "{downloaded:?}"
    );
    assert!(package_gets(&served.take_log(), ".deb") >= 1);
}

#[test]
fn a_bad_leftover_download_is_fetched_again() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dest = tmp.path().join("dest");
    rpm_source(&src, 2);
    let server = TestServer::start(&src);
    let (rel, bytes) = rpm_files(&src).remove(0);
    let parts = dest.join(".vrepo/mirror-parts");
    std::fs::create_dir_all(&parts).unwrap();
    let digest = hex::encode(Sha256::digest(&bytes));
    // Complete in size but wrong in content, as a killed run could leave it.
    std::fs::write(
        parts.join(format!("sha256-{digest}.part")),
        vec![0u8; bytes.len()],
    )
    .unwrap();
    mirror(&server.url(), &dest, &options(), &NoProgress).unwrap();
    assert_eq!(std::fs::read(dest.join(&rel)).unwrap(), bytes);
}
