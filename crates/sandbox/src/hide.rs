//! What the per-operation sandbox hides from the program it runs: host secrets and other guests.
//!
//! The sandbox shows the program the whole host read-only. That is enough to stop writes, but a
//! dpkg maintainer script keeps `CAP_SYS_CHROOT` (dpkg needs it to chroot for the scripts; there
//! is no per-script hook to drop it, unlike rpm's) and can leave dpkg's chroot; and the guest
//! decides what the scripts run (its `/bin/sh`, its interpreters). Without this, a hostile guest
//! would read the host's password hashes, keys and its neighbours' files during its next package
//! operation and copy them into its own root.
//!
//! So, before the user namespace locks the mounts: the host's secret files are covered by
//! `/dev/null`, secret directories by an empty read-only tmpfs, and so is every sibling of the
//! given paths (the other guests next to `/vservers/G`, their states next to `/vservers/.pkg/G`).
//! A path that the operation needs — one lying at or below it, or it below one — stays visible.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::mount::{self, FileSystem};

/// Host files and directories that no package operation needs and no guest may read.
pub(crate) const HOST_SECRETS: &[&str] = &[
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/security/opasswd",
    "/etc/ssh",
    "/etc/ssl/private",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/root",
    "/home",
];

/// Hides [`HOST_SECRETS`] and the siblings of each of `siblings_of`, except what `needed` holds.
pub(crate) fn hide_from_sandbox(siblings_of: &[PathBuf], needed: &[PathBuf]) -> Result<()> {
    for secret in HOST_SECRETS {
        hide(Path::new(secret), needed)?;
    }
    for path in siblings_of {
        let Some(parent) = path.parent() else {
            continue;
        };
        let entries = match std::fs::read_dir(parent) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::host("list the neighbours of", parent, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::host("list the neighbours of", parent, e))?;
            let sibling = entry.path();
            if sibling != *path {
                hide(&sibling, needed)?;
            }
        }
    }
    Ok(())
}

/// Hides each of `paths` as a secret is hidden, except what `needed` holds.
pub(crate) fn hide_paths(paths: &[PathBuf], needed: &[PathBuf]) -> Result<()> {
    for path in paths {
        hide(path, needed)?;
    }
    Ok(())
}

/// Covers one directory (empty read-only tmpfs) or regular file (`/dev/null`); symlinks, other
/// kinds and paths the operation needs are left alone.
fn hide(path: &Path, needed: &[PathBuf]) -> Result<()> {
    let Ok(info) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if needed
        .iter()
        .any(|n| n.starts_with(path) || path.starts_with(n))
    {
        return Ok(());
    }
    if info.is_dir() {
        mount::mount_at(
            &FileSystem::Tmpfs {
                mode: 0o700,
                size: Some(4096),
            },
            path,
        )?;
        mount::make_read_only_recursive(path)
    } else if info.is_file() {
        let null = mount::clone_tree(Path::new("/dev/null"))?;
        let target = rustix::fs::open(
            path,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| Error::host("open to hide", path, e))?;
        mount::attach(&null, target.as_fd(), path)
    } else {
        Ok(())
    }
}
