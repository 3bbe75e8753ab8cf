//! `copy_with_plain_data` against the real dpkg-deb: the copy holds the same control member and
//! the same `data.tar` bytes as the original (for gzip, xz and zstd packages), and a damaged
//! data member is an error, never a shorter copy.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{require_tool, run};
use vserver_fixtures::{Compression, DebPackage, noise};
use vserver_repository::deb::{DebError, DebFormatError, copy_with_plain_data};

fn package(compression: Compression) -> DebPackage {
    let mut package = DebPackage::new("plain", "1.0-1");
    package
        .compression(compression)
        .essential(true)
        .pre_depends("libc6 (>= 2.36)")
        .file("/usr/bin/plain", b"#!/bin/sh\necho plain\n".to_vec(), 0o755)
        // Odd-sized and larger than the copy buffer, so padding and streaming are exercised.
        .file("/usr/share/plain/blob", noise(1, 300_001), 0o644)
        .symlink("/usr/bin/plain-link", "plain")
        .preinst("#!/bin/sh\nexit 0\n");
    package
}

fn dpkg_deb(args: &[&str], deb: &Path) -> Vec<u8> {
    run(Command::new("dpkg-deb").args(args).arg(deb)).stdout
}

fn members(deb: &Path) -> Vec<String> {
    let output = run(Command::new("ar").arg("t").arg(deb));
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn copies_hold_the_same_control_and_contents_with_a_plain_data_member() {
    if !require_tool("dpkg-deb") || !require_tool("ar") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (compression, suffix) in [
        (Compression::Gzip, "gz"),
        (Compression::Xz, "xz"),
        (Compression::Zstd, "zst"),
    ] {
        let original = package(compression).write_to(dir.path()).unwrap();
        let copy = dir.path().join(format!("copy-{suffix}.deb"));
        let report = copy_with_plain_data(&original, &copy).unwrap();
        assert!(report.decompressed, "{suffix}");
        assert_eq!(report.control.get("Package"), Some("plain"));
        assert_eq!(report.control.get("Essential"), Some("yes"));
        assert_eq!(
            members(&copy),
            [
                "debian-binary",
                &format!("control.tar.{suffix}"),
                "data.tar"
            ],
        );
        for what in ["--fsys-tarfile", "--ctrl-tarfile", "--field"] {
            assert_eq!(
                dpkg_deb(&[what], &copy),
                dpkg_deb(&[what], &original),
                "{what} of the {suffix} copy"
            );
        }
        // dpkg-deb reads the plain member as a data.tar without a decompressor.
        let listing = String::from_utf8(dpkg_deb(&["--contents"], &copy)).unwrap();
        assert!(listing.contains("./usr/share/plain/blob"), "{listing}");

        // A copy of the copy is the same file: nothing left to decompress.
        let again = dir.path().join(format!("again-{suffix}.deb"));
        let report = copy_with_plain_data(&copy, &again).unwrap();
        assert!(!report.decompressed);
        assert_eq!(
            std::fs::read(&again).unwrap(),
            std::fs::read(&copy).unwrap()
        );
    }
}

/// Offset and size of the last `ar` member (the data member of a fixture).
fn last_member(bytes: &[u8]) -> (usize, usize) {
    let mut at = 8;
    let mut last = (0, 0);
    while at + 60 <= bytes.len() {
        let size: usize = std::str::from_utf8(&bytes[at + 48..at + 58])
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        last = (at + 60, size);
        at += 60 + size + size % 2;
    }
    last
}

#[test]
fn a_damaged_data_member_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    for compression in [Compression::Gzip, Compression::Xz, Compression::Zstd] {
        let bytes = package(compression).to_bytes().unwrap();
        let (start, size) = last_member(&bytes);

        // Cut inside the compressed stream, the member header saying how long it should be.
        let truncated = &bytes[..start + size / 2];
        let source = dir.path().join("truncated.deb");
        std::fs::write(&source, truncated).unwrap();
        let target = dir.path().join(format!("truncated-{compression:?}.deb"));
        let err = copy_with_plain_data(&source, &target).unwrap_err();
        assert!(
            matches!(err, DebError::Invalid { .. }),
            "{compression:?}: {err:?}"
        );

        // The same length, with the middle of the stream overwritten.
        let mut damaged = bytes.clone();
        for byte in &mut damaged[start + size / 3..start + size / 2] {
            *byte = 0x55;
        }
        let source = dir.path().join("damaged.deb");
        std::fs::write(&source, &damaged).unwrap();
        let target = dir.path().join(format!("damaged-{compression:?}.deb"));
        let err = copy_with_plain_data(&source, &target).unwrap_err();
        let DebError::Invalid { source, .. } = &err else {
            panic!("{compression:?}: {err:?}");
        };
        assert!(
            matches!(
                source,
                DebFormatError::CorruptData { .. } | DebFormatError::Truncated { .. }
            ),
            "{compression:?}: {source:?}"
        );
    }
}

#[test]
fn an_existing_target_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let original = package(Compression::Xz).write_to(dir.path()).unwrap();
    let target = dir.path().join("taken.deb");
    std::fs::write(&target, b"mine").unwrap();
    let err = copy_with_plain_data(&original, &target).unwrap_err();
    assert!(matches!(err, DebError::Write { .. }), "{err:?}");
    assert_eq!(std::fs::read(&target).unwrap(), b"mine");
}
