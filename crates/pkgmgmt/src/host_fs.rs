//! File operations on host paths that no sandbox can write: the package state's own directory
//! (`.pkg/G`: its lock, its mode record, the work directories a mode change creates fresh), host
//! files an administrator named (keyrings), the host's own files. Everything else below `.pkg/G`
//! is reached through [`crate::PkgLayout::open_state`], the safe-path layer.
//!
//! The crate denies `clippy::disallowed_methods` for `std::fs` and `fs_err` (see `clippy.toml`),
//! so a new direct file operation does not compile in CI: it has to come through here, where the
//! reviewer sees that the path must be trusted, or through the safe-path layer.
#![allow(clippy::disallowed_methods)]

use std::io;
use std::path::Path;

/// `fs_err::read`.
pub(crate) fn read(path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
    fs_err::read(path.as_ref())
}

/// `fs_err::read_to_string`.
pub(crate) fn read_to_string(path: impl AsRef<Path>) -> io::Result<String> {
    fs_err::read_to_string(path.as_ref())
}

/// `fs_err::write`.
pub(crate) fn write(path: impl AsRef<Path>, content: impl AsRef<[u8]>) -> io::Result<()> {
    fs_err::write(path.as_ref(), content)
}

/// `fs_err::create_dir_all`.
pub(crate) fn create_dir_all(path: impl AsRef<Path>) -> io::Result<()> {
    fs_err::create_dir_all(path.as_ref())
}

/// `fs_err::remove_file`.
pub(crate) fn remove_file(path: impl AsRef<Path>) -> io::Result<()> {
    fs_err::remove_file(path.as_ref())
}

/// `fs_err::remove_dir_all` (which does not follow symlinks inside the tree).
pub(crate) fn remove_dir_all(path: impl AsRef<Path>) -> io::Result<()> {
    fs_err::remove_dir_all(path.as_ref())
}

/// `fs_err::rename`.
pub(crate) fn rename(from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<()> {
    fs_err::rename(from.as_ref(), to.as_ref())
}

/// Sets the permission bits of `path`.
pub(crate) fn set_mode(path: impl AsRef<Path>, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs_err::set_permissions(path.as_ref(), std::fs::Permissions::from_mode(mode))
}

/// `fs_err::metadata`.
pub(crate) fn metadata(path: impl AsRef<Path>) -> io::Result<std::fs::Metadata> {
    fs_err::metadata(path.as_ref())
}

/// Whether anything (a symlink included, not followed) exists at `path`.
pub(crate) fn exists_no_follow(path: impl AsRef<Path>) -> bool {
    std::fs::symlink_metadata(path.as_ref()).is_ok()
}

/// Opens `path` for reading.
pub(crate) fn open(path: impl AsRef<Path>) -> io::Result<std::fs::File> {
    Ok(fs_err::File::open(path.as_ref())?.into_parts().0)
}

/// Opens (creating it if needed) `path` for writing, without truncating it: a lock file.
pub(crate) fn open_lock_file(path: impl AsRef<Path>) -> io::Result<std::fs::File> {
    Ok(fs_err::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path.as_ref())?
        .into_parts()
        .0)
}

/// Whether `path` exists (following symlinks: the path is trusted).
pub(crate) fn exists(path: impl AsRef<Path>) -> bool {
    path.as_ref().exists()
}

/// Whether `path` is a regular file (following symlinks: the path is trusted).
pub(crate) fn is_file(path: impl AsRef<Path>) -> bool {
    path.as_ref().is_file()
}

/// `fs_err::canonicalize`.
pub(crate) fn canonicalize(path: impl AsRef<Path>) -> io::Result<std::path::PathBuf> {
    fs_err::canonicalize(path.as_ref())
}

/// Creates `path`, which must not exist, for appending.
pub(crate) fn create_new_append(path: impl AsRef<Path>) -> io::Result<std::fs::File> {
    Ok(fs_err::OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(path.as_ref())?
        .into_parts()
        .0)
}

/// `fsync` of the directory `path`, so that names created or removed in it are durable.
pub(crate) fn sync_dir(path: impl AsRef<Path>) -> io::Result<()> {
    fs_err::File::open(path.as_ref())?.sync_all()
}
