//! The C entry points dpkg sees when the library is preloaded (`LD_PRELOAD`) into the host's
//! apt and dpkg: `execv`, `execvp` and `execve`, which confine a maintainer script just before
//! dpkg executes it.
//!
//! dpkg has no plugin interface. To run a maintainer script it forks, sets
//! `DPKG_MAINTSCRIPT_NAME` and friends in the child, chroots into the guest and calls `execv`
//! (or `execvp`, by version). Those calls land here first: in a process that has
//! `DPKG_MAINTSCRIPT_NAME` set and runs under vserver ([`CONFINE_VAR`]), the hook removes
//! `LD_PRELOAD` from the environment (the guest's programs must not try to load a host path),
//! calls [`vserver_sandbox::confine_scriptlet`] without a database (maintainer scripts need
//! dpkg's database, see docs/security.md) — which drops `CAP_SYS_CHROOT`, `CAP_SYS_ADMIN` and the
//! rest beyond file ownership and sets `no_new_privs` — and only then executes. If confining
//! fails the exec fails with `EPERM`: the script does not run (fail closed). Every other exec
//! goes straight to the C library's function.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int};

/// Set (to any value) in the environment of the apt and dpkg that vserver runs on a guest.
pub const CONFINE_VAR: &CStr = c"VSERVER_CONFINE_MAINTSCRIPTS";

unsafe extern "C" {
    /// The process environment (`environ(7)`).
    static environ: *const *const c_char;
}

/// Confines the calling process if it is about to become a maintainer script; `false` means
/// "do not exec".
fn confine_if_maintainer_script() -> bool {
    // SAFETY: getenv with NUL-terminated names; dpkg's child is single-threaded.
    let wanted = unsafe {
        !libc::getenv(CONFINE_VAR.as_ptr()).is_null()
            && !libc::getenv(c"DPKG_MAINTSCRIPT_NAME".as_ptr()).is_null()
    };
    if !wanted {
        return true;
    }
    // SAFETY: as above; unsetenv only edits this process's environment.
    unsafe { libc::unsetenv(c"LD_PRELOAD".as_ptr()) };
    matches!(
        std::panic::catch_unwind(|| vserver_sandbox::confine_scriptlet(None).is_ok()),
        Ok(true)
    )
}

fn refuse() -> c_int {
    // SAFETY: errno is thread-local and writable.
    unsafe { *libc::__errno_location() = libc::EPERM };
    -1
}

/// `execv(3)`, confining a maintainer script first.
///
/// # Safety
///
/// As `execv(3)`: `path` a NUL-terminated string, `argv` a null-terminated array of them.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn execv(path: *const c_char, argv: *const *const c_char) -> c_int {
    if !confine_if_maintainer_script() {
        return refuse();
    }
    // SAFETY: the execve system call with the caller's arguments and this process's environment
    // (what execv means); the system call, not the C function, which this library replaces too.
    unsafe { libc::syscall(libc::SYS_execve, path, argv, environ) as c_int }
}

/// `execvp(3)`, confining a maintainer script first.
///
/// # Safety
///
/// As `execvp(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int {
    if !confine_if_maintainer_script() {
        return refuse();
    }
    // SAFETY: the C library's execvpe (not replaced here) with the caller's arguments and this
    // process's environment, which is what execvp means.
    unsafe { libc::execvpe(file, argv, environ) }
}

/// `execve(2)`, confining a maintainer script first. The environment passed is the caller's:
/// dpkg does not use it for scripts, so `LD_PRELOAD` is only removed from the process's own.
///
/// # Safety
///
/// As `execve(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn execve(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    if !confine_if_maintainer_script() {
        return refuse();
    }
    // SAFETY: the execve system call with the caller's arguments.
    unsafe { libc::syscall(libc::SYS_execve, path, argv, envp) as c_int }
}
