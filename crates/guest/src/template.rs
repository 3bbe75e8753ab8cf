//! Guest templates: `vserver G export FILE.tar[.zst]` and `vserver NEW build -m template --
//! --source FILE`.
//!
//! An export is a tar archive (zstd-compressed when its name ends in `.zst`) of
//!
//! ```text
//! vserver-template.toml   what the guest was: format, family, distribution, release, host name
//! root/…                  the guest root (module `tree_pack` of the sandbox crate)
//! pkgdb/…                 its external package database (.pkg/G/rpm/state or dpkg/state)
//! ```
//!
//! written under a temporary name, synced and renamed, mode 0600 (it holds the guest's
//! `/etc/shadow`). The package lock is held for the whole export so root and database are of
//! the same moment; a running guest is frozen only while its database is read.
//!
//! An import trusts nothing in the archive. The tar entries are checked as a hostile archive's
//! and unpacked by descriptor (module `tree_unpack` of the sandbox crate); the database lands
//! where the guest itself would keep it (`/var/lib/rpm`, `/var/lib/dpkg`) and is taken in by
//! the same code as `vserver G pkgmgmt externalize`: rebuilt by rpm or by our strict dpkg status
//! parser, verified against the unpacked files (differences are reported), and installed in
//! `.pkg/NEW`. The new guest gets an identity of its own, as a clone does. The whole import runs
//! in the build's transaction: a failure or a kill leaves nothing behind.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vserver_pkgmgmt::mode::{self, Mode, ModeOptions};
use vserver_pkgmgmt::{PackageBackend, PkgLayout};
use vserver_sandbox::{GuestRoot, TreeUnpacker};

use crate::build::{BuildEvent, BuildRequest, enter_phase};
use crate::config::{GuestConfig, PackageManagement, load_guest};
use crate::distribution::{Distribution, DistributionStore};
use crate::error::{Error, Result};
use crate::roots::HostRoots;
use crate::transaction::Transaction;

/// The format this code writes and reads.
const FORMAT: u32 = 1;
/// The name of the archive's first entry.
const INFO_NAME: &str = "vserver-template.toml";
/// Largest description accepted.
const MAX_INFO: u64 = 64 * 1024;
/// zstd's frame magic.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// How many setuid files an import names in its warning.
const SHOWN_SETUID: usize = 10;

/// What a template says about the guest it was made from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct TemplateInfo {
    format: u32,
    guest: String,
    family: String,
    distribution: String,
    releasever: String,
    arch: String,
    hostname: String,
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportReport {
    /// The archive.
    pub archive: PathBuf,
    /// Regular files of the root and of the database archived.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Device nodes and sockets left out.
    pub skipped: usize,
    /// The archive's size.
    pub archive_bytes: u64,
}

/// How an archive is compressed, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Zstd,
}

fn compression_of(guest: &str, file: &Path) -> Result<Compression> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.ends_with(".tar") {
        Ok(Compression::None)
    } else if name.ends_with(".tar.zst") || name.ends_with(".tzst") {
        Ok(Compression::Zstd)
    } else {
        Err(Error::BadRequest {
            guest: guest.to_owned(),
            problem: format!(
                "`{}`: a template is FILE.tar or FILE.tar.zst",
                file.display()
            ),
        })
    }
}

fn sandbox_err(guest: &str) -> impl Fn(vserver_sandbox::Error) -> Error + '_ {
    move |source| Error::Guest {
        guest: guest.to_owned(),
        source,
    }
}

/// Writes guest `name` with its package database to `file`; see the module documentation.
pub fn export(roots: &HostRoots, name: &str, file: &Path) -> Result<ExportReport> {
    crate::recovery::recover(roots, name)?;
    let config = load_guest(roots, name)?;
    crate::transaction::refuse_if_not_whole(roots, name)?;
    let compression = compression_of(name, file)?;
    let state_dir = match (config.package_management, config.family.as_str()) {
        (PackageManagement::Internal, _) => {
            return Err(Error::BadRequest {
                guest: name.to_owned(),
                problem: "its package management is internal; `vserver G pkgmgmt externalize` it first (a template carries the database the host trusts)".into(),
            });
        }
        (PackageManagement::External, "rpm") => Some("rpm/state"),
        (PackageManagement::External, "deb") => Some(PkgLayout::DPKG_STATE_DIR),
        _ => None,
    };
    let info = TemplateInfo {
        format: FORMAT,
        guest: name.to_owned(),
        family: if state_dir.is_some() {
            config.family.clone()
        } else {
            String::new()
        },
        distribution: config.distribution.clone(),
        releasever: config.releasever.clone(),
        arch: config.arch.clone(),
        hostname: crate::clone::source_hostname(&config),
    };
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let temp = dir.join(format!(
        ".{}.vserver-export-{}",
        file.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let result = write_archive(roots, &config, &info, state_dir, &temp, compression);
    match result {
        Ok(mut report) => {
            fs_err::rename(&temp, file).map_err(Error::io("rename", &temp))?;
            if let Ok(handle) = std::fs::File::open(&dir) {
                let _ = handle.sync_all();
            }
            report.archive = file.to_path_buf();
            Ok(report)
        }
        Err(error) => {
            let _ = std::fs::remove_file(&temp);
            Err(error)
        }
    }
}

fn write_archive(
    roots: &HostRoots,
    config: &GuestConfig,
    info: &TemplateInfo,
    state_dir: Option<&str>,
    temp: &Path,
    compression: Compression,
) -> Result<ExportReport> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = config.name.as_str();
    let io_err = |op: &'static str| Error::io(op, temp);
    let output = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)
        .map_err(io_err("create"))?;
    let writer: Box<dyn Write> = match compression {
        Compression::None => Box::new(std::io::BufWriter::new(
            output
                .try_clone()
                .map_err(io_err("duplicate the descriptor of"))?,
        )),
        Compression::Zstd => Box::new(
            zstd::Encoder::new(
                output
                    .try_clone()
                    .map_err(io_err("duplicate the descriptor of"))?,
                3,
            )
            .map_err(io_err("compress"))?
            .auto_finish(),
        ),
    };
    let mut builder = tar::Builder::new(writer);
    let text = toml::to_string(info).map_err(|e| Error::BadRequest {
        guest: name.to_owned(),
        problem: format!("cannot describe the template: {e}"),
    })?;
    let mut header = tar::Header::new_gnu();
    header.set_size(text.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut header, INFO_NAME, text.as_bytes())
        .map_err(io_err("write"))?;

    // Root and database of the same moment: no package operation runs meanwhile.
    let layout = PkgLayout::new(&roots.pkgdir, name);
    let _lock = match state_dir {
        Some(_) => Some(layout.lock_for_copy()?),
        None => None,
    };
    let root = GuestRoot::open(&config.root).map_err(sandbox_err(name))?;
    let packed = root
        .pack_tree(Path::new("/"), &mut builder, Path::new("root"))
        .map_err(sandbox_err(name))?;
    let mut report = ExportReport {
        archive: PathBuf::new(),
        files: packed.files,
        bytes: packed.bytes,
        skipped: packed.skipped.len(),
        archive_bytes: 0,
    };
    if let Some(state_dir) = state_dir {
        let _frozen = crate::clone::freeze_if_running(name)?;
        let state = layout.open_state()?;
        let db = state
            .pack_tree(Path::new(state_dir), &mut builder, Path::new("pkgdb"))
            .map_err(sandbox_err(name))?;
        report.files += db.files;
        report.bytes += db.bytes;
    }
    let writer = builder.into_inner().map_err(io_err("write"))?;
    drop(writer);
    output.sync_all().map_err(io_err("sync"))?;
    report.archive_bytes = output.metadata().map(|m| m.len()).unwrap_or(0);
    Ok(report)
}

/// Opens a template, compressed or not.
fn open_archive(guest: &str, file: &Path) -> Result<Box<dyn Read>> {
    let handle = fs_err::File::open(file).map_err(|e| Error::BadRequest {
        guest: guest.to_owned(),
        problem: format!("cannot open the template: {e}"),
    })?;
    let mut reader = BufReader::with_capacity(1 << 20, handle.into_parts().0);
    let head = reader.fill_buf().map_err(Error::io("read", file))?;
    if head.starts_with(&ZSTD_MAGIC) {
        let decoder = zstd::Decoder::with_buffer(reader).map_err(Error::io("decompress", file))?;
        Ok(Box::new(decoder))
    } else {
        Ok(Box::new(reader))
    }
}

/// Reads and checks the template's description, its first entry.
fn read_info<R: Read>(
    guest: &str,
    entry: Option<std::io::Result<tar::Entry<'_, R>>>,
) -> Result<TemplateInfo> {
    let refuse = |problem: String| Error::BadRequest {
        guest: guest.to_owned(),
        problem,
    };
    let mut entry = entry
        .ok_or_else(|| refuse("the template is empty".into()))?
        .map_err(|e| refuse(format!("the template is not a tar archive: {e}")))?;
    if entry.path_bytes().as_ref() != INFO_NAME.as_bytes() || entry.size() > MAX_INFO {
        return Err(refuse(format!(
            "not a vserver template: its first entry is not `{INFO_NAME}`"
        )));
    }
    let mut text = String::new();
    (&mut entry)
        .take(MAX_INFO)
        .read_to_string(&mut text)
        .map_err(|e| refuse(format!("cannot read `{INFO_NAME}`: {e}")))?;
    let info: TemplateInfo =
        toml::from_str(&text).map_err(|e| refuse(format!("`{INFO_NAME}`: {e}")))?;
    if info.format != FORMAT {
        return Err(refuse(format!(
            "template format {} is not the one this vserver reads ({FORMAT})",
            info.format
        )));
    }
    if !["", "rpm", "deb"].contains(&info.family.as_str()) {
        return Err(refuse(format!("unknown package family `{}`", info.family)));
    }
    if !info.releasever.is_empty() {
        crate::distribution::check::releasever(&info.releasever)
            .map_err(|r| r.into_guest_error(guest, None))?;
    }
    Ok(info)
}

/// The distribution the new guest's package state is made from: the one asked for, else the
/// one the template names, which must be registered here.
fn distribution_for(
    roots: &HostRoots,
    guest: &str,
    asked: Option<&Distribution>,
    info: &TemplateInfo,
) -> Result<Distribution> {
    let distribution = match asked {
        Some(distribution) => distribution.clone(),
        None => DistributionStore::new(roots.distributions_dir())
            .get(&info.distribution)
            .map_err(|_| Error::BadRequest {
                guest: guest.to_owned(),
                problem: format!(
                    "the template was made from distribution `{}`, which is not registered here; register it with `vdistro add` or name another with `-- -d DIST`",
                    info.distribution
                ),
            })?,
    };
    if distribution.family.as_str() != info.family {
        return Err(Error::BadRequest {
            guest: guest.to_owned(),
            problem: format!(
                "distribution `{}` is a {} distribution and the template a {} guest",
                distribution.name,
                distribution.family.as_str(),
                info.family
            ),
        });
    }
    Ok(distribution)
}

/// The bytes the file system holding `root` has free: the most an archive may unpack there.
fn free_space(root: &Path) -> u64 {
    rustix::fs::statvfs(root)
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
        .unwrap_or(u64::MAX)
}

/// Builds the new guest of `request` from its template into the empty `root`; see the module
/// documentation.
pub(crate) fn import_into(
    roots: &HostRoots,
    request: &BuildRequest,
    asked: Option<&Distribution>,
    root: &Path,
    transaction: &mut Transaction,
    phase: &mut String,
    on_event: &mut dyn FnMut(BuildEvent),
) -> Result<GuestConfig> {
    let guest = request.guest.as_str();
    let err = sandbox_err(guest);
    let Some(file) = request.source.as_deref() else {
        return Err(Error::BadRequest {
            guest: guest.to_owned(),
            problem: "-m template needs the archive: `-- --source FILE.tar[.zst]`".into(),
        });
    };
    enter_phase(phase, transaction, "read the template", on_event);
    let mut archive = tar::Archive::new(open_archive(guest, Path::new(file))?);
    let mut entries = archive.entries().map_err(Error::io("read", file))?;
    let info = read_info(guest, entries.next())?;
    let distribution = if info.family.is_empty() {
        None
    } else {
        Some(distribution_for(roots, guest, asked, &info)?)
    };

    enter_phase(phase, transaction, "unpack", on_event);
    let target = GuestRoot::open(root).map_err(&err)?;
    let budget = free_space(root);
    let mut tree = TreeUnpacker::new(&target, Path::new("/"), Path::new("root"), budget);
    let dbpath = mode::internal_database_path(&info.family);
    let mut database: Option<TreeUnpacker<'_>> = None;
    let mut saw_root = false;
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::BadRequest {
            guest: guest.to_owned(),
            problem: format!("the template is damaged: {e}"),
        })?;
        let name = entry.path_bytes().into_owned();
        let top = name.split(|b| *b == b'/').next().unwrap_or_default();
        match (top, dbpath) {
            (b"root", _) => {
                saw_root = true;
                tree.entry(&mut entry).map_err(&err)?;
            }
            (b"pkgdb", Some(dbpath)) => {
                if database.is_none() {
                    // Whatever the root held there is not the database the host trusts.
                    target.remove_all_if_exists(dbpath).map_err(&err)?;
                    target.mkdir_all(dbpath, 0o755).map_err(&err)?;
                    database = Some(TreeUnpacker::new(
                        &target,
                        Path::new(dbpath),
                        Path::new("pkgdb"),
                        budget,
                    ));
                }
                if let Some(unpacker) = database.as_mut() {
                    unpacker.entry(&mut entry).map_err(&err)?;
                }
            }
            _ => {
                return Err(Error::BadRequest {
                    guest: guest.to_owned(),
                    problem: format!(
                        "unexpected entry `{}`: a template holds {INFO_NAME}, root/ and pkgdb/",
                        String::from_utf8_lossy(&name)
                    ),
                });
            }
        }
    }
    if !saw_root {
        return Err(Error::BadRequest {
            guest: guest.to_owned(),
            problem: "the template holds no guest root".into(),
        });
    }
    let unpacked = tree.finish().map_err(&err)?;
    if let Some(database) = database {
        database.finish().map_err(&err)?;
    } else if distribution.is_some() {
        return Err(Error::BadRequest {
            guest: guest.to_owned(),
            problem: format!(
                "the template of a {} guest holds no package database",
                info.family
            ),
        });
    }
    if !unpacked.setuid.is_empty() {
        let shown: Vec<String> = unpacked
            .setuid
            .iter()
            .take(SHOWN_SETUID)
            .map(|p| format!("/{}", p.display()))
            .collect();
        on_event(BuildEvent::Warning(format!(
            "the template holds {} setuid or setgid files: {}{}",
            unpacked.setuid.len(),
            shown.join(", "),
            if unpacked.setuid.len() > SHOWN_SETUID {
                ", …"
            } else {
                ""
            }
        )));
    }
    if !unpacked.devices.is_empty() {
        on_event(BuildEvent::Warning(format!(
            "{} device nodes of the template were left out; /dev is made anew",
            unpacked.devices.len()
        )));
    }
    target.remove_all_if_exists("/dev").map_err(&err)?;
    target.create_standard_devices("/dev").map_err(&err)?;

    enter_phase(phase, transaction, "identity", on_event);
    let hostname = request.hostname.clone().unwrap_or_else(|| guest.to_owned());
    crate::clone::make_identity(&target, &info.hostname, &hostname).map_err(&err)?;
    let config = GuestConfig {
        name: guest.to_owned(),
        id: crate::identity::new_id()?,
        root: root.to_path_buf(),
        distribution: distribution
            .as_ref()
            .map(|d| d.name.clone())
            .unwrap_or_default(),
        family: info.family.clone(),
        releasever: request
            .releasever
            .clone()
            .unwrap_or_else(|| info.releasever.clone()),
        arch: distribution
            .as_ref()
            .map(|d| d.arch.clone())
            .unwrap_or_else(|| info.arch.clone()),
        gpgcheck: distribution.as_ref().is_none_or(|d| d.gpgcheck),
        hostname,
        package_management: if distribution.is_some() {
            PackageManagement::Internal
        } else {
            PackageManagement::None
        },
        build_method: "template".into(),
        ..GuestConfig::default()
    };
    transaction.will_create(&roots.pkgdir.join(guest))?;
    crate::identity::record(roots, &config)?;
    enter_phase(phase, transaction, "configuration", on_event);
    transaction.will_create(&roots.confdir.join(guest))?;
    config.save(roots)?;
    let Some(distribution) = distribution else {
        target.sync_filesystem().map_err(&err)?;
        return Ok(config);
    };

    enter_phase(phase, transaction, "package state", on_event);
    let layout = PkgLayout::new(&roots.pkgdir, guest);
    prepare_package_state(request, &config, &distribution, layout.clone())?;
    mode::record_imported_database(&layout, &info.family)?;
    let mut record = |mode: Mode| -> mode::StepResult {
        let mut updated = config.clone();
        updated.package_management = match mode {
            Mode::Internal => PackageManagement::Internal,
            Mode::External => PackageManagement::External,
        };
        updated.save(roots)?;
        Ok(())
    };
    let mut on_step = |_: usize, step: &str| {
        enter_phase(phase, transaction, &format!("database: {step}"), on_event)
    };
    let options = ModeOptions::default();
    let report = if info.family == "deb" {
        mode::DebModeChange::new(layout, root).externalize(&options, &mut record, &mut on_step)?
    } else {
        mode::RpmModeChange::new(layout, root, &config.releasever).externalize(
            &options,
            &mut record,
            &mut on_step,
        )?
    };
    if report.packages.is_empty() {
        return Err(Error::BadRequest {
            guest: guest.to_owned(),
            problem: format!(
                "the template's database holds no package {} can read",
                if info.family == "deb" { "dpkg" } else { "rpm" }
            ),
        });
    }
    if !report.rejected.is_empty() {
        on_event(BuildEvent::Warning(format!(
            "{} files of the template's database failed the checks and were left out: {}",
            report.rejected.len(),
            report.rejected.join(", ")
        )));
    }
    if !report.differences.is_empty() {
        on_event(BuildEvent::Warning(format!(
            "{} files differ from the template's database (`vserver {guest} verify` lists them)",
            report.differences.len()
        )));
    }
    target.sync_filesystem().map_err(&err)?;
    load_guest(roots, guest)
}

/// Writes the new guest's trusted package state (`.pkg/G`: configuration, macros, plugin) from
/// its distribution, as a build does before it installs anything.
fn prepare_package_state(
    request: &BuildRequest,
    config: &GuestConfig,
    distribution: &Distribution,
    layout: PkgLayout,
) -> Result<()> {
    let time_limit = crate::config::operation_time_limit(config)?;
    if config.family == "deb" {
        let deb = crate::build_apt::DebBuild {
            guest: &config.name,
            root: &config.root,
            variant: vserver_pkgmgmt::Variant::default(),
            packages: &[],
            verbose: request.verbose,
            mirror: request.apt_mirror.as_ref(),
            time_limit,
            progress: None,
        };
        crate::build_apt::deb_backend(layout, distribution, &deb, false)?.prepare()?;
    } else {
        crate::build::rpm_backend(
            layout,
            &config.root,
            distribution,
            config.releasever.clone(),
            request.verbose,
            time_limit,
        )?
        .prepare()?;
    }
    Ok(())
}
