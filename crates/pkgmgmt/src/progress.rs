//! Packages done of a transaction's total, read from what the package managers print for
//! machines or for logs, for a progress bar on the caller's terminal.
//!
//! The back ends capture the tools' output during builds (it is shown only when they fail), so
//! the lines are read as they arrive ([`vserver_sandbox::LineObserver`]) and parsed here:
//!
//! - dnf numbers each element of its transaction, `  Installing  : NAME   3/57`, whether or not
//!   it writes to a terminal (its `Verifying` pass afterwards is not counted again);
//! - dpkg says `Unpacking PKG …` and `Setting up PKG …` for each package (under apt-get too,
//!   whose `U upgraded, N newly installed` line gives the total): each package counts twice.
//!   Not dpkg's `--status-fd` nor apt's `APT::Status-Fd`: dpkg marks a status descriptor
//!   close-on-exec, and the sandbox passes only the standard streams, so on standard output
//!   the maintainer scripts would lose theirs (seen: `shadowconfig: echo: I/O error`).
//!
//! The lines a tool prints for a person are not a contract: a line that does not parse is
//! ignored, so a changed format only means no progress, never a failed operation.

use std::fmt;
use std::sync::{Arc, Mutex};

use vserver_sandbox::LineObserver;

/// Where a transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackageProgress {
    /// Units done (packages, or percent for apt).
    pub done: u64,
    /// Units in all (0 when unknown).
    pub total: u64,
}

/// Hears a back end's [`PackageProgress`], from another thread.
#[derive(Clone)]
pub struct ProgressSink(pub Arc<dyn Fn(PackageProgress) + Send + Sync>);

impl fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProgressSink")
    }
}

impl ProgressSink {
    /// A sink calling `f`.
    pub fn new(f: impl Fn(PackageProgress) + Send + Sync + 'static) -> Self {
        ProgressSink(Arc::new(f))
    }
}

/// `(N, M)` of a dnf transaction line `  ACTION : NAME  N/M` (not `Verifying`).
pub(crate) fn dnf_line(line: &str) -> Option<(u64, u64)> {
    let (action, rest) = line.split_once(": ")?;
    const ACTIONS: &[&str] = &[
        "Preparing",
        "Installing",
        "Upgrading",
        "Upgraded",
        "Reinstalling",
        "Reinstalled",
        "Downgrading",
        "Downgraded",
        "Erasing",
        "Removing",
        "Cleanup",
        "Obsoleting",
        "Obsoleted",
        "Running scriptlet",
    ];
    if !ACTIONS.contains(&action.trim()) {
        return None;
    }
    let (done, total) = rest.split_whitespace().last()?.split_once('/')?;
    Some((done.parse().ok()?, total.parse().ok()?))
}

/// An observer for dnf's standard output.
pub(crate) fn dnf_observer(sink: ProgressSink) -> LineObserver {
    LineObserver(Arc::new(move |line: &[u8]| {
        if let Some((done, total)) = dnf_line(&String::from_utf8_lossy(line)) {
            (sink.0)(PackageProgress { done, total });
        }
    }))
}

/// What a dpkg output line says: a package unpacked or set up, or (apt-get's summary before
/// it runs dpkg, `U upgraded, N newly installed, …`) how many packages it will unpack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DpkgLine {
    /// `Unpacking PKG (VERSION) ...`
    Unpacking,
    /// `Setting up PKG (VERSION) ...`
    SettingUp,
    /// apt-get's count of packages to unpack.
    Planned(u64),
}

/// Reads one line of dpkg's (or apt-get's) standard output. Not `--status-fd`: dpkg marks its
/// status descriptor close-on-exec, and the sandbox passes only the standard streams, so on
/// standard output the maintainer scripts would lose theirs.
pub(crate) fn dpkg_line(line: &str) -> Option<DpkgLine> {
    if line.starts_with("Unpacking ") {
        return Some(DpkgLine::Unpacking);
    }
    if line.starts_with("Setting up ") {
        return Some(DpkgLine::SettingUp);
    }
    let (upgraded, rest) = line.split_once(" upgraded, ")?;
    let (installed, _) = rest.split_once(" newly installed")?;
    Some(DpkgLine::Planned(
        upgraded.trim().parse::<u64>().ok()? + installed.trim().parse::<u64>().ok()?,
    ))
}

/// An observer for dpkg's or apt-get's standard output: each package counts twice, unpacked
/// and set up, of `packages` (dpkg: the files given) or of what apt-get says it will install.
pub(crate) fn dpkg_observer(sink: ProgressSink, packages: Option<u64>) -> LineObserver {
    // Packages planned, steps done.
    let state = Mutex::new((packages, 0u64));
    LineObserver(Arc::new(move |line: &[u8]| {
        let Some(line) = dpkg_line(&String::from_utf8_lossy(line)) else {
            return;
        };
        let Ok(mut state) = state.lock() else {
            return;
        };
        match line {
            DpkgLine::Planned(n) => {
                state.0.get_or_insert(n);
                return;
            }
            DpkgLine::Unpacking | DpkgLine::SettingUp => state.1 += 1,
        }
        let total = state.0.map_or(0, |n| 2 * n);
        (sink.0)(PackageProgress {
            done: if total > 0 {
                state.1.min(total)
            } else {
                state.1
            },
            total,
        });
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_the_tools() {
        assert_eq!(
            dnf_line("  Installing       : fx-00004-3.3.6-3.fc40.x86_64          3/57 "),
            Some((3, 57))
        );
        assert_eq!(
            dnf_line("  Running scriptlet: fx-00004-3.3.6-3.fc40.x86_64          1/1 "),
            Some((1, 1))
        );
        assert_eq!(
            dnf_line("  Verifying        : fx-00004-3.3.6-3.fc40.x86_64  1/1"),
            None
        );
        assert_eq!(dnf_line("Installed:"), None);
        assert_eq!(dnf_line("Total size: 34 k"), None);
        assert_eq!(
            dpkg_line("Unpacking libc6:amd64 (2.36-9+deb12u4) ..."),
            Some(DpkgLine::Unpacking)
        );
        assert_eq!(
            dpkg_line("Setting up hello (2.10-3) ..."),
            Some(DpkgLine::SettingUp)
        );
        assert_eq!(
            dpkg_line("1 upgraded, 5 newly installed, 0 to remove and 0 not upgraded."),
            Some(DpkgLine::Planned(6))
        );
        assert_eq!(
            dpkg_line("Selecting previously unselected package a."),
            None
        );
    }

    #[test]
    fn dpkg_counts_each_package_unpacked_then_set_up() {
        let heard = Arc::new(Mutex::new(Vec::new()));
        let copy = heard.clone();
        let observer = dpkg_observer(
            ProgressSink::new(move |p| copy.lock().unwrap().push((p.done, p.total))),
            None,
        );
        for line in [
            "Reading package lists...",
            "0 upgraded, 2 newly installed, 0 to remove and 0 not upgraded.",
            "Unpacking a (1) ...",
            "Unpacking b (1) ...",
            "Setting up a (1) ...",
            "Setting up b (1) ...",
        ] {
            (observer.0)(line.as_bytes());
        }
        assert_eq!(*heard.lock().unwrap(), [(1, 4), (2, 4), (3, 4), (4, 4)]);
    }
}
