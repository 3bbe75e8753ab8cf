//! `vserver --all unify`: identical packaged files of all guests stored once, on a stock kernel.
//!
//! util-vserver's `vhashify` hard-linked identical files across guests and needed a kernel patch
//! (immutable-unlink) so that no guest could write through the link into another. Here the file
//! system shares *extents* instead (`FIDEDUPERANGE`, xfs with reflink, btrfs): every file keeps
//! its own inode, owner and mode, and a write by any guest copies on write. The kernel compares
//! the bytes before sharing, so a file a guest changed since we looked is simply left alone.
//!
//! Candidates come from the trusted databases, not from reading every file: regular packaged
//! files that are not configuration (`%config`, conffiles) nor `%ghost`, whose size, mode and
//! owner are still the recorded ones, grouped by recorded digest and size per file system. One
//! file per group is read and hashed, to pick a source that matches the database; every other
//! member is then deduplicated against it by the kernel. On a file system that cannot share
//! extents (ext4), nothing changes: the report says what unification would save.
//!
//! The content index (`PKGDIR/.unify/index`, host-only) remembers the inodes already shared
//! (device, inode, size, time, digest); a second run only asks the kernel about files that are
//! new or changed since. It is written at the end (temporary name, rename): a run that is killed
//! leaves every file shared or untouched, and the next run redoes what it did not record.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;
use vserver_sandbox::{Dedupe, FileKind, GuestRoot};

use crate::config::{PackageManagement, load_guest};
use crate::error::{Error, Result};
use crate::roots::HostRoots;
use crate::verify::check::{Names, digest_of, full_mode};
use crate::verify::expected::{Algo, Expected};

/// What a unification did (or, without shared extents, would do).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UnifyReport {
    /// Guests whose files were considered.
    pub guests: usize,
    /// Guests left out, with the reason (internal package management, no packages).
    pub skipped_guests: Vec<String>,
    /// Packaged files that qualified (unchanged, not configuration).
    pub candidates: u64,
    /// Packaged files left out because their size, mode or owner changed.
    pub changed: u64,
    /// Groups of identical files (two or more inodes).
    pub groups: u64,
    /// Files whose extents are now shared with their group's source.
    pub shared_files: u64,
    /// Bytes of those files.
    pub shared_bytes: u64,
    /// Files the index knew to be shared already (not asked again).
    pub known_files: u64,
    /// Files the kernel found different from the source (changed since the database said).
    pub differed: u64,
    /// Bytes that sharing would save where the file system cannot share (its total).
    pub possible_bytes: u64,
    /// Whether the file system shares extents (`None`: nothing was tried).
    pub supported: Option<bool>,
    /// What to know about the result (the file system's limits).
    pub note: Option<String>,
    /// Seconds it took.
    pub seconds: f64,
}

/// One candidate file.
struct Candidate {
    guest: usize,
    path: PathBuf,
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
}

/// The content index: inodes known to share their extents with their group's source.
type Index = HashSet<(u64, u64, u64, i64, String)>;

fn index_path(roots: &HostRoots) -> PathBuf {
    roots.pkgdir.join(".unify").join("index")
}

fn read_index(roots: &HostRoots) -> Index {
    let text = fs_err::read_to_string(index_path(roots)).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split(' ').collect();
            let [dev, ino, size, mtime, digest] = words.as_slice() else {
                return None;
            };
            Some((
                dev.parse().ok()?,
                ino.parse().ok()?,
                size.parse().ok()?,
                mtime.parse().ok()?,
                (*digest).to_owned(),
            ))
        })
        .collect()
}

fn write_index(roots: &HostRoots, index: &Index) -> Result<()> {
    let path = index_path(roots);
    let dir = roots.pkgdir.join(".unify");
    fs_err::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
    let temp = dir.join(".index.new");
    let mut file = fs_err::File::create(&temp).map_err(Error::io("write", &temp))?;
    let mut text = String::new();
    for (dev, ino, size, mtime, digest) in index {
        text.push_str(&format!("{dev} {ino} {size} {mtime} {digest}\n"));
    }
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(Error::io("write", &temp))?;
    fs_err::rename(&temp, &path).map_err(Error::io("rename into", &path))
}

/// Unifies the files of the guests `names` (see the module documentation); `dry_run` only
/// reports.
pub fn unify(roots: &HostRoots, names: &[String], dry_run: bool) -> Result<UnifyReport> {
    let started = Instant::now();
    let mut report = UnifyReport::default();
    let mut guest_roots = Vec::new();
    // (algo, digest, size, dev) → candidates
    let mut groups: BTreeMap<(String, u64, u64), Vec<Candidate>> = BTreeMap::new();
    let mut algos: HashMap<String, Algo> = HashMap::new();
    for name in names {
        let config = load_guest(roots, name)?;
        if config.package_management != PackageManagement::External {
            report
                .skipped_guests
                .push(format!("{name}: package management is not external"));
            continue;
        }
        let files = match config.family.as_str() {
            "rpm" => crate::verify::rpm_files(roots, &config)?.0,
            "deb" => crate::verify::deb_files(roots, &config)?,
            _ => {
                report.skipped_guests.push(format!("{name}: no packages"));
                continue;
            }
        };
        let root = GuestRoot::open(&config.root).map_err(|source| Error::Guest {
            guest: name.clone(),
            source,
        })?;
        let names_table = Names::of(&root);
        let index = guest_roots.len();
        for expected in &files {
            let Some((algo, digest)) = qualifies(expected) else {
                continue;
            };
            let Ok(info) = root.symlink_metadata(&expected.path) else {
                continue;
            };
            let unchanged = info.kind == FileKind::File
                && info.size == expected.size
                && (expected.mode == 0 || full_mode(&info) == expected.mode)
                && (expected.user.is_empty()
                    || Names::matches(&names_table.users, info.uid, &expected.user))
                && (expected.group.is_empty()
                    || Names::matches(&names_table.groups, info.gid, &expected.group));
            if !unchanged {
                report.changed += 1;
                continue;
            }
            report.candidates += 1;
            algos.insert(digest.clone(), algo);
            groups
                .entry((digest.clone(), info.size, info.dev))
                .or_default()
                .push(Candidate {
                    guest: index,
                    path: expected.path.clone(),
                    dev: info.dev,
                    ino: info.ino,
                    size: info.size,
                    mtime: info.mtime,
                });
        }
        guest_roots.push(root);
        report.guests += 1;
    }
    let mut index = read_index(roots);
    let mut updated = Index::new();
    for ((digest, size, _), mut members) in groups {
        // One member per inode: hard links are one file already.
        let mut seen = HashSet::new();
        members.retain(|c| seen.insert(c.ino));
        if members.len() < 2 || size == 0 {
            continue;
        }
        report.groups += 1;
        if report.supported == Some(false) || dry_run {
            report.possible_bytes += size * (members.len() as u64 - 1);
            continue;
        }
        let key = |c: &Candidate| (c.dev, c.ino, c.size, c.mtime, digest.clone());
        let pending: Vec<&Candidate> = members
            .iter()
            .filter(|c| !index.contains(&key(c)))
            .collect();
        if pending.is_empty() {
            report.known_files += members.len() as u64 - 1;
            members.iter().for_each(|c| {
                updated.insert(key(c));
            });
            continue;
        }
        // The source: the first member whose content is the database's.
        let Some(algo) = algos.get(&digest).copied() else {
            continue;
        };
        let Some(source_index) = members.iter().position(|c| {
            digest_of(&guest_roots[c.guest], &c.path, algo).as_deref() == Some(digest.as_str())
        }) else {
            continue;
        };
        let source = &members[source_index];
        let Ok(source_file) = guest_roots[source.guest].open_file(&source.path) else {
            continue;
        };
        updated.insert(key(source));
        for member in &members {
            if member.ino == source.ino {
                continue;
            }
            if index.contains(&key(member)) && index.contains(&key(source)) {
                report.known_files += 1;
                updated.insert(key(member));
                continue;
            }
            let Ok(file) = guest_roots[member.guest].open_file(&member.path) else {
                continue;
            };
            match vserver_sandbox::dedupe_file(&source_file, &file, size) {
                Ok(Dedupe::Shared) => {
                    report.shared_files += 1;
                    report.shared_bytes += size;
                    report.supported = Some(true);
                    updated.insert(key(member));
                }
                Ok(Dedupe::Differs) => report.differed += 1,
                Err(error)
                    if matches!(
                        error.raw_os_error(),
                        Some(libc_errno::EOPNOTSUPP | libc_errno::EINVAL | libc_errno::ENOTTY)
                    ) =>
                {
                    report.supported = Some(false);
                    report.possible_bytes += size * (members.len() as u64 - 1);
                    break;
                }
                Err(_) => report.differed += 1,
            }
        }
    }
    if report.supported == Some(false) {
        report.note = Some(
            "this file system cannot share extents (FIDEDUPERANGE): nothing was changed; xfs (mkfs.xfs -m reflink=1) or btrfs would allow it".into(),
        );
    }
    if !dry_run && report.supported != Some(false) {
        index.clear();
        write_index(roots, &updated)?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The recorded digest of a file unification may share: regular, not configuration, not a
/// `%ghost`, not replaced by another package's.
fn qualifies(expected: &Expected) -> Option<(Algo, String)> {
    if expected.config || expected.ghost || expected.exists_only {
        return None;
    }
    if expected.mode != 0 && expected.mode & 0o170000 != 0o100000 {
        return None;
    }
    expected.digest.clone()
}

/// The errno values that mean "this file system does not deduplicate".
mod libc_errno {
    pub(super) const EOPNOTSUPP: i32 = 95;
    pub(super) const EINVAL: i32 = 22;
    pub(super) const ENOTTY: i32 = 25;
}
