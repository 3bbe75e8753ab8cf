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
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// Set (to any value) in the environment of the apt and dpkg that vserver runs on a guest.
pub const CONFINE_VAR: &CStr = c"VSERVER_CONFINE_MAINTSCRIPTS";

unsafe extern "C" {
    /// The process environment (`environ(7)`).
    static environ: *const *const c_char;
}

/// rpm's side of a running guest: the spawner's descriptor, kept aside by the plugin's `init`
/// hook (`-1`: none), and whether this library's `execv` is the one rpm calls (it is preloaded).
static RPM_SPAWNER: AtomicI32 = AtomicI32::new(-1);
static RPM_PROXY_READY: AtomicBool = AtomicBool::new(false);
/// Set by the `scriptlet_fork_post` hook in a scriptlet's child: its next exec is the script,
/// which the spawner runs in the guest instead.
static PROXY_NEXT_EXEC: AtomicBool = AtomicBool::new(false);

/// Called from the plugin's `init` hook in rpm's own process: on a running guest (the sandbox
/// named a spawner), keeps its descriptor aside (close-on-exec: what Lua starts does not get
/// it) and notes whether rpm's `execv` reaches this library (it must be preloaded, as well as
/// loaded as a plugin, so that [`execv`] can hand the script to the spawner); takes the
/// spawner's variable and `LD_PRELOAD` out of the environment the scripts inherit.
pub(crate) fn prepare_rpm_proxy() {
    let Some(fd) = vserver_sandbox::spawner_from_environment() else {
        return;
    };
    // SAFETY: dlsym with a NUL-terminated name, in rpm's process at plugin initialisation.
    let found = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"execv".as_ptr()) };
    let ours = execv as unsafe extern "C" fn(*const c_char, *const *const c_char) -> c_int;
    RPM_PROXY_READY.store(found as usize == ours as usize, Ordering::SeqCst);
    // SAFETY: setting close-on-exec on the inherited spawner descriptor.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    RPM_SPAWNER.store(fd, Ordering::SeqCst);
    for name in [c"VSERVER_GUEST_SPAWNER", c"LD_PRELOAD"] {
        // SAFETY: plugin initialisation, before any scriptlet runs; edits this process's
        // environment under the C library's lock.
        unsafe { libc::unsetenv(name.as_ptr()) };
    }
}

/// Called from `scriptlet_fork_post` after the scriptlet's process was confined: on a running
/// guest, arranges for the coming exec to run the script in the guest; `false` (the library is
/// not preloaded, so the script would run outside the guest) means "do not run the script".
pub(crate) fn proxy_rpm_scriptlet() -> bool {
    if RPM_SPAWNER.load(Ordering::SeqCst) < 0 {
        return true;
    }
    if !RPM_PROXY_READY.load(Ordering::SeqCst) {
        return false;
    }
    PROXY_NEXT_EXEC.store(true, Ordering::SeqCst);
    true
}

/// What an exec of this process must do.
enum Exec {
    /// Go ahead.
    Run,
    /// Hand the program to the guest spawner at this descriptor.
    InGuest(c_int),
    /// Refuse (confinement failed).
    Refuse,
}

/// Confines the calling process if it is about to become a maintainer script, and says where
/// the script runs.
fn confine_if_maintainer_script() -> Exec {
    if PROXY_NEXT_EXEC.load(Ordering::SeqCst) {
        return Exec::InGuest(RPM_SPAWNER.load(Ordering::SeqCst));
    }
    // SAFETY: getenv with NUL-terminated names; dpkg's child is single-threaded.
    let wanted = unsafe {
        !libc::getenv(CONFINE_VAR.as_ptr()).is_null()
            && !libc::getenv(c"DPKG_MAINTSCRIPT_NAME".as_ptr()).is_null()
    };
    if !wanted {
        return Exec::Run;
    }
    // Read before confining, which takes every `VSERVER_` variable out of the environment.
    let spawner = vserver_sandbox::spawner_from_environment();
    // SAFETY: as above; unsetenv only edits this process's environment.
    unsafe { libc::unsetenv(c"LD_PRELOAD".as_ptr()) };
    let confined = matches!(
        std::panic::catch_unwind(|| vserver_sandbox::confine_scriptlet(None).is_ok()),
        Ok(true)
    );
    match (confined, spawner) {
        (false, _) => Exec::Refuse,
        (true, Some(fd)) => Exec::InGuest(fd),
        (true, None) => Exec::Run,
    }
}

/// Runs the program in the running guest through the spawner; returns only on failure.
///
/// # Safety
///
/// As `execve(2)`'s arguments.
unsafe fn in_guest(
    spawner: c_int,
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    search_path: bool,
) -> c_int {
    // SAFETY: the caller's arguments, as execve takes them.
    let error =
        unsafe { vserver_sandbox::exec_in_running_guest(spawner, path, argv, envp, search_path) };
    // SAFETY: errno is thread-local and writable.
    unsafe { *libc::__errno_location() = error.raw_os_error().unwrap_or(libc::EPERM) };
    -1
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
    match confine_if_maintainer_script() {
        Exec::Run => {}
        Exec::Refuse => return refuse(),
        // SAFETY: the caller's arguments and this process's environment.
        Exec::InGuest(fd) => return unsafe { in_guest(fd, path, argv, environ, false) },
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
    match confine_if_maintainer_script() {
        Exec::Run => {}
        Exec::Refuse => return refuse(),
        // SAFETY: the caller's arguments and this process's environment.
        Exec::InGuest(fd) => return unsafe { in_guest(fd, file, argv, environ, true) },
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
    match confine_if_maintainer_script() {
        Exec::Run => {}
        Exec::Refuse => return refuse(),
        // SAFETY: the caller's arguments.
        Exec::InGuest(fd) => return unsafe { in_guest(fd, path, argv, envp, false) },
    }
    // SAFETY: the execve system call with the caller's arguments.
    unsafe { libc::syscall(libc::SYS_execve, path, argv, envp) as c_int }
}
