//! Any bytes given to the .deb control reader give a stanza or an error, never a panic or an
//! allocation the input does not justify.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vserver_repository::deb::read_control_from_bytes;

fuzz_target!(|data: &[u8]| {
    let _ = read_control_from_bytes(data);
});
