//! The write boundary: a Landlock domain that lets a process tree write only beneath a few
//! directories, whatever else it manages to do.
//!
//! Mounts, the read-only host and dropped capabilities each hold a package operation in, but each
//! can be undone by one mistake: a chroot escape, a capability that survived, a symlink that a
//! host program follows into a writable place. Landlock ([landlock(7)]) is enforced by the kernel
//! on every path access of every process in the domain, after every symlink, mount and chroot,
//! with any capability: a file outside the allowed directories cannot be created, written,
//! truncated, renamed, linked or removed. Domains only ever narrow: a process may add its own
//! tighter domain (the dpkg entry point does), never loosen the one it inherited.
//!
//! A Landlock domain also forbids every mount operation (`mount`, `umount`, `move_mount`,
//! `pivot_root`) to its processes: nothing in a package operation may change its mounts, so the
//! rpm plugin hides the database from scriptlets by entering a prepared mount namespace instead
//! of unmounting it (see `guest_context`).
//!
//! What is handled: every write right of Landlock ABI 3 (create, remove, write, truncate of files
//! of every kind; `REFER` for renames and links across directories). `IOCTL_DEV` (ABI 5) is left
//! alone: it is about devices opened for ioctls, and the sandbox's `/dev` holds no disks. Where
//! the kernel offers it (ABI 6), the domain also may not connect to abstract unix sockets outside
//! itself (a host daemon's, say): the operation has no business with them.
//!
//! Fail closed: a kernel without Landlock ABI 3 makes [`restrict_writes_beneath`] fail, and the
//! sandbox refuses to run the program, unless the administrator opted out with
//! [`OPT_OUT_VAR`] (then every operation says so).
//!
//! [landlock(7)]: https://man7.org/linux/man-pages/man7/landlock.7.html

use std::io;
use std::path::{Path, PathBuf};

use landlock::{
    ABI, AccessFs, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope,
};

/// Set to `1` by an administrator who accepts package operations without a write boundary on a
/// kernel that lacks Landlock (before Linux 6.2, or booted without `lsm=…,landlock`).
pub const OPT_OUT_VAR: &str = "VSERVER_ALLOW_NO_LANDLOCK";

/// The oldest Landlock ABI that gives a complete write boundary (ABI 3 added truncation).
const REQUIRED_ABI: ABI = ABI::V3;

/// Whether the administrator opted out of the write boundary ([`OPT_OUT_VAR`] is `1`).
pub(crate) fn opted_out() -> bool {
    std::env::var_os(OPT_OUT_VAR).is_some_and(|v| v == "1")
}

/// Whether this kernel can enforce a write boundary.
pub fn write_boundary_available() -> bool {
    matches!(probe_abi(), Ok(abi) if abi >= REQUIRED_ABI as i32)
}

/// The kernel's Landlock ABI version (`landlock_create_ruleset(NULL, 0, VERSION)`).
fn probe_abi() -> io::Result<i32> {
    crate::sys::landlock_abi_version()
}

/// Restricts the calling thread, and everything it starts from now on, to writing beneath
/// `dirs` (as this process sees them). Needs `no_new_privs` (or `CAP_SYS_ADMIN`). Fails when
/// the kernel cannot enforce all of it.
pub(crate) fn restrict_writes_beneath(dirs: &[PathBuf]) -> io::Result<()> {
    let writes = AccessFs::from_write(REQUIRED_ABI);
    let ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(writes)
        .map_err(landlock_err)?
        // Abstract unix sockets exist only from ABI 6; without them the boundary is still whole.
        .set_compatibility(CompatLevel::BestEffort)
        .scope(Scope::AbstractUnixSocket)
        .map_err(landlock_err)?
        .set_compatibility(CompatLevel::HardRequirement);
    let mut created = ruleset.create().map_err(landlock_err)?;
    for dir in dirs {
        let fd = PathFd::new(dir).map_err(|e| {
            io::Error::new(io::ErrorKind::NotFound, format!("{}: {e}", dir.display()))
        })?;
        created = created
            .add_rule(PathBeneath::new(fd, writes))
            .map_err(|e| io::Error::other(format!("{}: {e}", dir.display())))?;
    }
    let status = created.restrict_self().map_err(landlock_err)?;
    // The write rights are hard requirements (their absence fails above); "partially" can only
    // mean that the optional socket scope is missing.
    if status.ruleset == RulesetStatus::NotEnforced {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the kernel does not enforce Landlock",
        ));
    }
    Ok(())
}

fn landlock_err(error: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, format!("Landlock: {error}"))
}

/// The directories a sandboxed program may write beneath, besides the ones its command names:
/// its own minimal `/dev` (`/dev/null`, terminals).
pub(crate) fn always_writable() -> [&'static Path; 1] {
    [Path::new("/dev")]
}
