//! Raw system calls that rustix does not wrap (yet).
//!
//! This is the only module that calls `libc::syscall` directly. Each wrapper converts the C return
//! convention (`-1` plus `errno`) into `io::Result`, so the rest of the crate stays safe code.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `struct mount_attr` from `<linux/mount.h>` (size version 0, 32 bytes).
#[repr(C)]
#[derive(Debug, Default)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `MOUNT_ATTR_RDONLY`.
pub(crate) const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
/// `MOUNT_ATTR_NOSUID`.
pub(crate) const MOUNT_ATTR_NOSUID: u64 = 0x0000_0002;
/// `MOUNT_ATTR_NODEV`.
pub(crate) const MOUNT_ATTR_NODEV: u64 = 0x0000_0004;
/// `MOUNT_ATTR_NOEXEC`.
pub(crate) const MOUNT_ATTR_NOEXEC: u64 = 0x0000_0008;
/// `MOUNT_ATTR_NOSYMFOLLOW` (Linux 5.10).
pub(crate) const MOUNT_ATTR_NOSYMFOLLOW: u64 = 0x0020_0000;

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `mount_setattr(dirfd, path, flags, {attr_set, attr_clr, propagation})`.
///
/// `propagation` is one of `MS_PRIVATE`, `MS_SLAVE`, `MS_SHARED`, `MS_UNBINDABLE` or 0.
pub(crate) fn mount_setattr(
    dirfd: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_uint,
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
) -> io::Result<()> {
    let attr = MountAttr {
        attr_set,
        attr_clr,
        propagation,
        userns_fd: 0,
    };
    // SAFETY: `path` is a valid NUL-terminated string, `attr` is a live `struct mount_attr` of the
    // size we pass, and the kernel only reads both during the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd.as_raw_fd(),
            path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    check(ret).map(drop)
}

/// `fchmodat2(dirfd, path, mode, AT_SYMLINK_NOFOLLOW)`: change the mode of the entry itself and
/// fail with `EOPNOTSUPP` when it is a symbolic link (Linux 6.6 and later).
pub(crate) fn fchmodat2_nofollow(dirfd: BorrowedFd<'_>, path: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: `path` is a valid NUL-terminated string read by the kernel during the call only;
    // the other arguments are plain integers.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            dirfd.as_raw_fd(),
            path.as_ptr(),
            mode as libc::c_uint,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    check(ret).map(drop)
}

/// `umount2(path, flags)` with a C string, for callers that must not allocate (a forked child).
pub(crate) fn umount2(path: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: `path` is a valid NUL-terminated string read by the kernel during the call only.
    let ret = unsafe { libc::umount2(path.as_ptr(), flags) };
    check(ret.into()).map(drop)
}

/// `fork()`.
///
/// # Safety
///
/// The caller must be single-threaded, or the child must restrict itself to async-signal-safe
/// operations until it calls `exec` or `_exit`.
pub(crate) unsafe fn fork() -> io::Result<libc::pid_t> {
    // SAFETY: the caller upholds the single-thread / async-signal-safety contract above.
    let pid = unsafe { libc::fork() };
    if pid == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(pid)
    }
}

/// `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)`: the kernel's Landlock
/// ABI version (`EOPNOTSUPP`/`ENOSYS` when it has none).
pub(crate) fn landlock_abi_version() -> io::Result<i32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: a null attribute pointer with size 0 is what the version query takes; the kernel
    // reads nothing.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    check(ret).map(|v| v as i32)
}

/// `setns(fd, CLONE_NEWNS)` without allocating (for forked children of multi-threaded programs).
pub(crate) fn setns_mount(fd: libc::c_int) -> io::Result<()> {
    // SAFETY: setns only reads its integer arguments; a bad descriptor is an error, not UB.
    check(unsafe { libc::setns(fd, libc::CLONE_NEWNS) } as libc::c_long).map(drop)
}

/// `chroot(path)` then `chdir("/")`, without allocating.
pub(crate) fn chroot_and_chdir(path: &CStr) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    check(unsafe { libc::chroot(path.as_ptr()) } as libc::c_long)?;
    // SAFETY: a static NUL-terminated string.
    check(unsafe { libc::chdir(c"/".as_ptr()) } as libc::c_long).map(drop)
}

/// `fcntl(fd, F_SETLK, {F_WRLCK, whole file})`: the kind of lock dpkg takes on its database.
pub(crate) fn fcntl_write_lock(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: an all-zero `struct flock` is valid; the fields set below describe the whole file.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: `lock` is a live `struct flock` the kernel only reads.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETLK, &lock) } as libc::c_long).map(drop)
}

/// `_exit(code)`: leave without running atexit handlers or flushing stdio (for forked children).
pub(crate) fn exit_immediately(code: i32) -> ! {
    // SAFETY: `_exit` is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

/// `execve(program, argv, envp)`; returns only on failure.
pub(crate) fn execve(
    program: &CStr,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> io::Error {
    debug_assert!(argv.last().is_some_and(|p| p.is_null()));
    debug_assert!(envp.last().is_some_and(|p| p.is_null()));
    // SAFETY: `program` is NUL-terminated; `argv` and `envp` are NULL-terminated arrays of
    // pointers to NUL-terminated strings that the caller keeps alive across the call.
    unsafe { libc::execve(program.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    io::Error::last_os_error()
}

/// `signal(sig, SIG_IGN)` or `SIG_DFL`.
pub(crate) fn set_signal_ignored(sig: libc::c_int, ignored: bool) {
    let handler = if ignored {
        libc::SIG_IGN
    } else {
        libc::SIG_DFL
    };
    // SAFETY: installing SIG_IGN / SIG_DFL involves no Rust code running in signal context.
    unsafe { libc::signal(sig, handler) };
}

/// `sethostname(name)`.
pub(crate) fn sethostname(name: &[u8]) -> io::Result<()> {
    // SAFETY: the pointer and length describe a live byte slice that the kernel only reads.
    let ret = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
    check(ret.into()).map(drop)
}

fn prctl(option: libc::c_int, arg2: libc::c_ulong) -> io::Result<libc::c_int> {
    // SAFETY: the prctl options used here (capability bounding set, ambient set, dumpable) take
    // integer arguments only; no pointers are passed.
    let ret = unsafe {
        libc::prctl(
            option,
            arg2,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `prctl(PR_SET_DUMPABLE, 0)`: the process's `/proc/PID` entries (its root, its open files,
/// its memory) become reachable only with `CAP_SYS_PTRACE`, which no script keeps.
pub(crate) fn set_not_dumpable() -> io::Result<()> {
    prctl(libc::PR_SET_DUMPABLE, 0).map(drop)
}

/// `prctl(PR_CAPBSET_READ, cap)`.
pub(crate) fn capbset_read(cap: u32) -> io::Result<bool> {
    prctl(libc::PR_CAPBSET_READ, cap.into()).map(|r| r == 1)
}

/// `prctl(PR_CAPBSET_DROP, cap)`.
pub(crate) fn capbset_drop(cap: u32) -> io::Result<()> {
    prctl(libc::PR_CAPBSET_DROP, cap.into()).map(drop)
}

/// `prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)`.
pub(crate) fn clear_ambient_capabilities() -> io::Result<()> {
    prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
    )
    .map(drop)
}

/// `pipe2(O_CLOEXEC)` as owned descriptors (read end, write end).
pub(crate) fn pipe() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(Into::into)
}

/// `fcntl(fd, F_SETFD, 0)`: let `fd` survive `exec`. Async-signal-safe (used in `pre_exec`).
pub(crate) fn clear_cloexec(fd: libc::c_int) -> io::Result<()> {
    // SAFETY: F_SETFD takes an integer argument; an invalid `fd` only yields EBADF.
    let ret = unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    check(ret.into()).map(drop)
}

/// `waitpid(pid, &status, 0)`, retried on `EINTR`; returns the pid and raw wait status.
pub(crate) fn waitpid(pid: libc::pid_t) -> io::Result<(libc::pid_t, libc::c_int)> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a live integer the kernel writes the wait status into.
        let ret = unsafe { libc::waitpid(pid, &mut status, 0) };
        if ret == -1 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(error);
        }
        return Ok((ret, status));
    }
}

/// `prctl(PR_SET_CHILD_SUBREAPER, 1)`: orphans among the caller's descendants are reparented to
/// it instead of to the pid namespace's init.
pub(crate) fn set_child_subreaper() -> io::Result<()> {
    prctl(libc::PR_SET_CHILD_SUBREAPER, 1).map(drop)
}

/// A signal set holding `signals`.
fn signal_set(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: `sigset_t` is plain data; `sigemptyset` initialises it before any other use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live `sigset_t`; the signal numbers are valid constants.
    unsafe {
        libc::sigemptyset(&mut set);
        for &signal in signals {
            libc::sigaddset(&mut set, signal);
        }
    }
    set
}

/// `sigprocmask(SIG_BLOCK, signals)`: they stay pending for [`wait_for_signal`] instead of being
/// delivered. Only for single-threaded processes.
pub(crate) fn block_signals(signals: &[libc::c_int]) -> io::Result<()> {
    let set = signal_set(signals);
    // SAFETY: `set` is an initialised signal set the kernel only reads; no old set is asked for.
    let ret = unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    check(ret.into()).map(drop)
}

/// `sigprocmask(SIG_SETMASK, {})`: nothing blocked (the mask survives `exec`, and a program must
/// not start with its signals blocked). Async-signal-safe.
pub(crate) fn unblock_all_signals() -> io::Result<()> {
    let set = signal_set(&[]);
    // SAFETY: as in `block_signals`.
    let ret = unsafe { libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) };
    check(ret.into()).map(drop)
}

/// `sigtimedwait(signals, timeout)`: takes one pending signal of `signals` (which must be
/// blocked), waiting up to `timeout`; `None` when none came (or the wait was interrupted).
pub(crate) fn wait_for_signal(
    signals: &[libc::c_int],
    timeout: std::time::Duration,
) -> Option<libc::c_int> {
    let set = signal_set(signals);
    let timeout = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(timeout.subsec_nanos()),
    };
    // SAFETY: `set` and `timeout` are live, initialised values the kernel only reads; no
    // `siginfo_t` is asked for.
    let ret = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &timeout) };
    (ret > 0).then_some(ret)
}

/// `waitpid(-1, &status, WNOHANG)`: a child that ended (pid and raw wait status), `Ok(None)` when
/// children remain but none has ended, `ECHILD` when there are none.
pub(crate) fn try_wait_any() -> io::Result<Option<(libc::pid_t, libc::c_int)>> {
    let mut status: libc::c_int = 0;
    // SAFETY: `status` is a live integer the kernel writes the wait status into.
    let ret = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    match ret {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some((pid, status))),
    }
}

/// `setpgid(0, 0)`: the caller leads a process group of its own, so that a signal sent to the
/// group it was in (a `kill -9 -PGID`, a shell's job control) does not reach it.
pub(crate) fn leave_process_group() -> io::Result<()> {
    // SAFETY: plain integer arguments.
    let ret = unsafe { libc::setpgid(0, 0) };
    check(ret.into()).map(drop)
}
