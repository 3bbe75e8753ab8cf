//! `vserver NEW build -m clone -- --source G`: a copy of guest G with an identity of its own.
//!
//! The root and the package state are copied by descriptor, never following a link
//! ([`vserver_sandbox::GuestRoot::copy_tree_into`]), sharing extents where the file system can
//! (xfs, btrfs: `FICLONE`), copied in the kernel elsewhere. The source may run: only the copy of
//! its package state holds its package lock and, when it runs, freezes it, so that the database
//! copied is one rpm or dpkg finished writing. The clone then gets its own identity, as
//! `systemd-firstboot` and `virt-sysprep` prepare an image: its host name, an empty
//! `/etc/machine-id` (made anew at first boot), no D-Bus machine id of its own, no ssh host keys
//! (made anew), and a fresh `/dev`. Its configuration is the source's with its own name, root,
//! host name and identity. The whole clone runs inside the build's transaction: a kill leaves
//! nothing the next command does not remove.

use std::path::Path;

use vserver_pkgmgmt::PkgLayout;
use vserver_sandbox::{FileKind, GuestRoot};

use crate::build::{BuildEvent, BuildRequest, enter_phase};
use crate::config::{GuestConfig, load_guest};
use crate::error::{Error, Result};
use crate::roots::HostRoots;
use crate::runtime::NetConfig;
use crate::transaction::Transaction;

/// How long a running source may take to freeze for the copy of its package state.
const FREEZE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The source guest of a clone request, checked: it exists, is another guest, and is whole.
pub(crate) fn source_of(roots: &HostRoots, request: &BuildRequest) -> Result<GuestConfig> {
    let Some(source) = request.source.as_deref() else {
        return Err(Error::BadRequest {
            guest: request.guest.clone(),
            problem: "-m clone needs the guest to copy: `-- --source GUEST`".into(),
        });
    };
    if source == request.guest {
        return Err(Error::BadRequest {
            guest: request.guest.clone(),
            problem: "a guest cannot be cloned onto itself".into(),
        });
    }
    crate::recovery::recover(roots, source)?;
    let config = load_guest(roots, source)?;
    crate::transaction::refuse_if_not_whole(roots, source)?;
    Ok(config)
}

fn guest_err(guest: &str) -> impl Fn(vserver_sandbox::Error) -> Error + '_ {
    move |source| Error::Guest {
        guest: guest.to_owned(),
        source,
    }
}

/// Copies `source` into the new, empty root `root` and the new guest's package state; returns
/// the new guest's configuration (saved).
pub(crate) fn clone_into(
    roots: &HostRoots,
    request: &BuildRequest,
    source: &GuestConfig,
    root: &Path,
    transaction: &mut Transaction,
    phase: &mut String,
    on_event: &mut dyn FnMut(BuildEvent),
) -> Result<GuestConfig> {
    let guest = request.guest.as_str();
    let err = guest_err(guest);
    enter_phase(phase, transaction, "copy the root", on_event);
    let from = GuestRoot::open(&source.root).map_err(guest_err(&source.name))?;
    let to = GuestRoot::open(root).map_err(&err)?;
    let stats = from
        .copy_tree_into(Path::new("/"), &to, Path::new("/"))
        .map_err(guest_err(&source.name))?;
    if stats.skipped.len() > 16 {
        on_event(BuildEvent::Warning(format!(
            "{} device nodes or sockets of `{}` were not copied",
            stats.skipped.len(),
            source.name
        )));
    }
    // A fresh /dev, whatever the source's holds.
    to.remove_all_if_exists("/dev").map_err(&err)?;
    to.create_standard_devices("/dev").map_err(&err)?;

    enter_phase(phase, transaction, "copy the package state", on_event);
    let state = roots.pkgdir.join(guest);
    transaction.will_create(&state)?;
    fs_err::create_dir(&state).map_err(Error::io("create", &state))?;
    copy_package_state(roots, source, guest)?;

    enter_phase(phase, transaction, "identity", on_event);
    let hostname = request.hostname.clone().unwrap_or_else(|| guest.to_owned());
    make_identity(&to, &source_hostname(source), &hostname).map_err(&err)?;
    let mut config = source.clone();
    config.name = guest.to_owned();
    config.id = crate::identity::new_id()?;
    config.root = root.to_owned();
    config.hostname = hostname;
    config.build_method = "clone".into();
    if let NetConfig::Bridge {
        address: Some(address),
        ..
    } = &config.net
    {
        on_event(BuildEvent::Warning(format!(
            "the clone has `{}`'s address {address}; change `net.address` in its config.toml before both run",
            source.name
        )));
    }
    crate::identity::record(roots, &config)?;
    enter_phase(phase, transaction, "configuration", on_event);
    transaction.will_create(&roots.confdir.join(guest))?;
    config.save(roots)?;
    to.sync_filesystem().map_err(&err)?;
    Ok(config)
}

pub(crate) fn source_hostname(source: &GuestConfig) -> String {
    if source.hostname.is_empty() {
        source.name.clone()
    } else {
        source.hostname.clone()
    }
}

/// Copies `.pkg/SOURCE` into the new guest's empty `.pkg/NEW`, holding the source's package
/// lock and, if it runs, freezing it. Its identity and lock file are its own and stay behind.
fn copy_package_state(roots: &HostRoots, source: &GuestConfig, guest: &str) -> Result<()> {
    let source_layout = PkgLayout::new(&roots.pkgdir, &source.name);
    if std::fs::symlink_metadata(source_layout.dir()).is_err() {
        return Ok(());
    }
    let _lock = source_layout.lock_for_copy()?;
    let _frozen = freeze_if_running(&source.name)?;
    let pkgdir = GuestRoot::open(&roots.pkgdir).map_err(guest_err(guest))?;
    pkgdir
        .copy_tree_into(
            &Path::new("/").join(&source.name),
            &pkgdir,
            &Path::new("/").join(guest),
        )
        .map_err(guest_err(&source.name))?;
    for own in ["identity", "lock", "mode-change", "mode-change.saved"] {
        pkgdir
            .remove_all_if_exists(Path::new("/").join(guest).join(own))
            .map_err(guest_err(guest))?;
    }
    Ok(())
}

/// Freezes guest `name` if it runs, so that the database copied is one rpm or dpkg finished
/// writing; it is thawed when the result is dropped.
pub(crate) fn freeze_if_running(name: &str) -> Result<Option<Thaw>> {
    match crate::lifecycle::running_guest_for_backend(name)?.and_then(|running| running.freezer) {
        Some(freezer) => {
            freezer.freeze(FREEZE_TIMEOUT).map_err(guest_err(name))?;
            Ok(Some(Thaw(freezer)))
        }
        None => Ok(None),
    }
}

/// Thaws a frozen source when dropped.
pub(crate) struct Thaw(vserver_sandbox::Freezer);

impl Drop for Thaw {
    fn drop(&mut self) {
        let _ = self.0.thaw();
    }
}

/// Gives the copied root `root` an identity of its own (see the module documentation).
pub(crate) fn make_identity(
    root: &GuestRoot,
    old_hostname: &str,
    hostname: &str,
) -> vserver_sandbox::Result<()> {
    let is_file =
        |path: &str| matches!(root.symlink_metadata(path), Ok(info) if info.kind == FileKind::File);
    root.write_atomic("/etc/hostname", format!("{hostname}\n").as_bytes(), 0o644)?;
    if is_file("/etc/hosts") {
        let hosts = String::from_utf8_lossy(&root.read("/etc/hosts")?).into_owned();
        let renamed: String = hosts
            .lines()
            .map(|line| {
                let words: Vec<&str> = line
                    .split_whitespace()
                    .map(|w| if w == old_hostname { hostname } else { w })
                    .collect();
                if line.trim_start().starts_with('#') || words.is_empty() {
                    format!("{line}\n")
                } else {
                    format!("{}\n", words.join("\t"))
                }
            })
            .collect();
        root.write_atomic("/etc/hosts", renamed.as_bytes(), 0o644)?;
    }
    if is_file("/etc/machine-id") {
        root.write_atomic("/etc/machine-id", b"", 0o444)?;
    }
    if is_file("/var/lib/dbus/machine-id") {
        root.remove_file("/var/lib/dbus/machine-id")?;
    }
    if matches!(root.symlink_metadata("/etc/ssh"), Ok(info) if info.kind == FileKind::Dir) {
        for entry in root.read_dir("/etc/ssh")? {
            let name = entry.name.to_string_lossy();
            if entry.kind == FileKind::File && name.starts_with("ssh_host_") {
                root.remove_file(Path::new("/etc/ssh").join(&entry.name))?;
            }
        }
    }
    Ok(())
}
