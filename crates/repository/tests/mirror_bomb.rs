//! Decompression bombs served as metadata: `mirror` refuses them with a one-line error naming
//! the file and the limit, its peak memory stays bounded (measured in a child process, whose
//! `VmHWM` counts only the mirror), and DEST keeps the previous mirror.
//!
//! Security review, issue 13: an 18 MB `primary.xml.gz` of zeros (4 GiB inflated) took 8.4 GB
//! of memory before failing. The bombs here inflate to 200 MiB; the mirror stops reading them
//! after 16 to 64 MiB, which keeps the runs short.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::Served;
use sha2::{Digest as _, Sha256};
use vserver_fixtures::{DebSetOptions, RpmSetOptions, write_deb_set, write_rpm_set};
use vserver_repository::apt::AptLayout;
use vserver_repository::mirror::{FetchOptions, MirrorOptions, SignaturePolicy, mirror};
use vserver_repository::progress::NoProgress;
use vserver_repository::rpmmd::{Repomd, RpmIndexOptions, index_rpm};
use vserver_repository::serve::ServeOptions;

/// What every bomb inflates to.
const BOMB: u64 = 200 << 20;

/// The child runs `mirror` with the arguments in this variable and prints its peak memory.
const CHILD_ENV: &str = "VREPO_TEST_BOMB_CHILD";

/// How the child is to mirror.
struct Run<'a> {
    url: &'a str,
    dest: &'a Path,
    suite: Option<&'a str>,
}

fn options(run: &Run<'_>) -> MirrorOptions {
    MirrorOptions {
        signature: SignaturePolicy::Unverified,
        suites: run.suite.map(str::to_owned).into_iter().collect(),
        fetch: FetchOptions {
            retries: 0,
            backoff: Duration::from_millis(10),
            ..FetchOptions::default()
        },
        ..MirrorOptions::default()
    }
}

/// Not a test of its own: the body of the child process that [`mirror_in_child`] starts.
#[test]
fn bomb_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let fields: Vec<&str> = spec.split('\t').collect();
    let [url, dest, suite] = fields[..] else {
        panic!("bad {CHILD_ENV}: {spec}");
    };
    let run = Run {
        url,
        dest: Path::new(dest),
        suite: (!suite.is_empty()).then_some(suite),
    };
    let outcome = match mirror(run.url, run.dest, &options(&run), &NoProgress) {
        Ok(report) => format!("ok {report:?}"),
        Err(err) => err.to_string(),
    };
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .parse::<u64>()
        .unwrap();
    println!("BOMB-RESULT\t{hwm}\t{}", outcome.replace('\n', "\\n"));
}

/// Runs the mirror in a child process: the peak resident memory (KiB) and the outcome.
fn mirror_in_child(run: &Run<'_>) -> (u64, String) {
    let spec = format!(
        "{}\t{}\t{}",
        run.url,
        run.dest.display(),
        run.suite.unwrap_or("")
    );
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "bomb_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, spec)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        // The harness prints the test's name on the same line.
        .find_map(|l| l.split_once("BOMB-RESULT\t").map(|(_, rest)| rest))
        .unwrap_or_else(|| {
            panic!(
                "the child printed no result:\n{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let (hwm, outcome) = line.split_once('\t').unwrap();
    (hwm.parse().unwrap(), outcome.to_owned())
}

/// `len` bytes of `unit` repeated, gzip-compressed (a 200 MiB bomb is about 200 KiB).
fn gzip_bomb(prefix: &[u8], unit: &[u8], len: u64) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(prefix).unwrap();
    let chunk: Vec<u8> = unit.iter().copied().cycle().take(1 << 20).collect();
    let mut written = 0;
    while written < len {
        let n = chunk.len().min((len - written) as usize);
        gz.write_all(&chunk[..n]).unwrap();
        written += n as u64;
    }
    gz.finish().unwrap()
}

/// Every file under `dir`, relative, with its content.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let content = std::fs::read(&path).unwrap();
                out.push((path.strip_prefix(dir).unwrap().to_owned(), content));
            }
        }
    }
    out.sort();
    out
}

/// DEST without the mirror's own state, which a failed run may leave (locks, partial files).
fn published(dest: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    tree(dest)
        .into_iter()
        .filter(|(p, _)| !p.starts_with(".vrepo"))
        .collect()
}

fn rpm_source(dir: &Path) {
    write_rpm_set(
        dir,
        &RpmSetOptions {
            seed: 13,
            count: 5,
            ..RpmSetOptions::default()
        },
    )
    .unwrap();
    index_rpm(dir, &RpmIndexOptions::default(), &NoProgress).unwrap();
}

/// Replaces the source's primary with `bomb` and repomd.xml's record to match (checksum and
/// size right, as a hostile source would make them), declaring `open_size`.
fn plant_primary(src: &Path, bomb: &[u8], open_size: Option<u64>) -> String {
    let repomd_path = src.join("repodata/repomd.xml");
    let mut repomd = Repomd::parse(&std::fs::read(&repomd_path).unwrap()).unwrap();
    let record = repomd
        .records
        .iter_mut()
        .find(|r| r.kind == "primary")
        .unwrap();
    std::fs::write(src.join(&record.href), bomb).unwrap();
    record.checksum = hex::encode(Sha256::digest(bomb));
    record.size = bomb.len() as u64;
    record.open_checksum = None;
    record.open_size = open_size;
    let href = record.href.clone();
    std::fs::write(&repomd_path, repomd.to_xml()).unwrap();
    href
}

/// The inflated size of the source's current primary.
fn primary_open_size(src: &Path) -> u64 {
    let repomd = Repomd::parse(&std::fs::read(src.join("repodata/repomd.xml")).unwrap()).unwrap();
    let record = repomd.record("primary").unwrap();
    let mut xml = Vec::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(src.join(&record.href)).unwrap())
        .read_to_end(&mut xml)
        .unwrap();
    xml.len() as u64
}

/// The most memory a refused bomb may cost the child: the old code took 418 MiB for these
/// 200 MiB bombs (twice the inflated size); the readers' record limits are 16 MiB.
const MAX_PEAK_KIB: u64 = 100 << 10;

/// Runs the child and checks the refusal: one line, naming `url`, saying `expected`, with
/// bounded memory, DEST as before.
fn refused(case: &str, run: &Run<'_>, url: &str, expected: &str, before: &[(PathBuf, Vec<u8>)]) {
    let (peak, outcome) = mirror_in_child(run);
    eprintln!("{case}: peak {} MiB: {outcome}", peak >> 10);
    assert!(!outcome.contains("\\n"), "{case}: not one line: {outcome}");
    assert!(
        outcome.contains(url),
        "{case}: does not name {url}: {outcome}"
    );
    assert!(outcome.contains(expected), "{case}: {outcome}");
    assert!(peak < MAX_PEAK_KIB, "{case}: peak memory {peak} KiB");
    assert!(published(run.dest) == before, "{case}: DEST changed");
}

#[test]
fn rpm_md_primary_bombs_are_refused_with_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dest = tmp.path().join("dest");
    rpm_source(&src);
    let server = Served::start(&src, ServeOptions::default());
    let url = server.url();
    let run = Run {
        url: &url,
        dest: &dest,
        suite: None,
    };
    mirror(&url, &dest, &options(&run), &NoProgress).unwrap();
    let before = published(&dest);
    let open_size = primary_open_size(&src);
    let zeros = gzip_bomb(b"", &[0], BOMB);

    // The declared open-size of the real primary is allowed, and not one byte more.
    let href = plant_primary(&src, &zeros, Some(open_size));
    let expected = format!("more than {open_size} bytes (its open-size in repomd.xml)");
    refused("zeros, open-size", &run, &href, &expected, &before);

    // No open-size: 50 times the compressed size, at least 64 MiB. Short events, so that only
    // the inflate limit stops it.
    let mut unit = b"<a/>".to_vec();
    unit.resize(1024, b' ');
    let href = plant_primary(&src, &gzip_bomb(b"<metadata>", &unit, BOMB), None);
    let expected = format!("more than {} bytes (50 times its compressed size", 64 << 20);
    refused("elements, no open-size", &run, &href, &expected, &before);

    // Zeros without an open-size: the XML reader refuses the endless text first.
    plant_primary(&src, &zeros, None);
    let expected = format!("an XML tag or text longer than {} bytes", 16 << 20);
    refused("zeros, no open-size", &run, "primary", &expected, &before);

    // The source fixed: the next run goes through.
    rpm_source(&src);
    mirror(&url, &dest, &options(&run), &NoProgress).unwrap();
}

#[test]
fn apt_packages_bombs_are_refused_with_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dest = tmp.path().join("dest");
    write_deb_set(
        &src.join("pool/main"),
        &DebSetOptions {
            seed: 13,
            count: 5,
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
    let server = Served::start(&src, ServeOptions::default());
    let url = server.url();
    let run = Run {
        url: &url,
        dest: &dest,
        suite: Some("stable"),
    };
    mirror(&url, &dest, &options(&run), &NoProgress).unwrap();
    let before = published(&dest);

    // Blank lines (which the reader skips without keeping them): only the limit stops them.
    let mut unit = vec![b'\r'; 1023];
    unit.push(b'\n');
    let blank = gzip_bomb(b"", &unit, BOMB);
    let rel = plant_packages(&src, &blank);
    let expected = format!("more than {} bytes (50 times its compressed size", 64 << 20);
    refused("blank lines", &run, &rel, &expected, &before);

    // Zeros: one endless line, refused by the stanza reader first.
    plant_packages(&src, &gzip_bomb(b"", &[0], BOMB));
    let expected = format!("a stanza longer than {} bytes", 16 << 20);
    refused("zeros", &run, "Packages", &expected, &before);
}

/// Makes `dists/stable` list only a `Packages.gz` that is `bomb`.
fn plant_packages(src: &Path, bomb: &[u8]) -> String {
    let dir = src.join("dists/stable");
    let _ = std::fs::remove_file(dir.join("InRelease"));
    let rel = "main/binary-amd64/Packages.gz";
    std::fs::write(dir.join(rel), bomb).unwrap();
    let release = format!(
        "Suite: stable\nCodename: stable\nComponents: main\nArchitectures: amd64\nSHA256:\n {} {} {rel}\n",
        hex::encode(Sha256::digest(bomb)),
        bomb.len()
    );
    std::fs::write(dir.join("Release"), release).unwrap();
    format!("dists/stable/{rel}")
}
