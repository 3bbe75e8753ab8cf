//! Which root and package state belong to a guest: checked before anything is removed.
//!
//! A build gives the guest a random identity, written to its configuration (`id`) and, with the
//! device and inode of its root directory, to `.pkg/G/identity` (host-only: `.pkg/G` is never
//! shown to a sandbox as a whole). Before `delete` removes anything, the configuration must name
//! the guest asked for, carry the identity of `.pkg/G`, and its `root` must be the very directory
//! the build made. An edited or copied configuration (a `root` pointing at another guest) is
//! refused instead of followed. The root's inode cannot be forged from inside the guest: its root
//! directory is the guest's `/`, which it cannot replace.
//!
//! Guests built before identities existed have none: for them `root` must be `ROOTDIR/G`
//! itself.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::GuestConfig;
use crate::error::{Error, Result};
use crate::roots::HostRoots;

/// `.pkg/G/identity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityRecord {
    name: String,
    id: String,
    root_device: u64,
    root_inode: u64,
}

fn record_path(roots: &HostRoots, guest: &str) -> std::path::PathBuf {
    roots.pkgdir.join(guest).join("identity")
}

/// A new random identity (128 bits, hex).
pub(crate) fn new_id() -> Result<String> {
    let mut bytes = [0u8; 16];
    let path = Path::new("/dev/urandom");
    fs_err::File::open(path)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(Error::io("read", path))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `.pkg/G/identity` for the guest of `config`, whose root exists.
pub(crate) fn record(roots: &HostRoots, config: &GuestConfig) -> Result<()> {
    let info =
        fs_err::symlink_metadata(&config.root).map_err(Error::io("inspect", &config.root))?;
    let record = IdentityRecord {
        name: config.name.clone(),
        id: config.id.clone(),
        root_device: info.dev(),
        root_inode: info.ino(),
    };
    let path = record_path(roots, &config.name);
    let dir = roots.pkgdir.join(&config.name);
    fs_err::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
    let text = toml::to_string(&record).map_err(|e| Error::BadRequest {
        guest: config.name.clone(),
        problem: format!("cannot serialise its identity: {e}"),
    })?;
    let temp = dir.join(".identity.new");
    fs_err::write(&temp, text).map_err(Error::io("write", &temp))?;
    fs_err::rename(&temp, &path).map_err(Error::io("rename into", &path))
}

/// Checks that `config` (loaded for guest `name`) and the root it names belong to guest `name`;
/// see the module documentation.
pub(crate) fn check(roots: &HostRoots, name: &str, config: &GuestConfig) -> Result<()> {
    let refuse = |problem: String| Error::NotTheGuest {
        guest: name.to_owned(),
        problem,
    };
    if config.name != name {
        return Err(refuse(format!(
            "its configuration `{}` names guest `{}`",
            GuestConfig::path(roots, name).display(),
            config.name
        )));
    }
    if config.id.is_empty() {
        let expected = roots.rootdir.join(name);
        if config.root != expected
            && fs_err::canonicalize(&expected).ok().as_deref() != Some(config.root.as_path())
        {
            return Err(refuse(format!(
                "its root `{}` is not `{}`, and the guest has no recorded identity to prove it is its own",
                config.root.display(),
                expected.display()
            )));
        }
        return Ok(());
    }
    let path = record_path(roots, name);
    let record: IdentityRecord = fs_err::read_to_string(&path)
        .ok()
        .and_then(|text| toml::from_str(&text).ok())
        .ok_or_else(|| {
            refuse(format!(
                "its identity record `{}` is missing or unreadable",
                path.display()
            ))
        })?;
    if record.id != config.id || record.name != name {
        return Err(refuse(format!(
            "`{}` belongs to another guest (`{}`) than its configuration",
            path.display(),
            record.name
        )));
    }
    match fs_err::symlink_metadata(&config.root) {
        Ok(info)
            if info.is_dir()
                && info.dev() == record.root_device
                && info.ino() == record.root_inode => {}
        // Already gone (a delete killed after removing it): nothing there to protect.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        _ => {
            return Err(refuse(format!(
                "`{}` is not the root directory its build made (another guest's, or a copy)",
                config.root.display()
            )));
        }
    }
    Ok(())
}
