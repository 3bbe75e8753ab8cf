//! Linux namespaces: making a private mount namespace, joining a running guest's namespaces
//! through a pidfd, and changing root into a guest.
//!
//! - mount (`CLONE_NEWNS`): the sandbox's own mount table; made private first so nothing mounted
//!   in it propagates back to the host.
//! - user (`CLONE_NEWUSER`): created *after* the sandbox's mounts are set up, so every mount
//!   inherited from the setup is locked: read-only stays read-only and nothing can be unmounted to
//!   reveal what is below. Its identity map keeps file ownership as on the host.
//! - pid (`CLONE_NEWPID`): whatever the program starts lives in it and dies with its init.
//! - ipc, uts: private System V IPC and host name.
//! - net: joined from a running guest only (a host-side operation keeps the host's network,
//!   which the package manager needs to download).
//!
//! Creating a user namespace requires a single-threaded process; the functions that do it are only
//! called from the sandbox child (see `process`).

use std::os::fd::{AsFd, BorrowedFd};

use rustix::thread::{ThreadNameSpaceType, UnshareFlags};

use crate::error::{Error, Result};
use crate::safe_path::GuestRoot;

/// A kind of namespace a running guest can be joined in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Namespace {
    /// Mount namespace.
    Mount,
    /// Process ID namespace (takes effect for children of the caller).
    Pid,
    /// System V IPC namespace.
    Ipc,
    /// Host name namespace.
    Uts,
    /// Network namespace.
    Net,
    /// Control group namespace.
    Cgroup,
}

impl Namespace {
    fn flag(self) -> ThreadNameSpaceType {
        match self {
            Namespace::Mount => ThreadNameSpaceType::MOUNT,
            Namespace::Pid => ThreadNameSpaceType::PROCESS_ID,
            Namespace::Ipc => ThreadNameSpaceType::INTER_PROCESS_COMMUNICATION,
            Namespace::Uts => ThreadNameSpaceType::HOST_NAME_AND_NIS_DOMAIN_NAME,
            Namespace::Net => ThreadNameSpaceType::NETWORK,
            Namespace::Cgroup => ThreadNameSpaceType::CONTROL_GROUP,
        }
    }
}

/// `unshare(flags)` for namespace flags only.
pub(crate) fn unshare(flags: UnshareFlags, op: &'static str) -> Result<()> {
    debug_assert!(!flags.contains(UnshareFlags::FILES));
    // SAFETY: `unshare_unsafe` is unsafe only because of `CLONE_FILES`, which would make other
    // threads' descriptors invalid here; we never pass it (asserted above).
    unsafe { rustix::thread::unshare_unsafe(flags) }.map_err(|e| Error::kernel(op, e))
}

/// Moves the calling *thread* into a new, private mount namespace: `unshare(CLONE_NEWNS)` then
/// `MS_PRIVATE` on every mount. Safe in a multi-threaded process (only the calling thread moves);
/// the namespace goes away when the last thread or process in it ends.
pub fn enter_private_mount_namespace() -> Result<()> {
    unshare(UnshareFlags::NEWNS, "create a mount namespace")?;
    crate::mount::make_all_private()
}

/// Joins the namespaces of the process behind `pidfd` (from `pidfd_open`) in one atomic `setns`.
/// Needs the privileges of the namespaces' owner; joining a user namespace is not offered.
pub fn join_namespaces(pidfd: BorrowedFd<'_>, which: &[Namespace]) -> Result<()> {
    let flags = which
        .iter()
        .fold(ThreadNameSpaceType::empty(), |acc, ns| acc | ns.flag());
    rustix::thread::move_into_thread_name_spaces(pidfd, flags)
        .map_err(|e| Error::kernel("join the namespaces of a running guest", e))
}

/// Opens a pidfd for `pid` (it stays valid and refers to that process even if the number is
/// reused after it exits).
pub fn open_pidfd(pid: u32) -> Result<std::os::fd::OwnedFd> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| {
            Error::kernel(
                "open a pidfd",
                std::io::Error::from_raw_os_error(libc::ESRCH),
            )
        })?;
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .map_err(|e| Error::kernel("open a pidfd", e))
}

/// Changes the caller's root directory to the guest root (`fchdir` + `chroot(".")`), and its
/// working directory to the new `/`. Needs `CAP_SYS_CHROOT`.
pub fn chroot_into(root: &GuestRoot) -> Result<()> {
    rustix::process::fchdir(root.as_fd())
        .map_err(|e| Error::host("change directory to", root.host_path(), e))?;
    rustix::process::chroot(".").map_err(|e| Error::host("change root to", root.host_path(), e))?;
    rustix::process::chdir("/").map_err(|e| Error::host("change directory in", root.host_path(), e))
}
