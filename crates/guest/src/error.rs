//! The crate's error type: variants name the guest, distribution or path.

use std::path::PathBuf;

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong with a guest or a distribution.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No distribution of that name.
    #[error("unknown distribution `{name}`")]
    UnknownDistribution {
        /// The name asked for.
        name: String,
        /// A close name, for a "did you mean" hint.
        suggestion: Option<String>,
    },
    /// No guest of that name.
    #[error("unknown guest `{name}` (no `{config}`)")]
    UnknownGuest {
        /// The name asked for.
        name: String,
        /// The configuration file that is missing.
        config: PathBuf,
        /// A close name, for a "did you mean" hint.
        suggestion: Option<String>,
        /// The build method the hint suggests: the family of this host's guests and
        /// registered distributions (`yum`, `apt`, or `yum|apt` when both or neither).
        method: &'static str,
    },
    /// A name that cannot be a guest or distribution name.
    #[error(
        "invalid {what} name `{name}`: use letters, digits, `.`, `_`, `-`, not starting with `.` or `-`"
    )]
    InvalidName {
        /// `guest` or `distribution`.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// The guest already exists.
    #[error("guest `{name}` already exists (`{path}`); use --force to move it aside")]
    GuestExists {
        /// The guest.
        name: String,
        /// What exists.
        path: PathBuf,
    },
    /// A registered distribution already exists.
    #[error("distribution `{name}` is already registered in `{path}`; use --force to replace it")]
    DistributionExists {
        /// The distribution.
        name: String,
        /// Its directory.
        path: PathBuf,
    },
    /// A distribution directory or file is malformed.
    #[error("distribution `{name}`: {problem} (`{path}`)")]
    BadDistribution {
        /// The distribution.
        name: String,
        /// Where.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A value of a distribution that cannot be written into its files, or a line of a
    /// registered distribution's file that cannot be used (module `distribution::check`).
    #[error("{0}")]
    InvalidField(Box<FieldError>),
    /// The build method needs a distribution of another family, or options it lacks.
    #[error("guest `{guest}`: {problem}")]
    BadRequest {
        /// The guest.
        guest: String,
        /// What is wrong.
        problem: String,
    },
    /// A configuration file cannot be parsed.
    #[error("cannot parse `{path}`")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        #[source]
        source: toml::de::Error,
    },
    /// A host file operation failed.
    #[error("cannot {op} `{path}`")]
    Io {
        /// What we tried.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A guest-side file operation failed.
    #[error("guest `{guest}`")]
    Guest {
        /// The guest.
        guest: String,
        /// The cause.
        #[source]
        source: vserver_sandbox::Error,
    },
    /// A package operation failed.
    #[error(transparent)]
    Package(#[from] vserver_pkgmgmt::Error),
    /// Finishing or undoing an interrupted package-management move failed.
    #[error(transparent)]
    ModeChange(#[from] vserver_pkgmgmt::mode::ModeError),
    /// Another guest operation holds the guest.
    #[error("guest `{guest}`: a {operation} is running on it (pid {pid})")]
    Busy {
        /// The guest.
        guest: String,
        /// What is running (`build`, `delete`, `pkgmgmt`).
        operation: String,
        /// Its process.
        pid: u32,
    },
    /// What a destructive command would remove does not belong to the guest named.
    #[error("guest `{guest}`: refusing to remove anything: {problem}")]
    NotTheGuest {
        /// The guest.
        guest: String,
        /// Which piece does not match, and how.
        problem: String,
    },
    /// A build failed; what it created was removed (or kept with `--keep`).
    #[error("building guest `{guest}` failed during {phase}; {cleanup}")]
    BuildFailed {
        /// The guest.
        guest: String,
        /// The phase that failed.
        phase: String,
        /// What happened to the partial guest.
        cleanup: String,
        /// The cause.
        #[source]
        source: Box<Error>,
    },
}

/// A refused value of a distribution: one line naming the distribution, what the value is, the
/// value (escaped, so a line break shows as `\n`), what is allowed and, for a registered file,
/// which file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "distribution `{name}`: invalid {field} {value:?}: {allowed}{}",
    in_file(.path.as_deref())
)]
pub struct FieldError {
    /// The distribution.
    pub name: String,
    /// What the value is (`repository URL`, `architecture`, `rpm macros line 3`…).
    pub field: String,
    /// The value as given.
    pub value: String,
    /// What is allowed instead.
    pub allowed: String,
    /// The registered file it was read from; none for a value given to `vdistro add`.
    pub path: Option<PathBuf>,
}

impl Error {
    /// A "did you mean" or "try" hint for the user, when there is one.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::UnknownDistribution {
                suggestion: Some(s),
                ..
            }
            | Error::UnknownGuest {
                suggestion: Some(s),
                ..
            } => Some(format!("did you mean `{s}`?")),
            Error::UnknownDistribution { .. } => {
                Some("`vdistro list` shows the distributions".into())
            }
            Error::UnknownGuest { method, .. } => Some(format!(
                "build it first: `vserver NAME build -m {method} -- -d DIST` (`vdistro list` shows the distributions)"
            )),
            Error::BuildFailed { source, .. } => source.hint(),
            Error::Package(vserver_pkgmgmt::Error::TimedOut { guest, .. }) => Some(format!(
                "if the operation needs longer, raise `operation_time_limit` in \
                 `CONFDIR/{guest}/config.toml` (default {}), or set {} for one command",
                crate::runtime::format_duration(vserver_pkgmgmt::DEFAULT_TIME_LIMIT),
                crate::runtime::TIME_LIMIT_VAR
            )),
            _ => None,
        }
    }

    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }
}

/// ` (in `PATH`)` after an error about a value read from a file; nothing for a given value.
/// A control character in the path (a hand-made file name) is shown escaped: the error stays
/// one line.
fn in_file(path: Option<&std::path::Path>) -> String {
    let Some(path) = path else {
        return String::new();
    };
    let shown: String = path
        .display()
        .to_string()
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect();
    format!(" (in `{shown}`)")
}

/// Checks a guest or distribution name: it becomes a directory name under host roots.
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName {
            what,
            name: name.to_owned(),
        })
    }
}
