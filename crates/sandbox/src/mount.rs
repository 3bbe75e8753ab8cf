//! Mounts with the new mount API: bind a host directory into a guest root without letting the
//! guest redirect it, and create proc, tmpfs and devpts instances.
//!
//! The old `mount(2)` takes a *path* for the target, which the kernel resolves at the time of the
//! call through whatever symlinks a guest planted. Here the target is first resolved inside the
//! guest root with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS)` into an `O_PATH` descriptor,
//! and the mount is attached with `move_mount(…, MOVE_MOUNT_T_EMPTY_PATH)` onto exactly that
//! directory. A symlink anywhere on the target path is refused (`ELOOP`), a file where a directory
//! is expected is refused (`ENOTDIR`). If the guest renames the pinned directory away while we
//! work, the mount still lands on that directory, but the check afterwards — re-resolve the target
//! path and compare the mount ID (`statx` `STATX_MNT_ID`) and inode with what we mounted — sees it,
//! detaches the mount again and reports [`Error::MountMisplaced`].
//!
//! All functions here act on the caller's mount namespace: call them in a private one
//! ([`crate::namespaces::enter_private_mount_namespace`]), never in the host's.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, StatxFlags};
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, OpenTreeFlags, fsconfig_create,
    fsconfig_set_string, fsmount, fsopen, move_mount, open_tree,
};

use crate::error::{Error, Result};
use crate::safe_path::GuestRoot;
use crate::sys;

/// Whether a bind mount may be written through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Access {
    /// Read-only (`MOUNT_ATTR_RDONLY`).
    ReadOnly,
    /// Writable.
    ReadWrite,
}

/// A bind mount made by [`bind_into`], as verified after it was attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// The target inside the guest.
    pub target: PathBuf,
    /// The kernel's mount ID of the new mount.
    pub mount_id: u64,
}

/// A file system instance to create with `fsopen`/`fsmount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSystem {
    /// `proc`, mounted read-only, `nosuid,nodev,noexec`, for the caller's pid namespace.
    /// Read-only because files such as `/proc/sysrq-trigger` check only file ownership, and root
    /// of the sandbox's user namespace is host uid 0.
    Proc,
    /// A `tmpfs` with the given root mode and optional size limit in bytes, `nosuid,nodev`.
    Tmpfs {
        /// Permission bits of its root directory (`0o1777` for `/tmp`).
        mode: u32,
        /// Size limit; `None` is the kernel's default (half of RAM).
        size: Option<u64>,
    },
    /// A new `devpts` instance (`newinstance,ptmxmode=0666,mode=0620`), `nosuid,noexec`.
    Devpts,
    /// `sysfs` for the caller's network namespace, read-only, `nosuid,nodev,noexec`: a guest
    /// may look at its devices but never write a kernel tunable through it.
    Sysfs,
    /// A `cgroup2` instance, `nosuid,nodev,noexec`, writable: mounted by a process in a cgroup
    /// namespace it shows that namespace's root cgroup and what lies below, nothing above.
    Cgroup2,
}

fn statx_of(fd: BorrowedFd<'_>) -> std::io::Result<rustix::fs::Statx> {
    rustix::fs::statx(
        fd,
        "",
        AtFlags::EMPTY_PATH,
        StatxFlags::MNT_ID | StatxFlags::INO,
    )
    .map_err(Into::into)
}

/// Bind-mounts the host directory `host_source` onto the directory `guest_target` inside `root`.
///
/// `guest_target` must already exist as a directory and no component of it may be a symlink.
/// The mount is always `nosuid,nodev`; `access` decides read-only. After attaching, the target is
/// resolved again and must be the new mount; otherwise the mount is detached and
/// [`Error::MountMisplaced`] returned.
pub fn bind_into(
    root: &GuestRoot,
    host_source: &Path,
    guest_target: impl AsRef<Path>,
    access: Access,
) -> Result<BindMount> {
    let guest_target = guest_target.as_ref();
    let op = "bind-mount onto";
    let target = root.resolve_dir_no_symlinks(op, guest_target)?;
    let tree = open_tree(
        CWD,
        host_source,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )
    .map_err(|e| Error::host("clone mount of", host_source, e))?;
    let mut attrs = sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV;
    if access == Access::ReadOnly {
        attrs |= sys::MOUNT_ATTR_RDONLY;
    }
    sys::mount_setattr(tree.as_fd(), c"", libc::AT_EMPTY_PATH as u32, attrs, 0, 0)
        .map_err(|e| Error::host("set attributes of mount of", host_source, e))?;
    attach_and_verify(root, &tree, &target, guest_target, host_source)
}

/// Mounts a new instance of `fs` onto the directory `guest_target` inside `root` (resolved as for
/// [`bind_into`]: no symlinks).
pub fn mount_into(
    root: &GuestRoot,
    fs: &FileSystem,
    guest_target: impl AsRef<Path>,
) -> Result<BindMount> {
    let guest_target = guest_target.as_ref();
    let target = root.resolve_dir_no_symlinks("mount onto", guest_target)?;
    let mounted = create_filesystem(fs)?;
    let source = PathBuf::from(format!("{fs:?}"));
    attach_and_verify(root, &mounted, &target, guest_target, &source)
}

/// Mounts a new instance of `fs` on a trusted host path (inside the sandbox's own namespace).
pub fn mount_at(fs: &FileSystem, host_target: &Path) -> Result<()> {
    let mounted = create_filesystem(fs)?;
    move_mount(
        &mounted,
        "",
        CWD,
        host_target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| Error::host("mount onto", host_target, e))
}

/// Mounts a new instance of `fs` on the trusted host directory `host_target` and shows again,
/// at the same paths, what that directory held: a private, writable `/tmp` for an operation
/// whose guest root (or a repository, or a writable path) lies below the host's `/tmp`.
///
/// Before the new instance covers the directory, each entry's mount tree is cloned
/// (`open_tree(OPEN_TREE_CLONE | AT_RECURSIVE)` relative to the opened directory, never
/// following a symlink), so it keeps the mounts below it and their attributes: what was
/// read-only stays read-only, the guest root stays writable, hidden neighbours stay hidden.
/// Each clone is then attached onto an entry of the same name and kind made in the new instance;
/// symlinks are copied as symlinks (their targets resolve in the same view as before); other
/// kinds (sockets, fifos) are left out. The new instance's own root is what the program may
/// write: it belongs to this operation alone and vanishes with its mount namespace.
pub(crate) fn mount_keeping_entries(fs: &FileSystem, host_target: &Path) -> Result<()> {
    use rustix::fs::{FileType, Mode, OFlags};
    enum Kept {
        Tree(OwnedFd, bool),
        Link(PathBuf),
    }
    let listing = rustix::fs::open(
        host_target,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::host("open", host_target, e))?;
    let mut kept = Vec::new();
    let dir =
        rustix::fs::Dir::read_from(&listing).map_err(|e| Error::host("list", host_target, e))?;
    for entry in dir {
        let entry = entry.map_err(|e| Error::host("list", host_target, e))?;
        let name = entry.file_name().to_owned();
        if matches!(name.to_bytes(), b"." | b"..") {
            continue;
        }
        let path = host_target
            .join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name.to_bytes()));
        let stat = match rustix::fs::statat(&listing, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            // Gone since it was listed.
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(Error::host("inspect", &path, e)),
        };
        let kind = FileType::from_raw_mode(stat.st_mode);
        let item = match kind {
            FileType::Directory | FileType::RegularFile => {
                match open_tree(
                    &listing,
                    name.as_c_str(),
                    OpenTreeFlags::OPEN_TREE_CLONE
                        | OpenTreeFlags::OPEN_TREE_CLOEXEC
                        | OpenTreeFlags::AT_RECURSIVE
                        | OpenTreeFlags::AT_SYMLINK_NOFOLLOW,
                ) {
                    Ok(tree) => Kept::Tree(tree, kind == FileType::Directory),
                    Err(rustix::io::Errno::NOENT) => continue,
                    Err(e) => return Err(Error::host("clone mount tree of", &path, e)),
                }
            }
            FileType::Symlink => {
                match rustix::fs::readlinkat(&listing, name.as_c_str(), Vec::new()) {
                    Ok(target) => Kept::Link(PathBuf::from(
                        <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(
                            target.into_bytes(),
                        ),
                    )),
                    Err(rustix::io::Errno::NOENT) => continue,
                    Err(e) => return Err(Error::host("read the symlink", &path, e)),
                }
            }
            _ => continue,
        };
        kept.push((name, path, item));
    }
    mount_at(fs, host_target)?;
    let fresh = rustix::fs::open(
        host_target,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::host("open", host_target, e))?;
    for (name, path, item) in kept {
        match item {
            Kept::Tree(tree, is_dir) => {
                let target = if is_dir {
                    rustix::fs::mkdirat(&fresh, name.as_c_str(), Mode::from_raw_mode(0o700))
                        .map_err(|e| Error::host("create a mount point", &path, e))?;
                    rustix::fs::openat(
                        &fresh,
                        name.as_c_str(),
                        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                } else {
                    rustix::fs::openat(
                        &fresh,
                        name.as_c_str(),
                        OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
                        Mode::from_raw_mode(0o600),
                    )
                }
                .map_err(|e| Error::host("create a mount point", &path, e))?;
                attach(&tree, target.as_fd(), &path)?;
            }
            Kept::Link(target) => {
                rustix::fs::symlinkat(&target, &fresh, name.as_c_str())
                    .map_err(|e| Error::host("copy the symlink", &path, e))?;
            }
        }
    }
    Ok(())
}

fn create_filesystem(fs: &FileSystem) -> Result<OwnedFd> {
    let (name, attrs) = match fs {
        FileSystem::Proc => (
            "proc",
            MountAttrFlags::MOUNT_ATTR_RDONLY
                | MountAttrFlags::MOUNT_ATTR_NOSUID
                | MountAttrFlags::MOUNT_ATTR_NODEV
                | MountAttrFlags::MOUNT_ATTR_NOEXEC,
        ),
        FileSystem::Tmpfs { .. } => (
            "tmpfs",
            MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
        ),
        FileSystem::Devpts => (
            "devpts",
            MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NOEXEC,
        ),
        FileSystem::Sysfs => (
            "sysfs",
            MountAttrFlags::MOUNT_ATTR_RDONLY
                | MountAttrFlags::MOUNT_ATTR_NOSUID
                | MountAttrFlags::MOUNT_ATTR_NODEV
                | MountAttrFlags::MOUNT_ATTR_NOEXEC,
        ),
        FileSystem::Cgroup2 => (
            "cgroup2",
            MountAttrFlags::MOUNT_ATTR_NOSUID
                | MountAttrFlags::MOUNT_ATTR_NODEV
                | MountAttrFlags::MOUNT_ATTR_NOEXEC,
        ),
    };
    let kernel = |op| move |e: rustix::io::Errno| Error::kernel(op, e);
    let context = fsopen(name, FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(kernel("open a new file system context"))?;
    match fs {
        FileSystem::Proc | FileSystem::Sysfs | FileSystem::Cgroup2 => {}
        FileSystem::Tmpfs { mode, size } => {
            fsconfig_set_string(&context, "mode", format!("{:o}", mode & 0o7777))
                .map_err(kernel("configure tmpfs"))?;
            if let Some(size) = size {
                fsconfig_set_string(&context, "size", size.to_string())
                    .map_err(kernel("configure tmpfs"))?;
            }
        }
        FileSystem::Devpts => {
            for (key, value) in [("ptmxmode", "0666"), ("mode", "0620")] {
                fsconfig_set_string(&context, key, value).map_err(kernel("configure devpts"))?;
            }
            rustix::mount::fsconfig_set_flag(&context, "newinstance")
                .map_err(kernel("configure devpts"))?;
        }
    }
    fsconfig_create(&context).map_err(kernel("create the file system"))?;
    fsmount(&context, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
        .map_err(kernel("mount the new file system"))
}

fn attach_and_verify(
    root: &GuestRoot,
    tree: &OwnedFd,
    target: &OwnedFd,
    guest_target: &Path,
    source: &Path,
) -> Result<BindMount> {
    let guest_err = |op: &'static str| {
        let root_path = root.host_path().to_path_buf();
        move |e: std::io::Error| Error::Guest {
            op,
            root: root_path,
            path: guest_target.to_path_buf(),
            source: e,
        }
    };
    move_mount(
        tree,
        "",
        target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| guest_err("attach mount onto")(e.into()))?;
    let mounted = statx_of(tree.as_fd()).map_err(guest_err("inspect new mount on"))?;
    let landed = root
        .resolve_dir_no_symlinks("verify mount on", guest_target)
        .and_then(|fd| statx_of(fd.as_fd()).map_err(guest_err("verify mount on")));
    let ok = matches!(&landed, Ok(now) if now.stx_mnt_id == mounted.stx_mnt_id && now.stx_ino == mounted.stx_ino);
    if !ok {
        detach(tree);
        return Err(Error::MountMisplaced {
            root: root.host_path().to_path_buf(),
            source_path: source.to_path_buf(),
            target: guest_target.to_path_buf(),
        });
    }
    Ok(BindMount {
        target: guest_target.to_path_buf(),
        mount_id: mounted.stx_mnt_id,
    })
}

/// Detaches the mount whose root `tree` refers to, wherever it ended up.
fn detach(tree: &OwnedFd) {
    if let Ok(path) = CString::new(format!("/proc/self/fd/{}", tree.as_raw_fd())) {
        let _ = sys::umount2(&path, libc::MNT_DETACH);
    }
}

/// Makes every mount in the caller's mount namespace private (`MS_PRIVATE`, recursively), so
/// that nothing mounted afterwards propagates to the namespace it was copied from.
pub fn make_all_private() -> Result<()> {
    sys::mount_setattr(CWD, c"/", libc::AT_RECURSIVE as u32, 0, 0, libc::MS_PRIVATE)
        .map_err(|e| Error::host("make mounts private under", "/", e))
}

/// Makes `host_path` and every mount below it read-only and `nosuid` (`mount_setattr` with
/// `AT_RECURSIVE`).
pub fn make_read_only_recursive(host_path: &Path) -> Result<()> {
    let path = c_path("make read-only", host_path)?;
    sys::mount_setattr(
        CWD,
        &path,
        libc::AT_RECURSIVE as u32,
        sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID,
        0,
        0,
    )
    .map_err(|e| Error::host("make read-only", host_path, e))
}

/// A detached copy of the mount tree at `host_path` (`open_tree(OPEN_TREE_CLONE | AT_RECURSIVE)`),
/// to put back on the same path after its surroundings were made read-only.
pub(crate) fn clone_tree(host_path: &Path) -> Result<OwnedFd> {
    open_tree(
        CWD,
        host_path,
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_RECURSIVE,
    )
    .map_err(|e| Error::host("clone mount tree of", host_path, e))
}

/// A detached copy of the directory `host_path` (not of mounts below it), to mount elsewhere.
/// Below `package_state` (the guest's `.pkg/G`, which earlier operations could write parts of)
/// the path is resolved beneath it without following any symlink; elsewhere it is a trusted
/// host path.
pub(crate) fn clone_source(package_state: Option<&GuestRoot>, host_path: &Path) -> Result<OwnedFd> {
    let below = package_state.and_then(|base| {
        host_path
            .strip_prefix(base.host_path())
            .ok()
            .map(|rest| (base, rest))
    });
    let flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    match below {
        Some((base, rest)) => {
            let dir = base.resolve_dir_no_symlinks("mount", rest)?;
            open_tree(&dir, "", flags | OpenTreeFlags::AT_EMPTY_PATH)
                .map_err(|e| Error::host("clone mount of", host_path, e))
        }
        None => open_tree(CWD, host_path, flags)
            .map_err(|e| Error::host("clone mount of", host_path, e)),
    }
}

/// How a bind or state mount treats what it holds, besides read-only or writable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hostility {
    /// `noexec`: nothing there is ever executed.
    pub(crate) noexec: bool,
    /// `nosymfollow`: no symlink planted there is followed, by anything.
    pub(crate) nosymfollow: bool,
}

/// Detached trees of the databases an operation mounts (host path and access of each), cloned
/// by [`clone_source`] while their host paths are still visible. A database holds no symlink of
/// its own, so none is followed; exec stays allowed: dpkg's maintainer scripts live in its
/// database and debconf's frontend executes them as well as dpkg. On failure: the step and why.
pub(crate) fn clone_database_trees<'a>(
    package_state: Option<&GuestRoot>,
    binds: impl IntoIterator<Item = (&'a Path, Access)>,
) -> std::result::Result<Vec<OwnedFd>, (&'static str, Error)> {
    let mut trees = Vec::new();
    for (host, access) in binds {
        let tree =
            clone_source(package_state, host).map_err(|e| ("clone a database for mounting", e))?;
        set_bind_attributes(
            &tree,
            host,
            access,
            Hostility {
                noexec: false,
                nosymfollow: true,
            },
        )
        .map_err(|e| ("set the attributes of a database mount", e))?;
        trees.push(tree);
    }
    Ok(trees)
}

/// Sets `nosuid,nodev` on a detached tree, `ro` for read-only access, and, for writable access,
/// what `hostility` asks for.
pub(crate) fn set_bind_attributes(
    tree: &OwnedFd,
    what: &Path,
    access: Access,
    hostility: Hostility,
) -> Result<()> {
    let mut attrs = sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV;
    if access == Access::ReadOnly {
        attrs |= sys::MOUNT_ATTR_RDONLY;
    } else {
        if hostility.noexec {
            attrs |= sys::MOUNT_ATTR_NOEXEC;
        }
        if hostility.nosymfollow {
            attrs |= sys::MOUNT_ATTR_NOSYMFOLLOW;
        }
    }
    sys::mount_setattr(tree.as_fd(), c"", libc::AT_EMPTY_PATH as u32, attrs, 0, 0)
        .map_err(|e| Error::host("set attributes of mount of", what, e))
}

/// Attaches a detached tree onto the directory `guest_target` inside `root`, resolved and
/// verified as by [`bind_into`].
pub(crate) fn attach_into(
    root: &GuestRoot,
    tree: &OwnedFd,
    guest_target: &Path,
    source: &Path,
) -> Result<BindMount> {
    let target = root.resolve_dir_no_symlinks("bind-mount onto", guest_target)?;
    attach_and_verify(root, tree, &target, guest_target, source)
}

/// `path` as a C string (`EINVAL` for one with a NUL byte).
fn c_path(op: &'static str, path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::host(op, path, std::io::Error::from_raw_os_error(libc::EINVAL)))
}

/// Makes the mount at `host_path` read-only, leaving the mounts below it as they are.
pub(crate) fn make_top_read_only(host_path: &Path) -> Result<()> {
    let path = c_path("make read-only", host_path)?;
    sys::mount_setattr(CWD, &path, 0, sys::MOUNT_ATTR_RDONLY, 0, 0)
        .map_err(|e| Error::host("make read-only", host_path, e))
}

/// Attaches a detached tree onto a pinned directory.
pub(crate) fn attach(tree: &OwnedFd, target: BorrowedFd<'_>, what: &Path) -> Result<()> {
    move_mount(
        tree,
        "",
        target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| Error::host("attach writable mount on", what, e))
}

/// Whether `path` (a C string, resolved in the caller's root) is the root of a mount: its mount
/// ID differs from its parent's. Allocation-free, for forked children.
pub(crate) fn is_mount_point(
    path: &std::ffi::CStr,
    parent: &std::ffi::CStr,
) -> std::io::Result<bool> {
    let own = rustix::fs::statx(CWD, path, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::MNT_ID)?;
    let up = rustix::fs::statx(CWD, parent, AtFlags::empty(), StatxFlags::MNT_ID)?;
    Ok(own.stx_mnt_id != up.stx_mnt_id)
}

/// Sets `nodev` on the top mount of a detached tree.
pub(crate) fn set_nodev(tree: &OwnedFd, what: &Path) -> Result<()> {
    sys::mount_setattr(
        tree.as_fd(),
        c"",
        libc::AT_EMPTY_PATH as u32,
        sys::MOUNT_ATTR_NODEV,
        0,
        0,
    )
    .map_err(|e| Error::host("set nodev on", what, e))
}

/// Mounts a minimal `/dev` (tmpfs with null, zero, full, random, urandom, tty, a private devpts
/// with its `ptmx`, `shm/` and the `fd`/`stdin`/`stdout`/`stderr` links) on a trusted host path.
pub(crate) fn mount_minimal_dev(host_target: &Path) -> Result<()> {
    let target = rustix::fs::open(
        host_target,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| Error::host("open", host_target, e))?;
    mount_minimal_dev_on(target.as_fd(), host_target)
}

/// A minimal `/dev` ([`mount_minimal_dev_on`]) on the guest's `/dev`, where the guest has one
/// (resolved inside `root` without following links). On failure: the step and why.
pub(crate) fn mount_minimal_dev_in_guest(
    root: &GuestRoot,
) -> std::result::Result<(), (&'static str, Error)> {
    if !root
        .exists("/dev")
        .map_err(|e| ("inspect the guest's /dev", e))?
    {
        return Ok(());
    }
    let target = root
        .resolve_dir_no_symlinks("mount a minimal /dev on", Path::new("/dev"))
        .map_err(|e| ("open the guest's /dev", e))?;
    mount_minimal_dev_on(target.as_fd(), Path::new("/dev"))
        .map_err(|e| ("mount a minimal /dev in the guest", e))
}

/// Like [`mount_minimal_dev`], onto a pinned directory.
pub(crate) fn mount_minimal_dev_on(target: BorrowedFd<'_>, what: &Path) -> Result<()> {
    use rustix::fs::{FileType, Mode};
    let err = |op| move |e: rustix::io::Errno| Error::host(op, what, e);
    let context =
        fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC).map_err(err("create a tmpfs for"))?;
    fsconfig_set_string(&context, "mode", "755").map_err(err("configure a tmpfs for"))?;
    fsconfig_set_string(&context, "size", "1m").map_err(err("configure a tmpfs for"))?;
    fsconfig_create(&context).map_err(err("create a tmpfs for"))?;
    let dev = fsmount(
        &context,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )
    .map_err(err("mount a tmpfs for"))?;
    for node in crate::safe_path::DeviceNode::ALL {
        if node == crate::safe_path::DeviceNode::Ptmx {
            continue;
        }
        let (major, minor) = node.major_minor();
        rustix::fs::mknodat(
            &dev,
            node.name(),
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o666),
            rustix::fs::makedev(major, minor),
        )
        .map_err(err("create device nodes in"))?;
        rustix::fs::chmodat(
            &dev,
            node.name(),
            Mode::from_raw_mode(0o666),
            AtFlags::empty(),
        )
        .map_err(err("create device nodes in"))?;
    }
    for dir in ["pts", "shm"] {
        rustix::fs::mkdirat(&dev, dir, Mode::from_raw_mode(0o755))
            .map_err(err("create directories in"))?;
    }
    rustix::fs::chmodat(&dev, "shm", Mode::from_raw_mode(0o1777), AtFlags::empty())
        .map_err(err("create directories in"))?;
    for (name, link) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        rustix::fs::symlinkat(link, &dev, name).map_err(err("create links in"))?;
    }
    move_mount(
        &dev,
        "",
        target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(err("mount a minimal /dev on"))?;
    let pts = rustix::fs::openat(
        &dev,
        "pts",
        rustix::fs::OFlags::PATH
            | rustix::fs::OFlags::DIRECTORY
            | rustix::fs::OFlags::NOFOLLOW
            | rustix::fs::OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(err("open pts in"))?;
    let devpts = create_filesystem(&FileSystem::Devpts)?;
    move_mount(
        &devpts,
        "",
        &pts,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(err("mount devpts in"))
}
