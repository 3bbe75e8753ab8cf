//! Unpacking a hostile tar archive into a directory of a guest root (`build -m template`).
//!
//! A template may come from anywhere, so every entry is checked as a hostile archive's before
//! anything is written:
//!
//! - its name, below the archive prefix the caller strips, is a plain relative path: no `..`,
//!   no `.`, not absolute, no NUL, at most 4,096 bytes and 256 levels deep;
//! - its parent directory is reached from the destination without following any symlink (an
//!   earlier entry that made `etc` a link to `/etc` cannot redirect `etc/passwd`: the entry is
//!   refused), and must exist: a template lists its directories before their contents;
//! - a name is written once (`O_CREAT | O_EXCL`, `O_NOFOLLOW`); a directory listed again only
//!   gets its attributes again;
//! - a hard link names an earlier regular file of the same tree, reached the same way;
//! - a symlink is made as a symlink and never followed (its target, absolute or not, means
//!   something only inside the guest);
//! - device nodes are left out and reported (the importer makes `/dev` anew); sockets and other
//!   entry types are refused;
//! - the sizes announced by the headers are charged against a budget (the free space of the
//!   destination, say) before their contents are read;
//! - setuid and setgid files are reported, so the caller can name them.
//!
//! Directories are made `0700` and get their owner, mode and time only at [`TreeUnpacker::finish`]
//! (deepest first): until then nothing in the new tree is reachable by anyone but root.

use std::ffi::{CString, OsString};
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::safe_path::GuestRoot;
use crate::tree_copy::{KEPT_XATTRS, MAX_DEPTH};

/// Longest entry name or link target accepted.
const MAX_NAME: usize = 4096;

/// What an unpacking made and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackReport {
    /// Regular files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Directories, symlinks, FIFOs and hard links made.
    pub others: u64,
    /// Setuid or setgid files, as paths below the destination.
    pub setuid: Vec<PathBuf>,
    /// Device nodes left out, as paths below the destination.
    pub devices: Vec<PathBuf>,
}

/// Unpacks the entries of one archive prefix into one directory of a guest root; see the
/// module documentation.
pub struct TreeUnpacker<'a> {
    root: &'a GuestRoot,
    /// The destination directory, a path of `root`.
    base: PathBuf,
    /// The archive names that belong to this tree start with this prefix.
    prefix: PathBuf,
    /// Bytes the archive may still write.
    budget: u64,
    dirs: Vec<(PathBuf, DirAttributes)>,
    report: UnpackReport,
}

#[derive(Debug, Clone, Copy)]
struct DirAttributes {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: i64,
}

impl<'a> TreeUnpacker<'a> {
    /// An unpacker of the archive names under `prefix` into the existing directory `base` of
    /// `root`, writing at most `budget` bytes of file contents.
    pub fn new(root: &'a GuestRoot, base: &Path, prefix: &Path, budget: u64) -> Self {
        TreeUnpacker {
            root,
            base: base.to_path_buf(),
            prefix: prefix.to_path_buf(),
            budget,
            dirs: Vec::new(),
            report: UnpackReport::default(),
        }
    }

    fn refuse(&self, name: &Path, reason: impl Into<String>) -> Error {
        Error::Guest {
            op: "unpack",
            root: self.root.host_path().to_path_buf(),
            path: name.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidData, reason.into()),
        }
    }

    fn fail(&self, name: &Path) -> impl FnOnce(Errno) -> Error {
        let root = self.root.host_path().to_path_buf();
        let name = name.to_path_buf();
        move |errno| Error::Guest {
            op: "unpack",
            root,
            path: name,
            source: errno.into(),
        }
    }

    /// The path below the destination that archive name `name` stands for (`None` for the
    /// prefix itself), checked.
    fn relative_name(&self, name: &[u8]) -> Result<Option<PathBuf>> {
        let shown = PathBuf::from(OsString::from_vec(name.to_vec()));
        if name.len() > MAX_NAME || name.contains(&0) {
            return Err(self.refuse(&shown, "the name is too long or holds a NUL byte"));
        }
        let rest = shown
            .strip_prefix(&self.prefix)
            .map_err(|_| self.refuse(&shown, "the entry is outside the tree it claims"))?;
        let mut plain = PathBuf::new();
        for component in rest.components() {
            match component {
                Component::Normal(part) => plain.push(part),
                _ => {
                    return Err(self.refuse(
                        &shown,
                        "the name is not a plain relative path (`..`, `.` or absolute)",
                    ));
                }
            }
        }
        if plain.components().count() > MAX_DEPTH {
            return Err(self.refuse(&shown, format!("more than {MAX_DEPTH} levels deep")));
        }
        Ok((!plain.as_os_str().is_empty()).then_some(plain))
    }

    /// The parent directory of `rel` below the destination, opened without following any
    /// symlink, and the final name.
    fn parent(&self, rel: &Path) -> Result<(OwnedFd, CString)> {
        let parent = self.base.join(rel.parent().unwrap_or(Path::new("")));
        let name = rel.file_name().unwrap_or_default();
        let fd = self
            .root
            .open_dir_no_symlinks("unpack", &parent)
            .map_err(|_| {
                self.refuse(
                rel,
                "its directory is not a directory the archive made before it (a link, or missing)",
            )
            })?;
        let name = CString::new(name.as_bytes())
            .map_err(|_| self.refuse(rel, "the name holds a NUL byte"))?;
        Ok((fd, name))
    }

    /// Unpacks one entry whose name starts with the prefix.
    pub fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let name = entry.path_bytes().into_owned();
        let Some(rel) = self.relative_name(&name)? else {
            // The prefix itself: the destination, which exists.
            return Ok(());
        };
        let header = entry.header();
        let kind = header.entry_type();
        let number = |value: io::Result<u64>| value.unwrap_or(0);
        let uid = u32::try_from(number(header.uid())).unwrap_or(u32::MAX);
        let gid = u32::try_from(number(header.gid())).unwrap_or(u32::MAX);
        let mode = header.mode().unwrap_or(0) & 0o7777;
        let mtime = i64::try_from(number(header.mtime())).unwrap_or(0);
        let owner = (
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        );
        let stamp = Timestamps {
            last_access: Timespec {
                tv_sec: mtime,
                tv_nsec: 0,
            },
            last_modification: Timespec {
                tv_sec: mtime,
                tv_nsec: 0,
            },
        };
        match kind {
            tar::EntryType::Directory => {
                let (parent, name) = self.parent(&rel)?;
                match rustix::fs::mkdirat(&parent, &name, Mode::from_raw_mode(0o700)) {
                    Ok(()) => {}
                    Err(Errno::EXIST)
                        if matches!(
                            rustix::fs::statat(&parent, &name, AtFlags::SYMLINK_NOFOLLOW),
                            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Directory
                        ) => {}
                    Err(Errno::EXIST) => {
                        return Err(self.refuse(&rel, "the name is already taken by another entry"));
                    }
                    Err(e) => return Err(self.fail(&rel)(e)),
                }
                self.dirs.push((
                    rel.clone(),
                    DirAttributes {
                        uid,
                        gid,
                        mode,
                        mtime,
                    },
                ));
                self.report.others += 1;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.size();
                if size > self.budget {
                    return Err(self.refuse(
                        &rel,
                        format!(
                            "the archive announces {size} bytes here, more than the {} left of the space allowed",
                            self.budget
                        ),
                    ));
                }
                self.budget -= size;
                let xattrs = kept_xattrs(entry);
                let (parent, name) = self.parent(&rel)?;
                let file = rustix::fs::openat(
                    &parent,
                    &name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| match e {
                    Errno::EXIST => self.refuse(&rel, "the name is already taken by another entry"),
                    e => self.fail(&rel)(e),
                })?;
                let mut writer = std::fs::File::from(file);
                let written =
                    io::copy(&mut entry.take(size), &mut writer).map_err(|e| Error::Guest {
                        op: "unpack",
                        root: self.root.host_path().to_path_buf(),
                        path: rel.clone(),
                        source: e,
                    })?;
                if written != size {
                    return Err(self.refuse(&rel, "the archive ends inside this file"));
                }
                // Owner first: chown clears setuid bits and file capabilities.
                rustix::fs::fchown(&writer, owner.0, owner.1).map_err(self.fail(&rel))?;
                rustix::fs::fchmod(&writer, Mode::from_raw_mode(mode)).map_err(self.fail(&rel))?;
                for (key, value) in xattrs {
                    rustix::fs::fsetxattr(
                        &writer,
                        key.as_str(),
                        &value,
                        rustix::fs::XattrFlags::empty(),
                    )
                    .map_err(self.fail(&rel))?;
                }
                rustix::fs::futimens(&writer, &stamp).map_err(self.fail(&rel))?;
                if mode & 0o6000 != 0 {
                    self.report.setuid.push(rel.clone());
                }
                self.report.files += 1;
                self.report.bytes += size;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                if target.is_empty() || target.len() > MAX_NAME || target.contains(&0) {
                    return Err(
                        self.refuse(&rel, "the link target is empty, too long or holds NUL")
                    );
                }
                let (parent, name) = self.parent(&rel)?;
                let target = CString::new(target)
                    .map_err(|_| self.refuse(&rel, "the link target holds a NUL byte"))?;
                rustix::fs::symlinkat(target.as_c_str(), &parent, &name).map_err(|e| match e {
                    Errno::EXIST => self.refuse(&rel, "the name is already taken by another entry"),
                    e => self.fail(&rel)(e),
                })?;
                rustix::fs::chownat(&parent, &name, owner.0, owner.1, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(self.fail(&rel))?;
                rustix::fs::utimensat(&parent, &name, &stamp, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(self.fail(&rel))?;
                self.report.others += 1;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let Some(target_rel) = self.relative_name(&target)? else {
                    return Err(self.refuse(&rel, "a hard link to the tree's top directory"));
                };
                let (target_parent, target_name) = self.parent(&target_rel)?;
                match rustix::fs::statat(&target_parent, &target_name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile => {}
                    _ => {
                        return Err(self.refuse(
                            &rel,
                            "a hard link must name a regular file the archive made before it",
                        ));
                    }
                }
                let (parent, name) = self.parent(&rel)?;
                rustix::fs::linkat(
                    &target_parent,
                    &target_name,
                    &parent,
                    &name,
                    AtFlags::empty(),
                )
                .map_err(|e| match e {
                    Errno::EXIST => self.refuse(&rel, "the name is already taken by another entry"),
                    e => self.fail(&rel)(e),
                })?;
                self.report.others += 1;
            }
            tar::EntryType::Fifo => {
                let (parent, name) = self.parent(&rel)?;
                rustix::fs::mknodat(
                    &parent,
                    &name,
                    FileType::Fifo,
                    Mode::from_raw_mode(mode & 0o777),
                    0,
                )
                .map_err(self.fail(&rel))?;
                rustix::fs::chownat(&parent, &name, owner.0, owner.1, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(self.fail(&rel))?;
                self.report.others += 1;
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                self.report.devices.push(rel);
            }
            other => {
                return Err(self.refuse(
                    &rel,
                    format!("entries of type {other:?} are not part of a guest template"),
                ));
            }
        }
        Ok(())
    }

    /// Gives the directories their owner, mode and time, deepest first; returns the report.
    pub fn finish(mut self) -> Result<UnpackReport> {
        self.dirs
            .sort_by_key(|(rel, _)| std::cmp::Reverse(rel.components().count()));
        for (rel, attributes) in &self.dirs {
            let dir = self
                .root
                .open_dir_no_symlinks("unpack", &self.base.join(rel))?;
            rustix::fs::fchown(
                &dir,
                Some(rustix::fs::Uid::from_raw(attributes.uid)),
                Some(rustix::fs::Gid::from_raw(attributes.gid)),
            )
            .map_err(self.fail(rel))?;
            rustix::fs::fchmod(&dir, Mode::from_raw_mode(attributes.mode))
                .map_err(self.fail(rel))?;
            let stamp = Timespec {
                tv_sec: attributes.mtime,
                tv_nsec: 0,
            };
            rustix::fs::futimens(
                dir.as_fd(),
                &Timestamps {
                    last_access: stamp,
                    last_modification: stamp,
                },
            )
            .map_err(self.fail(rel))?;
        }
        Ok(self.report)
    }
}

/// The extended attributes of `entry`'s PAX records that a copy keeps (others are ignored).
fn kept_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Vec<(String, Vec<u8>)> {
    let mut kept = Vec::new();
    let Ok(Some(extensions)) = entry.pax_extensions() else {
        return kept;
    };
    for extension in extensions.flatten() {
        let Ok(key) = extension.key() else { continue };
        if let Some(name) = key.strip_prefix("SCHILY.xattr.")
            && KEPT_XATTRS.contains(&name)
        {
            kept.push((name.to_owned(), extension.value_bytes().to_vec()));
        }
    }
    kept
}
