//! Guest operations that change more than one thing (build, `build --force`, delete, a
//! package-management move) as transactions that survive being killed.
//!
//! Each holds the guest's operation lock (`PKGDIR/.journal/G.lock`, `flock`: the kernel drops it
//! with the last descriptor, so a killed operation never leaves it held) and keeps a journal,
//! `PKGDIR/.journal/G.toml`, written *before* each change it names (temporary file, `fsync`,
//! rename): the paths a build is about to create, the entries `build --force` is about to move
//! aside, the paths a delete is about to remove. The next command that touches the guest
//! ([`recover`], run by the command line before anything else, `--list` included) takes the lock
//! and finishes or undoes what the journal describes, then removes it. The journal lives outside
//! every guest root and every `.pkg/G` (`.journal` cannot be a guest name), so neither a guest
//! nor a sandbox can read or forge it.
//!
//! | killed                 | the next command                                             |
//! |------------------------|--------------------------------------------------------------|
//! | build                  | removes what the build made; puts a guest it replaced back    |
//! | build after its commit | removes the replaced guest it had set aside                   |
//! | failed build, `--keep` | nothing: the guest is listed `incomplete`; the next build or delete of that name undoes it |
//! | delete                 | finishes the delete                                           |
//! | `pkgmgmt`              | finishes or undoes the move (`vserver_pkgmgmt::mode::recover`)|
//!
//! A guest set aside by `build --force` goes to a hidden name (`.G.vserver-replaced`) in the
//! same directory: never listed, never a valid guest name, so no command can act on it by name.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vserver_sandbox::GuestRoot;

use crate::error::{Error, Result};
use crate::roots::HostRoots;

/// What a transaction does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// `build`, with or without `--force`.
    Build,
    /// `delete`.
    Delete,
    /// `pkgmgmt internalize|externalize` (its own log in `.pkg/G` says what to undo).
    Pkgmgmt,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Build => "build",
            Operation::Delete => "delete",
            Operation::Pkgmgmt => "pkgmgmt",
        }
    }
}

/// An entry moved aside, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Moved {
    path: PathBuf,
    aside: PathBuf,
}

/// The journal's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Journal {
    operation: Operation,
    guest: String,
    pid: u32,
    /// The guest's package state directory (`PKGDIR/G`).
    #[serde(default)]
    state_dir: PathBuf,
    /// The phase it was in (build).
    #[serde(default)]
    phase: String,
    /// Paths it is about to create or has created, in order (build).
    #[serde(default)]
    created: Vec<PathBuf>,
    /// Entries of a replaced guest set aside (build `--force`).
    #[serde(default)]
    moved: Vec<Moved>,
    /// Paths it is about to remove (delete).
    #[serde(default)]
    remove: Vec<PathBuf>,
    /// The build is complete: only removing what was set aside is left.
    #[serde(default)]
    committed: bool,
    /// The build failed and was kept (`--keep`): the guest is incomplete.
    #[serde(default)]
    kept: bool,
}

/// A running transaction; dropping it without [`Transaction::commit`], [`Transaction::undo`]
/// or [`Transaction::keep`] leaves the journal for the next command, as a kill would.
#[derive(Debug)]
pub(crate) struct Transaction {
    dir: PathBuf,
    journal: Journal,
    _lock: std::fs::File,
}

fn journal_dir(roots: &HostRoots) -> PathBuf {
    roots.pkgdir.join(".journal")
}

fn journal_path(dir: &Path, guest: &str) -> PathBuf {
    dir.join(format!("{guest}.toml"))
}

/// Takes guest `guest`'s operation lock without waiting; `None` when another process holds it.
fn try_lock(dir: &Path, guest: &str) -> Result<Option<std::fs::File>> {
    fs_err::create_dir_all(dir).map_err(Error::io("create", dir))?;
    let path = dir.join(format!("{guest}.lock"));
    let file = fs_err::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(Error::io("open", &path))?
        .into_parts()
        .0;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(file)),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(errno) => Err(Error::io("lock", &path)(errno.into())),
    }
}

fn read_journal(dir: &Path, guest: &str) -> Result<Option<Journal>> {
    let path = journal_path(dir, guest);
    let text = match fs_err::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", &path)(e)),
    };
    toml::from_str(&text)
        .map(Some)
        .map_err(|source| Error::Parse { path, source })
}

/// The hidden name an entry of a replaced guest is set aside under, in the same directory.
fn aside_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.vserver-replaced"))
}

/// Removes the host tree `path` (a guest's root, configuration or package state) without
/// following any symlink below its parent, which is one of the trusted host roots.
pub(crate) fn remove_host_tree(path: &Path) -> Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(());
    };
    if std::fs::symlink_metadata(parent).is_err() {
        return Ok(());
    }
    GuestRoot::open(parent)
        .and_then(|dir| dir.remove_all_if_exists(Path::new(name)))
        .map_err(|source| Error::Guest {
            guest: name.to_string_lossy().into_owned(),
            source,
        })
}

fn exists_no_follow(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

impl Transaction {
    /// Starts `operation` on `guest`. Refuses when another operation holds the guest, and
    /// when an earlier one left a journal that [`recover`] has not dealt with.
    pub(crate) fn begin(roots: &HostRoots, guest: &str, operation: Operation) -> Result<Self> {
        let dir = journal_dir(roots);
        let Some(lock) = try_lock(&dir, guest)? else {
            return Err(busy(&dir, guest));
        };
        if let Some(left) = read_journal(&dir, guest)? {
            return Err(Error::BadRequest {
                guest: guest.to_owned(),
                problem: format!(
                    "an interrupted {} is not recovered yet (`{}`)",
                    left.operation.as_str(),
                    journal_path(&dir, guest).display()
                ),
            });
        }
        let transaction = Transaction {
            dir,
            journal: Journal {
                operation,
                guest: guest.to_owned(),
                pid: std::process::id(),
                state_dir: roots.pkgdir.join(guest),
                phase: String::new(),
                created: Vec::new(),
                moved: Vec::new(),
                remove: Vec::new(),
                committed: false,
                kept: false,
            },
            _lock: lock,
        };
        transaction.save()?;
        Ok(transaction)
    }

    fn path(&self) -> PathBuf {
        journal_path(&self.dir, &self.journal.guest)
    }

    /// Writes the journal: temporary file, `fsync`, rename, `fsync` of the directory.
    fn save(&self) -> Result<()> {
        let path = self.path();
        let temp = self.dir.join(format!(".{}.toml.new", self.journal.guest));
        let text = toml::to_string(&self.journal).map_err(|e| Error::BadRequest {
            guest: self.journal.guest.clone(),
            problem: format!("cannot serialise the journal: {e}"),
        })?;
        let mut file = fs_err::File::create(&temp).map_err(Error::io("write", &temp))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(Error::io("write", &temp))?;
        fs_err::rename(&temp, &path).map_err(Error::io("rename into", &path))?;
        sync_dir(&self.dir)?;
        vserver_pkgmgmt::checkpoint();
        Ok(())
    }

    /// Records the phase a build is in (shown by `--list` while it runs).
    pub(crate) fn set_phase(&mut self, phase: &str) -> Result<()> {
        self.journal.phase = phase.to_owned();
        self.save()
    }

    /// Records that `path` is about to be created; call before creating it.
    pub(crate) fn will_create(&mut self, path: &Path) -> Result<()> {
        self.journal.created.push(path.to_owned());
        self.save()
    }

    /// Records that `paths` are about to be removed; call before removing any.
    pub(crate) fn will_remove(&mut self, paths: &[PathBuf]) -> Result<()> {
        self.journal.remove.extend(paths.iter().cloned());
        self.save()
    }

    /// Moves `path` (an entry of the guest being replaced) aside to a hidden name.
    pub(crate) fn move_aside(&mut self, path: &Path) -> Result<()> {
        let aside = aside_name(path);
        remove_host_tree(&aside)?;
        self.journal.moved.push(Moved {
            path: path.to_owned(),
            aside: aside.clone(),
        });
        self.save()?;
        fs_err::rename(path, &aside).map_err(Error::io("move aside", path))?;
        vserver_pkgmgmt::checkpoint();
        Ok(())
    }

    /// Whether this transaction set a replaced guest aside.
    pub(crate) fn replaces(&self) -> bool {
        !self.journal.moved.is_empty()
    }

    /// The build is complete: from here on it is finished, never undone. Removes what was set
    /// aside, then the journal; returns what could not be removed.
    pub(crate) fn commit(mut self) -> Result<Vec<String>> {
        self.journal.committed = true;
        self.save()?;
        let left = finish_commit(&self.journal);
        remove_journal(&self.dir, &self.journal.guest)?;
        Ok(left)
    }

    /// Undoes the transaction (a failed build): removes what it created, newest first, and
    /// puts what it set aside back. The build's operation logs, which its error names, stay
    /// (in the guest put back, or alone in `.pkg/G/log`). Returns what could not be removed.
    pub(crate) fn undo(self) -> Result<Vec<String>> {
        let left = undo_build(&self.journal, true)?;
        remove_journal(&self.dir, &self.journal.guest)?;
        Ok(left)
    }

    /// A failed build kept for inspection (`--keep`): the journal stays, marking the guest
    /// incomplete until a build or delete of that name undoes it.
    pub(crate) fn keep(mut self) -> Result<()> {
        self.journal.kept = true;
        self.save()
    }

    /// The operation is over (a delete, a package-management move): the journal goes.
    pub(crate) fn finish(self) -> Result<()> {
        remove_journal(&self.dir, &self.journal.guest)
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs_err::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("sync", dir))
}

fn remove_journal(dir: &Path, guest: &str) -> Result<()> {
    let path = journal_path(dir, guest);
    match fs_err::remove_file(&path) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", &path)(e)),
    }
}

fn busy(dir: &Path, guest: &str) -> Error {
    let journal = read_journal(dir, guest).ok().flatten();
    Error::Busy {
        guest: guest.to_owned(),
        operation: journal
            .as_ref()
            .map_or("guest operation", |j| j.operation.as_str())
            .to_owned(),
        pid: journal.map_or(0, |j| j.pid),
    }
}

/// Removes what a committed build set aside; returns what could not be removed.
fn finish_commit(journal: &Journal) -> Vec<String> {
    let mut left = Vec::new();
    for moved in &journal.moved {
        if let Err(e) = remove_host_tree(&moved.aside) {
            left.push(format!("{} ({e})", moved.aside.display()));
        }
        vserver_pkgmgmt::checkpoint();
    }
    left
}

/// Removes what a build created, newest first, then puts back what it set aside. With
/// `keep_logs`, the operation logs of its package state stay (a failed build's error names
/// them); a recovery after a kill removes everything (no error named them).
fn undo_build(journal: &Journal, keep_logs: bool) -> Result<Vec<String>> {
    let mut left = Vec::new();
    let is_state = |path: &Path| path == journal.state_dir;
    for path in journal.created.iter().rev() {
        let removed = if keep_logs && is_state(path) {
            vserver_pkgmgmt::remove_all_but_logs(path).map_err(|e| e.to_string())
        } else {
            remove_host_tree(path).map_err(|e| e.to_string())
        };
        if let Err(e) = removed {
            left.push(format!("{} ({e})", path.display()));
        }
        vserver_pkgmgmt::checkpoint();
    }
    if !left.is_empty() {
        // The replaced guest cannot come back over remains: the journal stays for a retry.
        return Err(Error::BadRequest {
            guest: journal.guest.clone(),
            problem: format!("cannot remove the failed build: {}", left.join(", ")),
        });
    }
    for moved in journal.moved.iter().rev() {
        if exists_no_follow(&moved.aside) {
            if keep_logs && is_state(&moved.path) {
                // The failed build's logs join the guest put back.
                let _ = vserver_pkgmgmt::move_logs(&moved.path, &moved.aside);
            }
            remove_host_tree(&moved.path)?;
            fs_err::rename(&moved.aside, &moved.path).map_err(Error::io("restore", &moved.path))?;
        }
    }
    Ok(left)
}

/// What the state of a guest's journal means for `--list` and `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pending {
    /// Another process is running this operation right now.
    Running {
        /// The operation.
        operation: String,
        /// Its pid.
        pid: u32,
        /// Its phase.
        phase: String,
    },
    /// A failed build kept with `--keep`.
    Incomplete {
        /// The phase it failed in.
        phase: String,
    },
    /// An operation whose process is gone, not recovered yet ([`recover_journal`] does).
    Interrupted {
        /// The operation.
        operation: String,
    },
}

/// Whether an operation is pending on guest `guest` (after [`recover`], only a running one or
/// a kept build can be).
pub(crate) fn pending(roots: &HostRoots, guest: &str) -> Result<Option<Pending>> {
    let dir = journal_dir(roots);
    let Some(journal) = read_journal(&dir, guest)? else {
        return Ok(None);
    };
    if journal.kept {
        return Ok(Some(Pending::Incomplete {
            phase: journal.phase,
        }));
    }
    let operation = journal.operation.as_str().to_owned();
    if try_lock(&dir, guest)?.is_some() {
        return Ok(Some(Pending::Interrupted { operation }));
    }
    Ok(Some(Pending::Running {
        operation,
        pid: journal.pid,
        phase: journal.phase,
    }))
}

/// Refuses a package operation on guest `guest` while a build or delete holds it, or one of
/// them was interrupted and not recovered yet: the guest is not whole.
pub(crate) fn refuse_if_not_whole(roots: &HostRoots, guest: &str) -> Result<()> {
    match pending(roots, guest)? {
        Some(Pending::Running { operation, pid, .. }) if operation != "pkgmgmt" => {
            Err(Error::Busy {
                guest: guest.to_owned(),
                operation,
                pid,
            })
        }
        Some(Pending::Interrupted { operation }) => Err(Error::BadRequest {
            guest: guest.to_owned(),
            problem: format!(
                "an interrupted {operation} is not recovered yet; any `vserver {guest} …` command recovers it"
            ),
        }),
        _ => Ok(()),
    }
}

/// Finishes or undoes an interrupted operation on `guest` found in its journal; returns one
/// line saying what was done, or `None` when nothing was pending (or the operation still
/// runs, or is a kept build: [`pending`] says which). `undo_kept` also undoes a failed build kept
/// with `--keep` (for a new build or a delete of that name).
pub(crate) fn recover_journal(
    roots: &HostRoots,
    guest: &str,
    undo_kept: bool,
) -> Result<Option<(Operation, String)>> {
    let dir = journal_dir(roots);
    if !exists_no_follow(&journal_path(&dir, guest)) {
        return Ok(None);
    }
    let Some(_lock) = try_lock(&dir, guest)? else {
        return Ok(None);
    };
    let Some(journal) = read_journal(&dir, guest)? else {
        return Ok(None);
    };
    let killed = format!("(pid {})", journal.pid);
    let message = match journal.operation {
        Operation::Build if journal.kept && !undo_kept => return Ok(None),
        Operation::Build if journal.committed => {
            let left = finish_commit(&journal);
            if !left.is_empty() {
                return Err(Error::BadRequest {
                    guest: guest.to_owned(),
                    problem: format!(
                        "cannot remove the guest a finished build replaced: {}",
                        left.join(", ")
                    ),
                });
            }
            format!("finished a build that was killed after it completed {killed}")
        }
        Operation::Build => {
            undo_build(&journal, false)?;
            let what = if journal.kept {
                "removed the failed build kept with --keep"
            } else {
                "undid a build that was killed"
            };
            let phase = if journal.phase.is_empty() {
                String::new()
            } else {
                format!(" during {}", journal.phase)
            };
            let back = if journal.moved.is_empty() {
                ""
            } else {
                "; the guest it was replacing is back"
            };
            format!("{what}{phase} {killed}{back}")
        }
        Operation::Delete => {
            for path in &journal.remove {
                remove_host_tree(path)?;
            }
            format!("finished a delete that was killed {killed}")
        }
        // The move's own log is recovered by the caller; the journal only held the guest.
        Operation::Pkgmgmt => String::new(),
    };
    remove_journal(&dir, guest)?;
    Ok(Some((journal.operation, message)))
}

/// The guests with a journal (sorted), whatever state their configuration is in.
pub(crate) fn journaled_guests(roots: &HostRoots) -> Result<Vec<String>> {
    let dir = journal_dir(roots);
    let entries = match fs_err::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read", &dir)(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(Error::io("read", &dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(guest) = name.strip_suffix(".toml")
            && crate::error::check_name("guest", guest).is_ok()
        {
            names.push(guest.to_owned());
        }
    }
    names.sort();
    Ok(names)
}
