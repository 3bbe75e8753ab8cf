//! The back-end trait: what building a guest and the host-side package commands need from a
//! package manager, independent of rpm or dpkg.

use std::ffi::OsString;
use std::process::ExitStatus;
use std::time::Duration;

use crate::error::Result;

/// How long one run of a package tool on a guest (one `vrpm`, `vyum` or `vapt-get` call, each
/// step of a build) may take before it is killed, unless the guest's settings say otherwise:
/// two hours.
///
/// The limit exists because a package script is guest code: one that hangs, or stops its own
/// package manager (`kill -STOP $PPID`), would otherwise hold the guest's lock — and keep a
/// frozen guest frozen — for ever. Honest work ends long before: building a guest of a few
/// hundred packages, or upgrading all of them, downloads and installs in minutes, and under an
/// hour on a slow mirror. Two hours leaves room for that many times over, so the limit never
/// cuts off a working operation, yet a hung one still releases the guest the same day.
pub const DEFAULT_TIME_LIMIT: Duration = Duration::from_secs(2 * 60 * 60);

/// A distribution family, and so the back end that manages it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// rpm database, dnf resolver.
    Rpm,
    /// dpkg database, apt resolver.
    Deb,
}

impl Family {
    /// `rpm` or `deb`.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Rpm => "rpm",
            Family::Deb => "deb",
        }
    }
}

/// A host tool run on a guest by the `v*` commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// The low-level package tool (`rpm`, `dpkg`).
    Low,
    /// The resolver (`dnf`, `apt-get`).
    Resolver,
}

/// One guest's package manager, run from the host.
pub trait PackageBackend {
    /// The family this back end manages.
    fn family(&self) -> Family;

    /// Creates the external state (`.pkg/G/…`), writes the generated configuration and makes
    /// the guest's mount point for the database.
    fn prepare(&self) -> Result<()>;

    /// Creates an empty database.
    fn initialize_database(&self) -> Result<()>;

    /// Imports public keys (ASCII-armoured files on the host) into the guest's database.
    fn import_keys(&self, keys: &[std::path::PathBuf]) -> Result<()>;

    /// Resolves and installs `packages` from the configured repositories.
    fn install(&self, packages: &[String]) -> Result<()>;

    /// Installs package files without a resolver.
    fn install_files(&self, files: &[std::path::PathBuf]) -> Result<()>;

    /// Empties the resolver's download cache.
    fn clean_cache(&self) -> Result<()>;

    /// Runs `tool` with the user's `args` on the guest, streams its output, and returns its
    /// status (passed through by `vrpm`, `vyum`…).
    fn run_tool(&self, tool: Tool, args: &[OsString]) -> Result<ExitStatus>;
}

/// Gives a host package tool a clean environment: nothing of the administrator's (their
/// variables would reach the guest's package scripts), only a standard `PATH`, a UTF-8 C locale,
/// `HOME` and the terminal type.
pub(crate) fn clean_environment(
    command: &mut vserver_sandbox::SandboxCommand,
    home: &std::path::Path,
) {
    command
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C.UTF-8")
        .env("HOME", home);
    if let Some(term) = std::env::var_os("TERM") {
        command.env("TERM", term);
    }
}
