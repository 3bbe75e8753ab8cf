//! The crate's error type: each variant names the guest and the path or tool it was about.

use std::path::PathBuf;

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while managing a guest's packages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A host-side file operation on the guest's package state failed.
    #[error("guest `{guest}`: cannot {op} `{path}`")]
    Host {
        /// The guest.
        guest: String,
        /// What we tried.
        op: &'static str,
        /// The host path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An operation on the guest's package state (`.pkg/G`, opened as an untrusted tree) failed.
    #[error("guest `{guest}`: package state")]
    State {
        /// The guest.
        guest: String,
        /// The cause (names the path below `.pkg/G`).
        #[source]
        source: Box<vserver_sandbox::Error>,
    },
    /// The sandbox could not run the package manager (a planted symlink at the database mount
    /// point shows up here).
    #[error("guest `{guest}`: cannot run `{tool}` in the sandbox")]
    Sandbox {
        /// The guest.
        guest: String,
        /// The tool.
        tool: String,
        /// The cause.
        #[source]
        source: Box<vserver_sandbox::Error>,
    },
    /// The package manager did not finish within its time limit and was killed, with everything
    /// it started (the cause names the command, the limit and what was running).
    #[error("guest `{guest}`")]
    TimedOut {
        /// The guest.
        guest: String,
        /// The sandbox's [`vserver_sandbox::Error::TimedOut`].
        #[source]
        source: Box<vserver_sandbox::Error>,
    },
    /// The package manager ran and failed: the cause (the end of its error output) first, then
    /// the operation log that holds its command line and full output (module `oplog`).
    #[error(
        "guest `{guest}`: {tool} failed ({}): {cause}{}",
        crate::oplog::status_text(.status),
        crate::oplog::log_text(.log)
    )]
    ToolFailure {
        /// The guest.
        guest: String,
        /// `rpm`, `dnf`, `dpkg`, `apt-get`.
        tool: String,
        /// How it ended.
        status: std::process::ExitStatus,
        /// The last lines of its error output, on one line.
        cause: String,
        /// The operation log in `.pkg/G/log/`, when it could be written.
        log: Option<PathBuf>,
    },
    /// A package tool ran and failed (where no operation log is written).
    #[error("guest `{guest}`: `{command}` failed ({status}){stderr_tail}")]
    ToolFailed {
        /// The guest.
        guest: String,
        /// The command line.
        command: String,
        /// How it ended.
        status: std::process::ExitStatus,
        /// The end of its standard error, prefixed with `: ` (empty when not captured).
        stderr_tail: String,
    },
    /// The rpm plugin that confines scriptlets was not found.
    #[error(
        "cannot find the rpm plugin `libvserver_rpm_plugin.so` next to `{exe}` or in $VSERVER_RPM_PLUGIN; build it with `cargo build -p vserver-rpm-plugin`"
    )]
    PluginMissing {
        /// The running executable's directory.
        exe: PathBuf,
    },
    /// An operation on the guest root failed.
    #[error("guest `{guest}`")]
    Guest {
        /// The guest.
        guest: String,
        /// The cause.
        #[source]
        source: Box<vserver_sandbox::Error>,
    },
    /// Another package operation holds the guest's lock.
    #[error("guest `{guest}`: another package operation is running (lock `{path}`)")]
    Busy {
        /// The guest.
        guest: String,
        /// The lock file.
        path: PathBuf,
    },
    /// The guest's package management is internal: the host-side database is an archive.
    #[error(
        "guest `{guest}`: package management is internal (`{record}` exists); run the guest's own \
         tools, or `vserver {guest} pkgmgmt externalize`"
    )]
    Internal {
        /// The guest.
        guest: String,
        /// The record that says so.
        record: PathBuf,
    },
    /// A downloaded package file cannot be read or copied.
    #[error("guest `{guest}`: unusable package file")]
    Package {
        /// The guest.
        guest: String,
        /// The cause, naming the file.
        #[source]
        source: Box<vserver_repository::deb::DebError>,
    },
    /// A Debian bootstrap cannot go on (the repositories lack what it needs).
    #[error("guest `{guest}`: cannot bootstrap: {problem}")]
    Bootstrap {
        /// The guest.
        guest: String,
        /// What is missing and where to look.
        problem: String,
    },
}

impl Error {
    /// The error of a sandboxed run of `tool` on `guest` that did not give a status: killed at
    /// its time limit, or not run at all.
    pub(crate) fn sandbox(guest: &str, tool: &str, source: vserver_sandbox::Error) -> Error {
        let guest = guest.to_owned();
        let source = Box::new(source);
        match *source {
            vserver_sandbox::Error::TimedOut { .. } => Error::TimedOut { guest, source },
            _ => Error::Sandbox {
                guest,
                tool: tool.to_owned(),
                source,
            },
        }
    }
}

/// The last `count` non-empty lines of a tool's output, as `: line; line` for the end of an
/// error message (empty when there are none).
pub(crate) fn output_tail(output: &[u8], count: usize) -> String {
    let text = String::from_utf8_lossy(output);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    let start = lines.len().saturating_sub(count);
    format!(": {}", lines[start..].join("; "))
}
