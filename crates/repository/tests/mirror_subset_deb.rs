//! `mirror` with a package subset (`--packages`) on apt sources: the closure follows Debian
//! relationships (alternatives, version relations, virtual and versioned Provides,
//! Multi-Arch qualifiers), the subset is re-indexed as `dists/SUITE`, and a real, isolated
//! apt proves it complete with `apt-get -s install` from the subset alone. apt is also the
//! oracle for version relations on generated pairs, and closures over the real bookworm index
//! are checked against it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

// The isolated apt of the apt indexer tests (its own config, state and cache).
mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use vserver_fixtures::{DebPackage, DebSetOptions, write_deb_set};
use vserver_repository::apt::{AptLayout, read_packages};
use vserver_repository::closure::SubsetOptions;
use vserver_repository::mirror::{
    MirrorError, MirrorOptions, MirrorReport, SignaturePolicy, mirror,
};
use vserver_repository::progress::NoProgress;

fn subset(names: &[&str]) -> MirrorOptions {
    MirrorOptions {
        signature: SignaturePolicy::Unverified,
        suites: vec!["stable".into()],
        subset: Some(SubsetOptions {
            packages: names.iter().map(|n| (*n).to_owned()).collect(),
            ..SubsetOptions::default()
        }),
        ..MirrorOptions::default()
    }
}

fn index_source(src: &Path) {
    common::index(
        src,
        AptLayout::Dists {
            suite: "stable".into(),
            component: "main".into(),
        },
    );
}

fn run_mirror(src: &Path, dest: &Path, options: &MirrorOptions) -> MirrorReport {
    mirror(src.to_str().unwrap(), dest, options, &NoProgress)
        .unwrap_or_else(|e| panic!("mirror failed: {}", common::chain(&e)))
}

/// `name version` of every package the subset's `binary-amd64` index lists, after checking
/// that each listed file is in DEST and each .deb in DEST is listed.
fn listed(dest: &Path) -> BTreeSet<String> {
    let text =
        std::fs::read_to_string(dest.join("dists/stable/main/binary-amd64/Packages")).unwrap();
    let mut names = BTreeSet::new();
    let mut files = BTreeSet::new();
    for stanza in read_packages(text.as_bytes()) {
        let stanza = stanza.unwrap();
        let filename = stanza.get("Filename").unwrap();
        assert!(
            dest.join(filename).is_file(),
            "{filename} is listed but missing"
        );
        files.insert(filename.to_owned());
        names.insert(format!(
            "{} {}",
            stanza.get("Package").unwrap(),
            stanza.get("Version").unwrap()
        ));
    }
    let on_disk: BTreeSet<String> = walk_debs(dest, dest);
    assert_eq!(files, on_disk, "index and pool differ");
    names
}

fn walk_debs(root: &Path, dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() == ".vrepo" {
            continue;
        }
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            out.extend(walk_debs(root, &path));
        } else if path.extension().is_some_and(|e| e == "deb") {
            out.insert(
                path.strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    out
}

/// `apt-get update` and `apt-get -s install NAMES` against DEST alone, into an empty status.
fn apt_simulates_install(dest: &Path, scratch: &Path, names: &[&str]) {
    let client = common::IsolatedApt::new(
        scratch,
        &format!("deb [trusted=yes] file:{} stable main", dest.display()),
        "amd64",
    );
    common::assert_success(&client.apt_get(&["update"]), "apt-get update");
    let mut args = vec!["-s", "install"];
    args.extend(names);
    let output = client.apt_get(&args);
    common::assert_success(&output, "apt-get -s install");
    let stdout = String::from_utf8_lossy(&output.stdout);
    for name in names {
        assert!(stdout.contains(&format!("Inst {name} ")), "{stdout}");
    }
}

#[test]
fn subset_of_a_generated_set_installs_with_apt() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dest = tmp.path().join("dest");
    write_deb_set(
        &src.join("pool/main"),
        &DebSetOptions {
            seed: 67,
            count: 100,
            files_per_package: 2,
            maintainer_scripts: false,
            ..DebSetOptions::default()
        },
    )
    .unwrap();
    index_source(&src);
    let wanted = ["fx-00099", "fx-00061"];
    let report = run_mirror(&src, &dest, &subset(&wanted));
    let names = listed(&dest);
    assert_eq!(names.len() as u64, report.packages);
    assert!(report.packages > 2 && report.packages < 100, "{report:?}");
    eprintln!("closure of {wanted:?}: {} of 100 packages", report.packages);
    if common::require_tool("apt-get") {
        apt_simulates_install(&dest, &tmp.path().join("apt"), &wanted);
    }
    let again = run_mirror(&src, &dest, &subset(&wanted));
    assert!(!again.changed(), "{again:?}");
    // Only the suite's root files are asked for; the Packages indexes are linked from the
    // copy kept under .vrepo/.
    assert!(again.requests <= 4, "{again:?}");
}

fn hand_made(pool: &Path) {
    std::fs::create_dir_all(pool).unwrap();
    let write = |p: &mut DebPackage| {
        p.write_to(pool).unwrap();
    };
    write(
        DebPackage::new("app", "1.0-1")
            .depends("libx (>= 2.0)")
            .depends("missing-thing | alt-real (>> 0.5)")
            .depends("virt-mail")
            .depends("vers-virt (>= 2)")
            .depends("tool:any")
            .pre_depends("base")
            .recommends("rec"),
    );
    for version in ["1.0-1", "2.0~rc1-1", "2.0-1", "1:0.5-1"] {
        write(&mut DebPackage::new("libx", version));
    }
    write(&mut DebPackage::new("alt-real", "1.0-1"));
    write(DebPackage::new("mta-a", "1.0-1").provides("virt-mail"));
    write(DebPackage::new("mta-b", "1.0-1").provides("virt-mail"));
    write(DebPackage::new("vers-old", "1.0-1").provides("vers-virt (= 1)"));
    write(DebPackage::new("vers-new", "1.0-1").provides("vers-virt (= 3)"));
    write(DebPackage::new("vers-plain", "1.0-1").provides("vers-virt"));
    write(DebPackage::new("tool", "1.0-1").multi_arch("allowed"));
    write(&mut DebPackage::new("base", "1.0-1"));
    write(&mut DebPackage::new("rec", "1.0-1"));
    write(&mut DebPackage::new("unrelated", "1.0-1"));
    write(DebPackage::new("broken", "1.0-1").depends("nowhere (>= 1) | nothing-either"));
}

#[test]
fn debian_relationship_semantics_on_hand_made_packages() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    hand_made(&src.join("pool/main"));
    index_source(&src);
    let dest = tmp.path().join("dest");
    run_mirror(&src, &dest, &subset(&["app"]));
    let want: BTreeSet<String> = [
        "app 1.0-1",
        // The epoch makes 1:0.5-1 the newest libx.
        "libx 1:0.5-1",
        "alt-real 1.0-1",
        "mta-a 1.0-1",
        // Only a versioned Provides satisfies a versioned relation.
        "vers-new 1.0-1",
        "tool 1.0-1",
        "base 1.0-1",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    assert_eq!(listed(&dest), want);
    if common::require_tool("apt-get") {
        apt_simulates_install(&dest, &tmp.path().join("apt"), &["app"]);
    }

    let mut options = subset(&["app"]);
    options.subset.as_mut().unwrap().with_recommends = true;
    let weak = tmp.path().join("weak");
    run_mirror(&src, &weak, &options);
    assert!(listed(&weak).contains("rec 1.0-1"));

    let err = mirror(
        src.to_str().unwrap(),
        &tmp.path().join("bad"),
        &subset(&["broken", "ghost"]),
        &NoProgress,
    )
    .unwrap_err();
    let line = err.to_string();
    assert!(
        matches!(err, MirrorError::Unresolved { count: 2, .. }),
        "{line}"
    );
    assert!(line.contains("ghost (requested)"), "{line}");
    assert!(
        line.contains("nowhere (>= 1) | nothing-either (needed by broken 1.0-1 (amd64))"),
        "{line}"
    );

    // Nothing resolvable, but told to go on: an empty, valid suite.
    let mut options = subset(&["ghost"]);
    options.subset.as_mut().unwrap().skip_missing = true;
    let empty = tmp.path().join("empty");
    let report = run_mirror(&src, &empty, &options);
    assert_eq!((report.packages, report.unresolved.len()), (0, 1));
    assert!(empty.join("dists/stable/Release").is_file());
    if common::require_tool("apt-get") {
        let client = common::IsolatedApt::new(
            &tmp.path().join("apt-empty"),
            &format!("deb [trusted=yes] file:{} stable main", empty.display()),
            "amd64",
        );
        common::assert_success(&client.apt_get(&["update"]), "apt-get update");
    }
}

/// Property: for generated sets of several seeds and random requests, apt always finds an
/// install of the requested packages in the subset alone.
#[test]
fn closures_of_random_requests_install_with_apt() {
    use rand::{Rng, SeedableRng};
    if !common::require_tool("apt-get") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for seed in 0..5u64 {
        let src = tmp.path().join(format!("src-{seed}"));
        write_deb_set(
            &src.join("pool/main"),
            &DebSetOptions {
                seed: 200 + seed,
                count: 120,
                files_per_package: 1,
                maintainer_scripts: false,
                ..DebSetOptions::default()
            },
        )
        .unwrap();
        index_source(&src);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let names: Vec<String> = (0..rng.random_range(1..=3))
            .map(|_| format!("fx-{:05}", rng.random_range(0..120)))
            .collect();
        let mut wanted: Vec<&str> = names.iter().map(String::as_str).collect();
        wanted.dedup();
        let dest = tmp.path().join(format!("dest-{seed}"));
        let report = run_mirror(&src, &dest, &subset(&wanted));
        eprintln!("seed {seed}: {wanted:?} -> {} packages", report.packages);
        listed(&dest);
        apt_simulates_install(&dest, &tmp.path().join(format!("apt-{seed}")), &wanted);
    }
}

/// The host's apt lists directory, where `apt-get update` keeps the archives' indexes.
const HOST_APT_LISTS: &str = "/var/lib/apt/lists";

/// The real Debian archive's bookworm `main` index for amd64 in the host's apt lists, named
/// after whatever archive the host's sources use (`HOST_PATH_dists_bookworm_main_binary-amd64_
/// Packages`, possibly compressed): the largest such index, as a third-party repository that
/// also publishes `bookworm main` holds far fewer packages.
fn host_bookworm_index() -> Option<PathBuf> {
    const SUFFIX: &str = "_dists_bookworm_main_binary-amd64_Packages";
    std::fs::read_dir(HOST_APT_LISTS)
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            match name.split_once(SUFFIX) {
                Some((host_path, ext)) => {
                    !host_path.is_empty() && (ext.is_empty() || ext.starts_with('.'))
                }
                None => false,
            }
        })
        .filter_map(|entry| Some((entry.metadata().ok()?.len(), entry.path())))
        .max()
        .map(|(_, path)| path)
}

/// Real metadata: the closure of a few large packages over the Debian archive's own bookworm
/// index (60,000+ packages: `:any`, Multi-Arch, virtual packages, epochs, `~` versions),
/// handed to a real apt as the only index (no .debs needed to simulate): apt must find an
/// install of them into an empty system from the closure alone.
#[test]
fn closure_over_the_real_debian_index_satisfies_apt() {
    use std::io::Write;
    use vserver_repository::apt::{ReleaseEntry, ReleaseFields, write_release};
    use vserver_repository::closure::{DebEntry, resolve_deb};
    use vserver_repository::deb::checksum::MultiHasher;

    if !common::require_tool("apt-get") {
        return;
    }
    let Some(index) = host_bookworm_index() else {
        assert!(
            std::env::var_os("VSERVER_TEST_REQUIRE_ALL").is_none(),
            "a bookworm main amd64 index in {HOST_APT_LISTS} is required (run apt-get update)"
        );
        eprintln!("skipped: no bookworm main amd64 index in {HOST_APT_LISTS} (run apt-get update)");
        return;
    };
    let text = common::run(
        std::process::Command::new("/usr/lib/apt/apt-helper")
            .arg("cat-file")
            .arg(&index),
    )
    .stdout;
    let stanzas: Vec<_> = read_packages(&text[..]).map(|s| s.unwrap()).collect();
    let entries: Vec<DebEntry> = stanzas
        .iter()
        .map(|s| DebEntry::from_stanza(s).unwrap())
        .collect();
    // A few large packages, and a minbase (Essential, `Priority: required` and apt).
    let large: Vec<String> = ["apt", "dnf", "systemd", "openssh-server", "python3-apt"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let mut minbase: Vec<String> = stanzas
        .iter()
        .filter(|s| s.get("Essential") == Some("yes") || s.get("Priority") == Some("required"))
        .map(|s| s.get("Package").unwrap().to_owned())
        .collect();
    minbase.push("apt".into());
    minbase.sort();
    minbase.dedup();
    for (case, wanted) in [("large", large), ("minbase", minbase)] {
        let started = std::time::Instant::now();
        let selection = resolve_deb(&entries, &wanted, &SubsetOptions::default());
        eprintln!(
            "{case}: closure of {} names over {} packages: {} chosen in {:.3} s",
            wanted.len(),
            entries.len(),
            selection.chosen.len(),
            started.elapsed().as_secs_f64()
        );
        assert!(selection.missing.is_empty(), "{:?}", selection.missing);

        let repo = tempfile::tempdir().unwrap();
        let mut packages = String::new();
        for &i in &selection.chosen {
            stanzas[i].write_to(&mut packages);
            packages.push('\n');
        }
        std::fs::write(repo.path().join("Packages"), &packages).unwrap();
        let mut hasher = MultiHasher::new();
        hasher.update(packages.as_bytes());
        let entry = ReleaseEntry {
            path: "Packages".into(),
            size: packages.len() as u64,
            checksums: hasher.finish(),
        };
        let release = write_release(&ReleaseFields::default(), &[entry]);
        std::fs::File::create(repo.path().join("Release"))
            .unwrap()
            .write_all(release.as_bytes())
            .unwrap();

        let client = common::IsolatedApt::new(
            &repo.path().join("apt"),
            &format!("deb [trusted=yes] file:{} ./", repo.path().display()),
            "amd64",
        );
        common::assert_success(&client.apt_get(&["update"]), "apt-get update");
        let mut args = vec!["-s", "install"];
        args.extend(wanted.iter().map(String::as_str));
        let output = client.apt_get(&args);
        common::assert_success(&output, "apt-get -s install over the closure");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let installs = stdout.lines().filter(|l| l.starts_with("Inst ")).count();
        eprintln!(
            "{case}: apt installs {installs} of the {} chosen",
            selection.chosen.len()
        );
        assert!(installs <= selection.chosen.len());
    }
}

/// A flat source (`deb URL ./`) gives a flat subset; two suites are resolved together (a
/// package of one needs a package of the other) and each keeps its own `dists/SUITE`.
#[test]
fn flat_and_multi_suite_sources() {
    let tmp = tempfile::tempdir().unwrap();

    // Flat.
    let flat = tmp.path().join("flat");
    std::fs::create_dir_all(&flat).unwrap();
    DebPackage::new("top", "1.0-1")
        .depends("middle")
        .write_to(&flat)
        .unwrap();
    DebPackage::new("middle", "1.0-1").write_to(&flat).unwrap();
    DebPackage::new("aside", "1.0-1").write_to(&flat).unwrap();
    common::index(&flat, AptLayout::Flat);
    let dest = tmp.path().join("flat-dest");
    let mut options = subset(&["top"]);
    options.suites.clear();
    let report = run_mirror(&flat, &dest, &options);
    assert_eq!(report.packages, 2);
    let text = std::fs::read_to_string(dest.join("Packages")).unwrap();
    let names: BTreeSet<String> = read_packages(text.as_bytes())
        .map(|s| s.unwrap().get("Package").unwrap().to_owned())
        .collect();
    assert_eq!(names, ["middle".to_owned(), "top".to_owned()].into());
    assert_eq!(walk_debs(&dest, &dest).len(), 2);
    if common::require_tool("apt-get") {
        let client = common::IsolatedApt::new(
            &tmp.path().join("apt-flat"),
            &format!("deb [trusted=yes] file:{} ./", dest.display()),
            "amd64",
        );
        common::assert_success(&client.apt_get(&["update"]), "apt-get update");
        common::assert_success(&client.apt_get(&["-s", "install", "top"]), "apt-get -s");
    }

    // Two suites: `updates` (its own pool) needs a package of `stable`.
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("pool/main")).unwrap();
    DebPackage::new("base-lib", "1.0-1")
        .write_to(&src.join("pool/main"))
        .unwrap();
    DebPackage::new("unused", "1.0-1")
        .write_to(&src.join("pool/main"))
        .unwrap();
    index_source(&src);
    let updates = tmp.path().join("updates");
    std::fs::create_dir_all(updates.join("pool/updates")).unwrap();
    DebPackage::new("fresh-app", "2.0-1")
        .depends("base-lib (>= 1.0)")
        .write_to(&updates.join("pool/updates"))
        .unwrap();
    common::index(
        &updates,
        AptLayout::Dists {
            suite: "updates".into(),
            component: "main".into(),
        },
    );
    std::fs::rename(updates.join("dists/updates"), src.join("dists/updates")).unwrap();
    std::fs::rename(updates.join("pool/updates"), src.join("pool/updates")).unwrap();
    let dest = tmp.path().join("suites-dest");
    let mut options = subset(&["fresh-app"]);
    options.suites = vec!["stable".into(), "updates".into()];
    let report = run_mirror(&src, &dest, &options);
    assert_eq!(report.packages, 2, "{report:?}");
    let suite_names = |suite: &str| -> BTreeSet<String> {
        let text =
            std::fs::read_to_string(dest.join(format!("dists/{suite}/main/binary-amd64/Packages")))
                .unwrap();
        read_packages(text.as_bytes())
            .map(|s| s.unwrap().get("Package").unwrap().to_owned())
            .collect()
    };
    assert_eq!(suite_names("stable"), ["base-lib".to_owned()].into());
    assert_eq!(suite_names("updates"), ["fresh-app".to_owned()].into());
    if common::require_tool("apt-get") {
        let client = common::IsolatedApt::new(
            &tmp.path().join("apt-suites"),
            &format!(
                "deb [trusted=yes] file:{d} stable main\ndeb [trusted=yes] file:{d} updates main",
                d = dest.display()
            ),
            "amd64",
        );
        common::assert_success(&client.apt_get(&["update"]), "apt-get update");
        common::assert_success(
            &client.apt_get(&["-s", "install", "fresh-app"]),
            "apt-get -s",
        );
    }
}

/// Relations against apt itself: for hundreds of generated pairs, `capI` is a real package
/// of version HAVE or a virtual one provided as `capI (= HAVE)` (or unversioned), and one
/// consumer depends on `capI (OP WANT)`. apt reads the index (no .debs are needed to
/// simulate) and lists the consumer's unmet dependencies; the resolver must find exactly
/// those unresolvable.
#[test]
fn debian_relations_match_apt() {
    use rand::{Rng, SeedableRng};
    use std::io::Write;
    use vserver_repository::apt::{ReleaseEntry, ReleaseFields, write_release};
    use vserver_repository::closure::{DebEntry, resolve_deb};
    use vserver_repository::deb::checksum::MultiHasher;

    if !common::require_tool("apt-get") {
        return;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(64);
    let upstreams = ["1.0", "1.0~rc1", "1.0+b1", "1.1", "2", "1.0a", "0.9"];
    let version = |rng: &mut rand_chacha::ChaCha8Rng| {
        let mut v = String::new();
        if rng.random_bool(0.15) {
            v.push_str("1:");
        }
        v.push_str(upstreams[rng.random_range(0..upstreams.len())]);
        match rng.random_range(0..3) {
            0 => v.push_str("-1"),
            1 => v.push_str("-1~bpo1"),
            _ => {}
        }
        v
    };
    let ops = ["<<", "<=", "=", ">=", ">>"];
    let count = 300;
    let stanza = |name: &str, version: &str, extra: &str| {
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: amd64\n{extra}\
             Filename: pool/{name}.deb\nSize: 1\nDescription: x\n\n"
        )
    };
    let mut index = String::new();
    let mut depends = Vec::new();
    for i in 0..count {
        let have = version(&mut rng);
        match rng.random_range(0..4) {
            // A real package of that version.
            0 | 1 => index.push_str(&stanza(&format!("cap{i}"), &have, "")),
            2 => index.push_str(&stanza(
                &format!("prov{i}"),
                "1.0",
                &format!("Provides: cap{i} (= {have})\n"),
            )),
            _ => index.push_str(&stanza(
                &format!("prov{i}"),
                "1.0",
                &format!("Provides: cap{i}\n"),
            )),
        }
        let op = ops[rng.random_range(0..ops.len())];
        depends.push(format!("cap{i} ({op} {})", version(&mut rng)));
    }
    index.push_str(&stanza(
        "consumer",
        "1.0",
        &format!("Depends: {}\n", depends.join(", ")),
    ));

    let stanzas: Vec<_> = read_packages(index.as_bytes())
        .map(|s| s.unwrap())
        .collect();
    let entries: Vec<DebEntry> = stanzas
        .iter()
        .map(|s| DebEntry::from_stanza(s).unwrap())
        .collect();
    let selection = resolve_deb(
        &entries,
        &["consumer".to_owned()],
        &SubsetOptions::default(),
    );
    let cap_number = |text: &str| -> Option<usize> {
        let rest = &text[text.find("cap")? + 3..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    let by_us: BTreeSet<usize> = selection
        .missing
        .iter()
        .filter_map(|m| cap_number(&m.what))
        .collect();

    let repo = tempfile::tempdir().unwrap();
    std::fs::write(repo.path().join("Packages"), &index).unwrap();
    let mut hasher = MultiHasher::new();
    hasher.update(index.as_bytes());
    let entry = ReleaseEntry {
        path: "Packages".into(),
        size: index.len() as u64,
        checksums: hasher.finish(),
    };
    std::fs::File::create(repo.path().join("Release"))
        .unwrap()
        .write_all(write_release(&ReleaseFields::default(), &[entry]).as_bytes())
        .unwrap();
    let client = common::IsolatedApt::new(
        &repo.path().join("apt"),
        &format!("deb [trusted=yes] file:{} ./", repo.path().display()),
        "amd64",
    );
    common::assert_success(&client.apt_get(&["update"]), "apt-get update");
    let output = client.apt_get(&["-s", "install", "consumer"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let by_apt: BTreeSet<usize> = stdout
        .lines()
        .filter(|l| l.contains("Depends: cap"))
        .filter_map(|l| cap_number(&l[l.find("Depends: ")?..]))
        .collect();
    assert_eq!(by_us, by_apt, "apt said:\n{stdout}");
    assert!(
        by_apt.len() > count / 5 && by_apt.len() < count * 4 / 5,
        "{}",
        by_apt.len()
    );
    eprintln!(
        "{count} relations: apt and the resolver agree on {} unmet",
        by_apt.len()
    );
}
