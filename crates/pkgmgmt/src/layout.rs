//! The guest's external package state, `/vservers/.pkg/G/`, laid out as util-vserver did: one
//! directory per program (`rpm`, `yum`, `apt`, `dpkg`), then per purpose (`etc`, `state`,
//! `cache`).
//!
//! ```text
//! trusted: written by the host only, read-only in every sandbox
//! .pkg/G/rpm/etc/macros          generated rpm macros (%_dbpath, %_netsharedpath, the distribution's)
//! .pkg/G/rpm/home/.rpmmacros     per-operation HOME for rpm and dnf: the macros plus the plugin lines
//! .pkg/G/rpm/plugins/vserver.so  a copy of the plugin, found by rpm's plugin discovery and loaded
//! .pkg/G/yum/etc/                dnf.conf, vars/ and yum.repos.d/ (copies of the distribution's)
//! .pkg/G/apt/etc/                apt.conf (generated), sources.list, trusted.gpg.d/, apt.conf.d/…
//! .pkg/G/apt/hook/vserver.so     the exec hook preloaded into apt and dpkg
//! .pkg/G/lock, .pkg/G/internal   the operation lock; the internal-mode record
//! .pkg/G/log/                    operation logs of failed tool runs (module `oplog`), in no sandbox
//!
//! hostile: written inside a sandbox, by the tools and whatever runs under them
//! .pkg/G/rpm/state/              the rpm database, bind-mounted at the guest's /.rpmdb per operation
//! .pkg/G/yum/cache, yum/lib, yum/log   dnf's cachedir, persistdir (history) and logs
//! .pkg/G/dpkg/state/             the dpkg database, bind-mounted at the guest's /var/lib/dpkg
//! .pkg/G/dpkg/log/               dpkg's log
//! .pkg/G/apt/state, apt/cache, apt/log  apt's lists, downloaded packages and logs
//! ```
//!
//! Everything a sandboxed process can write is hostile input forever: a package script (or a
//! program it replaced in the guest) may have planted symlinks, FIFOs or huge files in any of the
//! hostile directories. So host code outside a sandbox reaches `.pkg/G` only through
//! [`PkgLayout::open_state`] (the safe-path layer: resolved beneath `.pkg/G`, no symlink leaving
//! it, none followed at the final name), never loads code or configuration from a hostile
//! directory, and keeps what it writes and later trusts in the trusted ones. Inside a sandbox
//! the state is shown at neutral paths, `/run/vserver-op/REL` for `.pkg/G/REL`
//! ([`PkgLayout::in_sandbox`]); `.pkg/G` itself is hidden there.

use std::path::{Path, PathBuf};

use vserver_sandbox::{Access, FileKind, GuestRoot, SandboxCommand};

use crate::error::{Error, Result};
use crate::host_fs;

/// `rpm/etc`: the generated macros (trusted).
pub(crate) const RPM_ETC: &str = "rpm/etc";
/// `rpm/state`: the rpm database (hostile).
pub(crate) const RPM_STATE: &str = "rpm/state";
/// `rpm/home`: rpm's and dnf's `HOME` (trusted).
pub(crate) const RPM_HOME: &str = "rpm/home";
/// `rpm/plugins`: rpm's `%__plugindir` (trusted).
pub(crate) const RPM_PLUGINS: &str = "rpm/plugins";
/// `yum/etc`: dnf's configuration (trusted).
pub(crate) const YUM_ETC: &str = "yum/etc";
/// `yum/cache`: dnf's cachedir (hostile).
pub(crate) const YUM_CACHE: &str = "yum/cache";
/// `yum/lib`: dnf's persistdir, its history database (hostile).
pub(crate) const YUM_LIB: &str = "yum/lib";
/// `yum/log`: dnf's logs (hostile).
pub(crate) const YUM_LOG: &str = "yum/log";
/// `apt/etc`: apt's configuration (trusted).
pub(crate) const APT_ETC: &str = "apt/etc";
/// `apt/hook`: the exec hook library (trusted).
pub(crate) const APT_HOOK: &str = "apt/hook";
/// `apt/state`: apt's lists (hostile).
pub(crate) const APT_STATE: &str = "apt/state";
/// `apt/cache`: downloaded packages and apt's caches (hostile).
pub(crate) const APT_CACHE: &str = "apt/cache";
/// `apt/log`: apt's logs (hostile).
pub(crate) const APT_LOG: &str = "apt/log";
/// `dpkg/state`: the dpkg database (hostile).
pub(crate) const DPKG_STATE: &str = "dpkg/state";
/// `dpkg/log`: dpkg's log (hostile).
pub(crate) const DPKG_LOG: &str = "dpkg/log";

/// Paths of one guest's external package state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkgLayout {
    guest: String,
    dir: PathBuf,
}

impl PkgLayout {
    /// `dpkg/state`, relative to `.pkg/G`: the dpkg admin directory (hostile: dpkg and the
    /// maintainer scripts write it in a sandbox; read it through [`PkgLayout::open_state`]).
    pub const DPKG_STATE_DIR: &'static str = DPKG_STATE;

    /// The layout of `guest` under the package-state root `pkgdir` (`/vservers/.pkg`).
    pub fn new(pkgdir: &Path, guest: &str) -> Self {
        PkgLayout {
            guest: guest.to_owned(),
            dir: pkgdir.join(guest),
        }
    }

    /// The guest's name.
    pub fn guest(&self) -> &str {
        &self.guest
    }

    /// `.pkg/G`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `.pkg/G/REL` on the host (for messages, the sandbox's mounts, and host tools that only
    /// take paths; host code opens it through [`PkgLayout::open_state`]).
    pub fn host(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Where a sandbox set up by [`PkgLayout::show_in`] shows `.pkg/G/REL`.
    pub fn in_sandbox(rel: &str) -> PathBuf {
        vserver_sandbox::operation_path(rel)
    }

    /// Shows `.pkg/G/REL` for each `(REL, access)` at [`PkgLayout::in_sandbox`]`(REL)`, and hides
    /// `.pkg/G` itself (the mounts' sources are resolved beneath it without symlinks).
    pub(crate) fn show_in(&self, command: &mut SandboxCommand, dirs: &[(&str, Access)]) {
        command.package_state(&self.dir);
        for (rel, access) in dirs {
            command.state(self.host(rel), *rel, *access);
        }
    }

    /// `.pkg/G/rpm/state`: the rpm database.
    pub fn rpm_state(&self) -> PathBuf {
        self.host(RPM_STATE)
    }

    /// `.pkg/G/lock`.
    pub fn lock_file(&self) -> PathBuf {
        self.dir.join("lock")
    }

    /// Opens `.pkg/G` as an untrusted tree: every path below it is resolved beneath it, and no
    /// symlink is followed out of it or at the final name ([`GuestRoot`]).
    pub fn open_state(&self) -> Result<GuestRoot> {
        GuestRoot::open(&self.dir).map_err(|source| self.state_err(source))
    }

    pub(crate) fn state_err(&self, source: vserver_sandbox::Error) -> Error {
        Error::State {
            guest: self.guest.clone(),
            source: Box::new(source),
        }
    }

    /// Creates `.pkg/G` (mode 0700: the guest's database is nobody's business but root's) and
    /// makes each of `dirs` a plain directory: a symlink or other file where one of them (or a
    /// directory on the way) belongs is removed first. Such a thing can only have been planted
    /// (before vserver 0.2 some of these directories were writable to package scripts) and must
    /// redirect neither the host's writes nor the sandbox's mounts.
    pub fn ensure_dirs(&self, dirs: &[&str]) -> Result<GuestRoot> {
        host_fs::create_dir_all(&self.dir).map_err(|e| self.host_err("create", &self.dir, e))?;
        host_fs::set_mode(&self.dir, 0o700)
            .map_err(|e| self.host_err("set permissions of", &self.dir, e))?;
        let state = self.open_state()?;
        for rel in dirs {
            let mut so_far = PathBuf::new();
            for component in Path::new(rel).components() {
                so_far.push(component);
                match state.symlink_metadata(&so_far) {
                    Ok(info) if info.kind == FileKind::Dir => continue,
                    Ok(_) => state
                        .remove_file(&so_far)
                        .map_err(|source| self.state_err(source))?,
                    Err(_) => {}
                }
                state
                    .mkdir(&so_far, 0o755)
                    .map_err(|source| self.state_err(source))?;
            }
        }
        Ok(state)
    }

    /// Removes everything below the trusted directories `dirs` that is neither a regular file nor
    /// a directory: the host writes nothing else there, so a symlink, FIFO or device node in one
    /// of them was planted (before vserver 0.2 some were writable to package scripts), and the
    /// tools in the sandbox, which follow symlinks, must not read configuration through it.
    pub(crate) fn remove_planted(&self, state: &GuestRoot, dirs: &[&str]) -> Result<()> {
        let mut pending: Vec<PathBuf> = dirs.iter().map(PathBuf::from).collect();
        while let Some(dir) = pending.pop() {
            let entries = match state.read_dir(&dir) {
                Ok(entries) => entries,
                Err(vserver_sandbox::Error::Guest { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    continue;
                }
                Err(source) => return Err(self.state_err(source)),
            };
            for entry in entries {
                let path = dir.join(&entry.name);
                match entry.kind {
                    FileKind::Dir => pending.push(path),
                    FileKind::File => {}
                    _ => state
                        .remove_file(&path)
                        .map_err(|source| self.state_err(source))?,
                }
            }
        }
        Ok(())
    }

    /// Writes a trusted file below `.pkg/G` atomically (a symlink at its name is replaced, not
    /// followed).
    pub(crate) fn write_trusted(
        &self,
        state: &GuestRoot,
        rel: impl AsRef<Path>,
        content: &[u8],
    ) -> Result<()> {
        state
            .write_atomic(rel, content, 0o644)
            .map_err(|source| self.state_err(source))
    }

    /// Takes `.pkg/G/lock`, which serialises the package operations on one guest; a second
    /// operation fails at once with [`Error::Busy`].
    pub(crate) fn lock(&self) -> Result<PkgLock> {
        let path = self.lock_file();
        let file = host_fs::open_lock_file(&path).map_err(|e| self.host_err("open", &path, e))?;
        // Retried for a moment: a child that another thread of the previous holder is forking
        // keeps a copy of the descriptor (and so the lock) until it execs.
        let mut attempts = 0;
        while rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .is_err()
        {
            attempts += 1;
            if attempts > 20 {
                return Err(Error::Busy {
                    guest: self.guest.clone(),
                    path: path.clone(),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Ok(PkgLock(file))
    }

    /// `.pkg/G/internal`: present exactly while package management is internal.
    pub fn internal_record(&self) -> PathBuf {
        self.dir.join("internal")
    }

    /// Holds the guest's package lock while its state is copied (a clone): no package
    /// operation of ours changes the database meanwhile.
    pub fn lock_for_copy(&self) -> Result<PkgLock> {
        self.lock()
    }

    /// Takes the lock for an operation on the external database: refused while package
    /// management is internal. Checked under the lock, so an operation that loaded the guest's
    /// configuration just before an internalize finished cannot act on the archived database.
    pub(crate) fn lock_external(&self) -> Result<PkgLock> {
        let lock = self.lock()?;
        let record = self.internal_record();
        if host_fs::exists_no_follow(&record) {
            return Err(Error::Internal {
                guest: self.guest.clone(),
                record,
            });
        }
        Ok(lock)
    }

    /// Flushes the file system that holds `.pkg/G` (one `syncfs`): after work that ran with
    /// fsync turned off, this and the guest root's file system are what must reach the disk.
    pub(crate) fn sync_state(&self) -> Result<()> {
        let dir = host_fs::open(&self.dir).map_err(|e| self.host_err("open", &self.dir, e))?;
        rustix::fs::syncfs(&dir).map_err(|e| self.host_err("sync", &self.dir, e.into()))
    }

    pub(crate) fn host_err(&self, op: &'static str, path: &Path, source: std::io::Error) -> Error {
        Error::Host {
            guest: self.guest.clone(),
            op,
            path: path.to_owned(),
            source,
        }
    }
}

/// A held `.pkg/G/lock`, released when dropped.
#[derive(Debug)]
pub struct PkgLock(#[allow(dead_code)] std::fs::File);

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    #[test]
    fn operations_on_the_external_database_are_refused_while_internal() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = PkgLayout::new(tmp.path(), "g");
        std::fs::create_dir_all(layout.dir()).unwrap();
        drop(layout.lock_external().unwrap());
        std::fs::write(layout.internal_record(), "").unwrap();
        assert!(matches!(
            layout.lock_external(),
            Err(Error::Internal { .. })
        ));
        // Internalize and externalize themselves still take the plain lock.
        assert!(layout.lock().is_ok());
    }

    #[test]
    fn a_second_operation_on_one_guest_is_refused_until_the_first_ends() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = PkgLayout::new(tmp.path(), "g");
        layout.ensure_dirs(&[]).unwrap();
        let held = layout.lock().unwrap();
        assert!(matches!(layout.lock(), Err(Error::Busy { .. })));
        drop(held);
        assert!(layout.lock().is_ok());
    }
}
