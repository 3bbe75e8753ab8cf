//! Any bytes given to the copy that decompresses a .deb's data member give a copy or an error,
//! never a panic or an allocation the input does not justify; a copy that succeeds reads back
//! as a .deb with the same control stanza.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vserver_repository::deb::{plain_copy_from_bytes, read_control_from_bytes};

fuzz_target!(|data: &[u8]| {
    if let Ok((copy, bytes)) = plain_copy_from_bytes(data) {
        let control = read_control_from_bytes(&bytes);
        assert_eq!(control.ok(), Some(copy.control));
    }
});
