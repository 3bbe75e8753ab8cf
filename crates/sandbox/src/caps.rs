//! Capabilities: what a sandboxed program, and a script from the guest, may keep.
//!
//! Inside the sandbox the program is root of a user namespace, so its capabilities only act on
//! objects that namespace owns (its mount namespace, files whose owners are mapped). Loading
//! modules, raw I/O, creating device nodes, rebooting, setting the clock and administering the
//! host's network need capabilities in the *initial* user namespace and fail whatever we keep;
//! we drop them anyway, from the bounding set too, so nothing can regain them through exec.
//!
//! The functions here do not allocate: the rpm plugin calls them in a forked child of a
//! multi-threaded rpm, where only async-signal-safe work is allowed.

use std::io;

use rustix::thread::{CapabilitySet, CapabilitySets};

/// Which capabilities to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum CapabilityProfile {
    /// For ordinary programs and the package manager's scripts: file ownership and permission
    /// overrides, `setuid`/`setgid`, `kill` — what installing files as root needs — and nothing
    /// that changes mounts, namespaces or the root directory.
    #[default]
    Confined,
    /// For a package manager whose script hook must still leave the database behind: `Confined`
    /// plus `CAP_SYS_ADMIN` (acting only on the sandbox's own, locked mount namespace),
    /// `CAP_SYS_CHROOT` (rpm chroots into the guest for scripts) and `CAP_SETPCAP` (so the hook can
    /// drop capabilities). The hook calls [`crate::confine_scriptlet`], which drops to `Confined`.
    PackageManager,
    /// For apt and dpkg: `Confined` plus `CAP_SYS_CHROOT` (dpkg chroots into the guest to run
    /// maintainer scripts) and `CAP_SETPCAP` (so that the exec hook can drop capabilities before
    /// a script runs). No `CAP_SYS_ADMIN`: nothing in a Debian operation may change mounts, so
    /// the `noexec` database mount that keeps unconfined scripts from running stays as it is.
    ChrootingTool,
    /// For a guest's service manager (systemd as pid 1): `Confined` plus `CAP_SETPCAP` (to drop
    /// capabilities from the bounding set of the services it starts) and `CAP_SYS_CHROOT` (sshd's
    /// privilege separation and `RootDirectory=` chroot inside the guest's own mount namespace,
    /// whose root is the guest root). Nothing that changes mounts.
    ServiceManager,
}

impl CapabilityProfile {
    /// The capabilities this profile keeps.
    pub fn kept(self) -> CapabilitySet {
        let confined = CapabilitySet::CHOWN
            | CapabilitySet::DAC_OVERRIDE
            | CapabilitySet::DAC_READ_SEARCH
            | CapabilitySet::FOWNER
            | CapabilitySet::FSETID
            | CapabilitySet::KILL
            | CapabilitySet::SETGID
            | CapabilitySet::SETUID
            | CapabilitySet::NET_BIND_SERVICE
            | CapabilitySet::SETFCAP
            | CapabilitySet::AUDIT_WRITE
            | CapabilitySet::IPC_OWNER;
        match self {
            CapabilityProfile::Confined => confined,
            CapabilityProfile::PackageManager => {
                confined
                    | CapabilitySet::SYS_ADMIN
                    | CapabilitySet::SYS_CHROOT
                    | CapabilitySet::SETPCAP
            }
            CapabilityProfile::ChrootingTool | CapabilityProfile::ServiceManager => {
                confined | CapabilitySet::SYS_CHROOT | CapabilitySet::SETPCAP
            }
        }
    }
}

/// Reduces the calling thread's capabilities to `keep`: bounding set, ambient set, then
/// effective/permitted (intersected with what it has) and an empty inheritable set.
/// Allocation-free.
pub fn restrict_capabilities(keep: CapabilitySet) -> io::Result<()> {
    lower_bounding_set(keep)?;
    let current = rustix::thread::capabilities(None)?;
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: current.effective & keep,
            permitted: current.permitted & keep,
            inheritable: CapabilitySet::empty(),
        },
    )?;
    Ok(())
}

/// Removes every capability but `keep` from the bounding set, which limits what any later
/// `execve` can grant, and clears the ambient set. The current sets are left alone.
/// Allocation-free.
pub(crate) fn lower_bounding_set(keep: CapabilitySet) -> io::Result<()> {
    for cap in 0..64u32 {
        if keep.bits() & (1u64 << cap) != 0 {
            continue;
        }
        match crate::sys::capbset_read(cap) {
            Ok(false) => continue,
            Ok(true) => crate::sys::capbset_drop(cap)?,
            // Beyond the kernel's last capability.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
            Err(e) => return Err(e),
        }
    }
    crate::sys::clear_ambient_capabilities()
}

/// Sets `no_new_privs`: from now on no exec can gain privileges (setuid bits, file capabilities).
pub fn set_no_new_privs() -> io::Result<()> {
    rustix::thread::set_no_new_privs(true).map_err(Into::into)
}
