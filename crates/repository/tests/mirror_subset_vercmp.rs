//! Version comparison against the real tools as oracle: rpm's own `rpm.vercmp` (through
//! `rpm --eval` and its Lua) and `dpkg --compare-versions`, on generated pairs that stress
//! `~`, `^`, epochs, leading zeros, letters against digits and separators; and rpm dependency
//! ranges (operators, missing epochs and releases) against `rpm -i --test`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::require_tool;

use std::cmp::Ordering;
use std::io::Write;
use std::process::Command;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vserver_repository::closure::version::{RpmEvr, dpkg_compare};

/// A version-like string from pieces that matter to both algorithms.
fn piece_string(rng: &mut ChaCha8Rng, pieces: &[&str], max: usize) -> String {
    let n = rng.random_range(1..=max);
    let mut out = String::new();
    for _ in 0..n {
        out.push_str(pieces[rng.random_range(0..pieces.len())]);
    }
    out
}

/// Pairs that are often close to each other, so the comparison goes deep.
fn pairs(
    seed: u64,
    count: usize,
    pieces: &[&str],
    make: impl Fn(&mut ChaCha8Rng) -> String,
) -> Vec<(String, String)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let a = make(&mut rng);
            let b = if rng.random_bool(0.4) {
                // A small mutation of a: a piece appended, or the last character replaced.
                let mut b = a.clone();
                let piece = pieces[rng.random_range(0..pieces.len())];
                if rng.random_bool(0.5) && b.len() > 3 && !b.ends_with(':') {
                    b.pop();
                }
                b.push_str(piece);
                b
            } else {
                make(&mut rng)
            };
            (a, b)
        })
        .collect()
}

const RPM_PIECES: &[&str] = &[
    "0", "1", "2", "9", "10", "01", "007", "a", "b", "z", "A", "rc", "pre", ".", "_", "+", "~",
    "^", "~~", ".0", "fc40", "el9",
];

fn rpm_evr(rng: &mut ChaCha8Rng) -> String {
    let mut s = String::new();
    if rng.random_bool(0.2) {
        s.push_str(&format!("{}:", rng.random_range(0..3)));
    }
    s.push_str(&piece_string(rng, RPM_PIECES, 6));
    if rng.random_bool(0.5) {
        s.push('-');
        s.push_str(&piece_string(rng, RPM_PIECES, 3));
    }
    s
}

#[test]
fn rpm_vercmp_matches_rpm_on_generated_pairs() {
    if !require_tool("rpm") {
        return;
    }
    let pairs = pairs(61, 3000, RPM_PIECES, rpm_evr);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pairs");
    let mut file = std::fs::File::create(&input).unwrap();
    for (a, b) in &pairs {
        writeln!(file, "{a} {b}").unwrap();
    }
    drop(file);
    // rpm's print() adds no newline inside a macro, hence the commas. rpm.vercmp parses both sides as [E:]V[-R] and compares like rpmverCmp.
    let script = format!(
        "%{{lua: for line in io.lines('{}') do local a, b = line:match('^(%S+) (%S+)$'); \
         print(rpm.vercmp(a, b) .. ',') end}}",
        input.display()
    );
    let output = Command::new("rpm")
        .args(["--eval", &script])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answers: Vec<i32> = String::from_utf8(output.stdout)
        .unwrap()
        .split(',')
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.trim()
                .parse()
                .unwrap_or_else(|_| panic!("rpm printed {l:?}"))
        })
        .collect();
    assert_eq!(answers.len(), pairs.len());
    let mut wrong = Vec::new();
    let mut seen = [0usize; 3];
    for ((a, b), want) in pairs.iter().zip(answers) {
        let want = want.cmp(&0);
        seen[(want as i32 + 1) as usize] += 1;
        let got = RpmEvr::parse(a).compare(&RpmEvr::parse(b));
        if got != want {
            wrong.push(format!("{a} vs {b}: rpm {want:?}, ours {got:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    // The generator must exercise every outcome.
    assert!(seen.iter().all(|&n| n > 100), "{seen:?}");
}

const DEB_PIECES: &[&str] = &[
    "0", "1", "2", "9", "10", "01", "a", "b", "z", "A", "rc", ".", "+", "~", "~~", "+b1",
    "+deb12u1", "~bpo12", ".0",
];

fn deb_version(rng: &mut ChaCha8Rng) -> String {
    let mut s = String::new();
    if rng.random_bool(0.2) {
        s.push_str(&format!("{}:", rng.random_range(0..3)));
    }
    // dpkg wants the upstream version to start with a digit.
    s.push_str(&rng.random_range(0..12).to_string());
    s.push_str(&piece_string(rng, DEB_PIECES, 5));
    if rng.random_bool(0.5) {
        s.push('-');
        s.push_str(&piece_string(rng, DEB_PIECES, 3));
    }
    s
}

#[test]
fn dpkg_compare_matches_dpkg_on_generated_pairs() {
    if !require_tool("dpkg") {
        return;
    }
    let pairs = pairs(62, 800, DEB_PIECES, deb_version);
    let mut wrong = Vec::new();
    let mut seen = [0usize; 3];
    for (a, b) in &pairs {
        // `lt` and `gt` together give the full answer; one shell per pair keeps it simple.
        let probe = |op: &str| {
            Command::new("dpkg")
                .args(["--compare-versions", a, op, b])
                .status()
                .unwrap()
                .success()
        };
        let want = if probe("lt") {
            Ordering::Less
        } else if probe("gt") {
            Ordering::Greater
        } else {
            Ordering::Equal
        };
        seen[(want as i32 + 1) as usize] += 1;
        let got = dpkg_compare(a, b).unwrap_or_else(|| panic!("cannot parse {a} or {b}"));
        if got != want {
            wrong.push(format!("{a} vs {b}: dpkg {want:?}, ours {got:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(seen.iter().all(|&n| n > 10), "{seen:?}");
}

/// Dependency ranges against rpm itself: package `pI` provides `capI = HAVE` (or an
/// unversioned `capI`), and one consumer requires `capI OP WANT` for hundreds of generated
/// pairs. `rpm -i --test` of all of them lists the requirements rpm finds unsatisfied; the
/// subset resolver (over the same packages, through primary) must report exactly those.
#[test]
fn rpm_ranges_match_rpm_install_test() {
    use std::collections::BTreeSet;
    use vserver_fixtures::RpmPackage;
    use vserver_repository::closure::SubsetOptions;
    use vserver_repository::mirror::{MirrorOptions, SignaturePolicy, mirror};
    use vserver_repository::progress::NoProgress;
    use vserver_repository::rpmmd::{RpmIndexOptions, index_rpm};

    if !require_tool("rpm") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(63);
    let versions = ["1.0", "1.0~rc1", "1.0^post1", "1.1", "2", "1.0a", "0.9"];
    let evr = |rng: &mut ChaCha8Rng| {
        let mut s = String::new();
        match rng.random_range(0..6) {
            0 => s.push_str("0:"),
            1 => s.push_str("1:"),
            _ => {}
        }
        s.push_str(versions[rng.random_range(0..versions.len())]);
        match rng.random_range(0..3) {
            0 => s.push_str("-1"),
            1 => s.push_str("-2"),
            _ => {}
        }
        s
    };
    let ops = ["<", "<=", "=", ">=", ">"];
    let mut consumer = RpmPackage::new("consumer", "1.0");
    let count = 400;
    for i in 0..count {
        let mut provider = RpmPackage::new(format!("p{i}"), "1.0");
        if rng.random_bool(0.1) {
            provider.provides(format!("cap{i}"));
        } else {
            provider.provides(format!("cap{i} = {}", evr(&mut rng)));
        }
        provider.write_to(&src).unwrap();
        if rng.random_bool(0.05) {
            consumer.requires(format!("cap{i}"));
        } else {
            let op = ops[rng.random_range(0..ops.len())];
            consumer.requires(format!("cap{i} {op} {}", evr(&mut rng)));
        }
    }
    consumer.write_to(&src).unwrap();

    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let files: Vec<_> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let output = Command::new("rpm")
        .arg("--root")
        .arg(&root)
        .args([
            "--dbpath",
            "/rpmdb",
            "-i",
            "--test",
            "--nosignature",
            "--nodigest",
        ])
        .args(&files)
        .output()
        .unwrap();
    let cap_number = |text: &str| -> Option<usize> {
        let rest = text.trim_start().strip_prefix("cap")?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    let by_rpm: BTreeSet<usize> = String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|l| l.contains("is needed by"))
        .filter_map(cap_number)
        .collect();

    index_rpm(&src, &RpmIndexOptions::default(), &NoProgress).unwrap();
    let options = MirrorOptions {
        signature: SignaturePolicy::Unverified,
        subset: Some(SubsetOptions {
            packages: vec!["consumer".into()],
            skip_missing: true,
            ..SubsetOptions::default()
        }),
        ..MirrorOptions::default()
    };
    let report = mirror(
        src.to_str().unwrap(),
        &tmp.path().join("dest"),
        &options,
        &NoProgress,
    )
    .unwrap();
    let by_us: BTreeSet<usize> = report
        .unresolved
        .iter()
        .filter_map(|m| cap_number(&m.what))
        .collect();
    assert_eq!(
        by_us,
        by_rpm,
        "rpm: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Both outcomes must be well represented for the comparison to mean something.
    assert!(
        by_rpm.len() > count / 5 && by_rpm.len() < count * 4 / 5,
        "{}",
        by_rpm.len()
    );
    eprintln!(
        "{count} ranges: rpm and the resolver agree on {} unsatisfied",
        by_rpm.len()
    );
}
