//! Moving a guest's package management into the guest and back: `vserver G pkgmgmt
//! internalize|externalize`.
//!
//! # Why a list of steps, each with an undo
//!
//! A mode change touches three places that no single transaction covers: the guest root (its
//! database directory, its package-manager configuration), the host's `.pkg/G` and the guest's
//! configuration file. A failure half-way must leave the guest in its previous mode with nothing
//! lost, so every change is a [`Step`] that knows how to take itself back, run by [`Steps`]:
//! when step *n* fails, steps *n*, *n-1*, … 1 are undone in that order (an undo must cope with
//! its own step having been applied only partly). Anything that destroys data (removing the old
//! database, the set-aside guest directories) happens only after the last step, in the commit.
//!
//! The failure of each step can be provoked for tests ([`ModeOptions::fail_after_step`]): the
//! step runs, then fails, and everything is rolled back.
//!
//! # The guest is hostile
//!
//! Every path inside the guest is opened through [`vserver_sandbox::GuestRoot`]; directories
//! the change writes into must not be reached through a symlink (a planted link is refused,
//! not followed, even though following it inside the root would be harmless: the database does
//! not belong in whatever the guest pointed it at). On externalize, the guest's database is
//! untrusted input: it is copied out as plain bytes, read only by rpm or by our own strict
//! parser inside the sandbox, and a fresh host-side database is built from what they extract
//! (module `rpm`, module `deb`).

mod changelog;
mod deb;
mod guestfs;
mod recover;
mod rpm;
mod status;

use crate::host_fs;
use crate::layout::PkgLayout;
use std::fmt;

pub use deb::DebModeChange;
pub use recover::{InterruptedChange, Recovery, interrupted_change, recover};
pub use rpm::{DEFAULT_GUEST_DBPATH, RpmModeChange};
pub use status::{Stanza, StatusError, parse_status, render_status, valid_package_name};

/// Where a guest's package database lives, as a mode change sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// In `.pkg/G`, outside the guest.
    External,
    /// Inside the guest, managed by its own tools.
    Internal,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::External => "external",
            Mode::Internal => "internal",
        })
    }
}

/// Why a step failed: any error type (the caller's own final step reports its own errors).
pub type StepFailure = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The result of one step or undo.
pub type StepResult = std::result::Result<(), StepFailure>;

/// How to run a mode change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModeOptions {
    /// For tests: make step N (1-based) fail right after it ran, so that it and every step
    /// before it are rolled back.
    pub fail_after_step: Option<usize>,
    /// Internalize: remove the external database archive right away instead of keeping it
    /// read-only in `.pkg/G`.
    pub purge_external: bool,
}

/// A mode change that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModeError {
    /// The guest's layout is not one the change will write into (a planted symlink, a
    /// database path that is not a plain absolute path…).
    #[error("guest `{guest}`: {problem}")]
    Refused {
        /// The guest.
        guest: String,
        /// What is wrong and where.
        problem: String,
    },
    /// A step failed; every step before it was undone and the guest is back in its mode.
    #[error(
        "guest `{guest}`: step {number} ({step}) failed; rolled back, package management is still {mode}"
    )]
    RolledBack {
        /// The guest.
        guest: String,
        /// The failed step's number (1-based).
        number: usize,
        /// The failed step's name.
        step: String,
        /// The mode the guest is in again.
        mode: Mode,
        /// The step's error.
        #[source]
        source: StepFailure,
    },
    /// A step failed and undoing the steps before it failed too: the guest needs a look.
    #[error(
        "guest `{guest}`: step {number} ({step}) failed, and the roll-back did not finish: {undo_failures}"
    )]
    RollbackIncomplete {
        /// The guest.
        guest: String,
        /// The failed step's number (1-based).
        number: usize,
        /// The failed step's name.
        step: String,
        /// Each undo that failed, with its error.
        undo_failures: String,
        /// The step's error.
        #[source]
        source: StepFailure,
    },
    /// A killed change could not be finished or undone from its log; the log stays, and the
    /// next command tries again.
    #[error("guest `{guest}`: cannot recover the interrupted mode change")]
    Recovery {
        /// The guest.
        guest: String,
        /// What failed.
        #[source]
        source: StepFailure,
    },
    /// A package-management operation outside the steps failed.
    #[error(transparent)]
    Package(#[from] crate::Error),
}

/// Where a guest of `family` (`rpm`, `deb`) keeps its own package database when its package
/// management is internal.
pub fn internal_database_path(family: &str) -> Option<&'static str> {
    match family {
        "rpm" => Some(rpm::DEFAULT_GUEST_DBPATH),
        "deb" => Some(deb::ADMIN_DIR),
        _ => None,
    }
}

/// Records a database that arrived inside the guest at [`internal_database_path`] (a template's,
/// on import) as the guest's internal one, so that `externalize` takes it in as untrusted input:
/// vserver wrote nothing else into the guest and knows no package list for it.
pub fn record_imported_database(layout: &PkgLayout, family: &str) -> Result<(), ModeError> {
    let dbpath = internal_database_path(family).ok_or_else(|| ModeError::Refused {
        guest: layout.guest().to_owned(),
        problem: format!("no package database is known for family `{family}`"),
    })?;
    let record = rpm::InternalRecord {
        family: family.to_owned(),
        dbpath: dbpath.into(),
        ..rpm::InternalRecord::default()
    };
    rpm::write_host_atomic(
        &rpm::internal_record_file(layout),
        record.render().as_bytes(),
    )
    .map_err(|e| ModeError::Refused {
        guest: layout.guest().to_owned(),
        problem: format!("cannot record the imported database: {e}"),
    })
}

/// The test hook's failure.
#[derive(Debug, thiserror::Error)]
#[error("failure injected after step {0} (test hook)")]
pub struct InjectedFailure(pub usize);

/// One reversible step of a mode change.
pub struct Step<'a> {
    name: String,
    apply: Box<dyn FnMut() -> StepResult + 'a>,
    undo: Box<dyn FnMut() -> StepResult + 'a>,
}

impl fmt::Debug for Step<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Step").field("name", &self.name).finish()
    }
}

/// An ordered list of steps, run all-or-nothing.
#[derive(Debug)]
pub struct Steps<'a> {
    guest: String,
    previous: Mode,
    steps: Vec<Step<'a>>,
    log: Option<&'a changelog::ChangeLog>,
}

impl<'a> Steps<'a> {
    /// An empty list for a change of `guest` away from mode `previous`.
    pub fn new(guest: &str, previous: Mode) -> Self {
        Steps {
            guest: guest.to_owned(),
            previous,
            steps: Vec::new(),
            log: None,
        }
    }

    /// Makes each step's logged changes durable (`fsync` of `log`) once the step ran.
    pub(crate) fn durable(&mut self, log: &'a changelog::ChangeLog) {
        self.log = Some(log);
    }

    /// Appends a step.
    pub fn push(
        &mut self,
        name: impl Into<String>,
        apply: impl FnMut() -> StepResult + 'a,
        undo: impl FnMut() -> StepResult + 'a,
    ) {
        self.steps.push(Step {
            name: name.into(),
            apply: Box::new(apply),
            undo: Box::new(undo),
        });
    }

    /// The steps' names, in order (step N is `names()[N-1]`).
    pub fn names(&self) -> Vec<String> {
        self.steps.iter().map(|s| s.name.clone()).collect()
    }

    /// Runs the steps in order; on the first failure undoes it and every earlier step, newest
    /// first. `on_step` hears each step's number and name before it runs.
    pub fn run(
        mut self,
        options: &ModeOptions,
        on_step: &mut dyn FnMut(usize, &str),
    ) -> Result<(), ModeError> {
        for index in 0..self.steps.len() {
            let number = index + 1;
            on_step(number, &self.steps[index].name);
            let mut result = (self.steps[index].apply)();
            if let (Ok(()), Some(log)) = (&result, self.log) {
                result = log.sync();
                crate::checkpoint();
            }
            if result.is_ok() && options.fail_after_step == Some(number) {
                result = Err(Box::new(InjectedFailure(number)));
            }
            let Err(source) = result else { continue };
            let mut failures = Vec::new();
            for undone in self.steps[..=index].iter_mut().rev() {
                if let Err(error) = (undone.undo)() {
                    failures.push(format!("undo of {}: {}", undone.name, chain(&*error)));
                }
            }
            let step = self.steps[index].name.clone();
            return Err(if failures.is_empty() {
                ModeError::RolledBack {
                    guest: self.guest,
                    number,
                    step,
                    mode: self.previous,
                    source,
                }
            } else {
                ModeError::RollbackIncomplete {
                    guest: self.guest,
                    number,
                    step,
                    undo_failures: failures.join("; "),
                    source,
                }
            });
        }
        Ok(())
    }
}

/// An error and its causes on one line.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A step that changes nothing when undone.
/// What externalize found in the guest's database and files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExternalizeReport {
    /// Every package of the rebuilt database (rpm: `NAME-VERSION-RELEASE.ARCH`; dpkg:
    /// `NAME:ARCH=VERSION`), sorted.
    pub packages: Vec<String>,
    /// Packages that appeared while the guest managed itself.
    pub added: Vec<String>,
    /// Packages recorded at internalize that are gone.
    pub removed: Vec<String>,
    /// The verifier's lines (`rpm -Va`, `dpkg --verify`): files that differ from the database.
    pub differences: Vec<String>,
    /// Files of the guest's database that failed the checks and were left out (dpkg).
    pub rejected: Vec<String>,
}

/// The guest a mode change works on: its package state and its root (a trusted host path).
#[derive(Debug, Clone)]
pub(crate) struct ModeTarget {
    pub(crate) layout: crate::layout::PkgLayout,
    pub(crate) root: std::path::PathBuf,
}

impl ModeTarget {
    pub(crate) fn guest(&self) -> &str {
        self.layout.guest()
    }

    /// The change is refused for this guest.
    pub(crate) fn refused(&self, problem: impl Into<String>) -> ModeError {
        ModeError::Refused {
            guest: self.guest().to_owned(),
            problem: problem.into(),
        }
    }

    /// The guest root, through the safe-path layer.
    pub(crate) fn open_root(&self) -> std::result::Result<vserver_sandbox::GuestRoot, ModeError> {
        vserver_sandbox::GuestRoot::open(&self.root).map_err(|source| {
            ModeError::Package(crate::error::Error::Guest {
                guest: self.guest().to_owned(),
                source: Box::new(source),
            })
        })
    }

    /// The guest's package state (`.pkg/G`), through the safe-path layer.
    pub(crate) fn open_state(&self) -> std::result::Result<vserver_sandbox::GuestRoot, ModeError> {
        self.layout.open_state().map_err(ModeError::Package)
    }

    /// Whether the guest has a `/proc` directory to mount a fresh proc on.
    pub(crate) fn has_proc(root: &vserver_sandbox::GuestRoot) -> bool {
        matches!(
            root.symlink_metadata("/proc"),
            Ok(info) if info.kind == vserver_sandbox::FileKind::Dir
        )
    }

    /// Runs a verifier (`rpm -Va`, `dpkg --verify`) on the guest, in a sandbox that sees no
    /// other guest and no network; returns the lines that report a difference. Verifiers exit
    /// non-zero when something differs, so only a failure without a single line is an error.
    pub(crate) fn verify_lines(
        &self,
        tool: &str,
        command: &mut vserver_sandbox::SandboxCommand,
    ) -> std::result::Result<Vec<String>, StepFailure> {
        command
            .no_network(true)
            .capabilities(vserver_sandbox::CapabilityProfile::PackageManager)
            .hide_siblings_of(&self.root)
            .hide_siblings_of(self.layout.dir())
            .stdout(vserver_sandbox::StdioMode::Capture)
            .stderr(vserver_sandbox::StdioMode::Capture);
        let finished = command
            .status()
            .map_err(|source| crate::error::Error::Sandbox {
                guest: self.guest().to_owned(),
                tool: tool.into(),
                source: Box::new(source),
            })?;
        let lines: Vec<String> = String::from_utf8_lossy(&finished.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect();
        if !finished.status.success() && lines.is_empty() {
            return Err(Box::new(crate::oplog::tool_failure(
                &self.layout,
                &crate::oplog::FailedRun {
                    tool,
                    command,
                    status: finished.status,
                    stdout: &finished.stdout,
                    stderr: &finished.stderr,
                },
            )));
        }
        Ok(lines)
    }

    /// Starts the write-ahead log of a change to mode `to` (the caller holds the package lock).
    pub(crate) fn begin_log(
        &self,
        to: Mode,
        family: &str,
    ) -> std::result::Result<changelog::ChangeLog, ModeError> {
        changelog::ChangeLog::begin(&self.layout, to, family).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                self.refused(
                    "a previous mode change was interrupted and is not recovered yet (`mode-change` in its package state)",
                )
            } else {
                ModeError::Package(self.layout.host_err(
                    "start the log of the change in",
                    self.layout.dir(),
                    source,
                ))
            }
        })
    }

    /// Runs `steps`; the log goes once the steps are undone in this process. An incomplete
    /// roll-back keeps it, so the next command finishes the roll-back from it.
    pub(crate) fn run_logged(
        &self,
        steps: Steps<'_>,
        options: &ModeOptions,
        on_step: &mut dyn FnMut(usize, &str),
    ) -> std::result::Result<(), ModeError> {
        let result = steps.run(options, on_step);
        if let Err(ModeError::RolledBack { .. }) = result {
            let _ = changelog::remove(&self.layout);
        }
        result
    }

    /// Removes a conversion work directory, if it is there.
    pub(crate) fn remove_dir(&self, dir: &std::path::Path) -> StepResult {
        if host_fs::exists(dir) {
            host_fs::remove_dir_all(dir)?;
        }
        Ok(())
    }
}

/// A step failure that is just a message.
pub(crate) fn text_err(text: impl Into<String>) -> StepFailure {
    Box::new(guestfs::StepFailureText(text.into()))
}

pub(crate) fn nothing() -> StepResult {
    Ok(())
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    fn run_three(fail_after: Option<usize>, failing_step: Option<usize>) -> (Vec<String>, bool) {
        let log = RefCell::new(Vec::new());
        let mut steps = Steps::new("g", Mode::External);
        for n in 1..=3 {
            let log = &log;
            steps.push(
                format!("s{n}"),
                move || {
                    log.borrow_mut().push(format!("do {n}"));
                    if failing_step == Some(n) {
                        return Err("broken".into());
                    }
                    Ok(())
                },
                move || {
                    log.borrow_mut().push(format!("undo {n}"));
                    Ok(())
                },
            );
        }
        let ok = steps
            .run(
                &ModeOptions {
                    fail_after_step: fail_after,
                    ..ModeOptions::default()
                },
                &mut |_, _| {},
            )
            .is_ok();
        (log.into_inner(), ok)
    }

    #[test]
    fn all_steps_run_in_order_when_nothing_fails() {
        let (log, ok) = run_three(None, None);
        assert!(ok);
        assert_eq!(log, ["do 1", "do 2", "do 3"]);
    }

    #[test]
    fn a_failing_step_is_undone_with_every_step_before_it_newest_first() {
        let (log, ok) = run_three(None, Some(2));
        assert!(!ok);
        assert_eq!(log, ["do 1", "do 2", "undo 2", "undo 1"]);
    }

    #[test]
    fn an_injected_failure_runs_the_step_then_rolls_it_back() {
        for n in 1..=3 {
            let (log, ok) = run_three(Some(n), None);
            assert!(!ok);
            let expected: Vec<String> = (1..=n)
                .map(|i| format!("do {i}"))
                .chain((1..=n).rev().map(|i| format!("undo {i}")))
                .collect();
            assert_eq!(log, expected);
        }
    }
}
