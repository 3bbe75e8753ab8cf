//! `mirror` with a package subset (`--packages`) on rpm-md sources: the closure is resolved
//! with rpm's semantics, the subset is re-indexed, and real rpm and dnf prove it complete:
//! `rpm -i --test` of every subset package into an empty root, and `dnf --installroot`
//! installing the requested packages from the subset mirror alone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::require_tool;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use vserver_fixtures::{RpmPackage, RpmSetOptions, Scriptlets, write_rpm_set};
use vserver_repository::closure::SubsetOptions;
use vserver_repository::mirror::{
    MirrorError, MirrorOptions, MirrorReport, SignaturePolicy, mirror,
};
use vserver_repository::progress::NoProgress;
use vserver_repository::rpmmd::{RpmIndexOptions, index_rpm, read_repository};

fn subset(names: &[&str]) -> MirrorOptions {
    MirrorOptions {
        signature: SignaturePolicy::Unverified,
        subset: Some(SubsetOptions {
            packages: names.iter().map(|n| (*n).to_owned()).collect(),
            ..SubsetOptions::default()
        }),
        ..MirrorOptions::default()
    }
}

fn index(dir: &Path) {
    index_rpm(dir, &RpmIndexOptions::default(), &NoProgress).unwrap();
}

fn run_mirror(src: &Path, dest: &Path, options: &MirrorOptions) -> MirrorReport {
    mirror(src.to_str().unwrap(), dest, options, &NoProgress).unwrap()
}

/// Every .rpm under `dir` (outside `.vrepo`), relative.
fn rpm_files(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_name() == ".vrepo" {
                continue;
            }
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rpm") {
                out.insert(
                    path.strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out
}

/// The metadata of DEST names exactly the packages DEST holds; returns their names.
fn consistent_names(dest: &Path) -> BTreeSet<String> {
    let packages = read_repository(dest).unwrap();
    let listed: BTreeSet<String> = packages.iter().map(|p| p.location_href.clone()).collect();
    assert_eq!(listed, rpm_files(dest), "metadata and files differ");
    packages
        .into_iter()
        .map(|p| format!("{}-{}", p.name, p.version))
        .collect()
}

/// `rpm -i --test` of every package under `dir` into an empty root: fails on any missing
/// dependency.
fn assert_rpm_installs_all(dir: &Path, scratch: &Path) {
    let root = scratch.join("rpm-root");
    std::fs::create_dir_all(&root).unwrap();
    let files: Vec<PathBuf> = rpm_files(dir).iter().map(|r| dir.join(r)).collect();
    let output = Command::new("rpm")
        .arg("--root")
        .arg(&root)
        .args(["--dbpath", "/rpmdb", "--define", "_pkgverify_level none"])
        .args(["-i", "--test", "--nosignature", "--nodigest"])
        .args(&files)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "rpm -i --test of the subset failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn dnf_install(repo: &Path, scratch: &Path, names: &[&str]) -> std::process::Output {
    let root = scratch.join("dnf-root");
    std::fs::create_dir_all(&root).unwrap();
    Command::new("dnf")
        .arg(format!("--installroot={}", root.display()))
        .arg(format!("--repofrompath=subset,file://{}", repo.display()))
        .args(["--repo=subset", "--nogpgcheck", "--noplugins", "-y", "-q"])
        .arg("--setopt=reposdir=/nonexistent")
        .arg(format!(
            "--setopt=cachedir={}",
            scratch.join("cache").display()
        ))
        .arg(format!(
            "--setopt=persistdir={}",
            scratch.join("persist").display()
        ))
        .arg("--setopt=install_weak_deps=False")
        .env("HOME", scratch)
        .arg("install")
        .args(names)
        .output()
        .unwrap()
}

#[test]
fn subset_of_a_generated_set_is_complete_for_rpm_and_dnf() {
    if !require_tool("rpm") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dest = tmp.path().join("dest");
    let set = RpmSetOptions {
        seed: 66,
        count: 120,
        files_per_package: 3,
        scriptlets: Scriptlets::None,
        changelog_entries: 1,
        ..RpmSetOptions::default()
    };
    write_rpm_set(&src, &set).unwrap();
    index(&src);
    let wanted = ["fx-00119", "fx-00077"];
    let first = run_mirror(&src, &dest, &subset(&wanted));
    assert!(first.changed());
    assert!(first.unresolved.is_empty());
    let names = consistent_names(&dest);
    assert_eq!(names.len() as u64, first.packages);
    assert!(
        wanted
            .iter()
            .all(|w| names.iter().any(|n| n.starts_with(&format!("{w}-"))))
    );
    assert!(
        first.packages > 2 && first.packages < 120,
        "closure of {} packages",
        first.packages
    );
    eprintln!("closure of {wanted:?}: {} of 120 packages", first.packages);
    assert_rpm_installs_all(&dest, tmp.path());

    if require_tool("dnf") && rustix::process::geteuid().is_root() {
        let output = dnf_install(&dest, tmp.path(), &wanted);
        assert!(
            output.status.success(),
            "dnf could not install from the subset: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    // The same request again: nothing to do.
    let again = run_mirror(&src, &dest, &subset(&wanted));
    assert!(!again.changed(), "{again:?}");
    assert_eq!(again.downloaded, 0);
    // The source's primary is kept aside and linked, not fetched again: repomd.xml and its
    // signature are all a run costs when nothing changed.
    assert_eq!(again.requests, 2, "{again:?}");
    // …and the selection is reused rather than resolved again; a damaged cache is ignored.
    let cache = dest.join(".vrepo/mirror.selection");
    assert!(
        std::fs::read_to_string(&cache)
            .unwrap()
            .starts_with("key\t")
    );
    std::fs::write(&cache, "key\tnot-this-one\nG\tgarbage\n").unwrap();
    assert!(!run_mirror(&src, &dest, &subset(&wanted)).changed());

    // A full mirror into the same DEST and back to the subset: the subset's own metadata
    // comes back, though the subset itself did not change.
    let full = MirrorOptions {
        signature: SignaturePolicy::Unverified,
        ..MirrorOptions::default()
    };
    run_mirror(&src, &dest, &full);
    assert_eq!(consistent_names(&dest).len(), 120);
    let back = run_mirror(&src, &dest, &subset(&wanted));
    assert!(back.metadata_changed && back.removed > 0, "{back:?}");
    assert_eq!(consistent_names(&dest).len() as u64, first.packages);

    // A smaller request drops what only the other package needed, and the rest stays valid.
    let smaller = run_mirror(&src, &dest, &subset(&["fx-00077"]));
    assert!(smaller.changed());
    assert!(smaller.removed > 0, "{smaller:?}");
    assert_eq!(consistent_names(&dest).len() as u64, smaller.packages);
    assert_rpm_installs_all(&dest, &tmp.path().join("second"));
}

fn hand_made(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let write = |p: &mut RpmPackage| {
        p.write_to(dir).unwrap();
    };
    write(
        RpmPackage::new("app", "1.0")
            .requires("lib >= 2.0")
            .requires("(plugin-a or plugin-b)")
            .requires("(extra if lib)")
            .requires("(never if not-in-the-repository)")
            .requires("(lib-tools with lib-tools-cap >= 3)")
            .requires("/usr/bin/tool")
            .requires("virt-cap >= 1.5")
            // True only once needs-trigger (processed later) brings trigger in.
            .requires("(late-extra if trigger)")
            .requires("needs-trigger")
            .recommends("rec-pkg"),
    );
    write(RpmPackage::new("needs-trigger", "1.0").requires("trigger"));
    write(&mut RpmPackage::new("trigger", "1.0"));
    write(&mut RpmPackage::new("late-extra", "1.0"));
    for (version, release) in [("1.0", "1"), ("2.0~rc1", "1"), ("2.0", "1"), ("2.0", "2")] {
        write(RpmPackage::new("lib", version).release(release));
    }
    write(&mut RpmPackage::new("plugin-a", "1.0"));
    write(&mut RpmPackage::new("plugin-b", "1.0"));
    write(&mut RpmPackage::new("extra", "1.0"));
    write(&mut RpmPackage::new("never", "1.0"));
    write(RpmPackage::new("lib-tools", "1.0").provides("lib-tools-cap = 2"));
    write(
        RpmPackage::new("lib-tools", "0.9")
            .epoch(1)
            .provides("lib-tools-cap = 3"),
    );
    write(RpmPackage::new("tool-pkg", "1.0").file("/usr/bin/tool", "#!/bin/sh\n", 0o755));
    write(RpmPackage::new("virt-old", "1.0").provides("virt-cap = 1.0"));
    write(RpmPackage::new("virt-new", "1.0").provides("virt-cap = 2.0"));
    write(&mut RpmPackage::new("rec-pkg", "1.0"));
    write(&mut RpmPackage::new("unrelated", "1.0"));
    // /usr/share is not a primary path: only filelists names it.
    write(RpmPackage::new("data-pkg", "1.0").file("/usr/share/data-pkg/data", "x", 0o644));
    write(RpmPackage::new("needs-data", "1.0").requires("/usr/share/data-pkg/data"));
}

#[test]
fn rpm_dependency_semantics_on_hand_made_packages() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    hand_made(&src);
    index(&src);

    let dest = tmp.path().join("dest");
    run_mirror(&src, &dest, &subset(&["app"]));
    let names = consistent_names(&dest);
    let want: BTreeSet<String> = [
        "app-1.0",
        "lib-2.0",
        "plugin-a-1.0",
        "extra-1.0",
        "lib-tools-0.9",
        "tool-pkg-1.0",
        "virt-new-1.0",
        "needs-trigger-1.0",
        "trigger-1.0",
        "late-extra-1.0",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    assert_eq!(names, want);
    // The newest lib is 2.0-2, not 2.0-1 or 2.0~rc1.
    assert!(rpm_files(&dest).iter().any(|f| f.contains("lib-2.0-2.")));
    if require_tool("rpm") {
        assert_rpm_installs_all(&dest, tmp.path());
    }

    let weak = tmp.path().join("weak");
    let mut options = subset(&["app"]);
    options.subset.as_mut().unwrap().with_recommends = true;
    run_mirror(&src, &weak, &options);
    assert!(consistent_names(&weak).contains("rec-pkg-1.0"));

    // A file outside primary's paths cannot be resolved from primary: reported.
    let err = mirror(
        src.to_str().unwrap(),
        &tmp.path().join("bad"),
        &subset(&["needs-data", "no-such-package"]),
        &NoProgress,
    )
    .unwrap_err();
    let line = err.to_string();
    assert!(
        matches!(err, MirrorError::Unresolved { count: 2, .. }),
        "{line}"
    );
    assert!(line.contains("no-such-package (requested)"), "{line}");
    assert!(
        line.contains(
            "/usr/share/data-pkg/data (a file not listed in primary) (needed by needs-data-1.0-1"
        ),
        "{line}"
    );
    assert!(!tmp.path().join("bad/repodata").exists());

    let mut options = subset(&["needs-data", "no-such-package"]);
    options.subset.as_mut().unwrap().skip_missing = true;
    let report = run_mirror(&src, &tmp.path().join("skip"), &options);
    assert_eq!(report.unresolved.len(), 2);
    assert_eq!(consistent_names(&tmp.path().join("skip")).len(), 1);
}

/// Property: for generated sets of several seeds (one with shell scriptlets, whose packages
/// need `/bin/sh` from `fx-shell` through a file dependency) and random requests, the subset
/// always installs completely with rpm.
#[test]
fn closures_of_random_requests_install_with_rpm() {
    use rand::{Rng, SeedableRng};
    if !require_tool("rpm") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for seed in 0..6u64 {
        let src = tmp.path().join(format!("src-{seed}"));
        let scriptlets = if seed == 0 && Path::new("/bin/busybox").is_file() {
            Scriptlets::Shell
        } else {
            Scriptlets::None
        };
        let set = RpmSetOptions {
            seed: 100 + seed,
            count: 150,
            files_per_package: 3,
            scriptlets,
            changelog_entries: 0,
            ..RpmSetOptions::default()
        };
        write_rpm_set(&src, &set).unwrap();
        index(&src);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let names: Vec<String> = (0..rng.random_range(1..=3))
            .map(|_| format!("fx-{:05}", rng.random_range(0..150)))
            .collect();
        let wanted: Vec<&str> = names.iter().map(String::as_str).collect();
        let dest = tmp.path().join(format!("dest-{seed}"));
        let report = run_mirror(&src, &dest, &subset(&wanted));
        let listed = consistent_names(&dest);
        for name in &wanted {
            assert!(listed.iter().any(|n| n.starts_with(&format!("{name}-"))));
        }
        if scriptlets == Scriptlets::Shell {
            assert!(
                listed.iter().any(|n| n.starts_with("fx-shell-")),
                "{listed:?}"
            );
        }
        eprintln!("seed {seed}: {wanted:?} -> {} packages", report.packages);
        assert_rpm_installs_all(&dest, &tmp.path().join(format!("root-{seed}")));
    }
}
