//! Copying a tree from one guest root into another (a clone), sharing extents where the file
//! system can.
//!
//! The source is hostile: a guest may change it while we copy (it may even run). The walk goes
//! by directory descriptor, from a directory opened without following any symlink; every entry
//! is looked at with `AT_SYMLINK_NOFOLLOW` and opened `O_NOFOLLOW` (regular files also
//! `O_NONBLOCK`, and checked again after opening, so a FIFO swapped in cannot hang us). A symlink
//! is copied as a symlink, never followed. Regular file contents are shared with `FICLONE` (xfs,
//! btrfs: a reflink costs metadata only), else copied in the kernel with `copy_file_range`, else
//! read and written. Hard links inside the tree stay hard links. Owner, mode (setuid bits
//! included: they are the guest's own), times and the `security.capability` and ACL extended
//! attributes are kept. Device nodes and sockets are not copied (the caller makes `/dev` anew):
//! they are counted in [`CopyStats::skipped`].
//!
//! The destination is a fresh tree only we write to; it is still reached by descriptor, never by
//! a path that could be redirected.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timestamps};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::safe_path::GuestRoot;

/// How deep the copy goes (each level holds two descriptors).
pub(crate) const MAX_DEPTH: usize = 256;

/// Extended attributes that are part of a file's meaning and are copied.
pub(crate) const KEPT_XATTRS: &[&str] = &[
    "security.capability",
    "system.posix_acl_access",
    "system.posix_acl_default",
];

/// What a copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Regular files copied.
    pub files: u64,
    /// Of those, shared with the source (`FICLONE`).
    pub reflinked: u64,
    /// Bytes of regular files.
    pub bytes: u64,
    /// Directories, symlinks, FIFOs and extra hard links made.
    pub others: u64,
    /// Entries not copied (device nodes, sockets), as guest paths.
    pub skipped: Vec<PathBuf>,
}

struct Walk<'a> {
    from: &'a GuestRoot,
    dest_root: OwnedFd,
    /// First copy of each multiply-linked source inode: its path relative to the destination.
    links: HashMap<(u64, u64), PathBuf>,
    stats: CopyStats,
}

impl GuestRoot {
    /// Copies the tree at `from` (a directory of this root, reached without symlinks) into the
    /// existing, empty directory `to` of `dest`; see the module documentation.
    pub fn copy_tree_into(&self, from: &Path, dest: &GuestRoot, to: &Path) -> Result<CopyStats> {
        let op = "copy";
        let source = self.open_dir_no_symlinks(op, from)?;
        let target = dest.open_dir_no_symlinks(op, to)?;
        let dest_root = dest.open_dir_no_symlinks(op, Path::new("/"))?;
        let mut walk = Walk {
            from: self,
            dest_root,
            links: HashMap::new(),
            stats: CopyStats::default(),
        };
        let to_rel = to.strip_prefix("/").unwrap_or(to).to_path_buf();
        walk.dir(source.as_fd(), target.as_fd(), from, &to_rel, 0)?;
        Ok(walk.stats)
    }
}

/// The status of `name` in `dir`, its link not followed; `None` when it is gone since it was
/// listed (the guest changed its tree under us).
pub(crate) fn stat_entry(
    dir: BorrowedFd<'_>,
    name: &CStr,
) -> rustix::io::Result<Option<rustix::fs::Stat>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(stat)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The directory `name` in `dir`, opened for reading without following a link; `None` when it
/// was replaced by something else, or removed, since it was looked at.
pub(crate) fn open_entry_dir(
    dir: BorrowedFd<'_>,
    name: &CStr,
) -> rustix::io::Result<Option<OwnedFd>> {
    match rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOTDIR | Errno::LOOP | Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The names in the directory `dir` (without `.` and `..`), sorted, read through a descriptor of
/// its own so that `dir`'s offset is left alone.
pub(crate) fn entry_names(dir: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
    let listing = rustix::fs::openat(
        dir,
        c".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut names: Vec<CString> = Vec::new();
    for entry in rustix::fs::Dir::new(listing)? {
        let entry = entry?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

pub(crate) fn times(stat: &rustix::fs::Stat) -> Timestamps {
    Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: stat.st_atime,
            tv_nsec: stat.st_atime_nsec as _,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: stat.st_mtime,
            tv_nsec: stat.st_mtime_nsec as _,
        },
    }
}

fn guest_err(root: &GuestRoot, path: &Path, source: io::Error) -> Error {
    Error::Guest {
        op: "copy",
        root: root.host_path().to_path_buf(),
        path: path.to_path_buf(),
        source,
    }
}

impl Walk<'_> {
    fn err(&self, path: &Path) -> impl FnOnce(io::Error) -> Error {
        let root = self.from;
        let path = path.to_path_buf();
        move |source| guest_err(root, &path, source)
    }

    /// Copies the entries of `source` (guest path `path`) into `target` (`rel` below the
    /// destination root).
    fn dir(
        &mut self,
        source: BorrowedFd<'_>,
        target: BorrowedFd<'_>,
        path: &Path,
        rel: &Path,
        depth: usize,
    ) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(self.err(path)(io::Error::other(format!(
                "more than {MAX_DEPTH} directory levels"
            ))));
        }
        let names = entry_names(source).map_err(self.err(path))?;
        for name in names {
            let os_name = OsStr::from_bytes(name.to_bytes());
            let child = path.join(os_name);
            let child_rel = rel.join(os_name);
            self.entry(source, target, &name, &child, &child_rel, depth)?;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        source: BorrowedFd<'_>,
        target: BorrowedFd<'_>,
        name: &CStr,
        path: &Path,
        rel: &Path,
        depth: usize,
    ) -> Result<()> {
        let Some(stat) = stat_entry(source, name).map_err(|e| self.err(path)(e.into()))? else {
            return Ok(());
        };
        let mode = Mode::from_raw_mode(stat.st_mode & 0o7777);
        let uid = Some(rustix::fs::Uid::from_raw(stat.st_uid));
        let gid = Some(rustix::fs::Gid::from_raw(stat.st_gid));
        let from_root = self.from;
        let fail = |e: Errno| guest_err(from_root, path, e.into());
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory => {
                rustix::fs::mkdirat(target, name, Mode::from_raw_mode(0o700)).map_err(fail)?;
                let Some(from) = open_entry_dir(source, name).map_err(fail)? else {
                    return Ok(());
                };
                // Made just now in the new tree, which only we write.
                let to = open_entry_dir(target, name)
                    .map_err(fail)?
                    .ok_or_else(|| fail(Errno::NOENT))?;
                self.dir(from.as_fd(), to.as_fd(), path, rel, depth + 1)?;
                self.stats.others += 1;
                rustix::fs::fchown(&to, uid, gid).map_err(fail)?;
                rustix::fs::fchmod(&to, mode).map_err(fail)?;
                copy_xattrs(&from, &to);
                rustix::fs::futimens(&to, &times(&stat)).map_err(fail)?;
            }
            FileType::RegularFile => {
                if stat.st_nlink > 1 {
                    let key = (stat.st_dev, stat.st_ino);
                    if let Some(first) = self.links.get(&key) {
                        rustix::fs::linkat(&self.dest_root, first, target, name, AtFlags::empty())
                            .map_err(fail)?;
                        self.stats.others += 1;
                        return Ok(());
                    }
                    self.links.insert(key, rel.to_path_buf());
                }
                self.file(source, target, name, path, &stat)?;
            }
            FileType::Symlink => {
                let link = match rustix::fs::readlinkat(source, name, Vec::new()) {
                    Ok(link) => link,
                    Err(Errno::NOENT | Errno::INVAL) => return Ok(()),
                    Err(e) => return Err(fail(e)),
                };
                rustix::fs::symlinkat(link.as_c_str(), target, name).map_err(fail)?;
                rustix::fs::chownat(target, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(fail)?;
                rustix::fs::utimensat(target, name, &times(&stat), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(fail)?;
                self.stats.others += 1;
            }
            FileType::Fifo => {
                rustix::fs::mknodat(target, name, FileType::Fifo, mode, 0).map_err(fail)?;
                rustix::fs::chownat(target, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(fail)?;
                self.stats.others += 1;
            }
            _ => self.stats.skipped.push(path.to_path_buf()),
        }
        Ok(())
    }

    fn file(
        &mut self,
        source: BorrowedFd<'_>,
        target: BorrowedFd<'_>,
        name: &CStr,
        path: &Path,
        looked_at: &rustix::fs::Stat,
    ) -> Result<()> {
        let from_root = self.from;
        let fail = |e: io::Error| guest_err(from_root, path, e);
        let from = match rustix::fs::openat(
            source,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::LOOP) => return Ok(()),
            Err(e) => return Err(fail(e.into())),
        };
        let stat = rustix::fs::fstat(&from).map_err(|e| fail(e.into()))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile
            || stat.st_ino != looked_at.st_ino
        {
            // Swapped since we looked: the guest's race, its loss.
            return Ok(());
        }
        let to = rustix::fs::openat(
            target,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| fail(e.into()))?;
        let reflinked = stat.st_size > 0 && rustix::fs::ioctl_ficlone(&to, &from).is_ok();
        if !reflinked {
            copy_contents(&from, &to).map_err(fail)?;
        }
        let uid = Some(rustix::fs::Uid::from_raw(stat.st_uid));
        let gid = Some(rustix::fs::Gid::from_raw(stat.st_gid));
        // Owner first: chown clears setuid bits and file capabilities.
        rustix::fs::fchown(&to, uid, gid).map_err(|e| fail(e.into()))?;
        rustix::fs::fchmod(&to, Mode::from_raw_mode(stat.st_mode & 0o7777))
            .map_err(|e| fail(e.into()))?;
        copy_xattrs(&from, &to);
        rustix::fs::futimens(&to, &times(&stat)).map_err(|e| fail(e.into()))?;
        self.stats.files += 1;
        self.stats.bytes += stat.st_size as u64;
        if reflinked {
            self.stats.reflinked += 1;
        }
        Ok(())
    }
}

/// Copies the contents in the kernel where it can, else through a buffer.
fn copy_contents(from: &OwnedFd, to: &OwnedFd) -> io::Result<()> {
    loop {
        match rustix::fs::copy_file_range(from, None, to, None, 1 << 30) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(Errno::XDEV | Errno::NOSYS | Errno::INVAL | Errno::OPNOTSUPP) => break,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut reader = std::fs::File::from(from.try_clone()?);
    let mut writer = std::fs::File::from(to.try_clone()?);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = reader.read(&mut buffer)?;
        if read == 0 {
            return Ok(());
        }
        writer.write_all(&buffer[..read])?;
    }
}

/// Copies the extended attributes of [`KEPT_XATTRS`] that `from` has. Best effort: a file
/// system without extended attributes simply has none to copy.
fn copy_xattrs(from: &OwnedFd, to: &OwnedFd) {
    for name in KEPT_XATTRS {
        let mut value = vec![0u8; 4096];
        if let Ok(length) = rustix::fs::fgetxattr(from, *name, &mut value[..]) {
            let _ =
                rustix::fs::fsetxattr(to, *name, &value[..length], rustix::fs::XattrFlags::empty());
        }
    }
}
