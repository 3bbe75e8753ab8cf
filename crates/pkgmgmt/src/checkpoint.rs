//! The kill hook of the crash tests: debug builds only.
//!
//! Every journal or log entry a guest operation writes (module `mode::changelog`, and the guest
//! crate's transactions) is followed by [`checkpoint`]. With `VSERVER_TEST_KILL_AT=N` set, a
//! debug build sends itself `SIGKILL` at its N-th checkpoint: the tests kill an operation at
//! every step of it in turn, exactly as an administrator's `kill -9` or a power cut would, and
//! then check what the next command makes of it. Release builds ignore the variable.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The environment variable of the hook.
pub const KILL_AT_VAR: &str = "VSERVER_TEST_KILL_AT";

/// A point where a killed operation must be recoverable; see the module documentation.
pub fn checkpoint() {
    if !cfg!(debug_assertions) {
        return;
    }
    static PASSED: AtomicUsize = AtomicUsize::new(0);
    let Some(kill_at) = std::env::var(KILL_AT_VAR)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return;
    };
    if PASSED.fetch_add(1, Ordering::Relaxed) + 1 == kill_at {
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
}
