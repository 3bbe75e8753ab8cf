//! rpm-md indexing against the real tools: createrepo_c for equivalence, dnf for use.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::require_tool;

use std::path::{Path, PathBuf};
use std::process::Command;

use vserver_fixtures::{Compression, RpmPackage, RpmSetOptions, Scriptlets, write_rpm_set};
use vserver_repository::progress::NoProgress;
use vserver_repository::publish::lock_repository;
use vserver_repository::rpmmd::{
    Package, RpmIndexError, RpmIndexOptions, index_rpm, read_repository,
};

fn is_root() -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        assert!(
            std::env::var_os("VSERVER_TEST_REQUIRE_ALL").is_none(),
            "root is required (VSERVER_TEST_REQUIRE_ALL is set)"
        );
        eprintln!("skipped: needs root");
    }
    root
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A generated set plus hand-made packages that exercise createrepo_c's special cases.
fn repository(dir: &Path, count: usize) -> Vec<PathBuf> {
    let options = RpmSetOptions {
        seed: 7,
        count,
        files_per_package: 5,
        compression: Compression::Mix,
        scriptlets: Scriptlets::Lua,
        changelog_entries: 12,
        ..RpmSetOptions::default()
    };
    let mut files = write_rpm_set(dir, &options).unwrap();
    let mut special = RpmPackage::new("odd-names", "1.0");
    special
        .epoch(3)
        .summary("markup <b>&amp;</b> \"quoted\"")
        .description("line one\nline two & <three>\n")
        .requires("/usr/bin/odd-tool")
        .requires("odd-capability >= 2")
        .requires("odd-capability = 2.5-1")
        .provides("odd-capability = 2.5-1")
        .requires("libc.so.6()(64bit)")
        .requires("libc.so.6(GLIBC_2.3)(64bit)")
        .requires("libc.so.6(GLIBC_2.17)(64bit)")
        .requires("libc.so.6(GLIBC_2.4)(64bit)")
        .requires("dup-dep >= 1")
        .requires("dup-dep >= 1")
        .requires_pre("/bin/sh")
        .requires("(fx-00001 or fx-00002)")
        .file("/usr/bin/odd-tool", "#!/bin/sh\n", 0o755)
        .config_file("/etc/odd.conf", "x=1\n")
        .dir("/usr/share/odd")
        .ghost("/var/log/odd.log")
        .changelog(
            "A <a@example.invalid>  ",
            "- same second one",
            1_600_000_000,
        )
        .changelog("B <b@example.invalid>", "- same second two", 1_600_000_000)
        .changelog(
            "C <c@example.invalid>",
            "- same second three",
            1_600_000_000,
        )
        .changelog("D <d@example.invalid>", "- older", 1_500_000_000);
    files.push(special.write_to(dir).unwrap());
    files
}

fn by_location(mut packages: Vec<Package>) -> Vec<Package> {
    packages.sort_by(|a, b| a.location_href.cmp(&b.location_href));
    packages
}

fn copy_tree(from: &Path, to: &Path) {
    run(Command::new("cp").arg("-a").arg(from).arg(to));
}

#[test]
fn metadata_equals_createrepo_c_field_by_field() {
    if !require_tool("createrepo_c") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ours = tmp.path().join("ours");
    let theirs = tmp.path().join("theirs");
    repository(&ours, 40);
    copy_tree(&ours, &theirs);

    let report = index_rpm(&ours, &RpmIndexOptions::default(), &NoProgress).unwrap();
    assert_eq!(report.packages, 41);
    run(Command::new("createrepo_c")
        .args(["-q", "--no-database"])
        .arg(&theirs));

    let ours = by_location(read_repository(&ours).unwrap());
    let theirs = by_location(read_repository(&theirs).unwrap());
    assert_eq!(ours.len(), theirs.len());
    for (a, b) in ours.iter().zip(&theirs) {
        assert_eq!(
            a, b,
            "package {} differs from createrepo_c's",
            a.location_href
        );
    }
    let odd = ours.iter().find(|p| p.name.starts_with("odd")).unwrap();
    assert_eq!(odd.changelogs.len(), 4);
    assert!(odd.requires.iter().any(|d| d.name == "/bin/sh" && d.pre));
    let required: Vec<_> = odd
        .requires
        .iter()
        .map(|d| (d.name.as_str(), d.flags.as_deref()))
        .collect();
    assert!(
        !required.contains(&("/usr/bin/odd-tool", None))
            && !required.contains(&("odd-capability", Some("EQ"))),
        "requirements the package satisfies itself are dropped: {required:?}"
    );
    assert!(required.contains(&("odd-capability", Some("GE"))));
    let generated = ours.iter().find(|p| p.name == "fx-00030").unwrap();
    assert_eq!(generated.changelogs.len(), 10, "changelog limit");
}

#[test]
fn dnf_resolves_and_installs_from_the_index() {
    if !require_tool("dnf") || !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let names = write_rpm_set(
        &repo,
        &RpmSetOptions {
            seed: 11,
            count: 25,
            ..RpmSetOptions::default()
        },
    )
    .unwrap();
    index_rpm(&repo, &RpmIndexOptions::default(), &NoProgress).unwrap();

    let dnf = |root: &Path| {
        let mut cmd = Command::new("dnf");
        cmd.arg(format!("--installroot={}", root.display()))
            .arg(format!("--repofrompath=fx,file://{}", repo.display()))
            .args(["--repo=fx", "--nogpgcheck", "--noplugins", "-y", "-q"])
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
            .env("HOME", tmp.path());
        cmd
    };
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let listed = run(dnf(&root).args(["repoquery", "--qf", "%{name}", "fx-*"]));
    assert_eq!(
        listed.lines().count(),
        names.len(),
        "repoquery lists every package"
    );

    // The last package depends, directly or not, on earlier ones: dnf must resolve them.
    std::fs::write(tmp.path().join(".rpmmacros"), "%_dbpath /var/lib/rpm\n").unwrap();
    run(dnf(&root).args(["install", "fx-00024"]));
    let installed = run(Command::new("rpm")
        .arg("--root")
        .arg(&root)
        .args(["--dbpath", "/var/lib/rpm", "-qa", "--qf", "%{NAME}\n"])
        .env("HOME", tmp.path()));
    assert!(
        installed.lines().any(|l| l == "fx-00024"),
        "installed: {installed}"
    );
    assert!(
        installed.lines().count() > 1,
        "dependencies came along: {installed}"
    );
}

#[test]
fn update_reads_only_changed_packages_and_matches_a_cold_run() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let files = repository(&repo, 30);
    index_rpm(&repo, &RpmIndexOptions::default(), &NoProgress).unwrap();

    // Remove one package, change another, add a new one.
    std::fs::remove_file(&files[3]).unwrap();
    let changed = RpmPackage::new("fx-00005", "99.0");
    let changed_path = changed.write_to(&repo).unwrap();
    std::fs::remove_file(&files[5]).unwrap();
    let mut added = RpmPackage::new("brand-new", "1.0");
    added.requires("fx-00001");
    added.write_to(&repo).unwrap();
    let touched = &files[7];
    let content = std::fs::read(touched).unwrap();
    std::fs::write(touched, content).unwrap();
    assert!(changed_path.exists());

    let update = RpmIndexOptions {
        update: true,
        ..RpmIndexOptions::default()
    };
    let report = index_rpm(&repo, &update, &NoProgress).unwrap();
    assert_eq!(report.packages, 31);
    assert_eq!(
        report.reused, 28,
        "all but the new, the changed and the touched one"
    );
    let incremental = by_location(read_repository(&repo).unwrap());

    let cold = index_rpm(&repo, &RpmIndexOptions::default(), &NoProgress).unwrap();
    assert_eq!(cold.reused, 0);
    let mut cold_packages = by_location(read_repository(&repo).unwrap());
    // File times are the same files' times, so the two runs must agree exactly.
    assert_eq!(incremental.len(), cold_packages.len());
    for (a, b) in incremental.iter().zip(cold_packages.iter_mut()) {
        assert_eq!(a, b);
    }
}

#[test]
fn bad_packages_fail_with_the_file_named_and_leave_metadata_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let files = repository(&repo, 5);
    index_rpm(&repo, &RpmIndexOptions::default(), &NoProgress).unwrap();
    let before = std::fs::read(repo.join("repodata/repomd.xml")).unwrap();

    let good = std::fs::read(&files[0]).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated.rpm", good[..good.len() / 3].to_vec()),
        (
            "garbage.rpm",
            b"this is not an rpm at all, not even close".repeat(10),
        ),
        ("huge-count.rpm", {
            let mut b = good.clone();
            // Signature header intro: index count at 96+8.
            b[104..108].copy_from_slice(&0x7fff_ffffu32.to_be_bytes());
            b
        }),
        ("huge-data.rpm", {
            let mut b = good.clone();
            b[108..112].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
            b
        }),
        ("bad-offset.rpm", {
            let mut b = good.clone();
            // First index entry of the signature header: offset field.
            b[112 + 8..112 + 12].copy_from_slice(&0x00ff_ffffu32.to_be_bytes());
            b
        }),
    ];
    for (name, bytes) in &cases {
        let path = repo.join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = index_rpm(&repo, &RpmIndexOptions::default(), &NoProgress).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(name),
            "{name}: error names the file: {message}"
        );
        assert!(
            matches!(err, RpmIndexError::Package(_)),
            "{name}: unexpected error kind {err:?}"
        );
        assert_eq!(
            std::fs::read(repo.join("repodata/repomd.xml")).unwrap(),
            before,
            "{name}: previous metadata untouched"
        );
        std::fs::remove_file(&path).unwrap();
    }

    // A file name that cannot go into the metadata.
    let hostile = repo.join("evil\nname.rpm");
    std::fs::write(&hostile, &good).unwrap();
    let err = index_rpm(&repo, &RpmIndexOptions::default(), &NoProgress).unwrap_err();
    assert!(matches!(err, RpmIndexError::Bad(_)), "{err:?}");

    // With skip_bad the rest is indexed and the bad ones are reported.
    for (name, bytes) in &cases {
        std::fs::write(repo.join(name), bytes).unwrap();
    }
    let skip = RpmIndexOptions {
        skip_bad: true,
        ..RpmIndexOptions::default()
    };
    let report = index_rpm(&repo, &skip, &NoProgress).unwrap();
    assert_eq!(report.packages, 6);
    assert_eq!(report.skipped.len(), cases.len() + 1);
    assert_eq!(read_repository(&repo).unwrap().len(), 6);
}

#[test]
fn a_second_indexer_is_refused_and_old_readers_survive_the_swap() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    repository(&repo, 5);
    index_rpm(&repo, &RpmIndexOptions::default(), &NoProgress).unwrap();

    let lock = lock_repository(&repo, false).unwrap();
    let err = index_rpm(&repo, &RpmIndexOptions::default(), &NoProgress).unwrap_err();
    assert!(err.to_string().contains("another vrepo process"), "{err}");
    drop(lock);

    // A client that opened the old primary keeps a complete file after the swap.
    let old_primary = std::fs::read_dir(repo.join("repodata"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-primary.xml.gz"))
        .unwrap();
    let held = std::fs::File::open(&old_primary).unwrap();
    let added = RpmPackage::new("late", "1.0");
    added.write_to(&repo).unwrap();
    index_rpm(&repo, &RpmIndexOptions::default(), &NoProgress).unwrap();
    assert!(!old_primary.exists(), "old metadata was replaced");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(held), &mut text).unwrap();
    assert!(text.ends_with("</metadata>"));
    assert!(!text.contains("<name>late</name>"));
    // No staging directory is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&repo)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Every row of every table, with `pkgKey` replaced by the package's `pkgId`, sorted.
fn database_rows(path: &Path) -> Vec<String> {
    let db = rusqlite::Connection::open(path).unwrap();
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut rows = Vec::new();
    for table in tables {
        let mut statement = db.prepare(&format!("SELECT * FROM {table}")).unwrap();
        let columns: Vec<String> = statement
            .column_names()
            .iter()
            .map(|c| c.to_string())
            .collect();
        let mut query = statement.query([]).unwrap();
        while let Some(row) = query.next().unwrap() {
            let mut fields = vec![table.clone()];
            for (i, column) in columns.iter().enumerate() {
                let value: rusqlite::types::Value = row.get(i).unwrap();
                let text = match (column.as_str(), value) {
                    ("pkgKey", rusqlite::types::Value::Integer(key)) => db
                        .query_row("SELECT pkgId FROM packages WHERE pkgKey = ?1", [key], |r| {
                            r.get::<_, String>(0)
                        })
                        .unwrap(),
                    (_, value) => format!("{value:?}"),
                };
                fields.push(format!("{column}={text}"));
            }
            rows.push(fields.join(" "));
        }
    }
    rows.sort();
    rows
}

fn decompressed_database(repo: &Path, kind: &str, out: &Path) -> PathBuf {
    let repomd = std::fs::read(repo.join("repodata/repomd.xml")).unwrap();
    let repomd = vserver_repository::rpmmd::Repomd::parse(&repomd).unwrap();
    let record = repomd
        .record(kind)
        .unwrap_or_else(|| panic!("no {kind} in {repo:?}"));
    assert_eq!(record.database_version, Some(10));
    let mut input =
        vserver_repository::compress::Compression::open(&repo.join(&record.href)).unwrap();
    let path = out.join(format!("{kind}.sqlite"));
    let mut file = std::fs::File::create(&path).unwrap();
    std::io::copy(&mut input, &mut file).unwrap();
    path
}

#[test]
fn sqlite_databases_equal_createrepo_c_row_by_row() {
    if !require_tool("createrepo_c") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ours = tmp.path().join("ours");
    let theirs = tmp.path().join("theirs");
    repository(&ours, 12);
    copy_tree(&ours, &theirs);
    let options = RpmIndexOptions {
        database: true,
        ..RpmIndexOptions::default()
    };
    index_rpm(&ours, &options, &NoProgress).unwrap();
    run(Command::new("createrepo_c")
        .args(["-q", "--database", "--compress-type=gz"])
        .arg(&theirs));
    for kind in ["primary_db", "filelists_db", "other_db"] {
        let a = database_rows(&decompressed_database(&ours, kind, tmp.path()));
        let b_dir = tmp.path().join("b");
        std::fs::create_dir_all(&b_dir).unwrap();
        let b = database_rows(&decompressed_database(&theirs, kind, &b_dir));
        // db_info names the XML checksum, which differs with the compressor's bytes.
        let strip = |rows: Vec<String>| -> Vec<String> {
            rows.into_iter()
                .filter(|r| !r.starts_with("db_info "))
                .collect()
        };
        let (a, b) = (strip(a), strip(b));
        assert_eq!(a.len(), b.len(), "{kind}: row count");
        assert!(
            a.len() > 12,
            "{kind}: the databases hold the packages ({} rows)",
            a.len()
        );
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x, y, "{kind}");
        }
    }
}
