//! The crate's error type: every variant names the operation and the path (guest or host) it
//! was about, and keeps the kernel's `errno` reachable through [`Error::errno`].

use std::io;
use std::path::PathBuf;

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in the sandbox crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operation on a path inside a guest root failed (a planted symlink that leaves the root
    /// shows up here as `ELOOP`/`EXDEV`/`ENOTDIR`).
    #[error("cannot {op} `{path}` inside guest root `{root}`")]
    Guest {
        /// What we tried, in words (`create`, `remove`, `bind-mount onto` …).
        op: &'static str,
        /// The guest root, as the host sees it.
        root: PathBuf,
        /// The path inside the guest.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// A guest path that this operation cannot accept (empty, `.`/`..` as the last component…).
    #[error("guest path `{path}` cannot be used to {op}: {reason}")]
    BadGuestPath {
        /// What we tried.
        op: &'static str,
        /// The offending path.
        path: PathBuf,
        /// Why it is refused.
        reason: &'static str,
    },
    /// An operation on a host path failed.
    #[error("cannot {op} `{path}`")]
    Host {
        /// What we tried.
        op: &'static str,
        /// The host path.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// A kernel operation that has no path (unshare, capset, prctl…) failed.
    #[error("cannot {op}")]
    Kernel {
        /// What we tried.
        op: &'static str,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// A bind mount was made but is not where it was meant to be (the guest moved or replaced the
    /// target while we worked); the mount has been removed again.
    #[error(
        "mount of `{source_path}` onto `{target}` inside guest root `{root}` did not land there"
    )]
    MountMisplaced {
        /// The guest root.
        root: PathBuf,
        /// The host directory that was mounted.
        source_path: PathBuf,
        /// The intended target inside the guest.
        target: PathBuf,
    },
    /// The sandbox child failed while setting itself up, before the program ran.
    #[error("sandbox for `{command}` failed to {step}: {message}")]
    Setup {
        /// The command line the sandbox was to run.
        command: String,
        /// The setup step that failed.
        step: String,
        /// The kernel's `errno` (0 when the failure was not a system call).
        errno: i32,
        /// The error, as text (it crossed a process boundary).
        message: String,
    },
    /// A host tool the sandbox runs (the `ip` command, for a guest's network) failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Tool {
        /// The command line.
        command: String,
        /// How it ended.
        status: String,
        /// The end of its standard error.
        stderr: String,
    },
    /// The program did not finish within its time limit ([`crate::SandboxCommand::time_limit`]);
    /// the sandbox and everything in it were killed.
    #[error(
        "`{command}` did not finish within {}; killed it{}",
        crate::time_limit::short_duration(*.limit),
        while_running(.running)
    )]
    TimedOut {
        /// The program and its arguments.
        command: String,
        /// The limit.
        limit: std::time::Duration,
        /// What ran below the program at the limit, outermost first, each shell-quoted with
        /// control characters escaped and cut short: the deepest process the program started
        /// and, when that is not the program's own child, its parent — for a package manager,
        /// the script that hung (`/bin/sh /var/tmp/rpm-tmp.XXXX 1`, then `sleep 600`). Empty
        /// when the program ran nothing else.
        running: Vec<String>,
    },
    /// The sandbox child could not be started, or talked nonsense over its channel.
    #[error("cannot run sandbox for `{command}`")]
    Spawn {
        /// The command line the sandbox was to run.
        command: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// The end of an [`Error::TimedOut`] message: what was running, outermost first.
fn while_running(running: &[String]) -> String {
    let mut text = String::new();
    for (i, command) in running.iter().enumerate() {
        text.push_str(if i == 0 {
            " while it ran `"
        } else {
            ", which ran `"
        });
        text.push_str(command);
        text.push('`');
    }
    text
}

impl Error {
    /// The kernel's `errno` behind this error, if there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Guest { source, .. }
            | Error::Host { source, .. }
            | Error::Kernel { source, .. }
            | Error::Spawn { source, .. } => source.raw_os_error(),
            Error::Setup { errno, .. } if *errno != 0 => Some(*errno),
            _ => None,
        }
    }

    pub(crate) fn kernel(op: &'static str, source: impl Into<io::Error>) -> Self {
        Error::Kernel {
            op,
            source: source.into(),
        }
    }

    pub(crate) fn host(
        op: &'static str,
        path: impl Into<PathBuf>,
        source: impl Into<io::Error>,
    ) -> Self {
        Error::Host {
            op,
            path: path.into(),
            source: source.into(),
        }
    }
}
