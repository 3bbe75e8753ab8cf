//! `vserver G verify`, `vserver --all verify`: every packaged file of every guest checked
//! against the trusted external database, in parallel across guests and files.
//!
//! The database's record comes from the host's side only: rpm's headers through a query of the
//! host's rpm in the per-operation sandbox, dpkg's `md5sums` and conffiles from `.pkg/G`. The
//! guest's files are read through the safe-path layer (module `check`), each regular file once
//! per inode and run. A finding is classed `config` (`%config`, a conffile: administrators edit
//! those), `binary` (below a `bin`/`sbin`/`libexec` directory, or executable), `library`
//! (below a `lib` directory) or `other`. Setuid and setgid files that belong to no package are
//! reported too (a walk of the whole root, by inode, so `/bin` and `/usr/bin` of a merged-usr
//! guest are one). A guest whose package management is internal keeps its own database, which
//! the host cannot trust: it is listed as not verifiable.

pub(crate) mod check;
pub(crate) mod expected;

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;
use vserver_pkgmgmt::{PkgLayout, Tool};
use vserver_sandbox::{FileKind, GuestRoot};

use crate::config::{GuestConfig, PackageManagement, load_guest};
use crate::error::{Error, Result};
use crate::roots::HostRoots;
use check::{DigestCache, Names, Outcome};
use expected::Expected;

/// What a finding concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileClass {
    /// A configuration file (`%config`, a dpkg conffile).
    Config,
    /// A program.
    Binary,
    /// A shared library or module.
    Library,
    /// Anything else (data, documentation…).
    Other,
}

/// One packaged file that is not as the database records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Its path in the guest.
    pub path: String,
    /// The package it belongs to.
    pub package: String,
    /// Its class.
    pub class: FileClass,
    /// It is gone.
    pub missing: bool,
    /// What differs, in `rpm -V`'s letters (`SM5DLUGTP`, `.` where it matches).
    pub differs: String,
}

/// The verification of one guest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    /// The guest.
    pub guest: String,
    /// Whether the host could verify it (its database is external).
    pub verifiable: bool,
    /// Why not, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Packaged files checked.
    pub files: usize,
    /// Files that differ or are missing, sorted by path.
    pub findings: Vec<Finding>,
    /// Setuid or setgid files no package owns.
    pub unexpected_setid: Vec<String>,
    /// Files whose digest was not computed again because another file, of this guest or
    /// another, shares every extent with it (after `unify`) and was read already.
    pub digests_reused: u64,
    /// Seconds the verification took.
    pub seconds: f64,
}

impl VerifyReport {
    /// Whether anything outside configuration files changed (the exit status says so).
    pub fn tampered(&self) -> bool {
        !self.unexpected_setid.is_empty()
            || self.findings.iter().any(|f| f.class != FileClass::Config)
    }

    /// Findings of `class`.
    pub fn count(&self, class: FileClass) -> usize {
        self.findings.iter().filter(|f| f.class == class).count()
    }

    /// Missing files.
    pub fn missing(&self) -> usize {
        self.findings.iter().filter(|f| f.missing).count()
    }

    fn not_verifiable(guest: &str, note: impl Into<String>) -> Self {
        VerifyReport {
            guest: guest.to_owned(),
            verifiable: false,
            note: Some(note.into()),
            files: 0,
            findings: Vec::new(),
            unexpected_setid: Vec::new(),
            digests_reused: 0,
            seconds: 0.0,
        }
    }
}

/// Verifies each guest of `names`, in parallel; a guest that cannot be verified at all (its
/// configuration is unreadable, rpm failed) gives its error in place of a report.
pub fn verify(roots: &HostRoots, names: &[String]) -> Vec<(String, Result<VerifyReport>)> {
    let cache = DigestCache::default();
    names
        .par_iter()
        .map(|name| (name.clone(), verify_guest(roots, name, &cache)))
        .collect()
}

fn verify_guest(roots: &HostRoots, name: &str, cache: &DigestCache) -> Result<VerifyReport> {
    let started = Instant::now();
    let config = load_guest(roots, name)?;
    match config.package_management {
        PackageManagement::Internal => {
            return Ok(VerifyReport::not_verifiable(
                name,
                "package management is internal: the guest keeps its own database, which the host cannot trust",
            ));
        }
        PackageManagement::None => {
            return Ok(VerifyReport::not_verifiable(
                name,
                "no packages (a skeleton)",
            ));
        }
        PackageManagement::External => {}
    }
    let (files, unparsed) = match config.family.as_str() {
        "rpm" => rpm_files(roots, &config)?,
        "deb" => (deb_files(roots, &config)?, 0),
        other => {
            return Ok(VerifyReport::not_verifiable(
                name,
                format!("unknown family `{other}`"),
            ));
        }
    };
    let root = GuestRoot::open(&config.root).map_err(|source| Error::Guest {
        guest: name.to_owned(),
        source,
    })?;
    let names = Names::of(&root);
    let reused = AtomicU64::new(0);
    let outcomes: Vec<(usize, Outcome)> = files
        .par_iter()
        .enumerate()
        .map(|(index, expected)| (index, check::check(&root, expected, &names, cache, &reused)))
        .collect();
    let mut packaged = HashSet::new();
    let mut findings = Vec::new();
    for (index, outcome) in outcomes {
        let expected = &files[index];
        match outcome {
            Outcome::Fine(Some(inode)) => {
                packaged.insert(inode);
            }
            Outcome::Fine(None) => {}
            Outcome::Missing => findings.push(finding(expected, true, "missing".into())),
            Outcome::Differs(differs, inode) => {
                packaged.insert(inode);
                findings.push(finding(expected, false, differs));
            }
        }
    }
    findings.sort_by(|a, b| a.path.cmp(&b.path));
    findings.dedup_by(|a, b| a.path == b.path);
    let unexpected_setid = unowned_setid(&root, &packaged);
    let note = (unparsed > 0).then(|| {
        format!("{unparsed} file entries of the database could not be read and were not checked")
    });
    Ok(VerifyReport {
        guest: name.to_owned(),
        verifiable: true,
        note,
        files: files.len(),
        findings,
        unexpected_setid,
        digests_reused: reused.into_inner(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn finding(expected: &Expected, missing: bool, differs: String) -> Finding {
    Finding {
        path: expected.path.to_string_lossy().into_owned(),
        package: expected.package.clone(),
        class: class_of(expected),
        missing,
        differs,
    }
}

fn class_of(expected: &Expected) -> FileClass {
    if expected.config {
        return FileClass::Config;
    }
    let dirs: Vec<String> = expected
        .path
        .parent()
        .unwrap_or(Path::new("/"))
        .components()
        .skip(1)
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let words: Vec<&str> = dirs.iter().map(String::as_str).collect();
    let library_dir = |d: &str| d.starts_with("lib") && d != "libexec";
    let executable = expected.mode & 0o170000 == 0o100000 && expected.mode & 0o111 != 0;
    if words
        .iter()
        .any(|d| *d == "bin" || *d == "sbin" || *d == "libexec")
    {
        FileClass::Binary
    } else if matches!(words.as_slice(), [first, ..] if library_dir(first))
        || matches!(words.as_slice(), ["usr", second, ..] if library_dir(second))
        || matches!(words.as_slice(), ["usr", "local", third, ..] if library_dir(third))
    {
        FileClass::Library
    } else if executable {
        FileClass::Binary
    } else {
        FileClass::Other
    }
}

/// The database's file list of an rpm guest: a query of the host's rpm, in the sandbox.
pub(crate) fn rpm_files(roots: &HostRoots, config: &GuestConfig) -> Result<(Vec<Expected>, usize)> {
    let backend = crate::config::open_backend(roots, config, false)?;
    let args: Vec<OsString> = ["-qa", "--qf", expected::RPM_QUERY_FORMAT]
        .iter()
        .map(OsString::from)
        .collect();
    let (status, stdout, stderr) = backend.run_tool_captured(Tool::Low, &args)?;
    if !status.success() {
        return Err(Error::BadRequest {
            guest: config.name.clone(),
            problem: format!(
                "rpm could not list the database's files ({status}): {}",
                String::from_utf8_lossy(&stderr).trim()
            ),
        });
    }
    Ok(expected::parse_rpm(&stdout))
}

/// The database's file list of a Debian guest: its `md5sums` and conffiles.
pub(crate) fn deb_files(roots: &HostRoots, config: &GuestConfig) -> Result<Vec<Expected>> {
    let layout = PkgLayout::new(&roots.pkgdir, &config.name);
    let state = layout.open_state()?;
    Ok(expected::dpkg_files(
        &state,
        Path::new(PkgLayout::DPKG_STATE_DIR),
    ))
}

/// Most entries the walk for setuid files looks at.
const MAX_WALK: usize = 4_000_000;

/// Setuid and setgid regular files of `root` whose inode no package owns.
fn unowned_setid(root: &GuestRoot, packaged: &HashSet<(u64, u64)>) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![PathBuf::from("/")];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        if dir == Path::new("/proc") || dir == Path::new("/sys") {
            continue;
        }
        for entry in root.read_dir(&dir).unwrap_or_default() {
            seen += 1;
            if seen > MAX_WALK {
                return found;
            }
            let path = dir.join(&entry.name);
            match entry.kind {
                FileKind::Dir => stack.push(path),
                FileKind::File | FileKind::Unknown => {
                    if let Ok(info) = root.symlink_metadata(&path)
                        && info.kind == FileKind::File
                        && info.mode & 0o6000 != 0
                        && !packaged.contains(&(info.dev, info.ino))
                    {
                        found.push(path.to_string_lossy().into_owned());
                    }
                }
                _ => {}
            }
        }
    }
    found.sort();
    found
}
