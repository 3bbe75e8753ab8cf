//! Finishing or undoing a mode change that was killed, from its log (module `changelog`).
//!
//! The guest's configuration is the commit point: the last step of every change records the new
//! mode there. If it names the mode the change moved to, the change is finished (what was moved
//! aside is removed, with the host-side leftovers of the commit); otherwise every logged change
//! is undone, newest first, and the host-side steps are put back. Each action is idempotent.

use std::path::Path;

use vserver_sandbox::GuestRoot;

use super::changelog::{self, Logged};
use super::guestfs::set_tree_modes;
use super::rpm::internal_record_file;
use super::{Mode, ModeError, ModeTarget, StepResult};
use crate::host_fs;
use crate::layout::{APT_STATE, DPKG_STATE, PkgLayout, RPM_STATE};

/// A mode change that was interrupted, as its log says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterruptedChange {
    /// The mode it was moving to, if its log says.
    pub to: Option<Mode>,
    /// `rpm` or `deb` (empty when its log does not say).
    pub family: String,
}

/// What [`recover`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// The change to this mode had been recorded: it was finished.
    Finished(Mode),
    /// The change to this mode had not been recorded: it was undone.
    RolledBack(Mode),
}

/// The interrupted mode change of `layout`'s guest, if its log is there.
/// `to` is `None` when the change was killed before its log's first line was written: it had
/// changed nothing.
pub fn interrupted_change(layout: &PkgLayout) -> Result<Option<InterruptedChange>, ModeError> {
    if !changelog::exists(layout) {
        return Ok(None);
    }
    let target = target(layout, Path::new("/"));
    let header = changelog::read(layout)
        .map_err(|source| recovery_failed(&target, source))?
        .map(|(header, _)| header);
    Ok(Some(InterruptedChange {
        to: header.as_ref().map(|h| h.to),
        family: header.map(|h| h.family).unwrap_or_default(),
    }))
}

/// Finishes or undoes the interrupted mode change of `layout`'s guest, whose root is `root` and
/// whose configuration records mode `recorded`. `Ok(None)` when there is nothing to recover. A
/// change still running holds the package lock: that is [`crate::Error::Busy`], not a recovery.
pub fn recover(
    layout: &PkgLayout,
    root: &Path,
    recorded: Mode,
) -> Result<Option<Recovery>, ModeError> {
    let _lock = layout.lock()?;
    let target = target(layout, root);
    let Some((header, entries)) =
        changelog::read(layout).map_err(|source| recovery_failed(&target, source))?
    else {
        changelog::remove(layout).map_err(|source| recovery_failed(&target, source))?;
        return Ok(None);
    };
    let guest = target.open_root()?;
    let state = target.open_state()?;
    let deb = header.family == "deb";
    let result = if recorded == header.to {
        finish(&target, &guest, &state, deb, header.to, &entries)
    } else {
        roll_back(&target, &guest, &state, deb, header.to, &entries)
    };
    result.map_err(|source| recovery_failed(&target, source))?;
    changelog::remove(layout).map_err(|source| recovery_failed(&target, source))?;
    Ok(Some(if recorded == header.to {
        Recovery::Finished(header.to)
    } else {
        Recovery::RolledBack(header.to)
    }))
}

fn target(layout: &PkgLayout, root: &Path) -> ModeTarget {
    ModeTarget {
        layout: layout.clone(),
        root: root.to_owned(),
    }
}

fn recovery_failed(target: &ModeTarget, source: super::StepFailure) -> ModeError {
    ModeError::Recovery {
        guest: target.guest().to_owned(),
        source,
    }
}

/// `(database directory, its archive while internal, the conversion work directory)` of `.pkg/G`.
fn state_paths(deb: bool) -> (&'static str, &'static str, &'static str) {
    if deb {
        (DPKG_STATE, "dpkg/state.internalized", "dpkg/convert")
    } else {
        (RPM_STATE, "rpm/state.internalized", "rpm/convert")
    }
}

fn finish(
    target: &ModeTarget,
    guest: &GuestRoot,
    state: &GuestRoot,
    deb: bool,
    to: Mode,
    entries: &[Logged],
) -> StepResult {
    for entry in entries {
        if let Logged::MovedAside { aside, .. } = entry {
            guest.remove_all_if_exists(aside)?;
        }
    }
    let (_, archive, convert) = state_paths(deb);
    target.remove_dir(&target.layout.host(convert))?;
    if to == Mode::External {
        set_tree_modes(state, Path::new(archive), 0o755, 0o644)?;
        state.remove_all_if_exists(archive)?;
        let record = internal_record_file(&target.layout);
        if host_fs::exists_no_follow(&record) {
            host_fs::remove_file(&record)?;
        }
    }
    Ok(())
}

fn roll_back(
    target: &ModeTarget,
    guest: &GuestRoot,
    state: &GuestRoot,
    deb: bool,
    to: Mode,
    entries: &[Logged],
) -> StepResult {
    let (database, archive, convert) = state_paths(deb);
    for entry in entries.iter().rev() {
        match entry {
            Logged::CreatedDir(path) | Logged::Wrote { path, saved: None } => {
                guest.remove_all_if_exists(path)?;
            }
            Logged::Wrote {
                path,
                saved: Some((number, mode)),
            } => {
                let content = changelog::saved_content(&target.layout, *number)?;
                guest.write_atomic(path, &content, *mode)?;
            }
            Logged::MovedAside { path, aside } => {
                if guest.exists(aside)? {
                    guest.remove_all_if_exists(path)?;
                    guest.rename(aside, path)?;
                }
            }
            Logged::StateSwap => {
                // The old database went to the archive name first: while the archive is there,
                // whatever sits at the database name is the rebuilt one.
                if state.exists(archive)? {
                    set_tree_modes(state, Path::new(database), 0o755, 0o644)?;
                    state.remove_all_if_exists(database)?;
                    state.rename(archive, database)?;
                }
                if deb {
                    set_tree_modes(state, Path::new(APT_STATE), 0o555, 0o444)?;
                }
            }
        }
    }
    if to == Mode::Internal {
        let record = internal_record_file(&target.layout);
        if host_fs::exists_no_follow(&record) {
            host_fs::remove_file(&record)?;
        }
        set_tree_modes(state, Path::new(database), 0o755, 0o644)?;
        if deb {
            set_tree_modes(state, Path::new(APT_STATE), 0o755, 0o644)?;
        }
    }
    target.remove_dir(&target.layout.host(convert))
}
