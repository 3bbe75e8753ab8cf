//! Any bytes given to the RPM reader give a package or an error: never a panic (the `rpm`
//! crate's parser panics on some malformed headers, so our size checks must stop those first;
//! fuzz builds abort on panic, so a missed case shows up as a crash).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vserver_repository::rpm_file::{RpmReadOptions, parse_rpm_bytes};

fuzz_target!(|data: &[u8]| {
    let _ = parse_rpm_bytes(data, &RpmReadOptions::default());
});
