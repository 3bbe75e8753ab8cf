//! The package record of rpm-md metadata: what primary, filelists and other say of one package.
//!
//! Field meanings follow createrepo_c, whose output dnf expects; where createrepo_c derives a
//! value (which requirements it drops, which files count as "primary"), the derivation lives in
//! the reader that fills this model, not here.

/// One package as rpm-md describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Package {
    /// The package checksum (also its id), lower-case hex.
    pub pkgid: String,
    /// The checksum algorithm of `pkgid`, e.g. `sha256`.
    pub checksum_type: String,
    /// Package name.
    pub name: String,
    /// Architecture (`src` for source packages).
    pub arch: String,
    /// Epoch (0 when the package has none).
    pub epoch: u64,
    /// Version.
    pub version: String,
    /// Release.
    pub release: String,
    /// One-line summary.
    pub summary: String,
    /// Description.
    pub description: String,
    /// Packager.
    pub packager: String,
    /// Upstream URL.
    pub url: String,
    /// Modification time of the package file (seconds).
    pub time_file: i64,
    /// Build time (seconds).
    pub time_build: i64,
    /// Size of the package file.
    pub size_package: u64,
    /// Installed size.
    pub size_installed: u64,
    /// Size of the uncompressed payload archive.
    pub size_archive: u64,
    /// Path of the package relative to the repository root.
    pub location_href: String,
    /// Base URL of the package, when it is not in the repository tree.
    pub location_base: Option<String>,
    /// License.
    pub license: String,
    /// Vendor.
    pub vendor: String,
    /// Group.
    pub group: String,
    /// Build host.
    pub buildhost: String,
    /// Source package file name (empty for source packages).
    pub sourcerpm: String,
    /// Byte offset where the main header starts.
    pub header_start: u64,
    /// Byte offset where the main header ends (where the payload starts).
    pub header_end: u64,
    /// Capabilities provided.
    pub provides: Vec<Dependency>,
    /// Capabilities required.
    pub requires: Vec<Dependency>,
    /// Conflicts.
    pub conflicts: Vec<Dependency>,
    /// Obsoletes.
    pub obsoletes: Vec<Dependency>,
    /// Weak forward dependency: suggests.
    pub suggests: Vec<Dependency>,
    /// Weak reverse dependency: enhances.
    pub enhances: Vec<Dependency>,
    /// Weak forward dependency: recommends.
    pub recommends: Vec<Dependency>,
    /// Weak reverse dependency: supplements.
    pub supplements: Vec<Dependency>,
    /// Every file, directory and ghost of the package, in header order.
    pub files: Vec<PackageFile>,
    /// Changelog entries, oldest first.
    pub changelogs: Vec<ChangelogEntry>,
}

/// A dependency entry (`rpm:entry`).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dependency {
    /// Capability name, or a rich dependency in parentheses.
    pub name: String,
    /// Comparison (`EQ`, `LT`, `GT`, `LE`, `GE`), absent for an unversioned dependency.
    pub flags: Option<String>,
    /// Epoch of the version compared with.
    pub epoch: Option<String>,
    /// Version compared with.
    pub version: Option<String>,
    /// Release compared with.
    pub release: Option<String>,
    /// A requirement needed by scriptlets (`pre="1"`).
    pub pre: bool,
}

/// What kind of file-system entry a package file is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FileKind {
    /// A regular file, symbolic link or device.
    #[default]
    File,
    /// A directory.
    Dir,
    /// A file the package owns but does not ship (`%ghost`).
    Ghost,
}

impl FileKind {
    /// The `type` attribute rpm-md writes, `None` for plain files.
    pub fn as_attr(self) -> Option<&'static str> {
        match self {
            FileKind::File => None,
            FileKind::Dir => Some("dir"),
            FileKind::Ghost => Some("ghost"),
        }
    }
}

/// One file of a package.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PackageFile {
    /// Absolute path.
    pub path: String,
    /// File type.
    pub kind: FileKind,
}

/// One changelog entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangelogEntry {
    /// Author line.
    pub author: String,
    /// Time stamp (seconds).
    pub date: i64,
    /// Text.
    pub text: String,
}

/// Whether a file belongs in primary.xml as well as filelists.xml.
///
/// dnf resolves file dependencies on these paths from primary alone, so the rule must be the one
/// every rpm-md producer uses: configuration, executables, and the sendmail path.
pub fn is_primary_file(path: &str) -> bool {
    path.starts_with("/etc/") || path == "/usr/lib/sendmail" || path.contains("bin/")
}
