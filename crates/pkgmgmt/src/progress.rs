//! Packages done of a transaction's total, read from what the package managers print for
//! machines or for logs, for a progress bar on the caller's terminal.
//!
//! The back ends capture the tools' output during builds (it is shown only when they fail), so
//! the lines are read as they arrive ([`vserver_sandbox::LineObserver`]) and parsed here:
//!
//! - dnf numbers each element of its transaction, `  Installing  : NAME   3/57`, whether or not
//!   it writes to a terminal (its `Verifying` pass afterwards is not counted again);
//! - dpkg's `--status-fd` reports `status: PKG: unpacked` and `status: PKG: installed` (see
//!   dpkg(1)): each package given counts twice, unpacked and installed;
//! - apt's `APT::Status-Fd` reports `pmstatus:PKG:PERCENT:MESSAGE` for the dpkg run it drives
//!   (apt's doc/progress-reporting.md): the percentage is the progress.
//!
//! The lines a tool prints for a person are not a contract: a line that does not parse is
//! ignored, so a changed format only means no progress, never a failed operation.

use std::collections::BTreeSet;
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

/// `(PKG, STATE)` of a dpkg `--status-fd` line `status: PKG: STATE`.
pub(crate) fn dpkg_status_line(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix("status: ")?;
    let (package, state) = rest.split_once(": ")?;
    Some((package, state.trim()))
}

/// An observer for `dpkg --install --status-fd 1` of `packages` package files.
pub(crate) fn dpkg_observer(sink: ProgressSink, packages: u64) -> LineObserver {
    let seen: Mutex<(BTreeSet<String>, BTreeSet<String>)> = Mutex::default();
    LineObserver(Arc::new(move |line: &[u8]| {
        let line = String::from_utf8_lossy(line);
        let Some((package, state)) = dpkg_status_line(&line) else {
            return;
        };
        let Ok(mut seen) = seen.lock() else {
            return;
        };
        let changed = match state {
            "unpacked" | "half-configured" => seen.0.insert(package.to_owned()),
            "installed" => seen.0.insert(package.to_owned()) | seen.1.insert(package.to_owned()),
            _ => false,
        };
        if changed {
            (sink.0)(PackageProgress {
                done: (seen.0.len() + seen.1.len()) as u64,
                total: 2 * packages,
            });
        }
    }))
}

/// The percentage of an apt `APT::Status-Fd` line `pmstatus:PKG:PERCENT:MESSAGE`.
pub(crate) fn apt_status_line(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("pmstatus:")?;
    let mut fields = rest.splitn(3, ':');
    let _package = fields.next()?;
    let percent: f64 = fields.next()?.parse().ok()?;
    (0.0..=100.0)
        .contains(&percent)
        .then(|| percent.floor() as u64)
}

/// An observer for apt-get's standard output with `-oAPT::Status-Fd=1`.
pub(crate) fn apt_observer(sink: ProgressSink) -> LineObserver {
    LineObserver(Arc::new(move |line: &[u8]| {
        if let Some(percent) = apt_status_line(&String::from_utf8_lossy(line)) {
            (sink.0)(PackageProgress {
                done: percent,
                total: 100,
            });
        }
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
            dpkg_status_line("status: libc6:amd64: unpacked"),
            Some(("libc6:amd64", "unpacked"))
        );
        assert_eq!(dpkg_status_line("processing: install: libc6"), None);
        assert_eq!(
            apt_status_line("pmstatus:hello:42.8571:Installing hello (amd64)"),
            Some(42)
        );
        assert_eq!(apt_status_line("dlstatus:1:0:Retrieving file 1 of 2"), None);
    }

    #[test]
    fn dpkg_counts_each_package_unpacked_then_installed() {
        let heard = Arc::new(Mutex::new(Vec::new()));
        let copy = heard.clone();
        let observer = dpkg_observer(
            ProgressSink::new(move |p| copy.lock().unwrap().push(p.done)),
            2,
        );
        for line in [
            "status: a: half-installed",
            "status: a: unpacked",
            "status: b: unpacked",
            "status: a: half-configured",
            "status: a: installed",
            "status: b: installed",
        ] {
            (observer.0)(line.as_bytes());
        }
        assert_eq!(*heard.lock().unwrap(), [1, 2, 3, 4]);
    }
}
