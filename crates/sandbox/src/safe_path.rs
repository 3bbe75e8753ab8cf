//! Files inside an untrusted guest root, resolved so that nothing the guest planted can lead
//! outside it.
//!
//! A [`GuestRoot`] holds an `O_PATH` descriptor of the guest's root directory. Every operation
//! resolves its guest path with `openat2(2)` and `RESOLVE_IN_ROOT`: the kernel treats the root
//! descriptor as `/` for the whole walk, so absolute symlinks, `..` chains and symlinks to `/`
//! stay inside the guest, exactly as the guest itself would see them. Magic links
//! (`/proc/self/fd/…`) are refused (`RESOLVE_NO_MAGICLINKS`).
//!
//! The last component is never followed for anything that changes the tree: creating, removing,
//! renaming, linking, changing modes and owners all work on the parent's descriptor with the
//! final name (`*at(2)` calls with `AT_SYMLINK_NOFOLLOW` or `O_NOFOLLOW`), so a symlink planted
//! at the final name is itself replaced, removed or refused — never followed. Recursive removal
//! walks by descriptor and opens each subdirectory with `O_NOFOLLOW`, so a directory swapped for
//! a symlink mid-walk is unlinked as a symlink, not entered.
//!
//! Reading follows symlinks (inside the root), because that is what the guest's own tools see.
//! A read opens `O_PATH` first and refuses anything but a regular file, so a FIFO or device node
//! planted where a file was expected is never opened.
//!
//! The guest path arguments are ordinary paths interpreted relative to the guest root (a leading
//! `/` is allowed and means the guest's root). There is deliberately no way to get a host path for
//! a guest path: host tools would resolve it through the host's root.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::sys;

/// Resolution inside the root; magic links are never followed.
const IN_ROOT: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);
/// Resolution inside the root that refuses every symlink on the way (for mount targets).
const IN_ROOT_NO_SYMLINKS: ResolveFlags = IN_ROOT.union(ResolveFlags::NO_SYMLINKS);
/// How deep a recursive removal goes before it gives up (each level holds a descriptor).
const MAX_REMOVE_DEPTH: usize = 256;

/// A guest root directory, pinned by an `O_PATH` descriptor.
///
/// The host path is kept only for messages; all operations go through the descriptor.
#[derive(Debug)]
pub struct GuestRoot {
    fd: OwnedFd,
    host_path: PathBuf,
}

/// The kind of a directory entry or file, without following a symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// The file system did not say (some report no type in directory entries).
    Unknown,
}

impl From<FileType> for FileKind {
    fn from(kind: FileType) -> Self {
        match kind {
            FileType::RegularFile => FileKind::File,
            FileType::Directory => FileKind::Dir,
            FileType::Symlink => FileKind::Symlink,
            FileType::CharacterDevice => FileKind::CharDevice,
            FileType::BlockDevice => FileKind::BlockDevice,
            FileType::Fifo => FileKind::Fifo,
            FileType::Socket => FileKind::Socket,
            _ => FileKind::Unknown,
        }
    }
}

/// One entry of [`GuestRoot::read_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name (one component).
    pub name: OsString,
    /// Its kind as the directory reports it.
    pub kind: FileKind,
}

/// What [`GuestRoot::metadata`] and [`GuestRoot::symlink_metadata`] report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileInfo {
    /// The kind of file.
    pub kind: FileKind,
    /// Permission bits (`0o7777` part of `st_mode`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Device of the file system holding it.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Device number, for device nodes.
    pub rdev: u64,
    /// Modification time (seconds since the epoch).
    pub mtime: i64,
}

impl FileInfo {
    fn from_stat(stat: &rustix::fs::Stat) -> Self {
        FileInfo {
            kind: FileType::from_raw_mode(stat.st_mode).into(),
            mode: stat.st_mode & 0o7777,
            uid: stat.st_uid,
            gid: stat.st_gid,
            size: u64::try_from(stat.st_size).unwrap_or(0),
            dev: stat.st_dev,
            ino: stat.st_ino,
            rdev: stat.st_rdev,
            mtime: stat.st_mtime,
        }
    }
}

/// The device nodes a guest's `/dev` needs; the only ones [`GuestRoot::create_device`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceNode {
    /// `/dev/null` (1, 3).
    Null,
    /// `/dev/zero` (1, 5).
    Zero,
    /// `/dev/full` (1, 7).
    Full,
    /// `/dev/random` (1, 8).
    Random,
    /// `/dev/urandom` (1, 9).
    Urandom,
    /// `/dev/tty` (5, 0).
    Tty,
    /// `/dev/ptmx` (5, 2); a guest with its own devpts wants a `pts/ptmx` symlink instead.
    Ptmx,
}

impl DeviceNode {
    /// All standard nodes.
    pub const ALL: [DeviceNode; 7] = [
        DeviceNode::Null,
        DeviceNode::Zero,
        DeviceNode::Full,
        DeviceNode::Random,
        DeviceNode::Urandom,
        DeviceNode::Tty,
        DeviceNode::Ptmx,
    ];

    /// The file name under `/dev`.
    pub fn name(self) -> &'static str {
        match self {
            DeviceNode::Null => "null",
            DeviceNode::Zero => "zero",
            DeviceNode::Full => "full",
            DeviceNode::Random => "random",
            DeviceNode::Urandom => "urandom",
            DeviceNode::Tty => "tty",
            DeviceNode::Ptmx => "ptmx",
        }
    }

    pub(crate) fn major_minor(self) -> (u32, u32) {
        match self {
            DeviceNode::Null => (1, 3),
            DeviceNode::Zero => (1, 5),
            DeviceNode::Full => (1, 7),
            DeviceNode::Random => (1, 8),
            DeviceNode::Urandom => (1, 9),
            DeviceNode::Tty => (5, 0),
            DeviceNode::Ptmx => (5, 2),
        }
    }
}

/// Retries `openat2` on `EAGAIN`, which the kernel returns when a concurrent rename might have
/// let a `..` walk escape; retrying is what the man page asks for.
fn openat2_retry(
    dirfd: BorrowedFd<'_>,
    path: &Path,
    oflags: OFlags,
    mode: Mode,
    resolve: ResolveFlags,
) -> io::Result<OwnedFd> {
    let mut last = Errno::AGAIN;
    for _ in 0..256 {
        match rustix::fs::openat2(dirfd, path, oflags | OFlags::CLOEXEC, mode, resolve) {
            Err(Errno::AGAIN) | Err(Errno::INTR) => last = Errno::AGAIN,
            result => return result.map_err(io::Error::from),
        }
    }
    Err(last.into())
}

/// The guest path relative to the root, with `.` dropped and `..` kept (the kernel clamps it).
fn relative(path: &Path) -> PathBuf {
    let mut rel = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => rel.push(name),
            Component::ParentDir => rel.push(".."),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    if rel.as_os_str().is_empty() {
        rel.push(".");
    }
    rel
}

/// Splits a guest path into its parent (relative to the root) and a final plain name.
fn split(op: &'static str, path: &Path) -> Result<(PathBuf, OsString)> {
    let rel = relative(path);
    let bad = |reason| Error::BadGuestPath {
        op,
        path: path.to_path_buf(),
        reason,
    };
    match rel.components().next_back() {
        Some(Component::Normal(name)) => {
            let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
            let parent = if parent.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                parent
            };
            Ok((parent, name.to_os_string()))
        }
        Some(Component::ParentDir) => Err(bad("it ends in `..`")),
        _ => Err(bad("it names the guest root itself")),
    }
}

fn cstring(op: &'static str, path: &Path, name: &OsStr) -> Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| Error::BadGuestPath {
        op,
        path: path.to_path_buf(),
        reason: "it contains a NUL byte",
    })
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl GuestRoot {
    /// Opens the guest root at `host_path` (a trusted host path such as `/vservers/NAME`).
    pub fn open(host_path: impl AsRef<Path>) -> Result<Self> {
        let host_path = host_path.as_ref();
        let fd = rustix::fs::open(
            host_path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::host("open guest root", host_path, e))?;
        Ok(GuestRoot {
            fd,
            host_path: host_path.to_path_buf(),
        })
    }

    /// The host path the root was opened from (for messages only; never join guest paths to it).
    pub fn host_path(&self) -> &Path {
        &self.host_path
    }

    /// A second handle on the same root directory.
    pub fn try_clone(&self) -> Result<Self> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| Error::host("duplicate descriptor of", &self.host_path, e))?;
        Ok(GuestRoot {
            fd,
            host_path: self.host_path.clone(),
        })
    }

    fn err(&self, op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
        let root = self.host_path.clone();
        let path = path.to_path_buf();
        move |source| Error::Guest {
            op,
            root,
            path,
            source,
        }
    }

    fn errno(&self, op: &'static str, path: &Path) -> impl FnOnce(Errno) -> Error {
        let inner = self.err(op, path);
        move |errno| inner(errno.into())
    }

    /// Resolves `path` inside the root and opens it with `oflags`.
    fn resolve(&self, op: &'static str, path: &Path, oflags: OFlags) -> Result<OwnedFd> {
        openat2_retry(
            self.fd.as_fd(),
            &relative(path),
            oflags,
            Mode::empty(),
            IN_ROOT,
        )
        .map_err(self.err(op, path))
    }

    /// Opens the parent directory of `path` (resolved inside the root) and returns it with the
    /// final name.
    fn parent(&self, op: &'static str, path: &Path) -> Result<(OwnedFd, OsString)> {
        let (parent, name) = split(op, path)?;
        let fd = openat2_retry(
            self.fd.as_fd(),
            &parent,
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
            IN_ROOT,
        )
        .map_err(self.err(op, path))?;
        Ok((fd, name))
    }

    /// Resolves a directory inside the root without following any symlink at all, and returns
    /// an `O_PATH` descriptor pinning it. Mount targets use this: the guest cannot redirect them.
    pub(crate) fn resolve_dir_no_symlinks(&self, op: &'static str, path: &Path) -> Result<OwnedFd> {
        openat2_retry(
            self.fd.as_fd(),
            &relative(path),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW,
            Mode::empty(),
            IN_ROOT_NO_SYMLINKS,
        )
        .map_err(self.err(op, path))
    }

    /// Opens a directory inside the root for reading its entries, without following any
    /// symlink on the way (the tree copy walks from there by descriptor).
    pub(crate) fn open_dir_no_symlinks(&self, op: &'static str, path: &Path) -> Result<OwnedFd> {
        openat2_retry(
            self.fd.as_fd(),
            &relative(path),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
            Mode::empty(),
            IN_ROOT_NO_SYMLINKS,
        )
        .map_err(self.err(op, path))
    }

    /// Opens a regular file for reading. Symlinks are followed, inside the root; anything but a
    /// regular file (FIFO, device, socket, directory) is refused with `EINVAL` before it is opened.
    pub fn open_file(&self, path: impl AsRef<Path>) -> Result<File> {
        let path = path.as_ref();
        let op = "open";
        let pinned = self.resolve(op, path, OFlags::PATH)?;
        let stat = rustix::fs::fstat(&pinned).map_err(self.errno(op, path))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(self.err(op, path)(io::Error::from_raw_os_error(
                libc::EINVAL,
            )));
        }
        // Re-open the very inode we checked through its descriptor, not through the path again.
        let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&pinned));
        let fd = rustix::fs::open(
            proc_path.as_str(),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(self.errno(op, path))?;
        Ok(File::from(fd))
    }

    /// Reads a whole regular file (see [`GuestRoot::open_file`]).
    pub fn read(&self, path: impl AsRef<Path>) -> Result<Vec<u8>> {
        let path = path.as_ref();
        let mut file = self.open_file(path)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)
            .map_err(self.err("read", path))?;
        Ok(data)
    }

    /// Writes `contents` to `path` atomically: a new temporary file in the same directory,
    /// `fsync`, then `rename` over the target (a symlink at the target is replaced, not
    /// followed), then `fsync` of the directory. `mode` is applied exactly (no umask).
    pub fn write_atomic(&self, path: impl AsRef<Path>, contents: &[u8], mode: u32) -> Result<()> {
        self.write_atomic_with(path, mode, |file| file.write_all(contents))
    }

    /// Like [`GuestRoot::write_atomic`], with a closure that writes the content into the
    /// temporary file (for streaming large files).
    pub fn write_atomic_with(
        &self,
        path: impl AsRef<Path>,
        mode: u32,
        write: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> Result<()> {
        let path = path.as_ref();
        let op = "write";
        let (dir, name) = self.parent(op, path)?;
        let mut temp_name = OsString::from(".");
        temp_name.push(&name);
        temp_name.push(format!(
            ".vserver-tmp.{}.{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let fd = rustix::fs::openat(
            &dir,
            temp_name.as_os_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(self.errno(op, path))?;
        let mut file = File::from(fd);
        let result = (|| -> io::Result<()> {
            rustix::fs::fchmod(&file, Mode::from_raw_mode(mode & 0o7777))?;
            write(&mut file)?;
            file.sync_all()?;
            rustix::fs::renameat(&dir, temp_name.as_os_str(), &dir, name.as_os_str())?;
            Ok(())
        })();
        if let Err(error) = result {
            let _ = rustix::fs::unlinkat(&dir, temp_name.as_os_str(), AtFlags::empty());
            return Err(self.err(op, path)(error));
        }
        rustix::fs::fsync(&dir).map_err(self.errno(op, path))
    }

    /// Creates a new file (it must not exist; a symlink at its name is not followed) and opens
    /// it for writing. Use [`GuestRoot::write_atomic`] to replace files.
    pub fn create_new(&self, path: impl AsRef<Path>, mode: u32) -> Result<File> {
        let path = path.as_ref();
        let op = "create";
        let (dir, name) = self.parent(op, path)?;
        let fd = rustix::fs::openat(
            &dir,
            name.as_os_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode & 0o7777),
        )
        .map_err(self.errno(op, path))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode & 0o7777))
            .map_err(self.errno(op, path))?;
        Ok(File::from(fd))
    }

    /// Creates one directory (the parent must exist).
    pub fn mkdir(&self, path: impl AsRef<Path>, mode: u32) -> Result<()> {
        let path = path.as_ref();
        let (dir, name) = self.parent("create directory", path)?;
        rustix::fs::mkdirat(&dir, name.as_os_str(), Mode::from_raw_mode(mode & 0o7777))
            .map_err(self.errno("create directory", path))
    }

    /// Creates a directory and its missing parents, like `mkdir -p`. Existing components may be
    /// symlinks inside the guest (they are followed inside the root, as the guest sees them); a
    /// component that exists but is not a directory fails with `ENOTDIR`.
    pub fn mkdir_all(&self, path: impl AsRef<Path>, mode: u32) -> Result<()> {
        let path = path.as_ref();
        let op = "create directory";
        let rel = relative(path);
        let mut so_far = PathBuf::new();
        for component in rel.components() {
            so_far.push(component);
            let open = || {
                openat2_retry(
                    self.fd.as_fd(),
                    &so_far,
                    OFlags::PATH | OFlags::DIRECTORY,
                    Mode::empty(),
                    IN_ROOT,
                )
            };
            match open() {
                Ok(_) => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(self.err(op, path)(e)),
            }
            let (dir, name) = self.parent(op, &so_far)?;
            match rustix::fs::mkdirat(&dir, name.as_os_str(), Mode::from_raw_mode(mode & 0o7777)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(self.err(op, path)(e.into())),
            }
            // Whatever is there now (ours, or a racing guest's) must resolve as a directory.
            open().map_err(self.err(op, path))?;
        }
        Ok(())
    }

    /// Removes a file, a symlink (not its target) or an empty-or-not directory tree. Nothing is
    /// followed: a directory replaced by a symlink during the walk is unlinked as a symlink.
    pub fn remove_all(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let op = "remove";
        let (dir, name) = self.parent(op, path)?;
        remove_entry(&dir, &name, 0).map_err(self.err(op, path))
    }

    /// Like [`GuestRoot::remove_all`], but a missing path (or missing parent) is not an error.
    pub fn remove_all_if_exists(&self, path: impl AsRef<Path>) -> Result<()> {
        match self.remove_all(path) {
            Err(Error::Guest { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {
                Ok(())
            }
            other => other,
        }
    }

    /// Removes a file or symlink (never a directory, never a symlink's target).
    pub fn remove_file(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let (dir, name) = self.parent("remove", path)?;
        rustix::fs::unlinkat(&dir, name.as_os_str(), AtFlags::empty())
            .map_err(self.errno("remove", path))
    }

    /// Renames `from` to `to` inside the root; a symlink at either final name is moved or
    /// replaced itself, not followed.
    pub fn rename(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> Result<()> {
        let (from, to) = (from.as_ref(), to.as_ref());
        let (from_dir, from_name) = self.parent("rename", from)?;
        let (to_dir, to_name) = self.parent("rename to", to)?;
        rustix::fs::renameat(
            &from_dir,
            from_name.as_os_str(),
            &to_dir,
            to_name.as_os_str(),
        )
        .map_err(self.errno("rename", from))
    }

    /// Creates a symlink at `link` whose content is `target` (stored as given; it is the guest's
    /// business what it points to).
    pub fn symlink(&self, target: impl AsRef<Path>, link: impl AsRef<Path>) -> Result<()> {
        let link = link.as_ref();
        let (dir, name) = self.parent("create symlink", link)?;
        rustix::fs::symlinkat(target.as_ref(), &dir, name.as_os_str())
            .map_err(self.errno("create symlink", link))
    }

    /// Reads a symlink's content.
    pub fn read_link(&self, path: impl AsRef<Path>) -> Result<PathBuf> {
        let path = path.as_ref();
        let (dir, name) = self.parent("read symlink", path)?;
        let target = rustix::fs::readlinkat(&dir, name.as_os_str(), Vec::new())
            .map_err(self.errno("read symlink", path))?;
        Ok(PathBuf::from(OsString::from_vec(target.into_bytes())))
    }

    /// Sets the permission bits of `path` itself; a symlink is refused (`EOPNOTSUPP`).
    pub fn set_permissions(&self, path: impl AsRef<Path>, mode: u32) -> Result<()> {
        let path = path.as_ref();
        let op = "change mode of";
        let (dir, name) = self.parent(op, path)?;
        let name = cstring(op, path, &name)?;
        sys::fchmodat2_nofollow(dir.as_fd(), &name, mode & 0o7777).map_err(self.err(op, path))
    }

    /// Sets owner and/or group of `path` itself (a symlink's own owner, never its target's).
    pub fn set_owner(
        &self,
        path: impl AsRef<Path>,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<()> {
        let path = path.as_ref();
        let op = "change owner of";
        let (dir, name) = self.parent(op, path)?;
        let uid = uid.map(rustix::fs::Uid::from_raw);
        let gid = gid.map(rustix::fs::Gid::from_raw);
        rustix::fs::chownat(&dir, name.as_os_str(), uid, gid, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(self.errno(op, path))
    }

    /// Lists a directory (symlinks on the way are followed inside the root), without `.`/`..`.
    pub fn read_dir(&self, path: impl AsRef<Path>) -> Result<Vec<DirEntry>> {
        let path = path.as_ref();
        let op = "read directory";
        let fd = self.resolve(op, path, OFlags::RDONLY | OFlags::DIRECTORY)?;
        let dir = rustix::fs::Dir::new(fd).map_err(self.errno(op, path))?;
        let mut entries = Vec::new();
        for entry in dir {
            let entry = entry.map_err(self.errno(op, path))?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            entries.push(DirEntry {
                name: OsStr::from_bytes(name).to_os_string(),
                kind: entry.file_type().into(),
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// Metadata of `path`, following symlinks inside the root.
    pub fn metadata(&self, path: impl AsRef<Path>) -> Result<FileInfo> {
        let path = path.as_ref();
        let fd = self.resolve("inspect", path, OFlags::PATH)?;
        let stat = rustix::fs::fstat(&fd).map_err(self.errno("inspect", path))?;
        Ok(FileInfo::from_stat(&stat))
    }

    /// Metadata of `path` itself (a symlink is reported as a symlink).
    pub fn symlink_metadata(&self, path: impl AsRef<Path>) -> Result<FileInfo> {
        let path = path.as_ref();
        let (dir, name) = match split("inspect", path) {
            Ok(_) => self.parent("inspect", path)?,
            // The root itself has no parent inside the root; it is a directory we opened.
            Err(_) => return self.metadata(path),
        };
        let stat = rustix::fs::statat(&dir, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(self.errno("inspect", path))?;
        Ok(FileInfo::from_stat(&stat))
    }

    /// Whether `path` exists (a dangling symlink exists).
    pub fn exists(&self, path: impl AsRef<Path>) -> Result<bool> {
        match self.symlink_metadata(path) {
            Ok(_) => Ok(true),
            Err(Error::Guest { source, .. })
                if matches!(
                    source.raw_os_error(),
                    Some(libc::ENOENT) | Some(libc::ENOTDIR)
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Creates one of the standard device nodes in directory `dir` (normally `/dev`), mode 0666.
    /// An existing node of the right type and number is kept; anything else there is an error.
    pub fn create_device(&self, dir: impl AsRef<Path>, node: DeviceNode) -> Result<()> {
        let path = relative(dir.as_ref()).join(node.name());
        let op = "create device node";
        let (parent, name) = self.parent(op, &path)?;
        let (major, minor) = node.major_minor();
        let rdev = rustix::fs::makedev(major, minor);
        match rustix::fs::mknodat(
            &parent,
            name.as_os_str(),
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o666),
            rdev,
        ) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                let stat = rustix::fs::statat(&parent, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(self.errno(op, &path))?;
                if FileType::from_raw_mode(stat.st_mode) != FileType::CharacterDevice
                    || stat.st_rdev != rdev
                {
                    return Err(self.err(op, &path)(Errno::EXIST.into()));
                }
                return Ok(());
            }
            Err(e) => return Err(self.err(op, &path)(e.into())),
        }
        sys::fchmodat2_nofollow(parent.as_fd(), &cstring(op, &path, &name)?, 0o666)
            .map_err(self.err(op, &path))
    }

    /// Makes a minimal `/dev` in directory `dir`: the [`DeviceNode::ALL`] nodes, `pts/` and `shm/`
    /// directories, and the `fd`, `stdin`, `stdout`, `stderr` symlinks into `/proc/self/fd`.
    pub fn create_standard_devices(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = relative(dir.as_ref());
        self.mkdir_all(&dir, 0o755)?;
        for node in DeviceNode::ALL {
            self.create_device(&dir, node)?;
        }
        self.mkdir_all(dir.join("pts"), 0o755)?;
        self.mkdir_all(dir.join("shm"), 0o1777)?;
        for (name, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            let link = dir.join(name);
            if !self.exists(&link)? {
                self.symlink(target, &link)?;
            }
        }
        Ok(())
    }

    /// Flushes the guest's file system to disk (`syncfs`), for callers that skipped per-file
    /// syncs during a large operation.
    pub fn sync_filesystem(&self) -> Result<()> {
        let fd = self.resolve("sync", Path::new("/"), OFlags::RDONLY | OFlags::DIRECTORY)?;
        rustix::fs::syncfs(&fd).map_err(self.errno("sync", Path::new("/")))
    }
}

impl AsFd for GuestRoot {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Removes `name` in `dir`, whatever it is, without following symlinks.
fn remove_entry(dir: &OwnedFd, name: &OsStr, depth: usize) -> io::Result<()> {
    // A racing guest can turn a file into a directory and back; a few rounds settle it.
    for _ in 0..16 {
        match rustix::fs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(child) => {
                if depth >= MAX_REMOVE_DEPTH {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                remove_contents(child, depth + 1)?;
                match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
                    Ok(()) => return Ok(()),
                    // Something new appeared inside (a racing guest): go round again.
                    Err(Errno::NOTEMPTY) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            // Not a directory (a file, a symlink — ELOOP with O_NOFOLLOW —, a device…).
            Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
                match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
                    Ok(()) => return Ok(()),
                    Err(Errno::ISDIR) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::from_raw_os_error(libc::EBUSY))
}

fn remove_contents(dir: OwnedFd, depth: usize) -> io::Result<()> {
    let listing = rustix::fs::Dir::read_from(&dir)?;
    let mut names = Vec::new();
    for entry in listing {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    for name in names {
        match remove_entry(&dir, &name, depth) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            other => other?,
        }
    }
    Ok(())
}
