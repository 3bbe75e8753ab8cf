//! The library's constructor: when vserver's dpkg entry point started this process (it names a
//! socket in `VSERVER_EXEC_GATE`), say that the library is loaded and wait until the entry point
//! has released the dpkg database's lock (see `vserver_sandbox`'s `entry` module). A dpkg into
//! which this library was not loaded never gets past that lock, so the maintainer-script
//! confinement cannot be skipped silently.
#![allow(unsafe_code)]

use std::ffi::c_int;

/// Runs before `main` in every process the library is loaded into (`.init_array`).
#[used]
#[unsafe(link_section = ".init_array")]
static REPORT_LOADED: extern "C" fn() = report_loaded;

extern "C" fn report_loaded() {
    // SAFETY: getenv with a NUL-terminated name, before `main`: nothing else runs yet.
    let value = unsafe { libc::getenv(c"VSERVER_EXEC_GATE".as_ptr()) };
    if value.is_null() {
        return;
    }
    // SAFETY: getenv returned a NUL-terminated string that lives in the environment.
    let fd = parse_fd(unsafe { std::ffi::CStr::from_ptr(value) }.to_bytes());
    // SAFETY: as above; unsetenv only edits this process's environment (the programs dpkg runs
    // must not see the variable).
    unsafe { libc::unsetenv(c"VSERVER_EXEC_GATE".as_ptr()) };
    let Some(fd) = fd else {
        return;
    };
    let loaded = [vserver_sandbox::GATE_LOADED];
    let mut answer = [0u8; 1];
    // SAFETY: plain reads and writes of a one-byte buffer on the inherited socket, then closing
    // it; the descriptor belongs to this handshake alone.
    let open = unsafe {
        let sent = libc::write(fd, loaded.as_ptr().cast(), 1) == 1;
        let heard = sent && libc::read(fd, answer.as_mut_ptr().cast(), 1) == 1;
        libc::close(fd);
        heard && answer[0] == vserver_sandbox::GATE_OPEN
    };
    if !open {
        // The entry point is gone: do not run unwatched.
        // SAFETY: `_exit` never returns.
        unsafe { libc::_exit(125) };
    }
}

fn parse_fd(digits: &[u8]) -> Option<c_int> {
    if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0, |n: c_int, d| n * 10 + c_int::from(d - b'0')),
    )
}
