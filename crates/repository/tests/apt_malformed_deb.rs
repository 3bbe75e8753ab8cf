//! A deterministic mutation test of the .deb reader, so that every test run (not only a fuzzing
//! session) shows that damaged packages give an error and never a panic or a huge allocation.
//! Mutations: every truncation point in the headers, byte flips across the whole file, and
//! hostile values in the size fields of the `ar` members and of the control tarball.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use vserver_fixtures::{Compression, DebPackage};
use vserver_repository::deb::read_control_from_bytes;

fn sample(compression: Compression) -> Vec<u8> {
    DebPackage::new("mutant", "1.0-1")
        .compression(compression)
        .depends("libc6 (>= 2.36)")
        .description("a package to break\n in many ways")
        .file(
            "/usr/bin/mutant",
            b"#!/bin/sh\necho mutant\n".to_vec(),
            0o755,
        )
        .to_bytes()
        .unwrap()
}

/// Offsets of the `ar` member headers (magic is 8 bytes; each member is 60 + size, padded).
fn member_headers(bytes: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = 8;
    while at + 60 <= bytes.len() {
        offsets.push(at);
        let size: usize = std::str::from_utf8(&bytes[at + 48..at + 58])
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        at += 60 + size + size % 2;
    }
    offsets
}

#[test]
fn intact_samples_parse() {
    for compression in [Compression::Gzip, Compression::Xz, Compression::Zstd] {
        let control = read_control_from_bytes(&sample(compression)).unwrap();
        assert_eq!(control.get("Package"), Some("mutant"));
    }
}

#[test]
fn every_truncation_is_an_error() {
    for compression in [Compression::Gzip, Compression::Xz, Compression::Zstd] {
        let bytes = sample(compression);
        let last = *member_headers(&bytes).last().unwrap();
        let last_size: usize = std::str::from_utf8(&bytes[last + 48..last + 58])
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The reader tolerates a missing padding byte after the last member (some writers
        // omit it), so cutting exactly that byte is not an error.
        let tolerated = (last_size % 2 == 1).then(|| bytes.len() - 1);
        for len in (0..bytes.len()).filter(|&len| Some(len) != tolerated) {
            assert!(
                read_control_from_bytes(&bytes[..len]).is_err(),
                "{compression:?} truncated to {len} of {} bytes was accepted",
                bytes.len()
            );
        }
    }
}

#[test]
fn flipped_bytes_never_panic() {
    for compression in [Compression::Gzip, Compression::Xz, Compression::Zstd] {
        let bytes = sample(compression);
        for at in 0..bytes.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut mutated = bytes.clone();
                mutated[at] ^= mask;
                // Either outcome is fine; returning at all is the point.
                let _ = read_control_from_bytes(&mutated);
            }
        }
    }
}

#[test]
fn hostile_member_sizes_are_refused_without_allocating() {
    let bytes = sample(Compression::Gzip);
    for header in member_headers(&bytes) {
        for size in [
            b"9999999999",
            b"4294967296",
            b"-1        ",
            b"0x10      ",
            b"          ",
        ] {
            let mut mutated = bytes.clone();
            mutated[header + 48..header + 58].copy_from_slice(size);
            assert!(read_control_from_bytes(&mutated).is_err());
        }
    }
}

#[test]
fn hostile_sizes_inside_an_uncompressed_control_tar_are_refused() {
    // Build a .deb whose control.tar is uncompressed, so the tar header can be edited.
    let bytes = sample(Compression::Gzip);
    let headers = member_headers(&bytes);
    let control_at = headers[1];
    let size: usize = std::str::from_utf8(&bytes[control_at + 48..control_at + 58])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(&bytes[control_at + 60..control_at + 60 + size])
        .read_to_end_into(&mut tar);
    let rebuild = |tar: &[u8]| {
        let mut out = bytes[..control_at].to_vec();
        out.extend_from_slice(
            format!(
                "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                "control.tar",
                0,
                0,
                0,
                100644,
                tar.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(tar);
        if tar.len() % 2 == 1 {
            out.push(b'\n');
        }
        out.extend_from_slice(&bytes[headers[2]..]);
        out
    };
    assert_eq!(
        read_control_from_bytes(&rebuild(&tar))
            .unwrap()
            .get("Package"),
        Some("mutant")
    );
    // Every tar header up to the control file's: claim an enormous entry size (the octal
    // field at offset 124). Entries after `./control` are never read, so they do not matter.
    let headers_in_tar: Vec<usize> = (0..tar.len().saturating_sub(512))
        .step_by(512)
        .filter(|&at| &tar[at + 257..at + 262] == b"ustar")
        .collect();
    let control_header = headers_in_tar
        .iter()
        .position(|&at| tar[at..at + 100].starts_with(b"./control\0"))
        .expect("control entry");
    for &header in &headers_in_tar[..=control_header] {
        let mut mutated = tar.clone();
        mutated[header + 124..header + 136].copy_from_slice(b"77777777777\0");
        // Keep the header checksum valid, so that the size itself is what gets refused.
        mutated[header + 148..header + 156].copy_from_slice(b"        ");
        let sum: u32 = mutated[header..header + 512]
            .iter()
            .map(|&b| u32::from(b))
            .sum();
        mutated[header + 148..header + 156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let result = read_control_from_bytes(&rebuild(&mutated));
        let Err(err) = result else {
            panic!("tar header at {header} accepted");
        };
        if header == headers_in_tar[control_header] {
            let message = err.to_string();
            assert!(message.contains("claims 8589934591 bytes"), "{message}");
        }
    }
}

trait ReadToEndInto {
    fn read_to_end_into(self, out: &mut Vec<u8>);
}

impl<R: std::io::Read> ReadToEndInto for R {
    fn read_to_end_into(mut self, out: &mut Vec<u8>) {
        self.read_to_end(out).unwrap();
    }
}
