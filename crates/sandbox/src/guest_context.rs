//! The "guest context" a package script runs in: what its process does to itself before it
//! executes code that came from the guest's side.
//!
//! Two entry points:
//!
//! - [`confine_scriptlet`] for rpm's `scriptlet_fork_post` plugin hook (and dpkg's equivalent):
//!   called in the forked child of a multi-threaded rpm, after rpm chrooted into the guest root,
//!   just before `exec`. It unshares the mount namespace, detaches the package database mounted at
//!   `database` (fail-closed: if it is still a mount point afterwards, the script must not run),
//!   drops to [`CapabilityProfile::Confined`] (no `CAP_SYS_ADMIN`, no `CAP_SYS_CHROOT`, so no
//!   `chroot("..")` escape and no mounting) and sets `no_new_privs`. It allocates nothing and
//!   calls only system calls, so it is safe in that context; its error is a plain step + errno.
//! - [`enter_guest_context`] for a host-side process that runs a command in a guest: join a
//!   running guest's namespaces through a pidfd, or change root into a stopped guest's root;
//!   then the same capability reduction.

use std::ffi::{CStr, CString};
use std::os::fd::BorrowedFd;
use std::sync::OnceLock;

use rustix::thread::UnshareFlags;

use crate::caps::{CapabilityProfile, restrict_capabilities, set_no_new_privs};
use crate::error::Result;
use crate::namespaces::{self, Namespace};
use crate::safe_path::GuestRoot;
use crate::sys;

/// Why [`confine_scriptlet`] refused to let the script run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot confine the package script: {step} failed (errno {errno})")]
pub struct ConfineError {
    /// The step that failed.
    pub step: &'static str,
    /// The kernel's `errno`.
    pub errno: i32,
}

fn fail(step: &'static str) -> impl Fn(std::io::Error) -> ConfineError {
    move |e| ConfineError {
        step,
        errno: e.raw_os_error().unwrap_or(libc::EIO),
    }
}

/// Names the descriptor of the mount namespace the operation's scripts run in (the sandbox's
/// namespace as it was before the database was mounted), in the environment of a program started
/// with [`crate::SandboxCommand::scriptlet_namespace`].
pub const SCRIPTLET_MOUNT_NS_VAR: &str = "VSERVER_SCRIPTLET_MNTNS";
/// Names the guest root (as the sandbox sees it) to change root into after entering that
/// namespace.
pub const SCRIPTLET_ROOT_VAR: &str = "VSERVER_SCRIPTLET_ROOT";

/// Confines the calling process for a package script; see the module documentation.
///
/// `database` is the database mount point as seen by the process (after rpm's chroot:
/// `/.rpmdb`); `None` leaves mounts alone (dpkg's maintainer scripts need the database).
/// Allocation-free and async-signal-safe in practice (system calls only).
///
/// The database is left behind in one of two ways. Inside a sandbox that prepared a scriptlet
/// namespace ([`SCRIPTLET_MOUNT_NS_VAR`]), the process enters it and changes root into the guest
/// again: that namespace never had the database mounted, and entering it is allowed inside a
/// Landlock domain, where unmounting is not. Elsewhere it unshares its mount namespace and
/// detaches the database. Either way, a database still mounted afterwards means the script does
/// not run.
pub fn confine_scriptlet(database: Option<&CStr>) -> std::result::Result<(), ConfineError> {
    if let Some(database) = database {
        match prepared_namespace() {
            Some((fd, root)) => {
                sys::setns_mount(fd).map_err(fail("enter the scriptlet mount namespace"))?;
                // SAFETY: closing the inherited namespace descriptor, which nothing else in this
                // forked child uses; the script must not inherit it.
                unsafe { libc::close(fd) };
                sys::chroot_and_chdir(root).map_err(fail("change root into the guest"))?;
            }
            None => detach_database(database)?,
        }
        let mut parent_buffer = [0u8; 4096];
        let parent = parent_of(database, &mut parent_buffer).ok_or(ConfineError {
            step: "find the database's parent directory",
            errno: libc::ENAMETOOLONG,
        })?;
        if crate::mount::is_mount_point(database, parent).unwrap_or(false) {
            return Err(ConfineError {
                step: "unmount the database",
                errno: libc::EBUSY,
            });
        }
    }
    // The script is the guest's code: nothing of the operation's own environment goes with it.
    forget_environment(&[b"VSERVER_", b"APT_CONFIG="]);
    restrict_capabilities(CapabilityProfile::Confined.kept()).map_err(fail("drop capabilities"))?;
    set_no_new_privs().map_err(fail("set no_new_privs"))
}

unsafe extern "C" {
    /// The process environment (`environ(7)`).
    static mut environ: *mut *mut libc::c_char;
}

/// Removes the environment entries that start with any of `prefixes`, in place: no allocation
/// and no lock (`unsetenv` takes one, which another thread of a multi-threaded package manager
/// may have held when it forked this child), so the scripts the process executes next do not
/// inherit them.
fn forget_environment(prefixes: &[&[u8]]) {
    // SAFETY: `environ` is a null-terminated array of pointers to NUL-terminated strings owned by
    // this process; only this thread runs in this forked child. Entries are only moved down
    // within the array and the array is terminated again, as `unsetenv` itself does.
    unsafe {
        let start = std::ptr::addr_of_mut!(environ).read();
        if start.is_null() {
            return;
        }
        let (mut read, mut write) = (start, start);
        while !(*read).is_null() {
            let entry = CStr::from_ptr(*read).to_bytes();
            if !prefixes.iter().any(|p| entry.starts_with(p)) {
                *write = *read;
                write = write.add(1);
            }
            read = read.add(1);
        }
        *write = std::ptr::null_mut();
    }
}

/// The scriptlet namespace and guest root that [`confine_future_programs`] took out of the
/// environment of the package manager (so that what Lua starts does not inherit them).
static TAKEN_NAMESPACE: OnceLock<(libc::c_int, CString)> = OnceLock::new();

/// The scriptlet namespace's descriptor and the guest root: kept aside by
/// [`confine_future_programs`], or from the environment. Read without allocating.
fn prepared_namespace() -> Option<(libc::c_int, &'static CStr)> {
    if let Some((fd, root)) = TAKEN_NAMESPACE.get() {
        return Some((*fd, root.as_c_str()));
    }
    // SAFETY: getenv with NUL-terminated names; the returned strings live in the environment,
    // which nothing in this forked child changes.
    let (fd, root) = unsafe {
        let fd = libc::getenv(c"VSERVER_SCRIPTLET_MNTNS".as_ptr());
        let root = libc::getenv(c"VSERVER_SCRIPTLET_ROOT".as_ptr());
        if fd.is_null() || root.is_null() {
            return None;
        }
        (CStr::from_ptr(fd), CStr::from_ptr(root))
    };
    Some((parse_fd(fd.to_bytes())?, root)).filter(|(_, root)| root.to_bytes().starts_with(b"/"))
}

/// A descriptor number written in decimal.
fn parse_fd(digits: &[u8]) -> Option<libc::c_int> {
    if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0, |n: libc::c_int, d| n * 10 + libc::c_int::from(d - b'0')),
    )
}

/// Unshares the mount namespace and detaches every mount stacked on `database`.
fn detach_database(database: &CStr) -> std::result::Result<(), ConfineError> {
    // SAFETY: we pass only namespace flags, never CLONE_FILES, so no descriptor of another
    // thread becomes invalid.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNS) }
        .map_err(|e| fail("unshare the mount namespace")(e.into()))?;
    sys::mount_setattr(
        rustix::fs::CWD,
        c"/",
        libc::AT_RECURSIVE as u32,
        0,
        0,
        libc::MS_PRIVATE,
    )
    .map_err(fail("make mounts private"))?;
    let mut parent_buffer = [0u8; 4096];
    let parent = parent_of(database, &mut parent_buffer).ok_or(ConfineError {
        step: "find the database's parent directory",
        errno: libc::ENAMETOOLONG,
    })?;
    // Stacked mounts are possible; detach until the path is no mount point any more.
    for _ in 0..16 {
        match crate::mount::is_mount_point(database, parent) {
            Ok(false) => break,
            Ok(true) => {
                sys::umount2(database, libc::MNT_DETACH).map_err(fail("unmount the database"))?
            }
            // Nothing there at all: nothing to hide.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Err(e) => return Err(fail("inspect the database mount")(e)),
        }
    }
    Ok(())
}

/// Makes every program this process (a package manager) executes from now on start with no more
/// than [`CapabilityProfile::Confined`], whoever executes it: the capabilities the process holds
/// stay, but leave the bounding set, which caps what any later `execve` in this process tree can
/// have; and sets `no_new_privs`. For the children of rpm's Lua scriptlets (`os.execute`,
/// `rpm.execute`, `io.popen`, `posix.exec`), which run inside rpm and never reach a scriptlet
/// hook. Also makes the process not dumpable, so that its scripts cannot reach its open files
/// (the database) or its root through `/proc`, and takes the scriptlet namespace's variables out
/// of its environment (kept aside for [`confine_scriptlet`]). Needs `CAP_SETPCAP`.
pub fn confine_future_programs() -> std::result::Result<(), ConfineError> {
    crate::caps::lower_bounding_set(CapabilityProfile::Confined.kept())
        .map_err(fail("lower the bounding set"))?;
    // Its scripts run as the same user: without this they could reach the database (and the
    // sandbox's view of the host) through `/proc/PID/fd` and `/proc/PID/root` of this process.
    sys::set_not_dumpable().map_err(fail("make the package manager not dumpable"))?;
    // The operation's variables are for the scriptlet hook, not for what Lua starts: keep them
    // aside and take them out of the environment.
    if let Some((fd, root)) = prepared_namespace() {
        let _ = TAKEN_NAMESPACE.set((fd, root.to_owned()));
    }
    for name in [SCRIPTLET_MOUNT_NS_VAR, SCRIPTLET_ROOT_VAR] {
        if let Ok(name) = CString::new(name) {
            // SAFETY: called from rpm's plugin initialisation, before the transaction starts
            // scriptlets; unsetenv edits this process's environment under glibc's lock.
            unsafe { libc::unsetenv(name.as_ptr()) };
        }
    }
    set_no_new_privs().map_err(fail("set no_new_privs"))
}

/// Writes the parent directory of `path` into `buffer` as a C string, without allocating.
fn parent_of<'a>(path: &CStr, buffer: &'a mut [u8; 4096]) -> Option<&'a CStr> {
    let bytes = path.to_bytes();
    let trimmed = match bytes.iter().rposition(|&b| b != b'/') {
        Some(end) => &bytes[..=end],
        None => return Some(c"/"),
    };
    let parent = match trimmed.iter().rposition(|&b| b == b'/') {
        Some(0) => &b"/"[..],
        Some(slash) => &trimmed[..slash],
        None => &b"."[..],
    };
    if parent.len() >= buffer.len() {
        return None;
    }
    buffer[..parent.len()].copy_from_slice(parent);
    buffer[parent.len()] = 0;
    CStr::from_bytes_with_nul(&buffer[..=parent.len()]).ok()
}

/// Puts the calling process into a guest's context: with `running_guest` (a pidfd of the guest's
/// init), join its mount, uts, ipc, net, cgroup and pid namespaces (the pid namespace applies to
/// children: fork after this); otherwise change root into `root`. Then reduce capabilities to
/// `profile` and set `no_new_privs`. Call it in a single-threaded child process.
pub fn enter_guest_context(
    root: &GuestRoot,
    running_guest: Option<BorrowedFd<'_>>,
    profile: CapabilityProfile,
) -> Result<()> {
    match running_guest {
        Some(pidfd) => namespaces::join_namespaces(
            pidfd,
            &[
                Namespace::Mount,
                Namespace::Uts,
                Namespace::Ipc,
                Namespace::Net,
                Namespace::Cgroup,
                Namespace::Pid,
            ],
        )?,
        None => namespaces::chroot_into(root)?,
    }
    restrict_capabilities(profile.kept())
        .map_err(|e| crate::Error::kernel("drop capabilities", e))?;
    set_no_new_privs().map_err(|e| crate::Error::kernel("set no_new_privs", e))
}

#[cfg(test)]
mod tests {
    use super::parent_of;

    #[test]
    fn parents() {
        let mut buffer = [0u8; 4096];
        for (path, parent) in [
            (c"/.rpmdb", c"/"),
            (c"/var/lib/dpkg", c"/var/lib"),
            (c"/var/lib/dpkg/", c"/var/lib"),
            (c"/", c"/"),
            (c"rel", c"."),
        ] {
            assert_eq!(parent_of(path, &mut buffer), Some(parent), "{path:?}");
        }
    }
}
