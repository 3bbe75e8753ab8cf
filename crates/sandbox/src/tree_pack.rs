//! Writing a tree of a guest root into a tar archive (`vserver G export`).
//!
//! The source is hostile and may be running, so the walk is the one of the tree copy (module
//! `tree_copy`): by directory descriptor from a directory opened without following any symlink,
//! every entry looked at with `AT_SYMLINK_NOFOLLOW` and opened `O_NOFOLLOW | O_NONBLOCK`, and
//! checked again after opening. A symlink is archived as a symlink, never followed; a second name
//! of a multiply-linked file becomes a hard-link entry naming the first. Owner, mode (setuid bits
//! included), modification time and the extended attributes the copy keeps (as PAX
//! `SCHILY.xattr.*` records, which GNU tar reads too) go into the headers. Device nodes and
//! sockets are left out and counted: the importer makes `/dev` anew. Names are archived in
//! sorted order, so the same tree makes the same archive.
//!
//! A file that shrinks while it is read is padded with zeros to the size its header announced
//! (the archive stays well-formed); one that grows is cut there. Both are the running guest's
//! own race, as with any copy of a live file system.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::safe_path::GuestRoot;
use crate::tree_copy::{KEPT_XATTRS, MAX_DEPTH, entry_names, open_entry_dir, stat_entry};

/// What an archive of a tree holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackStats {
    /// Regular files archived with their contents.
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// Directories, symlinks, FIFOs and hard-link entries.
    pub others: u64,
    /// Entries left out (device nodes, sockets), as guest paths.
    pub skipped: Vec<PathBuf>,
}

struct Pack<'a, W: Write> {
    from: &'a GuestRoot,
    builder: &'a mut tar::Builder<W>,
    /// First archived name of each multiply-linked inode.
    links: HashMap<(u64, u64), PathBuf>,
    stats: PackStats,
}

impl GuestRoot {
    /// Appends the tree at `from` (a directory of this root, reached without symlinks) to
    /// `builder`, every name under `prefix` (`prefix` itself is the entry of `from`); see the
    /// module documentation.
    pub fn pack_tree<W: Write>(
        &self,
        from: &Path,
        builder: &mut tar::Builder<W>,
        prefix: &Path,
    ) -> Result<PackStats> {
        let source = self.open_dir_no_symlinks("archive", from)?;
        let stat = rustix::fs::fstat(&source).map_err(|e| self.pack_err(from, e.into()))?;
        let mut pack = Pack {
            from: self,
            builder,
            links: HashMap::new(),
            stats: PackStats::default(),
        };
        pack.append_dir_header(prefix, &stat, from)?;
        pack.dir(source.as_fd(), from, prefix, 0)?;
        Ok(pack.stats)
    }

    fn pack_err(&self, path: &Path, source: io::Error) -> Error {
        Error::Guest {
            op: "archive",
            root: self.host_path().to_path_buf(),
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A header with the owner, mode and modification time of `stat`.
fn header_for(stat: &rustix::fs::Stat, kind: tar::EntryType) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(stat.st_mode & 0o7777);
    header.set_uid(u64::from(stat.st_uid));
    header.set_gid(u64::from(stat.st_gid));
    header.set_mtime(u64::try_from(stat.st_mtime).unwrap_or(0));
    header.set_size(0);
    header
}

impl<W: Write> Pack<'_, W> {
    fn err(&self, path: &Path) -> impl FnOnce(io::Error) -> Error {
        let root = self.from.host_path().to_path_buf();
        let path = path.to_path_buf();
        move |source| Error::Guest {
            op: "archive",
            root,
            path,
            source,
        }
    }

    fn append_dir_header(
        &mut self,
        name: &Path,
        stat: &rustix::fs::Stat,
        path: &Path,
    ) -> Result<()> {
        let mut header = header_for(stat, tar::EntryType::Directory);
        self.builder
            .append_data(&mut header, name, io::empty())
            .map_err(self.err(path))?;
        self.stats.others += 1;
        Ok(())
    }

    fn dir(
        &mut self,
        source: BorrowedFd<'_>,
        path: &Path,
        name: &Path,
        depth: usize,
    ) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(self.err(path)(io::Error::other(format!(
                "more than {MAX_DEPTH} directory levels"
            ))));
        }
        for entry_name in entry_names(source).map_err(self.err(path))? {
            let os_name = OsStr::from_bytes(entry_name.to_bytes());
            self.entry(
                source,
                &entry_name,
                &path.join(os_name),
                &name.join(os_name),
                depth,
            )?;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        source: BorrowedFd<'_>,
        entry_name: &CString,
        path: &Path,
        name: &Path,
        depth: usize,
    ) -> Result<()> {
        let Some(stat) = stat_entry(source, entry_name).map_err(|e| self.err(path)(e.into()))?
        else {
            return Ok(());
        };
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory => {
                let Some(child) =
                    open_entry_dir(source, entry_name).map_err(|e| self.err(path)(e.into()))?
                else {
                    return Ok(());
                };
                self.append_dir_header(name, &stat, path)?;
                self.dir(child.as_fd(), path, name, depth + 1)?;
            }
            FileType::RegularFile => {
                if stat.st_nlink > 1 {
                    let key = (stat.st_dev, stat.st_ino);
                    if let Some(first) = self.links.get(&key).cloned() {
                        let mut header = header_for(&stat, tar::EntryType::Link);
                        self.builder
                            .append_link(&mut header, name, first)
                            .map_err(self.err(path))?;
                        self.stats.others += 1;
                        return Ok(());
                    }
                    self.links.insert(key, name.to_path_buf());
                }
                self.file(source, entry_name, path, name, &stat)?;
            }
            FileType::Symlink => {
                let target = match rustix::fs::readlinkat(source, entry_name, Vec::new()) {
                    Ok(target) => target,
                    Err(Errno::NOENT | Errno::INVAL) => return Ok(()),
                    Err(e) => return Err(self.err(path)(e.into())),
                };
                let mut header = header_for(&stat, tar::EntryType::Symlink);
                self.builder
                    .append_link(&mut header, name, OsStr::from_bytes(target.as_bytes()))
                    .map_err(self.err(path))?;
                self.stats.others += 1;
            }
            FileType::Fifo => {
                let mut header = header_for(&stat, tar::EntryType::Fifo);
                self.builder
                    .append_data(&mut header, name, io::empty())
                    .map_err(self.err(path))?;
                self.stats.others += 1;
            }
            _ => self.stats.skipped.push(path.to_path_buf()),
        }
        Ok(())
    }

    fn file(
        &mut self,
        source: BorrowedFd<'_>,
        entry_name: &CString,
        path: &Path,
        name: &Path,
        looked_at: &rustix::fs::Stat,
    ) -> Result<()> {
        let opened = match rustix::fs::openat(
            source,
            entry_name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::LOOP) => return Ok(()),
            Err(e) => return Err(self.err(path)(e.into())),
        };
        let stat = rustix::fs::fstat(&opened).map_err(|e| self.err(path)(e.into()))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile
            || stat.st_ino != looked_at.st_ino
        {
            // Swapped since we looked: the guest's race, its loss.
            if let Some(key) = self.links.get(&(looked_at.st_dev, looked_at.st_ino))
                && key == name
            {
                self.links.remove(&(looked_at.st_dev, looked_at.st_ino));
            }
            return Ok(());
        }
        let xattrs = pax_xattrs(&opened);
        if !xattrs.is_empty() {
            let mut header = tar::Header::new_ustar();
            header.set_entry_type(tar::EntryType::XHeader);
            header.set_size(xattrs.len() as u64);
            header.set_mode(0o644);
            self.builder
                .append_data(&mut header, "PaxHeader", xattrs.as_slice())
                .map_err(self.err(path))?;
        }
        let size = u64::try_from(stat.st_size).unwrap_or(0);
        let mut header = header_for(&stat, tar::EntryType::Regular);
        header.set_size(size);
        let contents = ExactLength {
            inner: std::fs::File::from(opened).take(size),
            left: size,
        };
        self.builder
            .append_data(&mut header, name, contents)
            .map_err(self.err(path))?;
        self.stats.files += 1;
        self.stats.bytes += size;
        Ok(())
    }
}

/// The PAX records of the kept extended attributes `file` has (empty when it has none).
fn pax_xattrs(file: &OwnedFd) -> Vec<u8> {
    let mut records = Vec::new();
    for name in KEPT_XATTRS {
        let mut value = vec![0u8; 4096];
        if let Ok(length) = rustix::fs::fgetxattr(file, *name, &mut value[..]) {
            pax_record(
                &mut records,
                &format!("SCHILY.xattr.{name}"),
                &value[..length],
            );
        }
    }
    records
}

/// Appends the PAX record `LEN KEY=VALUE\n`, where LEN counts the whole record, itself included.
pub(crate) fn pax_record(records: &mut Vec<u8>, key: &str, value: &[u8]) {
    let body = key.len() + value.len() + 3; // space, '=', newline
    let mut length = body + 1;
    while length != body + length.to_string().len() {
        length = body + length.to_string().len();
    }
    records.extend_from_slice(length.to_string().as_bytes());
    records.push(b' ');
    records.extend_from_slice(key.as_bytes());
    records.push(b'=');
    records.extend_from_slice(value);
    records.push(b'\n');
}

/// Reads exactly `left` bytes: what the file holds, then zeros if it shrank.
struct ExactLength<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for ExactLength<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buffer
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let mut read = self.inner.read(&mut buffer[..want])?;
        if read == 0 {
            buffer[..want].fill(0);
            read = want;
        }
        self.left -= read as u64;
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pax_record_counts_its_own_length() {
        for (key, value) in [("a", &b"b"[..]), ("SCHILY.xattr.x", &[0u8; 95][..])] {
            let mut records = Vec::new();
            pax_record(&mut records, key, value);
            let text = String::from_utf8_lossy(&records);
            let (length, _) = text.split_once(' ').unwrap_or_default();
            assert_eq!(length.parse::<usize>().ok(), Some(records.len()));
        }
    }

    #[test]
    fn a_shrunk_file_reads_as_zeros_to_its_announced_length() {
        let mut reader = ExactLength {
            inner: &b"abc"[..],
            left: 6,
        };
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap_or_default();
        assert_eq!(out, b"abc\0\0\0");
    }
}
