//! `vserver G pkgmgmt internalize|externalize`: moving a guest's package management into the
//! guest and back, and running the guest's own tools while it is inside.
//!
//! The work is done by [`vserver_pkgmgmt::mode`] as a list of reversible steps; this module adds
//! what belongs to a guest: its configuration (the last step records the new mode there, and
//! puts the old one back if anything fails), the refusal to change a running guest unless
//! forced, and then freezing it for the duration.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use vserver_pkgmgmt::PkgLayout;
pub use vserver_pkgmgmt::mode::ExternalizeReport;
use vserver_pkgmgmt::mode::{
    DebModeChange, Mode, ModeError, ModeOptions, RpmModeChange, StepResult,
};
use vserver_sandbox::Freezer;

use crate::config::{GuestConfig, PackageManagement, load_guest};
use crate::lifecycle::{LifecycleError, LifecycleResult};
use crate::roots::HostRoots;

/// How long a running guest may take to freeze.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which way to move package management.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PkgModeDirection {
    /// Into the guest.
    Internalize,
    /// Back out of it.
    Externalize,
}

/// A mode change request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkgModeRequest {
    /// Which way.
    pub direction: PkgModeDirection,
    /// Change a running guest (frozen for the duration) instead of refusing.
    pub force: bool,
    /// Step options (the test hook, `--purge-external`).
    pub options: ModeOptions,
}

/// What a mode change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PkgModeOutcome {
    /// The guest manages its packages now; these are its packages.
    Internalized {
        /// `NAME-VERSION-RELEASE.ARCH` of every package.
        packages: Vec<String>,
    },
    /// The host manages them again; what verification found.
    Externalized(ExternalizeReport),
}

/// Why a mode change did not happen (or was rolled back).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkgModeError {
    /// The guest's configuration could not be read or written.
    #[error(transparent)]
    Guest(#[from] crate::Error),
    /// Finding out whether the guest runs, or freezing it, failed.
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    /// The guest runs and `--force` was not given.
    #[error(
        "guest `{guest}` is running; stop it first, or pass --force to freeze it for the change"
    )]
    Running {
        /// The guest.
        guest: String,
    },
    /// The guest is in the requested mode already.
    #[error("guest `{guest}`: package management is already {mode}")]
    AlreadyInMode {
        /// The guest.
        guest: String,
        /// Its mode.
        mode: &'static str,
    },
    /// The guest has no package database to move.
    #[error("guest `{guest}` has no package management to move (family `{family}`)")]
    Unsupported {
        /// The guest.
        guest: String,
        /// Its family.
        family: String,
    },
    /// Freezing the running guest failed.
    #[error("guest `{guest}`: cannot freeze it for the change")]
    Freeze {
        /// The guest.
        guest: String,
        /// Why.
        #[source]
        source: vserver_sandbox::Error,
    },
    /// A step failed (and was rolled back), or the guest's layout was refused.
    #[error(transparent)]
    Mode(#[from] ModeError),
}

/// Thaws a frozen guest when dropped, on every path out of the change.
struct Frozen(Freezer);

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = self.0.thaw();
    }
}

/// Freezes guest `name` if it runs: `Ok(None)` when it does not.
fn freeze_if_running(
    roots: &HostRoots,
    run_dir: &Path,
    name: &str,
    force: bool,
) -> Result<Option<Frozen>, PkgModeError> {
    let status = crate::lifecycle::status(roots, run_dir, name)?;
    let Some(running) = status.running else {
        return Ok(None);
    };
    if !force {
        return Err(PkgModeError::Running {
            guest: name.to_owned(),
        });
    }
    let mut last_error = None;
    for dir in &running.cgroups {
        match Freezer::for_cgroup(dir) {
            Ok(freezer) => {
                let frozen = Frozen(freezer);
                frozen
                    .0
                    .freeze(FREEZE_TIMEOUT)
                    .map_err(|source| PkgModeError::Freeze {
                        guest: name.to_owned(),
                        source,
                    })?;
                return Ok(Some(frozen));
            }
            Err(error) => last_error = Some(error),
        }
    }
    Err(PkgModeError::Freeze {
        guest: name.to_owned(),
        source: last_error.unwrap_or_else(|| vserver_sandbox::Error::Host {
            op: "find the cgroup of",
            path: name.into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        }),
    })
}

/// Moves guest `name`'s package management as `request` says; `on_step` hears each step's
/// number and name. A failure leaves the guest in its previous mode.
pub fn change_package_management(
    roots: &HostRoots,
    run_dir: &Path,
    name: &str,
    request: &PkgModeRequest,
    on_step: &mut dyn FnMut(usize, &str),
) -> Result<PkgModeOutcome, PkgModeError> {
    // A move that was killed is finished or undone first: the mode checks below then see where
    // the database really is.
    crate::recovery::recover(roots, name)?;
    let transaction = crate::transaction::Transaction::begin(
        roots,
        name,
        crate::transaction::Operation::Pkgmgmt,
    )?;
    let result = change_locked(roots, run_dir, name, request, on_step);
    // A roll-back that did not finish leaves the move's own log, which the next command reads.
    transaction.finish()?;
    result
}

fn change_locked(
    roots: &HostRoots,
    run_dir: &Path,
    name: &str,
    request: &PkgModeRequest,
    on_step: &mut dyn FnMut(usize, &str),
) -> Result<PkgModeOutcome, PkgModeError> {
    let config = load_guest(roots, name)?;
    let (wanted, current_ok) = match request.direction {
        PkgModeDirection::Internalize => (PackageManagement::Internal, PackageManagement::External),
        PkgModeDirection::Externalize => (PackageManagement::External, PackageManagement::Internal),
    };
    if config.package_management == wanted {
        return Err(PkgModeError::AlreadyInMode {
            guest: name.to_owned(),
            mode: mode_name(wanted),
        });
    }
    if config.package_management != current_ok || !["rpm", "deb"].contains(&config.family.as_str())
    {
        return Err(PkgModeError::Unsupported {
            guest: name.to_owned(),
            family: if config.family.is_empty() {
                "none".into()
            } else {
                config.family.clone()
            },
        });
    }
    let _frozen = freeze_if_running(roots, run_dir, name, request.force)?;
    let layout = PkgLayout::new(&roots.pkgdir, name);
    let mut record = |mode: Mode| -> StepResult {
        let mut updated: GuestConfig = config.clone();
        updated.package_management = match mode {
            Mode::Internal => PackageManagement::Internal,
            Mode::External => PackageManagement::External,
        };
        updated.save(roots)?;
        Ok(())
    };
    let options = &request.options;
    Ok(match (config.family.as_str(), request.direction) {
        ("deb", direction) => {
            let change = DebModeChange::new(layout, &config.root);
            match direction {
                PkgModeDirection::Internalize => PkgModeOutcome::Internalized {
                    packages: change.internalize(options, &mut record, on_step)?,
                },
                PkgModeDirection::Externalize => PkgModeOutcome::Externalized(change.externalize(
                    options,
                    &mut record,
                    on_step,
                )?),
            }
        }
        (_, direction) => {
            let change = RpmModeChange::new(layout, &config.root, &config.releasever);
            match direction {
                PkgModeDirection::Internalize => PkgModeOutcome::Internalized {
                    packages: change.internalize(options, &mut record, on_step)?,
                },
                PkgModeDirection::Externalize => PkgModeOutcome::Externalized(change.externalize(
                    options,
                    &mut record,
                    on_step,
                )?),
            }
        }
    })
}

fn mode_name(mode: PackageManagement) -> &'static str {
    match mode {
        PackageManagement::External => "external",
        PackageManagement::Internal => "internal",
        PackageManagement::None => "none",
    }
}

/// Runs the guest's own `program` with `args` inside guest `name` (its package management is
/// internal): in the running guest, or in a transient one when it is stopped, as `vserver G
/// exec [--transient]` does. Returns the program's exit code.
pub fn run_guest_tool(
    roots: &HostRoots,
    run_dir: &Path,
    name: &str,
    program: &str,
    args: &[OsString],
) -> LifecycleResult<i32> {
    let running = crate::lifecycle::status(roots, run_dir, name)?
        .running
        .is_some();
    let mut command = vec![OsString::from(program)];
    command.extend(args.iter().cloned());
    crate::lifecycle::exec(roots, run_dir, name, &command, !running)
}
