//! What the command line runs before anything else: finish or undo every guest operation that
//! was killed (module `transaction` for build and delete, `vserver_pkgmgmt::mode::recover` for
//! a package-management move), one line each.

use vserver_pkgmgmt::PkgLayout;
use vserver_pkgmgmt::mode::{Mode, ModeError, Recovery};

use crate::config::{PackageManagement, list_guests, load_guest};
use crate::error::{Error, Result, check_name};
use crate::roots::HostRoots;
use crate::transaction::{journaled_guests, recover_journal};

/// Finishes or undoes an interrupted operation on guest `name`; returns one line per thing done
/// (empty when nothing was interrupted, or the operation is still running in another process).
/// A failed build kept with `--keep` is left alone: it is listed as incomplete.
pub fn recover(roots: &HostRoots, name: &str) -> Result<Vec<String>> {
    check_name("guest", name)?;
    let mut done = Vec::new();
    if let Some((_, message)) = recover_journal(roots, name, false)?
        && !message.is_empty()
    {
        done.push(format!("guest `{name}`: {message}"));
    }
    let layout = PkgLayout::new(&roots.pkgdir, name);
    if vserver_pkgmgmt::mode::interrupted_change(&layout)?.is_none() {
        return Ok(done);
    }
    let config = load_guest(roots, name)?;
    let recorded = match config.package_management {
        PackageManagement::Internal => Mode::Internal,
        PackageManagement::External | PackageManagement::None => Mode::External,
    };
    match vserver_pkgmgmt::mode::recover(&layout, &config.root, recorded) {
        Ok(Some(Recovery::Finished(to))) => done.push(format!(
            "guest `{name}`: finished a package-management move to {to} that was killed after it was recorded"
        )),
        Ok(Some(Recovery::RolledBack(to))) => done.push(format!(
            "guest `{name}`: undid a package-management move to {to} that was killed; package management is {recorded} again"
        )),
        Ok(None) | Err(ModeError::Package(vserver_pkgmgmt::Error::Busy { .. })) => {}
        Err(error) => return Err(error.into()),
    }
    Ok(done)
}

/// [`recover`] for every guest that has a configuration or a journal.
pub fn recover_all(roots: &HostRoots) -> Result<Vec<String>> {
    let mut names = list_guests(roots)?;
    names.extend(journaled_guests(roots)?);
    names.sort();
    names.dedup();
    let mut done = Vec::new();
    for name in names {
        match recover(roots, &name) {
            Ok(lines) => done.extend(lines),
            // A journal of a guest whose configuration is gone: nothing more to recover.
            Err(Error::UnknownGuest { .. }) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(done)
}
