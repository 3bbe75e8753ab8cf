//! Malformed RPM headers: the reader must answer with an error, never a panic, and its own
//! size checks (not the last-resort `catch_unwind`) must be what stops each bad header.
//!
//! A deterministic mutation run over a real package, so every CI run covers what the fuzz
//! target (`fuzz/fuzz_targets/rpm_header.rs`) explores at length.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vserver_fixtures::RpmPackage;
use vserver_repository::rpm_file::{RpmReadError, RpmReadOptions, parse_rpm_bytes};

const CONTAINED: &str = "header parser failed on malformed data";

fn sample() -> Vec<u8> {
    let mut pkg = RpmPackage::new("mutant", "1.0");
    pkg.requires("bash >= 5")
        .provides("mutant-cap = 1")
        .file("/usr/bin/mutant", vec![7u8; 3000], 0o755)
        .config_file("/etc/mutant.conf", "a=b\n")
        .changelog("M <m@example.invalid>", "- first", 1_600_000_000);
    pkg.to_bytes().unwrap()
}

#[test]
fn the_sample_parses() {
    let pkg = parse_rpm_bytes(&sample(), &RpmReadOptions::default()).unwrap();
    assert_eq!(pkg.name, "mutant");
    assert!(pkg.header_end > pkg.header_start);
}

#[test]
fn mutated_headers_give_errors_not_panics() {
    let good = sample();
    let parsed = parse_rpm_bytes(&good, &RpmReadOptions::default()).unwrap();
    let header_end = parsed.header_end as usize;
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed);
    let mut errors = 0;
    for round in 0..4000 {
        let mut bytes = good.clone();
        match round % 4 {
            // Flip a few bytes in the headers.
            0 => {
                for _ in 0..rng.random_range(1..8) {
                    let at = rng.random_range(0..header_end);
                    bytes[at] ^= rng.random::<u8>() | 1;
                }
            }
            // Write an extreme 32-bit value at an aligned position: counts, offsets, sizes.
            1 => {
                let at = rng.random_range(0..header_end / 4) * 4;
                let value = [u32::MAX, 0x8000_0000, 0x0fff_ffff, 0xffff, 0x1_0000, 0]
                    [rng.random_range(0..6)];
                bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
            }
            // Truncate anywhere.
            2 => bytes.truncate(rng.random_range(0..good.len())),
            // Insert garbage inside the headers.
            _ => {
                let at = rng.random_range(0..header_end);
                let junk: Vec<u8> = (0..rng.random_range(1..64)).map(|_| rng.random()).collect();
                bytes.splice(at..at, junk);
            }
        }
        match parse_rpm_bytes(&bytes, &RpmReadOptions::default()) {
            Ok(_) => {}
            Err(RpmReadError::Malformed { reason, .. }) => {
                assert_ne!(
                    reason, CONTAINED,
                    "round {round}: a panic got past the size checks"
                );
                errors += 1;
            }
            Err(other) => panic!("round {round}: unexpected error {other}"),
        }
    }
    assert!(
        errors > 1000,
        "the mutations do reach the checks ({errors} errors)"
    );
}
