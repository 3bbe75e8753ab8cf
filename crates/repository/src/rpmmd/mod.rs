//! rpm-md repository metadata (`repodata/`), as dnf and yum read it.

mod index;
mod model;
mod read;
mod repomd;
mod sqlite;
mod write;

pub use index::{RpmIndexError, RpmIndexOptions, RpmIndexReport, index_rpm};
pub use model::{ChangelogEntry, Dependency, FileKind, Package, PackageFile, is_primary_file};
pub use read::{PackageRef, ReadError, read_filelists, read_other, read_primary, read_repository};
pub use repomd::{Repomd, RepomdError, RepomdRecord};
pub use sqlite::{DATABASE_VERSION, SqliteError};
pub use write::Document;
