//! Finding the package files of a repository tree.
//!
//! The walk follows symbolic links, because the classic layout links `RPMS` directories into a
//! repository (see the util-vserver seed), but it detects loops. Hidden entries, `repodata/` and
//! `dists/` are metadata, not packages, and are skipped. Each file's relative path becomes a
//! `location href` or a `Filename:` field, so a name that cannot be written there safely (not
//! UTF-8, a control character such as a newline) is reported as bad instead of indexed.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::BadPackage;

/// A package file found under a repository directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundFile {
    /// Where the file is on disk.
    pub path: PathBuf,
    /// The path relative to the repository directory, `/`-separated.
    pub rel: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time in nanoseconds since the epoch.
    pub mtime_ns: i64,
}

impl FoundFile {
    /// Modification time in whole seconds, as repository metadata records it.
    pub fn mtime_secs(&self) -> i64 {
        self.mtime_ns.div_euclid(1_000_000_000)
    }
}

/// The result of [`scan_packages`].
#[derive(Debug, Default)]
pub struct ScanResult {
    /// Package files, sorted by relative path.
    pub files: Vec<FoundFile>,
    /// Entries that look like packages but cannot be indexed (hostile names, link loops).
    pub bad: Vec<BadPackage>,
}

/// Failure to walk a repository tree.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The directory itself cannot be read.
    #[error("cannot read repository directory `{path}`")]
    Root {
        /// The repository directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An entry below it cannot be read.
    #[error("cannot read `{path}`")]
    Entry {
        /// The entry.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Top-level directories that hold metadata rather than packages.
const METADATA_DIRS: &[&str] = &["repodata", "dists"];

/// Finds every file under `dir` whose name ends in `.{extension}`, sorted by relative path.
pub fn scan_packages(dir: &Path, extension: &str) -> Result<ScanResult, ScanError> {
    let meta = std::fs::metadata(dir).map_err(|source| ScanError::Root {
        path: dir.to_owned(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(ScanError::Root {
            path: dir.to_owned(),
            source: std::io::Error::from(std::io::ErrorKind::NotADirectory),
        });
    }
    let suffix = format!(".{extension}");
    let mut result = ScanResult::default();
    let walker = walkdir::WalkDir::new(dir)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|entry| {
            let name = entry.file_name().as_encoded_bytes();
            if entry.depth() == 0 {
                return true;
            }
            if name.first() == Some(&b'.') {
                return false;
            }
            !(entry.depth() == 1
                && entry.file_type().is_dir()
                && METADATA_DIRS.iter().any(|m| m.as_bytes() == name))
        });
    for entry in walker {
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) => {
                let path = err.path().unwrap_or(dir).to_owned();
                if err.loop_ancestor().is_some() {
                    result.bad.push(BadPackage {
                        path,
                        reason: "symbolic link loop".into(),
                    });
                    continue;
                }
                let source = err
                    .into_io_error()
                    .unwrap_or_else(|| std::io::Error::other("walk failed"));
                if source.kind() == std::io::ErrorKind::NotFound {
                    // A dangling symbolic link: nothing to index.
                    continue;
                }
                return Err(ScanError::Entry { path, source });
            }
        };
        if !entry.file_type().is_file() {
            continue;
        }
        if !entry
            .file_name()
            .as_encoded_bytes()
            .ends_with(suffix.as_bytes())
        {
            continue;
        }
        let path = entry.path().to_owned();
        let rel_path = path.strip_prefix(dir).unwrap_or(&path);
        let rel = match rel_path.to_str() {
            Some(rel) if !rel.chars().any(char::is_control) => rel.to_owned(),
            _ => {
                result.bad.push(BadPackage {
                    path,
                    reason: "file name is not UTF-8 or holds a control character".into(),
                });
                continue;
            }
        };
        let meta = entry.metadata().map_err(|err| ScanError::Entry {
            path: path.clone(),
            source: err
                .into_io_error()
                .unwrap_or_else(|| std::io::Error::other("stat failed")),
        })?;
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        result.files.push(FoundFile {
            path,
            rel,
            size: meta.len(),
            mtime_ns,
        });
    }
    // sort_by_file_name orders siblings; a full path sort makes the order independent of how
    // directory names compare to file names.
    result.files.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(result)
}
